"""nncert: sound, complete and probabilistic certification of neural networks.

The public API is the names re-exported here; everything else is private.
"""

from .bounds import certify as certify
from .bounds import compute_bounds as compute_bounds
from .bounds.core import Bounds as Bounds
from .bounds.core import Interval as Interval
from .complete import VerifyConfig as VerifyConfig
from .complete import verify as verify
from .data import load_dataset as load_dataset
from .errors import NncertError as NncertError
from .errors import SpecError as SpecError
from .errors import UnsupportedOpError as UnsupportedOpError
from .models import Graph as Graph
from .models import load as load
from .result import Counterexample as Counterexample
from .result import Result as Result
from .result import Verdict as Verdict
from .specs import Box as Box
from .specs import LpBall as LpBall
from .specs import OutputSpec as OutputSpec
from .specs import VerificationProblem as VerificationProblem
from .specs import load_vnnlib as load_vnnlib
from .specs import robustness_problem as robustness_problem

__version__ = "0.1.0"
