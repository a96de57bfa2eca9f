"""What is to be proved: input sets, output specs, and the canonical problem."""

from .input_sets import AffineBand as AffineBand
from .input_sets import Box as Box
from .input_sets import InputSet as InputSet
from .input_sets import LpBall as LpBall
from .input_sets import Segment as Segment
from .output import OutputSpec as OutputSpec
from .problem import VerificationProblem as VerificationProblem
from .problem import robustness_problem as robustness_problem
from .vnnlib import load_vnnlib as load_vnnlib
from .vnnlib import parse_vnnlib as parse_vnnlib
from .vnnlib import write_vnnlib as write_vnnlib
