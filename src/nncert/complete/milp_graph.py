"""Exact MILP encoding over the graph IR, solved by HiGHS: an ``{op: encoder}`` table.

Every node's value is an affine expression over the MILP's variables, ``M·v + c`` with ``M`` a
sparse matrix (one row per neuron). Affine ops compose expressions through sparse maps built
from their index pattern (a convolution's map has one entry per weight use; no layer is ever
expanded into a dense matrix of the layer). ReLU, LeakyReLU and MaxPool add variables and big-M
constraints whose constants are sound bounds of their inputs (from ``nncert.bounds``): for a
ReLU with bounds ``l < 0 < u``, ``a ≥ z, a ≥ 0, a ≤ u·δ, a ≤ z − l·(1 − δ), δ ∈ {0, 1}``.
With sound bounds the encoding is exact: its feasible (input, output) pairs are exactly the
network's. Sigmoid and Tanh have no exact encoding and are rejected by name.

Each clause of the property is one MILP: minimise ``t`` subject to ``C_r·y + d_r ≤ t`` for the
clause's rows, with HiGHS's objective cutoff at 0, so the search stops as soon as the minimum is
provably > 0 (clause proved) or a point with ``t ≤ 0`` appears (a candidate counterexample,
which the caller re-checks on the concrete network).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from ..bounds.core import Interval
from ..clock import NEVER, Deadline, DeadlineExceededError
from ..errors import UnsupportedOpError
from ..models import ops
from ..models.graph import Graph, Node
from ..specs.output import OutputSpec

WHERE = "the MILP encoding"


@dataclass(frozen=True)
class Expr:
    """Values of one node, flattened: ``M @ v + c`` with ``M`` (n, vars) sparse."""

    M: sp.csr_matrix
    c: np.ndarray


class Model:
    """Variables (bounds, integrality) and rows ``lo ≤ A·v ≤ hi`` being collected."""

    def __init__(self) -> None:
        self.lb: list[np.ndarray] = []
        self.ub: list[np.ndarray] = []
        self.integer: list[np.ndarray] = []
        self.n = 0
        self.rows: list[tuple[sp.csr_matrix, np.ndarray, np.ndarray]] = []

    def add_vars(self, lb: np.ndarray, ub: np.ndarray, integer: bool = False) -> np.ndarray:
        k = len(lb)
        self.lb.append(np.asarray(lb, np.float64))
        self.ub.append(np.asarray(ub, np.float64))
        self.integer.append(np.full(k, integer))
        idx = np.arange(self.n, self.n + k)
        self.n += k
        return idx

    def fresh(self, idx: np.ndarray) -> Expr:
        """The expression of variables ``idx`` themselves."""
        M = sp.csr_matrix((np.ones(len(idx)), (np.arange(len(idx)), idx)), shape=(len(idx), self.n))
        return Expr(M, np.zeros(len(idx)))

    def add_rows(self, A: sp.spmatrix, lo, hi) -> None:
        k = A.shape[0]
        self.rows.append((sp.csr_matrix(A), np.broadcast_to(np.asarray(lo, np.float64), (k,)),
                          np.broadcast_to(np.asarray(hi, np.float64), (k,))))

    def matrix(self) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
        blocks = [_widen(A, self.n) for A, _, _ in self.rows]
        A = sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, self.n))
        lo = np.concatenate([r[1] for r in self.rows]) if self.rows else np.zeros(0)
        hi = np.concatenate([r[2] for r in self.rows]) if self.rows else np.zeros(0)
        return A, lo, hi


def _widen(M: sp.spmatrix, n: int) -> sp.csr_matrix:
    M = sp.csr_matrix(M)
    if M.shape[1] == n:
        return M
    return sp.csr_matrix((M.data, M.indices, M.indptr), shape=(M.shape[0], n))


def _affine_expr(S: sp.spmatrix, bias: np.ndarray, x: Expr, n_vars: int) -> Expr:
    return Expr(sp.csr_matrix(S @ _widen(x.M, n_vars)), S @ x.c + bias)


# -- sparse maps of affine ops (n_out × n_in), never dense for conv / pooling ------------------
def _index_image(shape: tuple[int, ...]) -> torch.Tensor:
    """(1, *shape) float64 tensor holding 1 + the flat index of each entry (0 marks padding)."""
    return torch.arange(1, math.prod(shape) + 1, dtype=torch.float64).reshape(1, *shape)


def _selection_map(op: ops.AffineOp, in_shape, out_shape) -> sp.csr_matrix:
    """Ops whose linear part copies entries (Flatten, Reshape, Transpose, Pad)."""
    src = op.linear(_index_image(in_shape)).reshape(-1).round().long().numpy()
    rows = np.flatnonzero(src > 0)
    return sp.csr_matrix((np.ones(len(rows)), (rows, src[rows] - 1)),
                         shape=(math.prod(out_shape), math.prod(in_shape)))


def _windows(in_shape, kernel, stride, padding, dilation, out_hw) -> np.ndarray:
    """(C·kh·kw, L) input indices + 1 of every window position (0: padding)."""
    cols = F.unfold(_index_image(in_shape), kernel, dilation=dilation, padding=padding,
                    stride=stride)[0]
    assert cols.shape[1] == out_hw[0] * out_hw[1]
    return cols.round().long().numpy()


def _conv_map(op: ops.Conv2d, in_shape, out_shape) -> sp.csr_matrix:
    c_out, _, h_out, w_out = (op.weight.shape[0], None, *out_shape[1:])
    kh, kw = op.weight.shape[2:]
    cols = _windows(in_shape, (kh, kw), op.stride, op.padding, op.dilation, (h_out, w_out))
    K, L = op.weight[0].numel(), h_out * w_out
    per_group = c_out // op.groups
    W = op.weight.detach().double().reshape(c_out, K).cpu().numpy()
    group = np.arange(c_out) // per_group
    idx = cols.reshape(op.groups, K, L)[group]  # (C_out, K, L)
    vals = np.broadcast_to(W[:, :, None], idx.shape)
    rows = np.broadcast_to((np.arange(c_out)[:, None] * L + np.arange(L)[None, :])[:, None, :], idx.shape)
    keep = idx > 0
    return sp.csr_matrix((vals[keep], (rows[keep], idx[keep] - 1)),
                         shape=(math.prod(out_shape), math.prod(in_shape)))


def _avgpool_map(op: ops.AvgPool2d, in_shape, out_shape) -> sp.csr_matrix:
    C, h_out, w_out = out_shape
    cols = _windows((1, *in_shape[1:]), op.kernel, op.stride, op.padding, (1, 1), (h_out, w_out))
    K, L = cols.shape
    hw = in_shape[1] * in_shape[2]
    count = np.full(L, float(K)) if op.count_include_pad else np.maximum((cols > 0).sum(0), 1)
    idx = np.where(cols[None] > 0, cols[None] + (np.arange(C) * hw)[:, None, None], 0)
    rows = np.broadcast_to((np.arange(C)[:, None] * L + np.arange(L)[None, :])[:, None, :], idx.shape)
    vals = np.broadcast_to((1.0 / count)[None, None, :], idx.shape)
    keep = idx > 0
    return sp.csr_matrix((vals[keep], (rows[keep], idx[keep] - 1)),
                         shape=(math.prod(out_shape), math.prod(in_shape)))


def _linear_map(op: ops.Linear, in_shape, out_shape) -> sp.csr_matrix:
    W = sp.csr_matrix(op.weight.detach().double().cpu().numpy())
    prefix = math.prod(in_shape[:-1])
    return W if prefix == 1 else sp.csr_matrix(sp.kron(sp.identity(prefix), W))


def _elementwise_map(op: ops.ElementwiseAffine, in_shape, out_shape) -> sp.csr_matrix:
    scale = torch.ones(in_shape, dtype=torch.float64) if op.scale is None else \
        torch.broadcast_to(op.scale.detach().double().cpu(), in_shape)
    return sp.diags(scale.reshape(-1).numpy()).tocsr()


AFFINE_MAPS: dict[type, Callable] = {
    ops.Linear: _linear_map, ops.Conv2d: _conv_map, ops.AvgPool2d: _avgpool_map,
    ops.ElementwiseAffine: _elementwise_map, ops.Flatten: _selection_map,
    ops.Reshape: _selection_map, ops.Transpose: _selection_map, ops.Pad: _selection_map,
}


def affine_map(op: ops.AffineOp, in_shape, out_shape) -> tuple[sp.csr_matrix, np.ndarray]:
    """The op as ``y = S·x + b`` on flattened single samples (exact, sparse)."""
    S = AFFINE_MAPS[type(op)](op, tuple(in_shape), tuple(out_shape))
    zero = torch.zeros((1, *in_shape), dtype=torch.float64)
    b = op.to(dtype=torch.float64).forward(zero).reshape(-1).detach().cpu().numpy()
    return S, b


# -- encoders: (model, node, input expressions, bounds of the inputs, split) → expression ----------
@dataclass(frozen=True)
class _Ctx:
    model: Model
    graph: Graph
    bounds: Mapping[str, Interval]
    splits: Mapping[str, np.ndarray]


def _flat_bounds(ctx: _Ctx, name: str) -> tuple[np.ndarray, np.ndarray]:
    iv = ctx.bounds[name]
    return (iv.lower.reshape(-1).detach().double().cpu().numpy(),
            iv.upper.reshape(-1).detach().double().cpu().numpy())


def _enc_affine(ctx: _Ctx, node: Node, xs: list[Expr]) -> Expr:
    S, b = affine_map(node.op, ctx.graph.shapes[node.inputs[0]], ctx.graph.shapes[node.name])
    return _affine_expr(S, b, xs[0], ctx.model.n)


def _enc_add_sub(ctx: _Ctx, node: Node, xs: list[Expr]) -> Expr:
    sign = -1.0 if isinstance(node.op, ops.Sub) else 1.0
    a, b = (_widen(x.M, ctx.model.n) for x in xs)
    return Expr(sp.csr_matrix(a + sign * b), xs[0].c + sign * xs[1].c)


def _enc_concat(ctx: _Ctx, node: Node, xs: list[Expr]) -> Expr:
    offsets = np.cumsum([0] + [x.c.shape[0] for x in xs])
    parts = [_index_image(ctx.graph.shapes[s])[0] + int(o) - 1
             for s, o in zip(node.inputs, offsets[:-1])]
    order = torch.cat(parts, dim=node.op.axis).reshape(-1).round().long().numpy()
    M = sp.vstack([_widen(x.M, ctx.model.n) for x in xs], format="csr")[order]
    return Expr(sp.csr_matrix(M), np.concatenate([x.c for x in xs])[order])


def _enc_relu_like(ctx: _Ctx, node: Node, xs: list[Expr]) -> Expr:
    """y = max(z, s·z) (ReLU: s = 0); exact with binaries for the unstable neurons."""
    s = float(getattr(node.op, "negative_slope", 0.0))
    z, m = xs[0], ctx.model
    lo, hi = _flat_bounds(ctx, node.inputs[0])
    split = ctx.splits.get(node.name)
    if split is not None:
        _phase_rows(m, z, split)
        lo = np.where(split > 0, np.maximum(lo, 0.0), lo)
        hi = np.where(split < 0, np.minimum(hi, 0.0), hi)
    slope = np.where(lo >= 0, 1.0, np.where(hi <= 0, s, 0.0))  # 0 on the unstable rows
    unstable = np.flatnonzero((lo < 0) & (hi > 0))
    Mz = _widen(z.M, m.n)
    M, c = sp.csr_matrix(sp.diags(slope) @ Mz), slope * z.c
    if not unstable.size:
        return Expr(M, c)
    k, l_u, u_u = len(unstable), lo[unstable], hi[unstable]
    y = m.add_vars(np.minimum(s * l_u, 0.0), u_u)
    d = m.add_vars(np.zeros(k), np.ones(k), integer=True)
    Zu, cu = _widen(Mz[unstable], m.n), z.c[unstable]
    Y, D = m.fresh(y).M, m.fresh(d).M
    m.add_rows(Y - Zu, cu, np.inf)                                              # y ≥ z
    m.add_rows(Y - s * Zu, s * cu, np.inf)                                      # y ≥ s·z
    m.add_rows(Y - s * Zu - sp.diags((1 - s) * u_u) @ D, -np.inf, s * cu)       # y ≤ s·z + (1−s)·u·δ
    m.add_rows(Y - Zu - sp.diags((1 - s) * l_u) @ D, -np.inf, cu - (1 - s) * l_u)  # y ≤ z − (1−s)·l·(1−δ)
    P = sp.csr_matrix((np.ones(k), (unstable, np.arange(k))), shape=(len(lo), k))
    return Expr(sp.csr_matrix(_widen(M, m.n) + P @ Y), c)


def _phase_rows(m: Model, z: Expr, split: np.ndarray) -> None:
    """A split fixes a neuron's phase: z ≥ 0 (active, +1) or z ≤ 0 (inactive, −1)."""
    Mz = _widen(z.M, m.n)
    act, ina = np.flatnonzero(split > 0), np.flatnonzero(split < 0)
    if act.size:
        m.add_rows(Mz[act], -z.c[act], np.inf)
    if ina.size:
        m.add_rows(Mz[ina], -np.inf, -z.c[ina])


