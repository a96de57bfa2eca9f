"""Clean, PGD and certified accuracy of a classifier on a test set: the protocol of the
certified-training SoK (Li et al. 2023): a fixed set of test images, every bound method,
complete verification with a per-image timeout.

Certified accuracy counts an image only when the model classifies it correctly *and* a sound
method proves the whole ε-ball (L∞, clipped to [0, 1]); PGD accuracy counts the images whose
PGD point is still classified correctly (an upper bound of the true robust accuracy), and
"unfalsified" (with complete verification) tightens that upper bound by the images complete
verification falsified with a counterexample it re-checked on the network.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn

from ..bounds import compute_bounds
from ..bounds.crown import CrownConfig
from ..models.graph import Graph
from ..specs.input_sets import LpBall
from ..specs.output import OutputSpec
from ..specs.problem import VerificationProblem
from ..utils import progress
from .losses import pgd_ce

BOUND_METHODS = ("interval", "crown-ibp", "zonotope", "deeppoly", "crown", "alpha-crown")


def _method(name: str):
    """(compute_bounds method, config) of an evaluation method name."""
    if name == "crown-ibp":
        return "crown", CrownConfig(intermediate="ibp")
    return name, None


@torch.no_grad()
def correct(graph: Graph | nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 500):
    """Whether each image is classified correctly, (N,) bool."""
    return torch.cat([graph(x[i:i + batch]).argmax(1) == y[i:i + batch]
                      for i in range(0, len(x), batch)])


def pgd_correct(model: Graph | nn.Module, x, y, eps: float, steps: int = 20, restarts: int = 1,
                seed: int = 0, batch: int = 500) -> torch.Tensor:
    """Whether each image survives L∞ PGD (``restarts`` random starts, ``steps`` steps)."""
    gen = torch.Generator(device=x.device).manual_seed(seed)
    ok = correct(model, x, y, batch)
    for _ in range(restarts):
        for i in range(0, len(x), batch):
            xa = pgd_ce(model, x[i:i + batch], y[i:i + batch], eps, steps, eps / 4, (0.0, 1.0),
                        gen)
            ok[i:i + batch] &= correct(model, xa, y[i:i + batch])
    return ok


def certified(graph: Graph, x, y, eps: float, method: str, batch: int = 200) -> torch.Tensor:
    """Whether each image is proved robust over its ε-ball by ``method`` (see
    :data:`BOUND_METHODS`) and classified correctly, (N,) bool."""
    name, cfg = _method(method)
    out = []
    for i in range(0, len(x), batch):
        xb, yb = x[i:i + batch].to(graph.dtype), y[i:i + batch]
        spec = OutputSpec.robustness(yb, graph.num_outputs, dtype=graph.dtype, device=xb.device)
        p = VerificationProblem(graph, LpBall(xb, float(eps), float("inf"), 0.0, 1.0), spec)
        out.append(spec.proved(compute_bounds(p, name, cfg).lower))
    return torch.cat(out) & correct(graph, x, y)


@dataclass(frozen=True)
class Row:
    """One line of the evaluation table: the share of images a method certifies, and which
    (``images``: (N,) bool on the CPU, in the order of the evaluated images)."""

    eps: float
    method: str
    accuracy: float
    count: int
    seconds: float
    images: torch.Tensor | None = field(default=None, compare=False, repr=False)


def evaluate(graph: Graph, x, y, eps: float, methods=BOUND_METHODS, *, pgd_steps: int = 20,
             timeout_s: float | None = None) -> list[Row]:
    """Rows for clean and PGD accuracy and every method at radius ``eps``; with ``timeout_s``
    also "complete": the bound methods' union, then complete verification of each remaining
    correctly classified image that PGD did not break, ``timeout_s`` seconds each, and
    "unfalsified": the images PGD did not break and complete verification did not falsify.
    The true robust accuracy lies between "complete" and "unfalsified" (equal when every image
    was decided)."""
    rows = []

    def add(method: str, ok: torch.Tensor, t0: float | None) -> torch.Tensor:
        """Appends the row of ``ok``, timed from ``t0`` (None: no time of its own)."""
        ok = ok.cpu()
        seconds = 0.0 if t0 is None else time.perf_counter() - t0
        rows.append(Row(eps, method, float(ok.float().mean()), len(ok), seconds, ok))
        return ok

    t = time.perf_counter()
    add("clean", correct(graph, x, y), t)
    t = time.perf_counter()
    pgd_ok = add("pgd", pgd_correct(graph, x, y, eps, pgd_steps), t)
    union = torch.zeros(len(x), dtype=torch.bool)
    for m in methods:
        t = time.perf_counter()
        union |= add(m, certified(graph, x, y, eps, m), t)
    if timeout_s is not None:
        t = time.perf_counter()
        proved, refuted = _complete(graph, x, y, eps, ~union & pgd_ok, timeout_s)
        add("complete", union | proved, t)
        add("unfalsified", pgd_ok & ~refuted, None)
    return rows


def _complete(graph: Graph, x, y, eps: float, todo: torch.Tensor, timeout_s: float):
    """Complete verification (``nncert.complete.verify``) of the images in ``todo``: (proved,
    falsified), each (N,) bool; a falsified image has a counterexample that ``verify`` re-checked
    on the network."""
    from ..complete.verify import VerifyConfig, verify
    from ..result import Verdict
    from ..specs.problem import robustness_problem

    proved = torch.zeros(len(x), dtype=torch.bool)
    refuted = torch.zeros(len(x), dtype=torch.bool)
    cfg = VerifyConfig(timeout_s=timeout_s)
    idx = torch.nonzero(todo).flatten().tolist()
    for i in progress(idx, total=len(idx), desc=f"complete verification at eps {eps:g}"):
        p = robustness_problem(graph, x[i:i + 1], y[i:i + 1], eps)
        verdict = verify(p, cfg).verdict
        proved[i] = verdict == Verdict.VERIFIED
        refuted[i] = verdict == Verdict.FALSIFIED
    return proved, refuted


def to_markdown(rows: list[Row]) -> str:
    """One table: a row per ε, a column per method (accuracy in %)."""
    methods = list(dict.fromkeys(r.method for r in rows))
    eps = list(dict.fromkeys(r.eps for r in rows))
    get = {(r.eps, r.method): r for r in rows}
    lines = ["| eps | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for e in eps:
        cells = [f"{get[e, m].accuracy:.1%}" if (e, m) in get else "" for m in methods]
        lines.append(f"| {e:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def per_image_csv(rows: list[Row], indices, labels) -> str:
    """One line per (ε, image): the image's index in the test set, its label, and 1/0 per
    method (clean, pgd, each bound method, complete, unfalsified, as evaluated)."""
    methods = list(dict.fromkeys(r.method for r in rows))
    get = {(r.eps, r.method): r.images for r in rows}
    lines = ["eps,index,label," + ",".join(methods)]
    for e in dict.fromkeys(r.eps for r in rows):
        cols = [get.get((e, m)) for m in methods]
        for k, (i, label) in enumerate(zip(indices, labels)):
            cells = ["" if c is None else str(int(c[k])) for c in cols]
            lines.append(f"{e:g},{int(i)},{int(label)}," + ",".join(cells))
    return "\n".join(lines) + "\n"


def to_csv(rows: list[Row]) -> str:
    lines = ["eps,method,accuracy,count,seconds"]
    lines += [f"{r.eps:g},{r.method},{r.accuracy:.6f},{r.count},{r.seconds:.3f}" for r in rows]
    return "\n".join(lines) + "\n"
