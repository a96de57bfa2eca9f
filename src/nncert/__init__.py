"""nncert: sound, complete and probabilistic certification of neural networks.

The public API is the names re-exported here; everything else is private. They are loaded on
first use (``nncert.verify`` imports the verifier, and torch, then), so that importing a light
module such as ``nncert.errors`` or starting the command line does not pay for all of them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import NncertError as NncertError
from .errors import SpecError as SpecError
from .errors import UnsupportedOpError as UnsupportedOpError

if TYPE_CHECKING:
    from .bounds import certify as certify
    from .bounds import compute_bounds as compute_bounds
    from .bounds.core import Bounds as Bounds
    from .bounds.core import Interval as Interval
    from .complete import VerifyConfig as VerifyConfig
    from .complete import verify as verify
    from .data import load_dataset as load_dataset
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

#: public name → the module that defines it (imported on first access)
_LAZY: dict[str, str] = {
    "certify": ".bounds", "compute_bounds": ".bounds",
    "Bounds": ".bounds.core", "Interval": ".bounds.core",
    "VerifyConfig": ".complete", "verify": ".complete",
    "load_dataset": ".data",
    "Graph": ".models", "load": ".models",
    "Counterexample": ".result", "Result": ".result", "Verdict": ".result",
    "Box": ".specs", "LpBall": ".specs", "OutputSpec": ".specs",
    "VerificationProblem": ".specs", "load_vnnlib": ".specs", "robustness_problem": ".specs",
}

__version__ = "0.1.0"
__all__ = ["NncertError", "SpecError", "UnsupportedOpError", *_LAZY, "__version__"]


def __getattr__(name: str) -> Any:
    """A public name on first use (then cached in the module), or a subpackage
    (``nncert.bounds`` after a bare ``import nncert``)."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    if not name.startswith("_"):
        try:
            return importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