def _enc_maxpool(ctx: _Ctx, node: Node, xs: list[Expr]) -> Expr:
    """y = max of each window: y ≥ x_i; y ≤ x_i + (U − l_i)(1 − δ_i); Σ δ_i = 1 over the
    entries that can be the maximum (u_i ≥ max_j l_j); a window with a sure maximum is linear."""
    op, m, x = node.op, ctx.model, xs[0]
    in_shape, out_shape = ctx.graph.shapes[node.inputs[0]], ctx.graph.shapes[node.name]
    C, h_out, w_out = out_shape
    hw = in_shape[1] * in_shape[2]
    cols = _windows((1, *in_shape[1:]), op.kernel, op.stride, op.padding, op.dilation, (h_out, w_out))
    lo, hi = _flat_bounds(ctx, node.inputs[0])
    Mx = _widen(x.M, m.n)
    out_rows: list[sp.csr_matrix] = []
    out_c = np.zeros(C * h_out * w_out)
    for ch in range(C):
        for k in range(h_out * w_out):
            idx = cols[:, k][cols[:, k] > 0] - 1 + ch * hw
            cand = idx[hi[idx] >= lo[idx].max()]
            r = ch * h_out * w_out + k
            if len(cand) == 1:
                out_rows.append(Mx[cand])
                out_c[r] = x.c[cand[0]]
                continue
            out_rows.append(_max_of(m, Mx, x.c, cand, lo, hi))
    return Expr(sp.vstack([_widen(r, m.n) for r in out_rows], format="csr"), out_c)


