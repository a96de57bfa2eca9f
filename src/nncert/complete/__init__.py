"""Complete verification: falsification, branch-and-bound, MILP, ``verify`` and VNN-COMP."""

from .bab import BaBConfig as BaBConfig
from .milp import MilpConfig as MilpConfig
from .verify import VerifyConfig as VerifyConfig
from .verify import verify as verify
from .verify import verify_all as verify_all

__all__ = ["BaBConfig", "MilpConfig", "VerifyConfig", "verify", "verify_all"]
