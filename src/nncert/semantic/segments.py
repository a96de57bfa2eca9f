"""Segments as inputs: the graph over the segment parameter t, and ExactLine.

A segment is ``{z + t·(z' − z) : t ∈ [0, 1]}`` in the input space of a graph (pixels, or the
latent space of a generator G composed with a classifier f, see ``models.graph.compose``).

* :func:`segment_graph` prepends the affine node ``t ↦ z + t·(z' − z)``: the result is a graph
  of one input, so every bound method (interval, zonotope, CROWN, alpha-CROWN) and every search
  runs unchanged on a Box of t-intervals (:func:`segment_problem`).
* :func:`exact_line` is ExactLine (Sotoudeh & Thakur, "Computing Linear Restrictions of Neural
  Networks", NeurIPS 2019): the exact partition of [0, 1] into the pieces on which a piecewise
  linear graph is affine, with the outputs at the breakpoints.
* :func:`certify_segment_exact` decides the output spec on the whole segment from those pieces:
  verified, or falsified with a parameter t* whose image is misclassified (re-run on the
  concrete graph), and the exact robust fraction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import ConfigError, ShapeError, UnsupportedOpError
from ..models import ops
from ..models.graph import Graph, compose, sequential
from ..result import Counterexample, Result, Verdict
from ..specs.input_sets import Box
from ..specs.output import OutputSpec
from ..specs.problem import VerificationProblem

#: ops ExactLine handles (affine and linear multi-input ops pass through unchanged)
PIECEWISE_LINEAR = (ops.ReLU, ops.LeakyReLU, ops.MaxPool2d)


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


# -- ExactLine ----------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class LinePieces:
    """The graph's output is affine in t on each ``[ts[i], ts[i+1]]`` (ts sorted, ts[0] = 0,
    ts[-1] = 1); ``outputs[i]`` is the concrete output at ``ts[i]`` (float64, flattened)."""

    ts: torch.Tensor  # (P + 1,)
    outputs: torch.Tensor  # (P + 1, n_out)

    @property
    def num_pieces(self) -> int:
        return self.ts.numel() - 1

    def evaluate(self, t: torch.Tensor) -> torch.Tensor:
        """The piecewise affine interpolant at parameters t (M,) → (M, n_out)."""
        return _interpolate(self.ts, self.outputs, t.to(self.ts.dtype))

    def slopes(self) -> torch.Tensor:
        """d output / dt on each piece, (P, n_out)."""
        return (self.outputs[1:] - self.outputs[:-1]) / (self.ts[1:] - self.ts[:-1])[:, None]


def _interpolate(ts: torch.Tensor, v: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of the values v (P, *s) given at ts (P,), at the points new (M,);
    points equal to a ts entry get that entry's value exactly."""
    P = ts.numel()
    idx = (torch.searchsorted(ts, new, right=True) - 1).clamp(0, P - 2)
    w = ((new - ts[idx]) / (ts[idx + 1] - ts[idx])).reshape(-1, *([1] * (v.dim() - 1)))
    out = v[idx] + w * (v[idx + 1] - v[idx])
    out = torch.where(w == 0, v[idx], out)
    return torch.where(w == 1, v[idx + 1], out)