def _max_of(m: Model, Mx: sp.csr_matrix, c: np.ndarray, cand: np.ndarray, lo, hi) -> sp.csr_matrix:
    (y,) = m.add_vars(np.array([lo[cand].max()]), np.array([hi[cand].max()]))
    d = m.add_vars(np.zeros(len(cand)), np.ones(len(cand)), integer=True)
    U = hi[cand].max()
    Y = sp.csr_matrix((np.ones(len(cand)), (np.arange(len(cand)), np.full(len(cand), y))),
                      shape=(len(cand), m.n))
    Xc = _widen(Mx[cand], m.n)
    D = m.fresh(d).M
    m.add_rows(Y - Xc, c[cand], np.inf)                                   # y ≥ x_i
    m.add_rows(Y - Xc + sp.diags(U - lo[cand]) @ D, -np.inf, c[cand] + U - lo[cand])
    m.add_rows(sp.csr_matrix(np.ones((1, len(cand)))) @ D, 1.0, 1.0)     # one maximum
    return m.fresh(np.array([y])).M


ENCODERS: dict[type, Callable[[_Ctx, Node, list[Expr]], Expr]] = {
    **{t: _enc_affine for t in AFFINE_MAPS},
    ops.Add: _enc_add_sub, ops.Sub: _enc_add_sub, ops.Concat: _enc_concat,
    ops.ReLU: _enc_relu_like, ops.LeakyReLU: _enc_relu_like, ops.MaxPool2d: _enc_maxpool,
}


