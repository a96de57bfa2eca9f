"""Segments as inputs: the graph over the segment parameter t, and exact decisions on them.

A segment is ``{z + t·(z' − z) : t ∈ [0, 1]}`` in the input space of a graph (pixels, or the
latent space of a generator G composed with a classifier f, see ``models.graph.compose``).

* :func:`segment_graph` prepends the affine node ``t ↦ z + t·(z' − z)``: the result is a graph
  of one input, so every bound method (interval, zonotope, CROWN, alpha-CROWN) and every search
  runs unchanged on a Box of t-intervals (:func:`segment_problem`).
* :func:`exact_line` / :func:`exact_lines` (module :mod:`.exactline`) are ExactLine (Sotoudeh
  & Thakur, NeurIPS 2019): the exact partition of [0, 1] into the pieces on which a piecewise
  linear graph is affine, with the outputs at the breakpoints, for many segments at once.
* :func:`certify_segments_exact` (one segment: :func:`certify_segment_exact`) decides the
  output spec on whole segments from those pieces: verified, or falsified with a parameter t*
  whose image is misclassified (re-run on the concrete graph), and the exact robust fraction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import ConfigError, ShapeError
from ..models import ops
from ..models.graph import Graph, compose, sequential
from ..result import Counterexample, Result, Verdict
from ..specs.input_sets import Box
from ..specs.output import OutputSpec
from ..specs.problem import VerificationProblem
from .exactline import (  # noqa: F401  (re-exported: the public names of ExactLine)
    PIECEWISE_LINEAR,
    FlatLines,
    LinePieces,
    as_float64,
    as_points,
    exact_flat,
    exact_line,
    exact_lines,
)


# -- the graph over t ---------------------------------------------------------------------------
def _as_point(graph: Graph, x: torch.Tensor, what: str) -> torch.Tensor:
    x = torch.as_tensor(x, dtype=graph.dtype, device=graph.device)
    if x.numel() != graph.num_inputs:
        raise ShapeError(f"segment {what} vs model input", graph.input_shape, tuple(x.shape))
    if not bool(torch.isfinite(x).all()):
        raise ConfigError(f"segment {what} contains NaN or infinite values")
    return x.reshape(graph.input_shape)


def segment_graph(graph: Graph, start: torch.Tensor, end: torch.Tensor) -> Graph:
    """The graph of ``t ↦ graph(start + t·(end − start))``, input shape (1,).

    Its concrete outputs equal ``graph`` on the segment's points up to the rounding of one
    affine map; bounds over a Box of t are sound bounds over that part of the segment."""
    a, b = _as_point(graph, start, "start"), _as_point(graph, end, "end")
    line = ops.Linear((b - a).reshape(-1, 1).clone(), a.reshape(-1).clone())
    return compose(sequential([line], (1,), prefix="segment"), graph, prefix="")


def segment_problem(graph: Graph, start: torch.Tensor, end: torch.Tensor, spec: OutputSpec,
                    t_lo: torch.Tensor | None = None, t_hi: torch.Tensor | None = None
                    ) -> VerificationProblem:
    """Prove ``spec`` (batch 1) on the pieces ``[t_lo[i], t_hi[i]]`` of the segment (default
    the whole segment), one batch element per piece."""
    g = segment_graph(graph, start, end)
    kw = {"dtype": g.dtype, "device": g.device}
    lo = torch.zeros(1, **kw) if t_lo is None else torch.as_tensor(t_lo, **kw).reshape(-1)
    hi = torch.ones(1, **kw) if t_hi is None else torch.as_tensor(t_hi, **kw).reshape(-1)
    if spec.batch_size != 1:
        raise ShapeError("segment spec batch", (1,), (spec.batch_size,))
    return VerificationProblem(g, Box(lo[:, None], hi[:, None]), spec.to(**kw).expand(lo.numel()))


# -- deciding a spec on the pieces ------------------------------------------------------------
def _row_violation(ra: torch.Tensor, rb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For affine rows with values ra at s = 0 and rb at s = 1: the s-interval in [0, 1] where
    the row is ≤ 0, as (lo, hi); empty when lo > hi."""
    s = ra / (ra - rb).where(ra != rb, torch.ones_like(ra))
    lo = torch.where(ra <= 0, torch.zeros_like(ra), torch.where(rb <= 0, s, torch.full_like(ra, 2)))
    hi = torch.where(rb <= 0, torch.ones_like(ra), torch.where(ra <= 0, s, torch.full_like(ra, -1)))
    return lo, hi


