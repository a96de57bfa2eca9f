"""ExactLine, batched: the exact affine pieces of a piecewise-linear graph along many segments.

ExactLine (Sotoudeh & Thakur, "Computing Linear Restrictions of Neural Networks", NeurIPS
2019) partitions the parameter interval [0, 1] of a segment ``x(t) = a + t·(b − a)`` into the
pieces on which ``t ↦ graph(x(t))`` is affine. Here all segments of a call are processed
together: the breakpoints of every segment are kept in one flat, sorted array (segment id,
then t), so each node runs once per call on every breakpoint of every segment (one matrix
product per layer), and the crossings of a ReLU (or the order swaps inside a max-pool window)
are found for all neurons and all pieces at once. Everything is float64.

Promise: between consecutive breakpoints of a segment no ReLU / LeakyReLU input changes sign
and no two members of a pooling window change order, up to float64 rounding of the crossing
parameters, so the graph is affine there; the outputs at the breakpoints equal the concrete
float64 graph's there up to the rounding of the interpolation of affine values (earlier nodes'
values at a new breakpoint are interpolated between its neighbours, exact in real arithmetic).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import ConfigError, ShapeError, UnsupportedOpError
from ..models import ops
from ..models.graph import Graph

#: ops ExactLine handles (affine and linear multi-input ops pass through unchanged)
PIECEWISE_LINEAR = (ops.ReLU, ops.LeakyReLU, ops.MaxPool2d)


@dataclass(frozen=True, eq=False)
class LinePieces:
    """The graph's output is affine in t on each ``[ts[i], ts[i+1]]`` (ts sorted, ts[0] = 0,
    ts[-1] = 1); ``outputs[i]`` is the output at ``ts[i]`` (float64, flattened)."""

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


@dataclass(frozen=True, eq=False)
class FlatLines:
    """The breakpoints of S segments in one array: ``seg[k]`` is the segment of breakpoint k,
    ``ts[k]`` its parameter and ``outputs[k]`` the output there; sorted by (seg, t), every
    segment from t = 0 to t = 1. ``counts[s]`` = breakpoints of segment s."""

    seg: torch.Tensor  # (N,) long
    ts: torch.Tensor  # (N,) float64
    outputs: torch.Tensor  # (N, n_out)
    counts: torch.Tensor  # (S,) long

    def pieces(self) -> list[LinePieces]:
        sizes = self.counts.tolist()
        return [LinePieces(t, y) for t, y in zip(self.ts.split(sizes), self.outputs.split(sizes))]


def _interpolate(ts: torch.Tensor, v: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of the values v (P, *s) given at ts (P,), at the points new (M,);
    points equal to a ts entry get that entry's value exactly."""
    P = ts.numel()
    idx = (torch.searchsorted(ts, new, right=True) - 1).clamp(0, P - 2)
    w = ((new - ts[idx]) / (ts[idx + 1] - ts[idx])).reshape(-1, *([1] * (v.dim() - 1)))
    out = v[idx] + w * (v[idx + 1] - v[idx])
    out = torch.where(w == 0, v[idx], out)
    return torch.where(w == 1, v[idx + 1], out)