def check_encodable(graph: Graph) -> None:
    """Raise UnsupportedOpError naming the first op without an exact encoding."""
    for node in graph:
        if type(node.op) not in ENCODERS:
            raise UnsupportedOpError(node.op.kind, node.name, WHERE,
                                     sorted(t.__name__ for t in ENCODERS))


def encode(graph: Graph, lo: torch.Tensor, hi: torch.Tensor, bounds: Mapping[str, Interval],
           splits: Mapping[str, torch.Tensor] | None = None) -> tuple[Model, np.ndarray, Expr]:
    """The network on the box ``[lo, hi]`` (one sample, any shape): (model, input variable
    indices, output expression). ``bounds`` holds sound bounds (batch 1) of every node that
    feeds a ReLU, LeakyReLU or MaxPool over the box (or over the subdomain ``splits`` define:
    node name → per-neuron +1 active / −1 inactive / 0 free)."""
    check_encodable(graph)
    m = Model()
    x_idx = m.add_vars(lo.reshape(-1).double().cpu().numpy(), hi.reshape(-1).double().cpu().numpy())
    ctx = _Ctx(m, graph, bounds, {k: v.reshape(-1).cpu().numpy() for k, v in (splits or {}).items()})
    values: dict[str, Expr] = {graph.input_name: m.fresh(x_idx)}
    for node in graph:
        values[node.name] = ENCODERS[type(node.op)](ctx, node, [values[s] for s in node.inputs])
    return m, x_idx, values[graph.output_name]