def _clause_index(spec: OutputSpec) -> torch.Tensor:
    """(clauses, longest) row indices, short clauses padded with their first row (max and
    min over a clause are unchanged by the repeat)."""
    n = max(len(c) for c in spec.clauses)
    return torch.tensor([list(c) + [c[0]] * (n - len(c)) for c in spec.clauses],
                        device=spec.C.device)


@dataclass(frozen=True, eq=False)
class _Violations:
    """Per piece (P pieces of all segments) and clause: the t-interval where the clause fails
    (``keep``: non-empty), and the piece's segment."""

    lo: torch.Tensor  # (P, clauses)
    hi: torch.Tensor
    keep: torch.Tensor
    seg: torch.Tensor  # (P,)
    t0: torch.Tensor  # (P,)


def _violations(lines: FlatLines, spec: OutputSpec, tol: torch.Tensor) -> _Violations:
    """Exact violation intervals of ``spec`` (batch S, or 1 for all) on the pieces, with each
    segment's rows lowered by ``tol[s]`` (S,): a clause fails where every row is ≤ tol."""
    spec = spec.to(dtype=torch.float64, device=lines.ts.device)
    C, d = spec.C, spec.d
    if C.shape[0] == 1:
        rows = lines.outputs @ C[0].T + d[0]
    else:
        rows = torch.einsum("nrk,nk->nr", C[lines.seg], lines.outputs) + d[lines.seg]
    rows = rows - tol[lines.seg, None]
    same = lines.seg[:-1] == lines.seg[1:]
    lo, hi = _row_violation(rows[:-1][same], rows[1:][same])  # (P, R)
    idx = _clause_index(spec)
    c_lo, c_hi = lo[:, idx].amax(-1), hi[:, idx].amin(-1)  # (P, clauses)
    t0, t1 = lines.ts[:-1][same], lines.ts[1:][same]
    span = (t1 - t0)[:, None]
    return _Violations(t0[:, None] + c_lo * span, t0[:, None] + c_hi * span, c_lo <= c_hi,
                       lines.seg[:-1][same], t0)


def _violated_length(v: _Violations, S: int) -> torch.Tensor:
    """Per segment, the length of the union of its violation intervals (S,) (pieces do not
    overlap, so per piece: a sweep over its clauses' intervals sorted by start)."""
    lo = torch.where(v.keep, v.lo, v.t0[:, None])
    hi = torch.where(v.keep, v.hi, v.t0[:, None])
    lo, order = lo.sort(-1)
    hi = hi.gather(-1, order)
    reach = torch.cat([v.t0[:, None], hi[:, :-1]], -1).cummax(-1).values
    piece = (hi - torch.maximum(lo, reach)).clamp(min=0).sum(-1)
    return torch.zeros(S, dtype=piece.dtype, device=piece.device).index_add_(0, v.seg, piece)


def _intervals(v: _Violations, S: int) -> list[torch.Tensor]:
    """Each segment's violation intervals (M, 2), sorted by start."""
    seg = v.seg[:, None].expand_as(v.keep)[v.keep]
    iv = torch.stack([v.lo[v.keep], v.hi[v.keep]], -1)
    order = torch.argsort(iv[:, 0], stable=True)
    order = order[torch.argsort(seg[order], stable=True)]
    return list(iv[order].split(torch.bincount(seg, minlength=S).tolist()))