# -- where new breakpoints go ------------------------------------------------------------------
def _crossings(ts: torch.Tensor, same: torch.Tensor, v: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(interval index i, parameter t) strictly inside [ts[i], ts[i+1]] where a column of v
    (N, n) changes sign, for the intervals with ``same[i]`` (both ends on one segment)."""
    pos = v > 0
    i, j = (pos[:-1] != pos[1:]).nonzero(as_tuple=True)  # one side > 0, the other ≤ 0
    va, vb = v[i, j], v[i + 1, j]
    keep = same[i] & ((va < 0) | (vb < 0))  # strictly opposite signs, on one segment
    i, va, vb = i[keep], va[keep], vb[keep]
    t0, t1 = ts[i], ts[i + 1]
    t = t0 + (t1 - t0) * (va / (va - vb))
    inside = (t > t0) & (t < t1)
    return i[inside], t[inside]


def _pool_diffs(op: ops.MaxPool2d, node: str, x: torch.Tensor) -> torch.Tensor:
    """Differences of every pair of members of every pooling window, (N, pairs): where none
    changes sign the max keeps its argmax, so it is affine."""
    if op.padding != (0, 0):
        raise UnsupportedOpError("MaxPool2d with padding", node, "ExactLine")
    N, C = x.shape[:2]
    win = F.unfold(x, op.kernel, op.dilation, 0, op.stride)
    k = op.kernel[0] * op.kernel[1]
    win = win.reshape(N, C, k, -1)
    ii, jj = torch.triu_indices(k, k, 1)
    return (win[:, :, ii] - win[:, :, jj]).reshape(N, -1)


def _switches(node, x: torch.Tensor) -> torch.Tensor:
    """The values whose sign changes are the node's breakpoints, (N, n)."""
    if isinstance(node.op, (ops.ReLU, ops.LeakyReLU)):
        return x.reshape(x.shape[0], -1)
    return _pool_diffs(node.op, node.name, x)


# -- inserting breakpoints ---------------------------------------------------------------------
@dataclass
class _State:
    seg: torch.Tensor
    ts: torch.Tensor
    vals: dict[str, torch.Tensor]


def _insert(state: _State, i: torch.Tensor, t: torch.Tensor) -> None:
    """Insert the parameters t, each strictly inside interval i (any order, duplicates
    allowed), keeping (seg, t) sorted; every stored value is interpolated there."""
    order = torch.argsort(t, stable=True)
    i, t = i[order], t[order]
    order = torch.argsort(i, stable=True)
    i, t = i[order], t[order]
    keep = torch.ones_like(i, dtype=torch.bool)
    keep[1:] = (i[1:] != i[:-1]) | (t[1:] != t[:-1])
    i, t = i[keep], t[keep]
    N, K = state.ts.numel(), i.numel()
    ar = torch.arange(max(N, K), device=i.device)
    at_old = ar[:N] + torch.searchsorted(i, ar[:N])  # old point j: after the new ones before it
    at_new = i + 1 + ar[:K]  # k-th new point: after old points 0..i_k and k new ones
    t0 = state.ts[i]
    w = (t - t0) / (state.ts[i + 1] - t0)
    for name, v in state.vals.items():
        lo = v[i]
        wv = w.reshape(-1, *([1] * (v.dim() - 1)))
        state.vals[name] = _merge(v, lo + wv * (v[i + 1] - lo), at_old, at_new)
    state.ts = _merge(state.ts, t, at_old, at_new)
    state.seg = _merge(state.seg, state.seg[i], at_old, at_new)


def _merge(old: torch.Tensor, new: torch.Tensor, at_old: torch.Tensor, at_new: torch.Tensor
           ) -> torch.Tensor:
    out = old.new_empty((old.shape[0] + new.shape[0], *old.shape[1:]))
    return out.index_copy_(0, at_old, old).index_copy_(0, at_new, new)


def _last_use(g: Graph) -> dict[str, int]:
    """Index of the last node reading each value (the output is read 'at the end')."""
    last = {g.input_name: -1, **{n.name: len(g.nodes) for n in g.nodes}}
    for k, n in enumerate(g.nodes):
        for s in n.inputs:
            last[s] = k
    last[g.output_name] = len(g.nodes)
    return last


def check_ops(graph: Graph) -> None:
    """UnsupportedOpError unless every op is affine, linear multi-input or piecewise linear."""
    for n in graph.nodes:
        if not isinstance(n.op, (ops.AffineOp, ops.LinearMultiOp, *PIECEWISE_LINEAR)):
            raise UnsupportedOpError(n.op.kind, n.name, "ExactLine (piecewise-linear graphs only)",
                                     ["affine ops", "Add", "Sub", "Concat", "ReLU", "LeakyReLU",
                                      "MaxPool2d"])


def as_float64(graph: Graph) -> Graph:
    """The graph in float64 (itself when it already is)."""
    return graph if graph.dtype == torch.float64 else graph.to(dtype=torch.float64)


def as_points(graph: Graph, x: torch.Tensor, what: str) -> torch.Tensor:
    """``x`` as a batch (S, *input_shape) of finite points in the graph's dtype; one point
    (without the batch dim) becomes a batch of one."""
    x = torch.as_tensor(x, dtype=graph.dtype, device=graph.device)
    n = graph.num_inputs
    if x.numel() == n:
        x = x.reshape(1, -1)
    if x.dim() < 1 or x.numel() == 0 or x.numel() != x.shape[0] * n:
        raise ShapeError(f"segment {what} vs model input", graph.input_shape, tuple(x.shape))
    if not bool(torch.isfinite(x).all()):
        raise ConfigError(f"segment {what} contains NaN or infinite values")
    return x.reshape(x.shape[0], *graph.input_shape)


# -- the engine --------------------------------------------------------------------------------
def exact_flat(graph: Graph, starts: torch.Tensor, ends: torch.Tensor,
               max_points: int = 1_000_000) -> FlatLines:
    """ExactLine on the segments ``starts[s] → ends[s]`` (S, *input_shape), all at once (see
    the module docstring); the graph is used in float64. Raises UnsupportedOpError for a non
    piecewise-linear op and ConfigError when a segment passes ``max_points`` breakpoints."""
    check_ops(graph)
    g = as_float64(graph)
    a, b = as_points(g, starts, "start"), as_points(g, ends, "end")
    if a.shape[0] != b.shape[0]:
        raise ShapeError("segment ends vs starts", tuple(a.shape), tuple(b.shape))
    S = a.shape[0]
    seg = torch.arange(S, device=g.device).repeat_interleave(2)
    ts = torch.tensor([0.0, 1.0], dtype=torch.float64, device=g.device).repeat(S)
    x = torch.stack([a, b], 1).reshape(2 * S, *g.input_shape)
    state = _State(seg, ts, {g.input_name: x})
    last_use = _last_use(g)
    for k, node in enumerate(g.nodes):
        if isinstance(node.op, PIECEWISE_LINEAR):
            same = state.seg[:-1] == state.seg[1:]
            i, t = _crossings(state.ts, same, _switches(node, state.vals[node.inputs[0]]))
            if i.numel():
                _insert(state, i, t)
                most = int(torch.bincount(state.seg, minlength=S).max())
                if most > max_points:
                    raise ConfigError(f"ExactLine: more than {max_points} breakpoints at node "
                                      f"{node.name!r}")
        state.vals[node.name] = node.op.forward(*(state.vals[s] for s in node.inputs))
        for s in set(node.inputs):
            if last_use[s] <= k and s != g.output_name:
                del state.vals[s]  # no later node reads it: never interpolated again
    out = state.vals[g.output_name]
    counts = torch.bincount(state.seg, minlength=S)
    return FlatLines(state.seg, state.ts, out.reshape(out.shape[0], -1), counts)


def exact_lines(graph: Graph, starts: torch.Tensor, ends: torch.Tensor,
                max_points: int = 1_000_000, chunk: int = 64) -> list[LinePieces]:
    """ExactLine on each segment ``starts[s] → ends[s]``: its breakpoints and the outputs
    there, ``chunk`` segments per batched pass (memory grows with chunk × breakpoints ×
    layer width)."""
    if chunk < 1:
        raise ConfigError("chunk must be ≥ 1")
    g = as_float64(graph)
    a, b = as_points(g, starts, "start"), as_points(g, ends, "end")
    out: list[LinePieces] = []
    for lo in range(0, a.shape[0], chunk):
        out += exact_flat(g, a[lo:lo + chunk], b[lo:lo + chunk], max_points).pieces()
    return out


def exact_line(graph: Graph, start: torch.Tensor, end: torch.Tensor,
               max_points: int = 1_000_000) -> LinePieces:
    """ExactLine on one segment: the breakpoints of ``t ↦ graph(start + t·(end − start))`` on
    [0, 1] and the outputs there, in float64."""
    g = as_float64(graph)
    a, b = _one(g, start, "start"), _one(g, end, "end")
    return exact_flat(g, a, b, max_points).pieces()[0]


def _one(graph: Graph, x: torch.Tensor, what: str) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.numel() != graph.num_inputs:
        raise ShapeError(f"segment {what} vs model input", graph.input_shape, tuple(x.shape))
    return as_points(graph, x, what)