# -- solving ------------------------------------------------------------------------------------
@contextlib.contextmanager
def _quiet_stdout():
    """HiGHS prints its banner on stdout (fd 1) when a solver is made: silence it there."""
    try:
        fd = os.dup(1)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        os.dup2(fd, 1)
        os.close(fd)


def new_highs():
    """A silent HiGHS solver (its banner kept off stdout, its log off)."""
    import highspy

    with _quiet_stdout():
        h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    return h


def _highs(model: Model, extra: tuple[sp.csr_matrix, np.ndarray, np.ndarray], remaining: float,
           threads: int, cutoff: float | None):
    """The model plus one free column ``t`` (index ``model.n``, minimised) and the ``extra``
    rows over both; the model itself is not changed, so one encoding serves every clause."""
    import highspy

    h = new_highs()
    n = model.n + 1
    lb = np.concatenate([*model.lb, [-np.inf]])
    ub = np.concatenate([*model.ub, [np.inf]])
    h.addVars(n, np.where(np.isinf(lb), -highspy.kHighsInf, lb),
              np.where(np.isinf(ub), highspy.kHighsInf, ub))
    ints = np.flatnonzero(np.concatenate(model.integer))
    if ints.size:
        h.changeColsIntegrality(len(ints), ints.astype(np.int32),
                                np.full(len(ints), highspy.HighsVarType.kInteger))
    A, lo, hi = model.matrix()
    A = sp.vstack([_widen(A, n), extra[0]], format="csr")
    lo, hi = np.concatenate([lo, extra[1]]), np.concatenate([hi, extra[2]])
    inf = highspy.kHighsInf
    h.addRows(A.shape[0], np.where(np.isinf(lo), -inf, lo), np.where(np.isinf(hi), inf, hi), A.nnz,
              A.indptr[:-1].astype(np.int32), A.indices.astype(np.int32), A.data)
    h.changeColCost(model.n, 1.0)
    h.setOptionValue("time_limit", float(max(remaining, 0.01)))
    h.setOptionValue("threads", int(threads))
    if cutoff is not None:
        h.setOptionValue("objective_bound", float(cutoff))
        h.setOptionValue("mip_max_improving_sols", 1)
    return h


def _clause_rows(model: Model, out: Expr, C: np.ndarray, d: np.ndarray, rows):
    """Rows ``C_r·y + d_r − t ≤ 0`` for the clause's rows r, ``t`` the column after the model's."""
    t = model.n
    R = sp.csr_matrix(C[list(rows)]) @ _widen(out.M, t + 1)
    T = sp.csr_matrix((np.full(len(rows), -1.0), (np.arange(len(rows)), np.full(len(rows), t))),
                      shape=(len(rows), t + 1))
    return sp.csr_matrix(R + T), np.full(len(rows), -np.inf), -(C[list(rows)] @ out.c + d[list(rows)])


@dataclass
class GraphMilpOutcome:
    status: str  # "verified" | "candidate" | "timeout" | "unknown"
    x: torch.Tensor | None = None  # candidate input (1, *input_shape) when status == "candidate"
    stats: dict | None = None