def violation_intervals(pieces: LinePieces, spec: OutputSpec, tol: float = 0.0
                        ) -> torch.Tensor:
    """The t-intervals (M, 2) on which ``spec`` (batch 1) fails, i.e. some clause has every
    row ≤ ``tol``; exact for the piecewise affine outputs (each clause's violation set on a
    piece is an intersection of intervals). Points (lo == hi) are included."""
    n = pieces.ts.numel()
    lines = FlatLines(torch.zeros(n, dtype=torch.long, device=pieces.ts.device), pieces.ts,
                      pieces.outputs, torch.tensor([n]))
    tol_t = torch.full((1,), float(tol), dtype=torch.float64, device=pieces.ts.device)
    return _intervals(_violations(lines, spec, tol_t), 1)[0]


def complement(intervals: torch.Tensor) -> torch.Tensor:
    """The open gaps (M, 2) in [0, 1] left by a union of closed intervals (M', 2)."""
    gaps, end = [], 0.0
    for lo, hi in sorted(intervals.tolist()):
        if lo > end:
            gaps.append((end, lo))
        end = max(end, hi)
    if end < 1.0:
        gaps.append((end, 1.0))
    return torch.tensor(gaps, dtype=torch.float64).reshape(-1, 2)


def union_length(intervals: torch.Tensor) -> float:
    """Total length of a union of closed intervals (M, 2)."""
    total, end = 0.0, -float("inf")
    for lo, hi in sorted(intervals.tolist()):
        if hi <= end:
            continue
        total += hi - max(lo, end)
        end = hi
    return total


@dataclass(frozen=True, eq=False)
class SegmentReport:
    """What is known of a spec along one segment: the verdict (a Result: FALSIFIED carries the
    image at t* re-run on the concrete graph), the robust fraction bounds ``lower ≤ fraction ≤
    upper`` (equal when exact), the t-intervals where the spec fails (exact: all of them;
    bounds: the pieces proved violated everywhere) and the t-intervals proved robust (exact:
    the complement of the violations; bounds: the pieces proved), each (M, 2)."""

    result: Result
    fraction_lower: float
    fraction_upper: float
    violations: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 2))
    t_star: float | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    proved: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 2))


def confirm_violation(graph: Graph, start: torch.Tensor, end: torch.Tensor, spec: OutputSpec,
                      candidates: list[float]) -> tuple[float, Counterexample] | None:
    """The first parameter t among ``candidates`` whose point, run on the concrete graph (in
    its own dtype), violates ``spec``; None when none does."""
    found = _confirm_many(graph, as_points(graph, start, "start"), as_points(graph, end, "end"),
                          spec, [candidates])
    return found[0]


def _confirm_many(graph: Graph, a: torch.Tensor, b: torch.Tensor, spec: OutputSpec,
                  candidates: list[list[float]], first: int = 1
                  ) -> list[tuple[float, Counterexample] | None]:
    """For each segment s: the first t in ``candidates[s]`` whose point a[s] + t·(b[s] − a[s])
    violates spec[s] (spec batch S or 1) on the concrete graph. Batched: the first ``first``
    candidates of every segment in one forward pass, then all the rest of the unconfirmed."""
    spec = spec.to(dtype=graph.dtype, device=graph.device)
    found: list[tuple[float, Counterexample] | None] = [None] * len(candidates)
    for lo, hi in ((0, first), (first, None)):
        todo = [(s, t) for s, c in enumerate(candidates) if found[s] is None for t in c[lo:hi]]
        if not todo:
            continue
        s_idx = torch.tensor([s for s, _ in todo], device=graph.device)
        t = torch.tensor([t for _, t in todo], dtype=graph.dtype, device=graph.device)
        x = a[s_idx] + t.reshape(-1, *([1] * (a.dim() - 1))) * (b[s_idx] - a[s_idx])
        with torch.no_grad():
            y = graph.forward(x)
        sp = spec[s_idx] if spec.batch_size > 1 else spec.expand(len(todo))
        bad = (~sp.holds(y.flatten(1))).tolist()
        for k, (s, tk) in enumerate(todo):
            if bad[k] and found[s] is None:
                found[s] = (tk, Counterexample(x[k].detach().cpu(), y[k].detach().cpu()))
    return found


