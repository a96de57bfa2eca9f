"""Incomplete, sound bound propagation: one entry point over a table of methods.

Each method is a function ``(problem, config) -> Bounds`` registered by dotted path, so a
method's module is imported only when it is used.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch

from .. import clock
from ..clock import NEVER, Deadline
from ..errors import ConfigError
from ..result import Counterexample, Result, Verdict
from ..specs.problem import VerificationProblem
from .core import Bounds, Interval

METHODS: dict[str, str] = {
    "interval": "nncert.bounds.interval:interval_bounds",
    "ibp": "nncert.bounds.interval:interval_bounds",
    "zonotope": "nncert.bounds.zonotope:zonotope_bounds",
    "deeppoly": "nncert.bounds.crown:deeppoly_bounds",
    "crown": "nncert.bounds.crown:crown_bounds",
    "alpha-crown": "nncert.bounds.alpha_crown:alpha_crown_bounds",
}
#: methods whose function takes ``deadline`` and checks it inside (the others are one pass)
CHECKS_DEADLINE = frozenset({"deeppoly", "crown", "alpha-crown"})


def _resolve(method: str):
    if method not in METHODS:
        raise ConfigError(f"unknown bound method {method!r}; choose from {', '.join(METHODS)}")
    module, fn = METHODS[method].split(":")
    try:
        return getattr(importlib.import_module(module), fn)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"bound method {method!r} is not available: {e}") from e


def compute_bounds(problem: VerificationProblem, method: str = "interval",
                   config: Any = None, deadline: Deadline = NEVER, grad: bool = False) -> Bounds:
    """Sound lower/upper bounds of the spec rows ``C·y + d`` over the input set, (B, R) each.

    With ``grad`` the bounds (and the intermediate bounds) stay attached to the autograd graph,
    differentiable in the graph's weights and in the input set's tensors: a training loss can
    be built on them (nncert.training builds the graph on a module's own Parameters). Without
    it (verification) they are computed under ``no_grad`` and detached. The bounds are the same
    either way. (alpha-crown keeps the best bounds of its own optimisation, detached, so it
    gives no gradient to the weights.)

    The problem is moved to the graph's device and dtype first. Raises UnsupportedOpError
    before any work when the method cannot handle an op, NumericalError on NaN/inf bounds,
    and :class:`~nncert.clock.DeadlineExceededError` past ``deadline`` (no bounds are returned
    then; CROWN-family methods check it between their passes, the one-pass methods before
    and after).
    """
    g = problem.graph
    problem = VerificationProblem(g, problem.input_set.to(g.device, g.dtype),
                                  problem.output_spec.to(g.device, g.dtype), problem.name)
    fn = _resolve(method)
    kwargs = {"deadline": deadline} if method in CHECKS_DEADLINE else {}
    deadline.check()
    t0 = clock.now()
    with torch.no_grad() if method != "alpha-crown" and not grad else torch.enable_grad():
        bounds = fn(problem, config, **kwargs)
    deadline.check()
    lower, upper = (bounds.lower, bounds.upper) if grad else (bounds.lower.detach(),
                                                               bounds.upper.detach())
    bounds = Bounds(lower, upper, method, bounds.intermediate, clock.now() - t0, bounds.stats)
    return bounds.check_finite()


def certify(problem: VerificationProblem, method: str = "interval",
            config: Any = None) -> list[Result]:
    """One Result per batch element: VERIFIED when the bounds prove the spec, FALSIFIED when
    the set's center already violates it on the concrete graph, else UNKNOWN."""
    t0 = clock.now()
    bounds = compute_bounds(problem, method, config)
    g = problem.graph
    x0 = problem.input_set.center.to(g.device, g.dtype)
    with torch.no_grad():
        y0 = g.forward(x0)
    holds = problem.output_spec.to(g.device, g.dtype).holds(y0.flatten(1))
    proved = problem.output_spec.proved(bounds.lower)
    per_item = (clock.now() - t0) / max(problem.batch_size, 1)
    results = []
    for b in range(problem.batch_size):
        if bool(proved[b]) and bool(holds[b]):
            results.append(Result(Verdict.VERIFIED, method, per_item, bounds.lower[b],
                                  bounds.upper[b]))
        elif not bool(holds[b]):
            cex = Counterexample(x0[b].detach().cpu(), y0[b].detach().cpu())
            results.append(Result(Verdict.FALSIFIED, method, per_item, bounds.lower[b],
                                  bounds.upper[b], cex, {"source": "center"}))
        else:
            results.append(Result(Verdict.UNKNOWN, method, per_item, bounds.lower[b],
                                  bounds.upper[b]))
    return results


__all__ = ["METHODS", "Bounds", "Interval", "certify", "compute_bounds"]