def minimize_rows(graph: Graph, lo: torch.Tensor, hi: torch.Tensor, bounds, C: np.ndarray,
                  d: np.ndarray, rows, deadline: Deadline = NEVER, threads: int = 1,
                  cutoff: float | None = None, splits=None):
    """min over the box of max_r (C_r·y + d_r): (HiGHS model status, objective or None,
    minimiser x (1, *input_shape) or None). With ``cutoff`` the search may stop at the first
    point below it, or once the minimum is proved above it."""
    encoded = encode(graph, lo, hi, bounds, splits)
    return _solve_rows(graph, encoded, C, d, rows, deadline, threads, cutoff)


def _solve_rows(graph: Graph, encoded, C: np.ndarray, d: np.ndarray, rows, deadline: Deadline,
                threads: int, cutoff: float | None):
    """:func:`minimize_rows` on an encoding already made (it is not changed)."""
    model, x_idx, out = encoded
    deadline.check()
    h = _highs(model, _clause_rows(model, out, C, d, rows), min(deadline.remaining(), 1e7),
               threads, cutoff)
    h.run()
    status = h.getModelStatus()
    sol = h.getSolution()
    if not (sol.value_valid and h.getInfo().primal_solution_status >= 2):
        return status, None, None
    vals = np.asarray(sol.col_value)
    x = torch.tensor(vals[x_idx], dtype=torch.float64).reshape(1, *graph.input_shape)
    return status, float(vals[model.n]), x


def milp_decide(graph: Graph, lo: torch.Tensor, hi: torch.Tensor, spec: OutputSpec,
                bounds: Mapping[str, Interval], deadline: Deadline = NEVER, threads: int = 1,
                skip_clauses: set[int] | None = None, splits=None) -> GraphMilpOutcome:
    """Decide every clause of ``spec`` (batch element 0) on the box exactly (up to HiGHS's
    tolerances): 'verified', a 'candidate' counterexample (to be re-checked), or 'timeout'."""
    stats = {"clauses": 0}
    try:
        return _decide(graph, lo, hi, spec, bounds, deadline, threads, skip_clauses, splits, stats)
    except DeadlineExceededError:
        return GraphMilpOutcome("timeout", stats=stats)


def _decide(graph, lo, hi, spec, bounds, deadline: Deadline, threads, skip_clauses, splits,
            stats: dict) -> GraphMilpOutcome:
    import highspy

    S = highspy.HighsModelStatus
    C, d = spec.C[0].double().cpu().numpy(), spec.d[0].double().cpu().numpy()
    todo = [cl for k, cl in enumerate(spec.clauses) if not (skip_clauses and k in skip_clauses)]
    if not todo:
        return GraphMilpOutcome("verified", stats=stats)
    deadline.check()
    encoded = encode(graph, lo, hi, bounds, splits)  # shared by every clause
    for clause in todo:
        status, value, x = _solve_rows(graph, encoded, C, d, clause, deadline, threads, cutoff=0.0)
        stats["clauses"] += 1
        if x is not None and value is not None and value <= 0:
            return GraphMilpOutcome("candidate", x, stats)
        if status in (S.kInfeasible, S.kObjectiveBound) or (status == S.kOptimal and value is not None):
            continue  # no point of the box has t ≤ 0: clause proved
        if status == S.kTimeLimit:
            return GraphMilpOutcome("timeout", stats=stats)
        return GraphMilpOutcome("unknown", stats={**stats, "highs_status": str(status)})
    return GraphMilpOutcome("verified", stats=stats)


def graph_bounds(graph: Graph, lo: torch.Tensor, hi: torch.Tensor) -> dict[str, Interval]:
    """Sound bounds of every node over the box (CROWN), for the big-M constants."""
    from ..bounds.crown import intermediate_bounds
    from ..specs.input_sets import Box

    g = graph.to(dtype=torch.float64)
    return intermediate_bounds(g, Box(lo.double().reshape(1, *graph.input_shape),
                                      hi.double().reshape(1, *graph.input_shape)))


__all__ = ["ENCODERS", "GraphMilpOutcome", "affine_map", "check_encodable", "encode",
           "graph_bounds", "milp_decide", "minimize_rows", "new_highs"]