def _crossings(ts: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Parameters strictly inside a piece where a column of v (P, n) changes sign."""
    a, b = v[:-1], v[1:]
    cross = ((a < 0) & (b > 0)) | ((a > 0) & (b < 0))
    if not bool(cross.any()):
        return ts.new_zeros(0)
    i, j = cross.nonzero(as_tuple=True)
    t0, t1 = ts[i], ts[i + 1]
    t = t0 + (t1 - t0) * (a[i, j] / (a[i, j] - b[i, j]))
    return t[(t > t0) & (t < t1)]


def _pool_crossings(op: ops.MaxPool2d, node: str, ts: torch.Tensor, x: torch.Tensor
                    ) -> torch.Tensor:
    """Where two members of a pooling window swap order: a superset of where the max changes
    its argmax, so the max is affine between consecutive points."""
    if op.padding != (0, 0):
        raise UnsupportedOpError("MaxPool2d with padding", node, "ExactLine")
    P, C = x.shape[:2]
    win = F.unfold(x, op.kernel, op.dilation, 0, op.stride)
    k = op.kernel[0] * op.kernel[1]
    win = win.reshape(P, C, k, -1)
    ii, jj = torch.triu_indices(k, k, 1)
    diffs = (win[:, :, ii] - win[:, :, jj]).reshape(P, -1)
    return _crossings(ts, diffs)


def _new_points(node, ts: torch.Tensor, xs: list[torch.Tensor]) -> torch.Tensor:
    if isinstance(node.op, (ops.ReLU, ops.LeakyReLU)):
        return _crossings(ts, xs[0].reshape(ts.numel(), -1))
    return _pool_crossings(node.op, node.name, ts, xs[0])


def _check_ops(graph: Graph) -> None:
    for n in graph.nodes:
        if not isinstance(n.op, (ops.AffineOp, ops.LinearMultiOp, *PIECEWISE_LINEAR)):
            raise UnsupportedOpError(n.op.kind, n.name, "ExactLine (piecewise-linear graphs only)",
                                     ["affine ops", "Add", "Sub", "Concat", "ReLU", "LeakyReLU",
                                      "MaxPool2d"])


def exact_line(graph: Graph, start: torch.Tensor, end: torch.Tensor,
               max_points: int = 1_000_000) -> LinePieces:
    """ExactLine: the breakpoints of ``t ↦ graph(start + t·(end − start))`` on [0, 1] and the
    concrete outputs there, in float64.

    Every node's values are kept at the current breakpoints; at a ReLU (or a max-pool window)
    the points where its input changes sign (or where two window members swap) are inserted,
    the values of every earlier node there being the linear interpolants (exact: those nodes
    are affine on the piece). The final outputs are re-evaluated on the concrete float64 graph
    at the breakpoints. Raises UnsupportedOpError for a non piecewise-linear op and ConfigError
    past ``max_points`` breakpoints."""
    _check_ops(graph)
    g = as_float64(graph)
    a, b = _as_point(g, start, "start"), _as_point(g, end, "end")
    ts = torch.tensor([0.0, 1.0], dtype=torch.float64, device=g.device)
    vals = {g.input_name: torch.stack([a, b])}
    last_use = _last_use(g)
    for k, node in enumerate(g.nodes):
        xs = [vals[s] for s in node.inputs]
        if isinstance(node.op, PIECEWISE_LINEAR):
            new = _new_points(node, ts, xs)
            if new.numel():
                merged = torch.unique(torch.cat([ts, new]))  # sorted
                if merged.numel() > max_points:
                    raise ConfigError(f"ExactLine: more than {max_points} breakpoints at node "
                                      f"{node.name!r}")
                vals = {n: _interpolate(ts, v, merged) for n, v in vals.items()}
                ts, xs = merged, [vals[s] for s in node.inputs]
        vals[node.name] = node.op.forward(*xs)
        for s in set(node.inputs):
            if last_use[s] <= k and s != g.output_name:
                del vals[s]  # no later node reads it: never interpolated again
    with torch.no_grad():
        y = g.forward(a + ts.reshape(-1, *([1] * len(g.input_shape))) * (b - a))
    return LinePieces(ts, y.reshape(ts.numel(), -1))


def _last_use(g: Graph) -> dict[str, int]:
    """Index of the last node reading each value (the output is read 'at the end')."""
    last = {g.input_name: -1, **{n.name: len(g.nodes) for n in g.nodes}}
    for k, n in enumerate(g.nodes):
        for s in n.inputs:
            last[s] = k
    last[g.output_name] = len(g.nodes)
    return last


def as_float64(graph: Graph) -> Graph:
    """The graph in float64 (itself when it already is)."""
    return graph if graph.dtype == torch.float64 else graph.to(dtype=torch.float64)


# -- deciding a spec on the pieces -----------------------------------------------------------
def _row_violation(ra: torch.Tensor, rb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For affine rows with values ra at s = 0 and rb at s = 1: the s-interval in [0, 1] where
    the row is ≤ 0, as (lo, hi); empty when lo > hi."""
    s = ra / (ra - rb).where(ra != rb, torch.ones_like(ra))
    lo = torch.where(ra <= 0, torch.zeros_like(ra), torch.where(rb <= 0, s, torch.full_like(ra, 2)))
    hi = torch.where(rb <= 0, torch.ones_like(ra), torch.where(ra <= 0, s, torch.full_like(ra, -1)))
    return lo, hi


def violation_intervals(pieces: LinePieces, spec: OutputSpec, tol: float = 0.0
                        ) -> torch.Tensor:
    """The t-intervals (M, 2) on which ``spec`` (batch 1) fails, i.e. some clause has every
    row ≤ ``tol``; exact for the piecewise affine outputs (each clause's violation set on a
    piece is an intersection of intervals). Points (lo == hi) are included."""
    rows = spec.to(dtype=torch.float64, device=pieces.ts.device).values(
        pieces.outputs[:, None, :])[:, 0] - tol  # (P + 1, R)
    lo, hi = _row_violation(rows[:-1], rows[1:])  # (P, R)
    t0, t1 = pieces.ts[:-1], pieces.ts[1:]
    found = []
    for clause in spec.clauses:
        c_lo, c_hi = lo[:, list(clause)].amax(-1), hi[:, list(clause)].amin(-1)
        keep = c_lo <= c_hi
        span = t1[keep] - t0[keep]
        found.append(torch.stack([t0[keep] + c_lo[keep] * span, t0[keep] + c_hi[keep] * span], -1))
    out = torch.cat(found)
    return out[torch.argsort(out[:, 0])] if out.numel() else out.reshape(0, 2)


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
    upper`` (equal when exact), and the t-intervals where the spec fails."""

    result: Result
    fraction_lower: float
    fraction_upper: float
    violations: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 2))
    t_star: float | None = None
    stats: dict[str, Any] = field(default_factory=dict)


def confirm_violation(graph: Graph, start: torch.Tensor, end: torch.Tensor, spec: OutputSpec,
                      candidates: list[float]) -> tuple[float, Counterexample] | None:
    """The first parameter t among ``candidates`` whose point, run on the concrete graph (in
    its own dtype), violates ``spec``; None when none does."""
    a, b = _as_point(graph, start, "start"), _as_point(graph, end, "end")
    spec = spec.to(dtype=graph.dtype, device=graph.device)
    for t in candidates:
        x = (a + t * (b - a)).unsqueeze(0)
        with torch.no_grad():
            y = graph.forward(x)
        if not bool(spec.holds(y.flatten(1))[0]):
            return t, Counterexample(x[0].detach().cpu(), y[0].detach().cpu())
    return None


def _candidates(intervals: torch.Tensor, limit: int = 64) -> list[float]:
    """Midpoints first, then ends, of the longest violation intervals."""
    order = torch.argsort(intervals[:, 1] - intervals[:, 0], descending=True)[:limit]
    iv = intervals[order].tolist()
    return [(lo + hi) / 2 for lo, hi in iv] + [v for lo, hi in iv for v in (lo, hi)]


def certify_segment_exact(graph: Graph, start: torch.Tensor, end: torch.Tensor,
                          spec: OutputSpec, tol: float = 1e-9) -> SegmentReport:
    """Decide ``spec`` on the whole segment with ExactLine (piecewise-linear graphs only).

    VERIFIED when every clause keeps a row above ``tol·(1 + max|y|)`` everywhere on the pieces
    (a margin against float64 rounding); FALSIFIED with t* when a point of a violation interval
    fails on the concrete graph; UNKNOWN otherwise (a violation within rounding of zero). The
    robust fraction is exact for the real-valued pieces."""
    from .. import clock

    t0 = clock.now()
    pieces = exact_line(graph, start, end)
    scale = 1.0 + float(pieces.outputs.abs().max())
    strict = violation_intervals(pieces, spec, tol * scale)
    exact = violation_intervals(pieces, spec, 0.0)
    fraction = 1.0 - union_length(exact)
    stats = {"pieces": pieces.num_pieces, "violation_intervals": int(exact.shape[0])}
    if strict.shape[0] == 0:
        res = Result(Verdict.VERIFIED, "exactline", clock.now() - t0, stats=stats)
        return SegmentReport(res, fraction, fraction, exact, None, stats)
    found = confirm_violation(graph, start, end, spec, _candidates(torch.cat([exact, strict])))
    if found is None:
        res = Result(Verdict.UNKNOWN, "exactline", clock.now() - t0, stats=stats)
        return SegmentReport(res, fraction, fraction, exact, None, stats)
    t_star, cex = found
    stats["t_star"] = t_star
    res = Result(Verdict.FALSIFIED, "exactline", clock.now() - t0, counterexample=cex, stats=stats)
    return SegmentReport(res, fraction, fraction, exact, t_star, stats)
