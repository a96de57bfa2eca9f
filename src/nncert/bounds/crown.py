"""Backward linear bound propagation: CROWN (Zhang et al. 2018), DeepPoly (Singh et al. 2019)
and Fast-Lin (Weng et al. 2018) over the whole DAG.

A lower bound of the rows ``C·y + d`` is found by substituting backwards from the output: each
node holds a linear functional ``A`` of shape (B, R, *node_shape) (summed over its consumers) and
the constant parts collect in a (B, R) tensor. Affine ops pass ``A`` through their ``transpose``;
activations are replaced by the linear relaxation of ``relaxations.py`` (the lower line where
``A ≥ 0``, the upper line where ``A < 0``); MaxPool by DeepPoly's relaxation. At the graph input
the input set concretises ``A`` itself (L∞/L2 balls, boxes). Upper bounds are lower bounds of
``−C·y − d`` (rows stacked in one pass). The result is sound for every point of the input set
given sound intermediate bounds of every relaxed node's input.

Intermediate bounds (``intermediate_bounds``) are IBP, tightened by a backward pass from each
node that feeds a nonlinearity (identity rows, only for neurons that the cheaper bounds leave
unstable when the node feeds only ReLU-like ops, chunked so memory stays bounded).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .. import clock
from ..clock import NEVER, Deadline
from ..errors import ConfigError
from ..models import ops
from ..models.graph import Graph, Node
from ..specs.input_sets import Box, InputSet
from ..specs.problem import VerificationProblem
from . import relaxations
from .core import Bounds, Interval
from .interval import TRANSFORMERS as IBP_TRANSFORMERS
from .interval import spec_bounds_from_interval
from .traversal import check_supported


def upper_key(name: str) -> str:
    """The ``slopes`` key of the *upper*-line parameter of activation ``name`` (S-shaped ops)."""
    return name + ":upper"


@dataclass(frozen=True)
class CrownConfig:
    """Options of backward bound propagation.

    relaxation: "adaptive" (CROWN), "deeppoly" or "fastlin" (see relaxations.py).
    intermediate: "crown" (back-substitution from every relaxed node: DeepPoly/CROWN) or
      "ibp" (interval bounds: CROWN-IBP).
    chunk_rows: at most this many identity rows (all batch elements together) in one
      intermediate pass.
    max_pass_elements: and at most this many entries in one A tensor (2·rows·node size) —
      the memory bound of a pass.
    unstable_only: back-substitute only for neurons the cheaper bounds leave unstable, when a
      node feeds only ReLU/LeakyReLU (stable neurons' relaxations are exact anyway).
    intersect_ibp: intersect every back-substituted bound (intermediate and final) with the
      interval bounds. False gives the textbook algorithm exactly (every relaxed neuron
      back-substituted, nothing intersected) — looser and slower, for comparing with other
      implementations.
    """

    relaxation: str = "adaptive"
    intermediate: str = "crown"
    chunk_rows: int = 8192
    max_pass_elements: int = 2**26
    unstable_only: bool = True
    intersect_ibp: bool = True

    def __post_init__(self) -> None:
        relaxations.check_mode(self.relaxation)
        if self.intermediate not in ("crown", "ibp"):
            raise ConfigError(f"intermediate must be 'crown' or 'ibp', got {self.intermediate!r}")
        if self.chunk_rows < 1 or self.max_pass_elements < 1:
            raise ConfigError("chunk_rows and max_pass_elements must be ≥ 1")


@dataclass(frozen=True)
class _Pass:
    """What one backward pass reads (local to the call)."""

    graph: Graph
    intermediate: Mapping[str, Interval]
    mode: str
    slopes: Mapping[str, torch.Tensor]
    #: when set, batch element i of the pass is element rows[i] of ``intermediate``
    rows: torch.Tensor | None = None
    #: ReLU-like nodes' fixed parts of the relaxation, kept between passes with the same
    #: bounds (an optimisation loop's); None: computed afresh
    cache: dict | None = None
    #: slope-free relaxations of the whole batch by node name, kept between passes over the
    #: same bounds whatever their rows (an intermediate-bounds run's); None: computed afresh
    shared: dict | None = None

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        return t if self.rows is None else t[self.rows]

    def bounds_of(self, name: str) -> Interval:
        try:
            return self.intermediate[name]
        except KeyError:
            raise ConfigError(f"backward pass needs intermediate bounds of node {name!r}") from None


# -- backward transformers: (node, A, pass) -> ([A for each input], constant (B, R) or None) --
def _affine_back(node: Node, A: torch.Tensor, p: _Pass):
    op: ops.AffineOp = node.op
    in_shape = _shape_of(p.graph, node.inputs[0])
    B, R = A.shape[:2]
    A_in = op.transpose(A.reshape(B * R, *A.shape[2:]), in_shape).reshape(B, R, *in_shape)
    b = op.bias(in_shape, A)
    const = None
    if b is not None:
        b = b.expand(A.shape[2:]).reshape(-1)
        const = A.reshape(B, R, -1) @ b
    return [A_in], const


def _shape_of(g: Graph, name: str):
    return g.input_shape if name == g.input_name else g.shapes[name]


def _multi_back(node: Node, A: torch.Tensor, p: _Pass):
    B, R = A.shape[:2]
    shapes = [_shape_of(p.graph, s) for s in node.inputs]
    outs = node.op.transpose_multi(A.reshape(B * R, *A.shape[2:]), shapes)
    return [o.reshape(B, R, *s) for o, s in zip(outs, shapes)], None


def _pwl_cached(node: Node, p: _Pass, pl: torch.Tensor) -> relaxations.LinearRelaxation:
    """A ReLU-like relaxation with lower slopes ``pl``, its fixed parts from ``p.cache``:
    the stable neurons' slopes and the upper line do not depend on ``pl``."""
    base = p.cache.get(node.name)
    if base is None:
        iv = p.bounds_of(node.inputs[0])
        lo, up = p.gather(iv.lower.unsqueeze(1)), p.gather(iv.upper.unsqueeze(1))
        rel = relaxations.relax(node.op, lo, up, p.mode)
        free = ((lo < 0) & (up > 0)).to(lo.dtype)
        base = p.cache[node.name] = (rel, free, rel.lower_slope * (1 - free))
    rel, free, fixed = base
    s = float(getattr(node.op, "negative_slope", 0.0))
    return relaxations.LinearRelaxation(fixed + free * pl.clamp(s, 1.0), rel.lower_bias,
                                        rel.upper_slope, rel.upper_bias)


def _activation_relaxation(node: Node, p: _Pass) -> relaxations.LinearRelaxation:
    pl, pu = p.slopes.get(node.name), p.slopes.get(upper_key(node.name))
    if (p.cache is not None and pl is not None and pu is None
            and isinstance(node.op, (ops.ReLU, ops.LeakyReLU))):
        return _pwl_cached(node, p, pl)
    iv = p.bounds_of(node.inputs[0])
    lo, up = iv.lower.unsqueeze(1), iv.upper.unsqueeze(1)
    if pl is not None or pu is not None:  # parameters are per pass row: gather bounds first
        return relaxations.relax(node.op, p.gather(lo), p.gather(up), p.mode, pl, pu)
    hit = None if p.shared is None else p.shared.get(node.name)
    if hit is None:
        rel = relaxations.relax(node.op, lo, up, p.mode)
        hit = (rel, not bool(rel.lower_bias.any()))  # (ReLU-like lines through 0)
        if p.shared is not None:
            p.shared[node.name] = hit
    rel, zero_bias = hit
    if p.rows is None:
        return rel
    return relaxations.LinearRelaxation(
        p.gather(rel.lower_slope), rel.lower_bias[:1] if zero_bias else p.gather(rel.lower_bias),
        p.gather(rel.upper_slope), p.gather(rel.upper_bias))


def _activation_back(node: Node, A: torch.Tensor, p: _Pass):
    """``A·σ(x) ≥ A⁺·(a_L x + b_L) + A⁻·(a_U x + b_U)``, written with one clamp, each slope
    used once (alpha-CROWN differentiates through it), constants by batched matrix products."""
    rel = _activation_relaxation(node, p)
    pos = A.clamp(min=0)
    neg = A - pos
    A_in = torch.addcmul(neg * rel.upper_slope, pos, rel.lower_slope)
    const = _dot(neg, rel.upper_bias)
    if bool(rel.lower_bias.any()):  # (ReLU-like lower lines pass through 0: nothing to add)
        const = const + _dot(pos, rel.lower_bias)
    return [A_in], const


def _dot(A: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Σ over the node dims of A (B, R, *s) · b (B or 1, R or 1, *s) → (B, R)."""
    B, R = A.shape[:2]
    b = b.expand(b.shape[0], b.shape[1], *A.shape[2:]).reshape(b.shape[0], b.shape[1], -1)
    A = A.reshape(B, R, -1)
    if b.shape[1] == 1:
        return torch.bmm(A, b.expand(B, 1, -1).transpose(1, 2)).squeeze(2)
    return (A * b).sum(-1)


def _maxpool_relaxation(op: ops.MaxPool2d, iv: Interval):
    """Per window: the input with the largest lower bound (j), whether it dominates (its lower
    bound ≥ every other input's upper bound: then max = x_j exactly) and the largest upper."""
    ph, pw = op.padding
    cols = []
    for t in (iv.lower, iv.upper):
        t = F.pad(t, (pw, pw, ph, ph), value=-math.inf)
        c = F.unfold(t, op.kernel, dilation=op.dilation, stride=op.stride)
        cols.append(c.reshape(t.shape[0], t.shape[1], -1, c.shape[-1]))  # (B, C, k, L)
    lo, up = cols
    j = lo.argmax(2, keepdim=True)
    others = up.scatter(2, j, -math.inf).amax(2)
    dom = lo.gather(2, j).squeeze(2) >= others
    return j, dom, up.amax(2)


def _maxpool_back(node: Node, A: torch.Tensor, p: _Pass):
    """DeepPoly's MaxPool relaxation: ``x_j ≤ max ≤ max_k u_k`` (``= x_j`` when j dominates)."""
    op: ops.MaxPool2d = node.op
    iv = p.bounds_of(node.inputs[0])
    j, dom, umax = (p.gather(t) for t in _maxpool_relaxation(op, iv))
    B, R, C = A.shape[:3]
    H, W = iv.shape[1:]
    A = A.reshape(B, R, C, -1)
    pos, neg = A.clamp(min=0), A.clamp(max=0)
    domf = dom.to(A.dtype).unsqueeze(1)
    coef = pos + neg * domf
    const = (neg * (1 - domf) * umax.unsqueeze(1)).flatten(2).sum(-1)
    onehot = torch.zeros(j.shape[0], C, op.kernel[0] * op.kernel[1], j.shape[-1],
                         dtype=A.dtype, device=A.device).scatter_(2, j, 1.0)
    cols = onehot.unsqueeze(1) * coef.unsqueeze(3)  # (B, R, C, k, L)
    ph, pw = op.padding
    out = F.fold(cols.reshape(B * R, C * onehot.shape[2], -1), (H + 2 * ph, W + 2 * pw),
                 op.kernel, dilation=op.dilation, stride=op.stride)
    return [out[:, :, ph:ph + H, pw:pw + W].reshape(B, R, C, H, W)], const


BACKWARD = {
    **dict.fromkeys(ops.AFFINE_OPS, _affine_back),
    **dict.fromkeys((ops.Add, ops.Sub, ops.Concat), _multi_back),
    **dict.fromkeys(relaxations.RELAXATIONS, _activation_back),
    ops.MaxPool2d: _maxpool_back,
}

#: ops whose backward step reads the intermediate bounds of their input
RELAXED = (*relaxations.RELAXATIONS, ops.MaxPool2d)


def _ancestors(graph: Graph, start: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        name = todo.pop()
        if name == graph.input_name:
            continue
        for s in graph.node(name).inputs:
            if s not in seen:
                seen.add(s)
                todo.append(s)
    return seen


def _backward(p: _Pass, start: str, A0: torch.Tensor, offsets: Mapping[str, torch.Tensor],
              capture: dict[str, torch.Tensor] | None = None):
    """Substitute ``A0`` (B, R, *shape of start) back to the graph input:
    returns (A at the input or None, constant (B, R)). ``capture``: its keys (node names) get
    the (detached) A on that node's output, summed over its consumers."""
    g = p.graph
    keep = _ancestors(g, start)
    acc = {start: A0}
    const = A0.new_zeros(A0.shape[:2])
    for node in reversed(g.nodes):
        if node.name not in keep or node.name not in acc:
            continue
        A = acc.pop(node.name)
        if capture is not None and node.name in capture:
            capture[node.name] = A.detach()
        if node.name in offsets:
            A = A + offsets[node.name]
        ins, c = BACKWARD[type(node.op)](node, A, p)
        if c is not None:
            const = const + c
        for src, a in zip(node.inputs, ins):
            acc[src] = acc[src] + a if src in acc else a
    A_in = acc.get(g.input_name)
    if A_in is not None and g.input_name in offsets:
        A_in = A_in + offsets[g.input_name]
    if capture is not None and A_in is not None and g.input_name in capture:
        capture[g.input_name] = A_in.detach()
    return A_in, const


def _concretize_rows(input_set: InputSet, A: torch.Tensor, batch_index: torch.Tensor | None):
    """min of A·x over the set, A (k, R, *in); row i over set element ``batch_index[i]``.
    Rows of the same element are regrouped (zero-padded) so that the set is indexed once per
    element present, not once per row, unless the padding would cost more."""
    if batch_index is None:
        return input_set.concretize(A)[0]
    u, inv, counts = torch.unique(batch_index, return_inverse=True, return_counts=True)
    k, R = A.shape[:2]
    if u.numel() * int(counts.max()) > 2 * k:  # uneven counts: padding would cost more
        return input_set[batch_index].concretize(A)[0]
    order = torch.argsort(inv, stable=True)
    pos = torch.empty_like(inv)
    pos[order] = torch.arange(k, device=A.device) - (torch.cumsum(counts, 0) - counts)[inv[order]]
    padded = A.new_zeros(u.numel(), int(counts.max()), R, *A.shape[2:])
    padded[inv, pos] = A
    lo = input_set[u].concretize(padded.reshape(u.numel(), -1, *A.shape[2:]))[0]
    return lo.reshape(u.numel(), -1, R)[inv, pos]


def backward_bounds(
    graph: Graph,
    input_set: InputSet,
    C: torch.Tensor,
    d: torch.Tensor | None,
    intermediate: Mapping[str, Interval],
    slopes: Mapping[str, torch.Tensor] | None = None,
    node_offsets: Mapping[str, torch.Tensor] | None = None,
    need_upper: bool = True,
    *,
    start: str | None = None,
    relaxation: str = "adaptive",
    batch_index: torch.Tensor | None = None,
    capture: dict[str, torch.Tensor] | None = None,
    relax_cache: dict | None = None,
    shared_relax: dict | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sound bounds of the rows ``C·v + d`` over ``input_set``, where v is node ``start``'s
    output (default: the graph output), flattened. C: (B or 1, R, n), d: (B, R) or None.

    ``intermediate`` must bound the input of every activation / MaxPool that ``start`` depends
    on. ``slopes`` maps activation names to lower-line parameters (ReLU: slopes; S-shaped:
    tangent points θ; ``upper_key(name)``: upper-line θ), broadcastable to (B, R', *shape)
    where R' = 2R with ``need_upper`` (rows [C; −C]) and R without. ``node_offsets`` maps node
    names to tensors (B, R', *shape) added to that node's A when the pass reaches it (beta-CROWN:
    ``−β∘s`` at a split pre-activation node gives a valid lower bound on the split subdomain).
    With ``batch_index`` (B',) the pass has B' elements, element i reading element
    ``batch_index[i]`` of the input set and of ``intermediate`` (C is then (B', R, n)).
    ``capture``: a dict whose keys name nodes; each is set to the A (B, R', *shape) reaching
    that node's output in this pass (left as given for nodes the pass does not reach).
    ``relax_cache``: a dict (empty at first) kept by the caller across passes with the same
    ``intermediate``, ``batch_index`` and relaxation: the ReLU-like relaxations' parts that
    do not depend on ``slopes`` are computed once. ``shared_relax``: a dict (empty at first)
    kept by the caller across slope-free passes with the same ``intermediate`` and relaxation,
    any ``batch_index``: each activation's relaxation of the whole batch is computed once.
    Returns ``(lower (B, R), upper (B, R) or None)``.
    """
    relaxations.check_mode(relaxation)
    start = graph.output_name if start is None else start
    shape = _shape_of(graph, start)
    B = input_set.batch_size if batch_index is None else batch_index.shape[0]
    R = C.shape[1]
    A0 = C.expand(B, -1, -1).reshape(B, R, *shape)
    d = C.new_zeros(B, R) if d is None else d.expand(B, R)
    if need_upper:
        A0, d = torch.cat([A0, -A0], 1), torch.cat([d, -d], 1)
    p = _Pass(graph, intermediate, relaxation, slopes or {}, batch_index, relax_cache,
              shared_relax)
    A_in, const = _backward(p, start, A0, node_offsets or {}, capture)
    lower = const + d
    if A_in is not None:
        lower = lower + _concretize_rows(input_set, A_in, batch_index)
    if need_upper:
        return lower[:, :R], -lower[:, R:]
    return lower, None


# -- intermediate bounds -----------------------------------------------------------------------
def _relaxed_inputs(graph: Graph) -> dict[str, bool]:
    """Nodes whose bounds some relaxation reads → whether only ReLU-like ops read them."""
    out: dict[str, bool] = {}
    for node in graph:
        if isinstance(node.op, RELAXED):
            pwl = isinstance(node.op, (ops.ReLU, ops.LeakyReLU))
            src = node.inputs[0]
            out[src] = out.get(src, True) and pwl
    return out


def _rows_per_pass(graph: Graph, name: str, cfg: CrownConfig) -> int:
    """Identity rows per pass (each becomes a lower and an upper row)."""
    biggest = max(math.prod(_shape_of(graph, n)) for n in _ancestors(graph, name))
    return max(1, min(cfg.chunk_rows, cfg.max_pass_elements // (2 * max(biggest, 1))))


#: rows of the first intermediate pass, and the pass durations (s) between which the number of
#: rows stays put (doubled below, halved above)
FIRST_PASS_ROWS = 16
PASS_SECONDS = (0.05, 0.2)


def _next_rows(rows: int, cap: int, seconds: float) -> int:
    if seconds < PASS_SECONDS[0]:
        return min(cap, 2 * rows)
    if seconds > PASS_SECONDS[1]:
        return max(1, rows // 2)
    return rows


def _pass_size(graph: Graph, name: str) -> int:
    """Σ of the sizes of the nodes a backward pass from ``name`` visits (its cost per row,
    up to a factor)."""
    return sum(math.prod(_shape_of(graph, n)) for n in _ancestors(graph, name))


def _first_rows(graph: Graph, name: str, step: int, pace: dict | None) -> int:
    """Rows of the first pass from ``name``: ``FIRST_PASS_ROWS``, or what the measured
    ``pace`` predicts to take the middle of ``PASS_SECONDS``."""
    if not pace:
        return min(step, FIRST_PASS_ROWS)
    target = (PASS_SECONDS[0] * PASS_SECONDS[1]) ** 0.5
    rows = int(target / max(pace["s"] * _pass_size(graph, name), 1e-12))
    return max(1, min(step, max(FIRST_PASS_ROWS, rows)))


#: nodes of at most this many neurons are refined layer by layer (one problem of n rows per batch
#: element) when most of their neurons need a pass; wider ones always pair by pair, so that one
#: pass never exceeds the adaptive pass size by much
DENSE_MAX_WIDTH = 128

RowBounds = Callable[[str, torch.Tensor, torch.Tensor, Mapping[str, Interval]],
                     tuple[torch.Tensor, torch.Tensor]]


def _refine(graph: Graph, name: str, iv: Interval, mask: torch.Tensor, step: int,
            row_bounds: RowBounds, values: Mapping[str, Interval], intersect: bool = True,
            deadline: Deadline = NEVER, checks_per_pass: int = 1,
            pace: dict | None = None) -> Interval:
    """``iv`` tightened for the neurons in ``mask`` (B, *shape), by
    ``row_bounds(name, C, batch_index, values)``: sound (lower, upper) (k, R) of the rows
    ``C[i]`` (k, R, n) of node ``name`` for batch element ``batch_index[i]``. When most
    neurons of a node of at most ``DENSE_MAX_WIDTH`` are masked, each batch element's whole
    layer goes in one problem (R = n rows that share its relaxations: no per-row gathering);
    otherwise every (element, neuron) pair is its own one-row problem, so elements with few
    such neurons cost little. Either way results do not depend on the batch, and at most
    ``step`` rows go in one pass. With ``intersect``
    False the new bounds replace ``iv`` instead of tightening it. ``deadline`` is checked
    before each pass (raising :class:`~nncert.clock.DeadlineExceededError`); passes start at
    ``FIRST_PASS_ROWS`` rows and grow up to ``step`` while the time between two checks (the
    pass's time over ``checks_per_pass``, the checks ``row_bounds`` makes itself plus one) is
    under ``PASS_SECONDS[0]``, shrinking above ``PASS_SECONDS[1]``: no stretch runs long.
    ``pace``: a dict shared by the nodes of one run, holding the seconds per row and unit of
    node size measured so far: later nodes start their passes at the size it predicts."""
    B = mask.shape[0]
    flat = mask.reshape(B, -1)
    n = flat.shape[1]
    count = int(flat.sum())
    if count == 0:
        return iv
    lo, hi = iv.lower.reshape(B, -1).clone(), iv.upper.reshape(B, -1).clone()
    dense = count > flat.numel() // 2 and n <= DENSE_MAX_WIDTH
    if dense:  # whole layers: one problem of n rows per batch element that has masked ones
        bidx = flat.any(1).nonzero()[:, 0]
        eye = torch.eye(n, dtype=lo.dtype, device=lo.device).unsqueeze(0)
    else:
        bidx, nidx = flat.nonzero(as_tuple=True)
    r0, rows = 0, _first_rows(graph, name, step, pace)
    while r0 < bidx.numel():
        deadline.check()
        t = clock.now()
        take = max(1, rows // n) if dense else rows
        b = bidx[r0:r0 + take]
        first, r0 = r0, r0 + take
        if dense:
            l_new, u_new = row_bounds(name, eye.expand(b.numel(), -1, -1), b, values)
            m = flat[b]
            old_l, old_u = lo[b], hi[b]
            if intersect:
                l_new, u_new = torch.maximum(old_l, l_new), torch.minimum(old_u, u_new)
            lo[b], hi[b] = torch.where(m, l_new, old_l), torch.where(m, u_new, old_u)
        else:
            j = nidx[first:r0]
            C = F.one_hot(j, n).to(lo.dtype).unsqueeze(1)
            l_new, u_new = row_bounds(name, C, b, values)
            if intersect:
                l_new, u_new = (torch.maximum(lo[b, j], l_new[:, 0]),
                                torch.minimum(hi[b, j], u_new[:, 0]))
            else:
                l_new, u_new = l_new[:, 0], u_new[:, 0]
            lo[b, j], hi[b, j] = l_new, u_new
        done = b.numel() * (n if dense else 1)
        dt = (clock.now() - t) / checks_per_pass
        if pace is not None:
            pace["s"] = dt / (done * _pass_size(graph, name))
        rows = _next_rows(max(rows, done), step, dt)
    return Interval(lo.reshape(iv.lower.shape), hi.reshape(iv.upper.shape))


#: affine ops that move or scale coordinates one by one: interval bounds through them stay exact
_COORDINATEWISE = (ops.Flatten, ops.Reshape, ops.Transpose, ops.Pad, ops.ElementwiseAffine)


def _ibp_exact(graph: Graph, name: str) -> bool:
    """Whether interval bounds of node ``name`` are exact on a box: it is a chain of one-input
    affine ops from the input with at most one op that mixes coordinates (so a backward pass
    could not tighten them)."""
    mixing = 0
    while name != graph.input_name:
        node = graph.node(name)
        if len(node.inputs) != 1 or not isinstance(node.op, ops.AffineOp):
            return False
        mixing += not isinstance(node.op, _COORDINATEWISE)
        name = node.inputs[0]
    return mixing <= 1


def _refine_mask(iv: Interval, pwl_only: bool, cfg: CrownConfig,
                 only: Mapping[str, torch.Tensor] | None, name: str) -> torch.Tensor:
    """The neurons of a relaxed node's input that get a backward pass: the unstable ones
    when only ReLU-like ops read it (their relaxations are exact elsewhere), all otherwise;
    within ``only[name]`` when given."""
    if pwl_only and cfg.unstable_only and cfg.intersect_ibp:
        mask = (iv.lower < 0) & (iv.upper > 0)
    else:
        mask = torch.ones_like(iv.lower, dtype=torch.bool)
    if only is not None and name in only:
        mask = mask & only[name].reshape(mask.shape)
    return mask


def intermediate_bounds(graph: Graph, input_set: InputSet, config: CrownConfig | None = None,
                        given: Mapping[str, Interval] | None = None,
                        row_bounds: RowBounds | None = None,
                        deadline: Deadline = NEVER,
                        checks_per_pass: int = 1,
                        post: Callable[[str, Interval], Interval] | None = None,
                        prior: Mapping[str, Interval] | None = None,
                        only: Mapping[str, torch.Tensor] | None = None
                        ) -> dict[str, Interval]:
    """Sound bounds of every node's output over ``input_set`` (and of the input).

    IBP through the graph; at each node that feeds an activation / MaxPool the interval is
    intersected with a backward-pass bound (``config.intermediate == "crown"``; ``row_bounds``
    replaces the plain backward pass, e.g. by an optimised one that checks ``deadline``
    ``checks_per_pass - 1`` times per pass; see :func:`_refine`). Nodes in ``given``
    take those bounds instead (they must be sound for the set, or for the subdomain the caller
    bounds); later nodes build on them. ``post(name, interval)`` replaces each computed node's
    bounds before later nodes read them (e.g. clipped by split constraints: the result is then
    sound for the subdomain that ``post`` keeps sound). ``prior``: bounds already known to be
    sound (e.g. a parent subdomain's), intersected with each node's interval step before it
    decides which neurons need a backward pass; ``only``: node name → bool (B, *shape), the
    neurons of that node allowed a backward pass (the others keep the interval step ∩
    ``prior``: sound, looser). Past ``deadline`` it raises
    :class:`~nncert.clock.DeadlineExceededError` (checked at every node and every pass).
    """
    cfg = config or CrownConfig()
    given = given or {}
    values: dict[str, Interval] = {graph.input_name: given.get(
        graph.input_name, Interval(input_set.lower, input_set.upper))}
    needs = _relaxed_inputs(graph) if cfg.intermediate == "crown" else {}
    if row_bounds is None:
        shared: dict = {}  # (values of a node never change once set: one relaxation each)

        def row_bounds(name, C, idx, vals):
            return backward_bounds(graph, input_set, C, None, vals, start=name,
                                   relaxation=cfg.relaxation, batch_index=idx,
                                   shared_relax=shared)
    pace: dict = {}
    for node in graph:
        if node.name in given:
            values[node.name] = given[node.name]
            continue
        deadline.check()
        iv = IBP_TRANSFORMERS[type(node.op)](node.op, *(values[s] for s in node.inputs))
        if prior is not None and node.name in prior:
            iv = iv.intersect(prior[node.name])
        if node.name in needs and not (cfg.intersect_ibp and isinstance(input_set, Box)
                                        and _ibp_exact(graph, node.name)):
            mask = _refine_mask(iv, needs[node.name], cfg, only, node.name)
            step = _rows_per_pass(graph, node.name, cfg)
            iv = _refine(graph, node.name, iv, mask, step, row_bounds, values, cfg.intersect_ibp,
                         deadline, checks_per_pass, pace)
        values[node.name] = iv if post is None else post(node.name, iv)
    return values


def crown_bounds(problem: VerificationProblem, config: CrownConfig | None = None,
                 deadline: Deadline = NEVER) -> Bounds:
    """CROWN bounds of the spec rows, computed directly from ``C`` (never from output
    intervals), intersected with IBP's; intermediate bounds of every node are kept."""
    cfg = config or CrownConfig()
    return _bounds(problem, cfg, "crown" if cfg.relaxation == "adaptive" else cfg.relaxation,
                   deadline)


def deeppoly_bounds(problem: VerificationProblem, config: CrownConfig | None = None,
                    deadline: Deadline = NEVER) -> Bounds:
    """DeepPoly (Singh et al. 2019): back-substitution with DeepPoly's relaxations."""
    cfg = dataclasses.replace(config or CrownConfig(), relaxation="deeppoly")
    return _bounds(problem, cfg, "deeppoly", deadline)


def _bounds(problem: VerificationProblem, cfg: CrownConfig, name: str,
            deadline: Deadline = NEVER) -> Bounds:
    check_supported(problem.graph, BACKWARD, name)
    g, spec = problem.graph, problem.output_spec
    values = intermediate_bounds(g, problem.input_set, cfg, deadline=deadline)
    deadline.check()
    lower, upper = backward_bounds(g, problem.input_set, spec.C, spec.d, values,
                                   relaxation=cfg.relaxation)
    if not cfg.intersect_ibp:
        return Bounds(lower, upper, name, values)
    ibp_lo, ibp_hi = spec_bounds_from_interval(g, spec, values)
    return Bounds(torch.maximum(lower, ibp_lo), torch.minimum(upper, ibp_hi), name, values)
