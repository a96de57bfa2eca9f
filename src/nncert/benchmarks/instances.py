"""One robustness instance (a model, a point, ε, a method) in a worker: the fields of its row.

Row fields: ``prediction`` (the model's class at the point), ``verdict`` (``verified``: a sound
certificate for the whole clipped L_p ball, or with ``smooth`` a certificate holding with
probability ≥ 1 − alpha; ``falsified``: a counterexample re-checked on the model, a
misclassified point included; else ``unknown`` / ``timeout``), ``time_s`` (seconds, measured in
the worker), and per method: ``margin_lower`` (bound methods), ``strategy`` (complete),
``radius`` (``smooth``: the certified L2 radius; bound methods with a radius search: the
largest certified radius found by bisection); ``peak_mb`` (the worker's peak resident memory).
"""

from __future__ import annotations

import math
import os
import time
from functools import lru_cache
from typing import Any

import torch

from ..attacks import AttackConfig, attack
from ..complete.vnncomp import worker_test_hook
from ..models.graph import Graph
from ..result import Verdict
from ..specs.problem import robustness_problem
from ..utils import reset_peak_memory
from .robustness import COMPLETE, RobustnessConfig, certify_points
from .runner import with_peak_memory


@lru_cache(maxsize=8)
def _graph(path: str, stamp: tuple[int, int]) -> Graph:
    """The model, read once per worker process (``stamp``: the file's mtime and size, so a
    changed file is read again)."""
    from ..models import load

    return load(path)


def warm_up() -> None:
    """Import what the first instance would import lazily (a Ray worker calls this before it
    takes instances, so imports never count against an instance's deadline)."""
    from ..utils import tune_allocator

    tune_allocator()  # (Ray workers are not forked from the CLI)
    from ..bounds import alpha_crown, crown, interval, zonotope  # noqa: F401
    from ..models import from_onnx  # noqa: F401
    from ..smoothing import smooth  # noqa: F401


def load_graph(path: str) -> Graph:
    st = os.stat(path)
    return _graph(path, (st.st_mtime_ns, st.st_size))


def certify_instance(model: str, x: torch.Tensor, label: int, eps: float, p: float,
                     method: str, timeout: float, threads: int,
                     options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Worker: decide one point's ball with ``method`` (a bound method, ``complete``, ``pgd``
    or ``smooth``) and return its row fields (see the module docstring). ``x``: the point in
    [0, 1] pixel units, any shape with the model's number of values."""
    torch.set_num_threads(threads)
    worker_test_hook(model)
    reset_peak_memory()
    options = options or {}
    t0 = time.perf_counter()
    graph = load_graph(model)
    x = x.reshape(1, *graph.input_shape).to(graph.device, graph.dtype)
    y = torch.tensor([label])
    if method == "pgd":
        row = _pgd(graph, x, y, eps, p, timeout)
    elif method == "smooth":
        row = _smooth(graph, x, label, eps, p, options)
    else:
        row = _bounds(graph, x, y, eps, p, method, timeout)
        if options.get("radius") and method != COMPLETE:
            row["radius"] = _largest_radius(graph, x, y, p, method, *options["radius"])
    row["time_s"] = round(time.perf_counter() - t0, 4)
    return with_peak_memory(row)


def _prediction(graph: Graph, x: torch.Tensor) -> int:
    with torch.no_grad():
        return int(graph(x).flatten(1).argmax(1)[0])


def _bounds(graph: Graph, x, y, eps: float, p: float, method: str, timeout: float) -> dict:
    cfg = RobustnessConfig(eps=eps, method=method, p=p, batch_size=1, timeout_s=timeout)
    r = next(iter(certify_points(graph, x, y, cfg)))
    row = {"prediction": r["prediction"], "verdict": r["verdict"]}
    if r.get("margin_lower") is not None:
        row["margin_lower"] = round(r["margin_lower"], 6)
    if "strategy" in r:
        row["strategy"] = r["strategy"]
    return row


def _pgd(graph: Graph, x, y, eps: float, p: float, timeout: float) -> dict:
    """PGD and random search (:func:`nncert.attacks.attack`): ``falsified`` with a confirmed
    counterexample (or a misclassified point), else ``unknown``; never ``verified``."""
    pred = _prediction(graph, x)
    if pred != int(y[0]):
        return {"prediction": pred, "verdict": Verdict.FALSIFIED.value}
    problem = robustness_problem(graph, x, y, eps, p, (0.0, 1.0))
    cex, _margin = attack(problem, AttackConfig(timeout_s=timeout), model_graph=graph)
    verdict = Verdict.FALSIFIED if cex is not None else Verdict.UNKNOWN
    return {"prediction": pred, "verdict": verdict.value}


def _smooth(graph: Graph, x, label: int, eps: float, p: float, options: dict) -> dict:
    """Randomized smoothing (Cohen et al.): ``verified`` when the smoothed classifier's
    prediction is the label and its certified L2 radius covers the ball (an L∞ ball of radius
    ε lies in the L2 ball of radius ε·√d); the certificate holds with probability ≥ 1 − alpha."""
    from ..smoothing.smooth import Smooth

    s = options.get("smooth", {})
    seed = int(options.get("seed", 0))
    cert = Smooth(graph, None, s.get("sigma", 0.25), seed=seed, workers=1).certify(
        x[0], s.get("n0", 100), s.get("n", 1000), s.get("alpha", 0.001), s.get("batch", 1000),
        seed=seed)
    need = eps if p == 2 else eps * math.sqrt(x[0].numel())
    ok = cert.prediction == label and cert.radius >= need
    pred = -1 if cert.prediction is None else int(cert.prediction)
    return {"prediction": _prediction(graph, x), "smoothed_prediction": pred,
            "verdict": (Verdict.VERIFIED if ok else Verdict.UNKNOWN).value,
            "radius": round(float(cert.radius), 6), "probabilistic": True}


def _largest_radius(graph: Graph, x, y, p: float, method: str, hi: float, steps: int) -> float:
    """The largest radius in [0, hi] at which ``method`` certifies the point, by bisection
    (``steps`` halvings; 0.0 when not even the centre is certified). A lower bound of the
    point's true robust radius."""
    def ok(r: float) -> bool:
        cfg = RobustnessConfig(eps=r, method=method, p=p, batch_size=1)
        return next(iter(certify_points(graph, x, y, cfg)))["verdict"] == Verdict.VERIFIED.value

    if ok(hi):
        return hi
    lo, up = 0.0, hi
    if not ok(0.0):
        return 0.0
    for _ in range(steps):
        mid = (lo + up) / 2
        lo, up = (mid, up) if ok(mid) else (lo, mid)
    return round(lo, 8)


__all__ = ["certify_instance", "load_graph", "warm_up"]