def _candidates(intervals: torch.Tensor, limit: int = 64) -> list[float]:
    """Midpoints first, then ends, of the longest violation intervals."""
    order = torch.argsort(intervals[:, 1] - intervals[:, 0], descending=True)[:limit]
    iv = intervals[order].tolist()
    return [(lo + hi) / 2 for lo, hi in iv] + [v for lo, hi in iv for v in (lo, hi)]


def certify_segments_exact(graph: Graph, starts: torch.Tensor, ends: torch.Tensor,
                           spec: OutputSpec, tol: float = 1e-9, chunk: int = 64
                           ) -> list[SegmentReport]:
    """Decide ``spec`` (batch S, or 1 for every segment) on each whole segment
    ``starts[s] → ends[s]`` with batched ExactLine (piecewise-linear graphs only), ``chunk``
    segments per pass.

    VERIFIED when every clause keeps a row above ``tol·(1 + max|y|)`` everywhere on the pieces
    (a margin against float64 rounding; max over the segment's breakpoints); FALSIFIED with t*
    when a point of a violation interval fails on the concrete graph; UNKNOWN otherwise (a
    violation within rounding of zero). The robust fraction is exact for the real-valued
    pieces. Each report's time is its chunk's time over the chunk's segments."""
    from .. import clock

    if chunk < 1:
        raise ConfigError("chunk must be ≥ 1")
    a, b = as_points(graph, starts, "start"), as_points(graph, ends, "end")
    if spec.batch_size not in (1, a.shape[0]):
        raise ShapeError("segment spec batch", (a.shape[0],), (spec.batch_size,))
    out: list[SegmentReport] = []
    for lo in range(0, a.shape[0], chunk):
        t0 = clock.now()
        sp = spec if spec.batch_size == 1 else spec[lo:lo + chunk]
        out += _decide(graph, a[lo:lo + chunk], b[lo:lo + chunk], sp, tol, t0)
    return out


def _decide(graph: Graph, a: torch.Tensor, b: torch.Tensor, spec: OutputSpec, tol: float,
            t0: float) -> list[SegmentReport]:
    from .. import clock

    S = a.shape[0]
    lines = exact_flat(graph, a, b)
    scale = torch.zeros(S, dtype=torch.float64, device=lines.ts.device).scatter_reduce(
        0, lines.seg, lines.outputs.abs().amax(-1), "amax") + 1.0
    exact = _violations(lines, spec, torch.zeros_like(scale))
    strict = _violations(lines, spec, tol * scale)
    fraction = (1.0 - _violated_length(exact, S)).tolist()
    ex_iv, st_iv = _intervals(exact, S), _intervals(strict, S)
    flagged = [s for s in range(S) if st_iv[s].shape[0]]
    found = dict(zip(flagged, _confirm_many(
        graph, a[flagged], b[flagged], spec if spec.batch_size == 1 else spec[flagged],
        [_candidates(torch.cat([ex_iv[s], st_iv[s]])) for s in flagged]))) if flagged else {}
    each = (clock.now() - t0) / S
    pieces = (lines.counts - 1).tolist()
    out = []
    for s in range(S):
        stats = {"pieces": pieces[s], "violation_intervals": int(ex_iv[s].shape[0])}
        verdict, cex, t_star = Verdict.VERIFIED, None, None
        if s in found:
            verdict = Verdict.UNKNOWN if found[s] is None else Verdict.FALSIFIED
            if found[s] is not None:
                t_star, cex = found[s]
                stats["t_star"] = t_star
        res = Result(verdict, "exactline", each, counterexample=cex, stats=stats)
        out.append(SegmentReport(res, fraction[s], fraction[s], ex_iv[s], t_star, stats,
                                 complement(ex_iv[s])))
    return out


def certify_segment_exact(graph: Graph, start: torch.Tensor, end: torch.Tensor,
                          spec: OutputSpec, tol: float = 1e-9) -> SegmentReport:
    """:func:`certify_segments_exact` on one segment (spec batch 1)."""
    if spec.batch_size != 1:
        raise ShapeError("segment spec batch", (1,), (spec.batch_size,))
    a, b = _as_point(graph, start, "start"), _as_point(graph, end, "end")
    return certify_segments_exact(graph, a[None], b[None], spec, tol)[0]
