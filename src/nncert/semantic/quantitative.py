"""Quantitative certification of a segment: bounds on the fraction of it that is robust.

GCert (Yuan, Wang & Su, USENIX Security 2023), section on quantitative certification: split the
segment's parameter interval into pieces and bound each piece with a sound bound method on the
graph over t. A piece proved robust counts towards the lower bound; a piece proved violated
everywhere (some clause has every row's upper bound ≤ 0) comes off the upper bound. Undecided
pieces are bisected, the longest first, until the gap is at most ``tolerance``, the budget of
bounded pieces is spent, or the deadline passes. For piecewise-linear graphs ``method="exact"``
answers with ExactLine (lower = upper = the exact fraction).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any

import torch

from .. import clock
from ..bounds import compute_bounds
from ..clock import NEVER, Deadline, DeadlineExceededError
from ..errors import ConfigError
from ..models.graph import Graph
from ..result import Result, Verdict
from ..specs.output import OutputSpec
from .segments import SegmentReport, certify_segment_exact, confirm_violation, segment_problem


@dataclass(frozen=True)
class QuantConfig:
    """``method``: a bound method name (see ``nncert.bounds.METHODS``) or "exact".
    ``initial_pieces``: equal pieces to start from. ``max_pieces``: most pieces bounded in all
    (the budget). ``batch``: pieces bounded per call. ``tolerance``: stop when upper − lower ≤
    it. ``min_width``: pieces narrower than this are not split further."""

    method: str = "crown"
    initial_pieces: int = 8
    max_pieces: int = 512
    batch: int = 64
    tolerance: float = 1e-3
    min_width: float = 1e-6
    method_config: Any = None

    def __post_init__(self) -> None:
        if min(self.initial_pieces, self.max_pieces, self.batch) < 1:
            raise ConfigError("initial_pieces, max_pieces and batch must be ≥ 1")
        if not (0 <= self.tolerance <= 1) or not (0 < self.min_width <= 1):
            raise ConfigError("tolerance must lie in [0, 1] and min_width in (0, 1]")


def _bound_pieces(graph, start, end, spec, pieces, config: QuantConfig, deadline: Deadline):
    """(proved, disproved) bool lists for the pieces [(lo, hi), ...]."""
    lo = torch.tensor([p[0] for p in pieces], dtype=torch.float64)
    hi = torch.tensor([p[1] for p in pieces], dtype=torch.float64)
    problem = segment_problem(graph, start, end, spec, lo, hi)
    b = compute_bounds(problem, config.method, config.method_config, deadline)
    s = problem.output_spec
    return s.proved(b.lower).tolist(), s.disproved(b.upper).tolist()


def robust_fraction(graph: Graph, start: torch.Tensor, end: torch.Tensor, spec: OutputSpec,
                    config: QuantConfig = QuantConfig(), deadline: Deadline = NEVER
                    ) -> SegmentReport:
    """Sound bounds ``fraction_lower ≤ |{t ∈ [0,1] : spec holds at t}| ≤ fraction_upper``.

    The verdict is VERIFIED when the whole segment is proved, FALSIFIED when the midpoint of an
    undecided or disproved piece violates ``spec`` on the concrete graph (t* is reported),
    otherwise UNKNOWN (TIMEOUT when the deadline passed first)."""
    if config.method == "exact":
        return certify_segment_exact(graph, start, end, spec)
    t0 = clock.now()
    n = config.initial_pieces
    todo = [(-1.0 / n, i / n, (i + 1) / n) for i in range(n)]  # (−width, lo, hi): a max-heap
    lower, upper, bounded, bad = 0.0, 1.0, 0, []
    pieces: dict[str, list] = {"proved": [], "violated": []}
    timed_out = False
    while todo and upper - lower > config.tolerance and bounded < config.max_pieces:
        if deadline.expired():
            timed_out = True
            break
        take = min(config.batch, config.max_pieces - bounded, len(todo))
        batch = [heapq.heappop(todo) for _ in range(take)]
        bounded += take
        try:
            proved, disproved = _bound_pieces(graph, start, end, spec,
                                              [(lo, hi) for _, lo, hi in batch], config, deadline)
        except DeadlineExceededError:
            todo.extend(batch)  # undecided (the heap order no longer matters)
            timed_out = True
            break
        for (_, lo, hi), ok, ko in zip(batch, proved, disproved):
            if ok:
                lower += hi - lo
                pieces["proved"].append((lo, hi))
            elif ko:
                upper -= hi - lo
                bad.append((lo + hi) / 2)
                pieces["violated"].append((lo, hi))
            elif hi - lo >= 2 * config.min_width:
                mid = (lo + hi) / 2
                heapq.heappush(todo, (-(mid - lo), lo, mid))
                heapq.heappush(todo, (-(hi - mid), mid, hi))
            else:
                bad.append((lo + hi) / 2)
    undecided = [(lo + hi) / 2 for _, lo, hi in todo]
    stats = {"pieces_bounded": bounded, "undecided_pieces": len(todo) + len(bad),
             "method": config.method}
    lower, upper = max(0.0, min(lower, 1.0)), max(0.0, min(upper, 1.0))
    return _report(graph, start, end, spec, lower, upper, bad + undecided, timed_out, t0, stats,
                   pieces)


def _report(graph, start, end, spec, lower, upper, probes, timed_out, t0, stats, pieces
            ) -> SegmentReport:
    name = f"quantitative-{stats['method']}"
    iv = {k: torch.tensor(sorted(v), dtype=torch.float64).reshape(-1, 2) for k, v in pieces.items()}
    extra = {"violations": iv["violated"], "proved": iv["proved"]}
    if lower >= 1.0 and not probes:
        res = Result(Verdict.VERIFIED, name, clock.now() - t0, stats=stats)
        return SegmentReport(res, lower, upper, stats=stats, **extra)
    found = confirm_violation(graph, start, end, spec, probes[:256])
    if found is not None:
        t_star, cex = found
        stats["t_star"] = t_star
        res = Result(Verdict.FALSIFIED, name, clock.now() - t0, counterexample=cex, stats=stats)
        return SegmentReport(res, lower, upper, t_star=t_star, stats=stats, **extra)
    verdict = Verdict.TIMEOUT if timed_out else Verdict.UNKNOWN
    return SegmentReport(Result(verdict, name, clock.now() - t0, stats=stats), lower, upper,
                         stats=stats, **extra)
