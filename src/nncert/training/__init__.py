"""Certified training: one loop (:func:`fit`), losses as small objects (natural, PGD, IBP,
CROWN-IBP, DiffAI, SABR, Gaussian noise) built on the one bound engine, schedules, and the
literature's architectures."""

from .architectures import ARCHITECTURES as ARCHITECTURES
from .architectures import LiveBatchNorm as LiveBatchNorm
from .architectures import build as build
from .architectures import live_batchnorm as live_batchnorm
from .architectures import live_graph as live_graph
from .loop import History as History
from .loop import TrainConfig as TrainConfig
from .loop import fit as fit
from .loop import load_checkpoint as load_checkpoint
from .losses import IBP as IBP
from .losses import PGD as PGD
from .losses import SABR as SABR
from .losses import CrownIBP as CrownIBP
from .losses import DiffAI as DiffAI
from .losses import GaussianNoise as GaussianNoise
from .losses import Natural as Natural
from .losses import Step as Step
from .losses import ibp_init_ as ibp_init_
from .schedules import Constant as Constant
from .schedules import Ramp as Ramp

__all__ = ["ARCHITECTURES", "PGD", "SABR", "Constant", "CrownIBP", "DiffAI", "GaussianNoise",
           "History", "IBP", "LiveBatchNorm", "Natural", "Ramp", "Step", "TrainConfig", "build", "fit",
           "ibp_init_", "live_batchnorm", "live_graph", "load_checkpoint"]
