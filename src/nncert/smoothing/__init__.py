"""Probabilistic certification: randomized smoothing (Cohen, Rosenfeld & Kolter 2019) and
PixelDP (Lecuyer et al. 2019).

>>> from nncert.smoothing import Smooth
>>> smooth = Smooth(model, num_classes=10, sigma=0.25, seed=0)
>>> cert = smooth.certify(x, n0=100, n=10_000, alpha=0.001, batch_size=1000)
>>> cert.prediction, cert.radius          # None = abstain

See :mod:`nncert.smoothing.smooth`, :mod:`nncert.smoothing.pixeldp` and
:mod:`nncert.smoothing.train`.
"""

from .pixeldp import PixelDPCertificate as PixelDPCertificate
from .pixeldp import PixelDPConfig as PixelDPConfig
from .pixeldp import PixelDPNet as PixelDPNet
from .pixeldp import build_pixeldp as build_pixeldp
from .pixeldp import certify as pixeldp_certify
from .pixeldp import gaussian_sigma as gaussian_sigma
from .pixeldp import laplace_scale as laplace_scale
from .pixeldp import load_pixeldp as load_pixeldp
from .pixeldp import save_pixeldp as save_pixeldp
from .smooth import Smooth as Smooth
from .smooth import SmoothCertificate as SmoothCertificate
from .smooth import SmoothPrediction as SmoothPrediction
from .stats import STANDARD_RADII as STANDARD_RADII
from .stats import certified_accuracy as certified_accuracy
from .stats import clopper_pearson_lower as clopper_pearson_lower
from .train import train_gaussian as train_gaussian
from .train import train_pixeldp as train_pixeldp

__all__ = [
    "STANDARD_RADII", "PixelDPCertificate", "PixelDPConfig", "PixelDPNet", "Smooth",
    "SmoothCertificate", "SmoothPrediction", "build_pixeldp", "certified_accuracy",
    "clopper_pearson_lower", "gaussian_sigma", "laplace_scale", "load_pixeldp", "pixeldp_certify",
    "save_pixeldp", "train_gaussian", "train_pixeldp",
]
