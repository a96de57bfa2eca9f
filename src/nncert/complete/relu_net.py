"""A dense view of feed-forward ReLU networks, with fast batched bounds for branch-and-bound.

``extract_relu_net(graph)`` turns a chain ``affine* (ReLU affine*)*`` into dense layers
``z_0 = W_0 x + b_0, a_k = relu(z_k), z_{k+1} = W_{k+1} a_k + b_{k+1}`` (every run of affine
ops — Linear, Flatten, normalisation, ... — is folded into one matrix by evaluating it on a
basis). Graphs of any other form return None and BaB falls back to the generic bound methods.

Bounds here are CROWN-style linear relaxations, batched over many subdomains at once:

* ``forward_bounds``: forward-mode symbolic bounds of every pre-activation in terms of the
  input (cheap when the input is low-dimensional: ACAS Xu has 5 inputs);
* ``crown_intermediate``: backward CROWN for every layer (tighter, costlier);
* ``spec_bound``: backward CROWN of the spec rows ``C·y + d`` with optional per-row ReLU lower
  slopes (alpha) and split multipliers (beta, as in beta-CROWN) — differentiable, so both can
  be optimised by gradient ascent (``optimize_spec_bound``).

Split constraints are int8 tensors per ReLU layer (B, n_k): +1 active (z ≥ 0), −1 inactive
(z ≤ 0), 0 free. ``clip_by_splits`` applies them to intermediate bounds; a subdomain whose
clipped bounds cross (l > u) is empty and gets lower bound +inf.

Deadlines: the functions taking a ``deadline`` raise :class:`~nncert.clock.DeadlineExceededError`
past it and return nothing then; big products are cut into chunks of about ``CHUNK_MACS``
multiply-adds with a check before each, so that no stretch of work between two checks is long.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

from ..clock import NEVER, Deadline
from ..models import ops
from ..models.graph import Graph

Layer = tuple[torch.Tensor, torch.Tensor]  # (l, u), each (B, n)


@dataclass(frozen=True, eq=False)
class ReluNet:
    """Dense layers: ``Ws[k]`` (n_k, n_{k-1}), ``bs[k]`` (n_k,); ReLU after every layer but the
    last. ``pre_names[k]`` is the graph node feeding the k-th ReLU (the split-contract name)."""

    Ws: tuple[torch.Tensor, ...]
    bs: tuple[torch.Tensor, ...]
    pre_names: tuple[str, ...]
    input_shape: tuple[int, ...]

    @property
    def num_relu_layers(self) -> int:
        return len(self.Ws) - 1

    @property
    def widths(self) -> list[int]:
        return [W.shape[0] for W in self.Ws[:-1]]

    @property
    def num_inputs(self) -> int:
        return self.Ws[0].shape[1]

    @property
    def dtype(self) -> torch.dtype:
        return self.Ws[0].dtype

    def to(self, dtype: torch.dtype) -> ReluNet:
        return ReluNet(tuple(W.to(dtype) for W in self.Ws), tuple(b.to(dtype) for b in self.bs),
                       self.pre_names, self.input_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, n0) flat → (N, n_out)."""
        h = x
        for k, (W, b) in enumerate(zip(self.Ws, self.bs)):
            h = h @ W.T + b
            if k < len(self.Ws) - 1:
                h = torch.relu(h)
        return h

    def pre_activations(self, x: torch.Tensor) -> list[torch.Tensor]:
        out, h = [], x
        for W, b in zip(self.Ws[:-1], self.bs[:-1]):
            z = h @ W.T + b
            out.append(z)
            h = torch.relu(z)
        return out


#: multiply-adds in one chunk of work between two deadline checks (about 0.05 s on one core)
CHUNK_MACS = 2**26


def chunks(n: int, cost_per_item: float) -> list[slice]:
    """``range(n)`` cut into slices of at most ``CHUNK_MACS / cost_per_item`` items."""
    step = max(1, int(CHUNK_MACS // max(cost_per_item, 1.0)))
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


def backward_macs(net: ReluNet, m: int) -> int:
    """Multiply-adds of one row's backward pass from layer ``m`` to the input."""
    return sum(W.numel() for W in net.Ws[:m + 1])


def _dense(graph: Graph, seg: list, in_name: str,
           deadline: Deadline = NEVER) -> tuple[torch.Tensor, torch.Tensor]:
    """The affine map of a run of one-input affine ops as (W, b) on flat vectors (evaluated
    on the basis in chunks, with a deadline check before each)."""
    shape = graph.shapes[in_name] if in_name != graph.input_name else graph.input_shape
    n = math.prod(shape)
    dt = torch.float64

    def run(h):
        for op in seg:
            h = op.to(dtype=dt).forward(h)
        return h.reshape(h.shape[0], -1)

    b = run(torch.zeros(1, *shape, dtype=dt))[0]
    cols = []
    for sl in chunks(n, 64 * n):
        deadline.check()
        k = sl.stop - sl.start
        basis = torch.zeros(k, n, dtype=dt)
        basis[torch.arange(k), torch.arange(sl.start, sl.stop)] = 1.0
        cols.append(run(basis.reshape(k, *shape)) - b)
    W = torch.cat(cols).T.contiguous()
    return W, b


def _chain_segments(graph: Graph) -> list[tuple[list, str, str]] | None:
    """The chain ``affine* (ReLU affine*)*`` as (affine ops, segment input, ReLU input name or
    '' for the last segment), or None for any other graph."""
    prev = graph.input_name
    seg: list = []
    seg_in = graph.input_name
    out = []
    for node in graph.nodes:
        if len(node.inputs) != 1 or node.inputs[0] != prev:
            return None
        if isinstance(node.op, ops.AffineOp):
            seg.append(node.op)
        elif isinstance(node.op, ops.ReLU):
            if not seg:
                return None
            out.append((seg, seg_in, prev))
            seg, seg_in = [], node.name
        else:
            return None
        prev = node.name
    if prev != graph.output_name or not seg:
        return None
    return out + [(seg, seg_in, "")]


def extract_relu_net(graph: Graph, deadline: Deadline = NEVER) -> ReluNet | None:
    """The dense form of a chain of affine ops and ReLUs, or None for anything else."""
    segments = _chain_segments(graph)
    if segments is None:
        return None
    Ws, bs = [], []
    for seg, seg_in, _ in segments:
        W, b = _dense(graph, seg, seg_in, deadline)
        Ws.append(W)
        bs.append(b)
    names = [name for _, _, name in segments[:-1]]
    dt = graph.dtype
    return ReluNet(tuple(w.to(dt) for w in Ws), tuple(v.to(dt) for v in bs), tuple(names),
                   graph.input_shape)


# -- relaxations ------------------------------------------------------------------------------
class Relax(NamedTuple):
    """One ReLU layer's relaxation for z ∈ [l, u]: upper line ``a ≤ su·z + tu``, default lower
    slope ``sl``; ``fixed``/``free`` split the lower slope as ``fixed + free·alpha`` (alpha
    only moves the unstable neurons' slopes)."""

    su: torch.Tensor
    tu: torch.Tensor
    sl: torch.Tensor
    active: torch.Tensor | None  # None in a line-only selection (``select_lines``)
    unstable: torch.Tensor | None
    fixed: torch.Tensor | None
    free: torch.Tensor | None

    def to(self, dtype: torch.dtype) -> Relax:
        return Relax(*(t.to(dtype) if t is not None and t.is_floating_point() else t
                       for t in self))

    def select(self, idx: torch.Tensor) -> Relax:
        """Rows ``idx`` of every field."""
        return Relax(*(None if t is None else t[idx] for t in self))

    def select_lines(self, idx: torch.Tensor) -> Relax:
        """Rows ``idx`` of the lines only (``su``, ``tu``, ``sl``): enough for a CROWN pass
        without alpha, at less than half the gathering."""
        return Relax(self.su[idx], self.tu[idx], self.sl[idx], None, None, None, None)


def relu_relax(zl: torch.Tensor, u: torch.Tensor) -> Relax:
    """The triangle relaxation of each neuron (adaptive default lower slope)."""
    active = zl >= 0
    inactive = u <= 0
    unstable = ~(active | inactive)
    denom = torch.where(unstable, u - zl, torch.ones_like(u))
    su = torch.where(active, torch.ones_like(u), torch.where(unstable, u / denom, torch.zeros_like(u)))
    tu = torch.where(unstable, -zl * u / denom, torch.zeros_like(u))
    sl = torch.where(active, torch.ones_like(u),
                     torch.where(unstable & (u >= -zl), torch.ones_like(u), torch.zeros_like(u)))
    free = unstable.to(u.dtype)
    return Relax(su, tu, sl, active, unstable, sl * (1 - free), free)


def _clip(zl: torch.Tensor, u: torch.Tensor, s: torch.Tensor) -> Layer:
    """One layer's bounds under its split constraints (+1: z ≥ 0, −1: z ≤ 0)."""
    return torch.where(s > 0, zl.clamp_min(0), zl), torch.where(s < 0, u.clamp_max(0), u)


def clip_by_splits(inter: list[Layer], splits: list[torch.Tensor] | None) -> list[Layer]:
    if splits is None:
        return inter
    return [_clip(zl, u, s) for (zl, u), s in zip(inter, splits)]


def empty_domains(inter: list[Layer]) -> torch.Tensor:
    bad = None
    for zl, u in inter:
        e = (zl > u).any(dim=-1)
        bad = e if bad is None else bad | e
    return bad


def one_row(t: torch.Tensor) -> bool:
    """Whether the batch ``t`` is a single row expanded (stride 0): one box shared by every
    problem, as in ReLU splitting."""
    return t.dim() >= 1 and t.shape[0] > 1 and t.stride(0) == 0


def cast(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``t.to(dtype)``, keeping a batch that is one row expanded (stride 0) expanded."""
    return t[:1].to(dtype).expand_as(t) if one_row(t) else t.to(dtype)


def concretize_box(A: torch.Tensor, const: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor):
    """min over the box of A·x + const: A (B,R,n), lo/hi (B,n)."""
    c, r = (hi + lo) / 2, (hi - lo) / 2
    if one_row(lo) and one_row(hi):
        # one box shared by every problem (ReLU splitting): plain matrix-vector products
        return A @ c[0] - A.abs() @ r[0] + const
    return torch.einsum("brn,bn->br", A, c) - torch.einsum("brn,bn->br", A.abs(), r) + const


def forward_bounds(net: ReluNet, lo: torch.Tensor, hi: torch.Tensor,
                   splits: list[torch.Tensor] | None = None,
                   prior: list[Layer] | None = None,
                   deadline: Deadline = NEVER) -> list[Layer]:
    """Forward-mode symbolic linear bounds of every pre-activation: (l_k, u_k) per ReLU layer."""
    B, n0 = lo.shape
    c, r = (hi + lo) / 2, (hi - lo) / 2
    W0, b0 = net.Ws[0], net.bs[0]
    Lw = W0.unsqueeze(0).expand(B, -1, -1)
    Lb = b0.unsqueeze(0).expand(B, -1)
    Uw, Ub = Lw, Lb
    inter = []
    for k in range(net.num_relu_layers):
        deadline.check()
        zl = torch.einsum("bjn,bn->bj", Lw, c) - torch.einsum("bjn,bn->bj", Lw.abs(), r) + Lb
        u = torch.einsum("bjn,bn->bj", Uw, c) + torch.einsum("bjn,bn->bj", Uw.abs(), r) + Ub
        if k == 0:
            u = torch.maximum(u, zl)  # identical functions: guard against rounding
        if prior is not None:  # bounds valid on a superset (the parent box) stay valid
            zl, u = torch.maximum(zl, prior[k][0]), torch.minimum(u, prior[k][1])
        if splits is not None:
            zl, u = _clip(zl, u, splits[k])
        inter.append((zl, u))
        su, tu, sl, *_ = relu_relax(zl, u)
        aLw, aLb = Lw * sl.unsqueeze(-1), Lb * sl
        aUw, aUb = Uw * su.unsqueeze(-1), Ub * su + tu
        W, b = net.Ws[k + 1], net.bs[k + 1]
        if k + 1 < net.num_relu_layers:
            Wp, Wn = W.clamp_min(0), W.clamp_max(0)
            parts = []
            for sl_ in chunks(W.shape[0], 4 * B * W.shape[1] * n0):
                deadline.check()
                parts.append(_forward_step(Wp[sl_], Wn[sl_], b[sl_], aLw, aLb, aUw, aUb))
            Lw, Lb, Uw, Ub = (t[0] if len(t) == 1 else torch.cat(t, 1) for t in zip(*parts))
    return inter


def _forward_step(Wp, Wn, b, aLw, aLb, aUw, aUb):
    """The next layer's (rows of) symbolic bounds from the relaxed previous layer."""
    Lw = torch.einsum("ij,bjn->bin", Wp, aLw) + torch.einsum("ij,bjn->bin", Wn, aUw)
    Lb = aLb @ Wp.T + aUb @ Wn.T + b
    Uw = torch.einsum("ij,bjn->bin", Wp, aUw) + torch.einsum("ij,bjn->bin", Wn, aLw)
    Ub = aUb @ Wp.T + aLb @ Wn.T + b
    return Lw, Lb, Uw, Ub


def backward(net: ReluNet, m: int, A: torch.Tensor, const: torch.Tensor, inter: list[Layer],
             lo: torch.Tensor, hi: torch.Tensor, alphas: list[torch.Tensor] | None = None,
             betas: list[torch.Tensor] | None = None, splits: list[torch.Tensor] | None = None,
             keep_A: bool = False, relax: list[Relax] | None = None):
    """Lower bound of ``A·z_m + const`` over the box (m = num_relu_layers: the output).
    ``relax``: the layers' ``relu_relax`` results when already computed (then ``inter`` is not
    read).

    Returns (lower (B,R), A_x (B,R,n0), per-layer A on the ReLU outputs if keep_A)."""
    layer_As = []
    for j in range(m - 1, -1, -1):
        W, b = net.Ws[j + 1], net.bs[j + 1]
        const = const + A @ b
        A = A @ W
        if keep_A:
            layer_As.append(A)
        rx = relu_relax(*inter[j]) if relax is None else relax[j]
        if alphas is not None:
            sl = rx.fixed.unsqueeze(1) + rx.free.unsqueeze(1) * alphas[j]
        else:
            sl = rx.sl.unsqueeze(1)
        # (no torch.where here: it is several times slower than these products on the CPU)
        pos = A.clamp(min=0)
        neg = A - pos
        const = const + (neg * rx.tu.unsqueeze(1)).sum(-1)
        A = pos * sl + neg * rx.su.unsqueeze(1)
        if betas is not None and splits is not None:
            A = A - betas[j] * splits[j].unsqueeze(1).to(A.dtype)
    const = const + A @ net.bs[0]
    A = A @ net.Ws[0]
    lower = concretize_box(A, const, lo, hi)
    layer_As.reverse()
    return lower, A, layer_As


def crown_intermediate(net: ReluNet, lo: torch.Tensor, hi: torch.Tensor,
                       splits: list[torch.Tensor] | None = None,
                       fwd: list[Layer] | None = None,
                       after: torch.Tensor | None = None,
                       only: list[torch.Tensor] | None = None,
                       deadline: Deadline = NEVER) -> list[Layer]:
    """Backward CROWN bounds of every pre-activation (intersected with ``fwd`` when given;
    sound when ``fwd`` is sound on each box and ``splits`` hold there).

    ``after`` (B,): back-substitute box b's layers only beyond layer ``after[b]`` (the others
    keep ``fwd`` and the interval step): for a ReLU-split child whose parent's bounds are
    ``fwd``, only the layers after its new split can change. ``only`` (per layer, (B, n_k)
    bool): back-substitute only these neurons (the others keep ``fwd`` and the interval
    step). The passes run in chunks of about ``CHUNK_MACS``, ``deadline`` checked before each."""
    B = lo.shape[0]
    inter: list[Layer] = []
    relax: list[Relax] = []  # relu_relax per layer, reused by every later layer's pass
    for k in range(net.num_relu_layers):
        deadline.check()
        n = net.Ws[k].shape[0]
        if k == 0:
            c, r = (hi + lo) / 2, (hi - lo) / 2
            mid = c @ net.Ws[0].T + net.bs[0]
            rad = r @ net.Ws[0].abs().T
            zl, u = mid - rad, mid + rad
        else:
            # interval step from the (refined) previous layer: sometimes tighter than CROWN
            pl, pu = inter[k - 1]
            al, au = pl.clamp_min(0), pu.clamp_min(0)
            W, bb = net.Ws[k], net.bs[k]
            mid = ((al + au) / 2) @ W.T + bb
            rad = ((au - al) / 2) @ W.abs().T
            il, iu = mid - rad, mid + rad
            if fwd is not None:
                il, iu = torch.maximum(il, fwd[k][0]), torch.minimum(iu, fwd[k][1])
            # only the (box, neuron) pairs still unstable need a backward pass: each pair is
            # bounded as its own one-box problem with two rows (+z_j, −z_j), so that small boxes
            # with few unstable neurons cost little
            unst = (il < 0) & (iu > 0)
            if after is not None:
                unst &= (after < k).unsqueeze(-1)
            if only is not None:
                unst &= only[k]
            if int(unst.sum()) > B * n // 2:  # mostly unstable: every neuron, no gathering
                zl, u = _all_neurons(net, k, il, iu, inter, relax, lo, hi, deadline)
            else:
                zl, u = _some_neurons(net, k, il, iu, unst, inter, relax, lo, hi, deadline)
        if fwd is not None and k == 0:
            zl, u = torch.maximum(zl, fwd[k][0]), torch.minimum(u, fwd[k][1])
        if splits is not None:
            zl, u = _clip(zl, u, splits[k])
        inter.append((zl, u))
        relax.append(relu_relax(zl, u))
    return inter


def _all_neurons(net: ReluNet, k: int, il, iu, inter, relax, lo, hi, deadline: Deadline):
    """Layer ``k``'s interval bounds intersected with CROWN's for every neuron of every box,
    neurons in chunks (rows +z_j and −z_j)."""
    B, n = il.shape
    zl, u = il.clone(), iu.clone()
    for s in chunks(n, 2 * B * backward_macs(net, k)):
        deadline.check()
        m = s.stop - s.start
        eye = torch.zeros(m, n, dtype=lo.dtype, device=lo.device)
        eye[torch.arange(m), torch.arange(s.start, s.stop)] = 1.0
        A = torch.cat([eye, -eye]).unsqueeze(0).expand(B, -1, -1)
        const = torch.zeros(B, 2 * m, dtype=lo.dtype, device=lo.device)
        lower, _, _ = backward(net, k, A, const, inter, lo, hi, relax=relax)
        zl[:, s] = torch.maximum(il[:, s], lower[:, :m])
        u[:, s] = torch.minimum(iu[:, s], -lower[:, m:])
    return zl, u


def _some_neurons(net: ReluNet, k: int, il, iu, unst, inter, relax, lo, hi,
                  deadline: Deadline):
    """Layer ``k``'s interval bounds intersected with CROWN's for the (box, neuron) pairs in
    ``unst``, each its own one-box problem, pairs in chunks."""
    zl, u = il.clone(), iu.clone()
    shared = one_row(lo) and one_row(hi)
    box_all, row_all = unst.nonzero(as_tuple=True)
    n = il.shape[1]
    for s in chunks(box_all.numel(), 2 * backward_macs(net, k)):
        deadline.check()
        box, row = box_all[s], row_all[s]
        npairs = box.numel()
        A = torch.zeros(npairs, 2, n, dtype=lo.dtype, device=lo.device)
        pairs = torch.arange(npairs, device=lo.device)
        A[pairs, 0, row] = 1.0
        A[pairs, 1, row] = -1.0
        const = torch.zeros(npairs, 2, dtype=lo.dtype, device=lo.device)
        sub = [r.select_lines(box) for r in relax]
        # bound z_k through layers k-1..0: the first step applies W_k
        plo, phi = ((lo[:1].expand(npairs, -1), hi[:1].expand(npairs, -1)) if shared
                    else (lo[box], hi[box]))
        lower, _, _ = backward(net, k, A, const, inter, plo, phi, relax=sub)
        zl[box, row] = torch.maximum(il[box, row], lower[:, 0])
        u[box, row] = torch.minimum(iu[box, row], -lower[:, 1])
    return zl, u


def spec_bound(net: ReluNet, C: torch.Tensor, d: torch.Tensor, inter: list[Layer],
               lo: torch.Tensor, hi: torch.Tensor, alphas=None, betas=None, splits=None,
               keep_A: bool = False, relax: list[Relax] | None = None):
    """Lower bound of ``C·y + d`` (C (B,R,n_out), d (B,R)) over each box."""
    return backward(net, net.num_relu_layers, C, d, inter, lo, hi, alphas, betas, splits, keep_A,
                    relax)


def init_alphas(inter: list[Layer], R: int) -> list[torch.Tensor]:
    out = []
    for zl, u in inter:
        sl = (u >= -zl).to(zl.dtype)
        out.append(sl.unsqueeze(1).expand(-1, R, -1).clone())
    return out


class SpecBound(NamedTuple):
    """``lower`` (B, R): sound lower bounds, computed in the network's dtype; ``A_x`` (B, R, n0)
    their input coefficients; ``alphas``/``betas``: the last parameters of the search (a warm
    start for sub-problems; ``betas`` None without split constraints)."""

    lower: torch.Tensor
    A_x: torch.Tensor
    alphas: list[torch.Tensor]
    betas: list[torch.Tensor] | None


def optimize_spec_bound(net: ReluNet, C, d, inter: list[Layer], lo, hi, splits=None,
                        iters: int = 20, lr_alpha: float = 0.1, lr_beta: float = 0.05,
                        alphas: list[torch.Tensor] | None = None,
                        betas: list[torch.Tensor] | None = None, use_beta: bool = True,
                        deadline: Deadline = NEVER,
                        search_net: ReluNet | None = None) -> SpecBound:
    """alpha(-beta)-CROWN on the last layer: per-row ReLU lower slopes in [0, 1] and, for split
    neurons, multipliers beta ≥ 0, maximised by projected Adam from the given warm start
    (``alphas``, ``betas``) or the default slopes and zero multipliers.

    Every alpha in [0, 1] and beta ≥ 0 gives a sound bound, so the search may run on
    ``search_net`` (a lower-precision copy, e.g. float32: about twice as fast); the bounds
    returned are always evaluated in ``net``'s dtype: the best of the warm start and the final
    parameters (and, when the search runs in ``net`` itself, of every iterate). Past
    ``deadline`` (checked before every step) it raises
    :class:`~nncert.clock.DeadlineExceededError`."""
    deadline.check()
    B, R = C.shape[:2]
    if alphas is None:
        alphas = init_alphas(inter, R)
    if not (use_beta and splits is not None and any(bool((s != 0).any()) for s in splits)):
        betas = None
    elif betas is None:
        betas = [torch.zeros(B, R, s.shape[-1], dtype=C.dtype) for s in splits]
    relax = [relu_relax(zl, u) for zl, u in inter]
    dt = net.dtype

    def evaluate(al, bt):
        with torch.no_grad():
            return spec_bound(net, C, d, inter, lo, hi, [a.to(dt) for a in al],
                              None if bt is None else [b.to(dt) for b in bt], splits,
                              relax=relax)[:2]

    snet = search_net if search_net is not None else net
    sdt = snet.dtype
    same = snet is net
    best = A_x = None
    if iters <= 0 or not same:  # (searching in net itself, the first iterate is this bound)
        best, A_x = evaluate(alphas, betas)
        if iters <= 0:
            return SpecBound(best, A_x, list(alphas), betas)
    # the parameters of every problem (written back from the search as problems finish)
    al_all = [a.detach().to(sdt).expand(B, *a.shape[1:]).clone() for a in alphas]
    bt_all = (None if betas is None
              else [b.detach().to(sdt).expand(B, *b.shape[1:]).clone() for b in betas])
    lrs = [lr_alpha] * len(al_all) + ([] if bt_all is None else [lr_beta] * len(bt_all))
    # the problems still searched: a problem whose bound is positive on every row is proved
    # by its current parameters and leaves the search (its rows cost nothing more)
    act = torch.arange(B, device=C.device)
    if best is not None:
        act = act[~(best > 0).all(-1)]
    shared = one_row(lo) and one_row(hi)
    srelax = relax if same else [r.to(sdt) for r in relax]

    def rows_of(t: torch.Tensor | None, idx: torch.Tensor):
        if t is None or t.shape[0] != B:  # (one row broadcast to every problem)
            return t
        return t[idx]

    def gather(idx: torch.Tensor):
        n = idx.numel()
        blo = (cast(lo, sdt)[:1].expand(n, -1), cast(hi, sdt)[:1].expand(n, -1)) if shared \
            else (rows_of(lo, idx).to(sdt), rows_of(hi, idx).to(sdt))
        return (rows_of(C, idx).to(sdt), rows_of(d, idx).to(sdt), *blo,
                [r.select(idx) if r.su.shape[0] == B else r for r in srelax],
                None if splits is None else [rows_of(t, idx) for t in splits])

    def leaves(idx: torch.Tensor):
        ps = [t[idx].clone().requires_grad_(True) for t in al_all]
        if bt_all is not None:
            ps += [t[idx].clone().requires_grad_(True) for t in bt_all]
        return ps

    def write_back(ps, idx: torch.Tensor):
        for t, p in zip(al_all + (bt_all or []), ps):
            t[idx] = p.detach()

    sub = gather(act)
    ps = leaves(act)
    # the searched problems not yet proved
    live = torch.ones(act.numel(), dtype=torch.bool, device=C.device)
    # plain Adam (torch.optim would import torch._dynamo: seconds of start-up per process)
    m1 = [torch.zeros_like(p) for p in ps]
    m2 = [torch.zeros_like(p) for p in ps]
    b1, b2, eps = 0.9, 0.999, 1e-8
    na = len(al_all)
    with torch.enable_grad():
        for it in range(1, iters + 1):
            if not bool(live.any()):
                break
            deadline.check()
            sC, sd, slo, shi, rel, ssplits = sub
            lower, Ax, _ = spec_bound(snet, sC, sd, None, slo, shi, ps[:na], ps[na:] or None,
                                      ssplits, relax=rel)
            if same:
                if best is None:
                    best, A_x = lower.detach().clone(), Ax.detach().clone()
                else:
                    better = lower.detach() > best[act]
                    if bool(better.any()):
                        best[act] = torch.where(better, lower.detach(), best[act])
                        A_x[act] = torch.where(better.unsqueeze(-1), Ax.detach(), A_x[act])
            done = (lower.detach() > 0).all(-1) & live
            loss = -lower.clamp(max=1.0).sum()
            grads = torch.autograd.grad(loss, ps, allow_unused=True)
            if bool(done.any()):  # proved with these parameters: keep them, stop searching
                write_back([p[done] for p in ps], act[done])
                live &= ~done
            with torch.no_grad():
                for p, lr, g, a, v in zip(ps, lrs, grads, m1, m2):
                    if g is None:
                        continue
                    a.mul_(b1).add_(g, alpha=1 - b1)
                    v.mul_(b2).addcmul_(g, g, value=1 - b2)
                    step = lr * math.sqrt(1 - b2**it) / (1 - b1**it)
                    # sqrt(v + eps²), not sqrt(v) + eps: the same step, but zero entries of
                    # v (parameters without gradient) take a slow path in torch's sqrt on CPU
                    p.sub_(step * a / (v + eps * eps).sqrt_())
                for a in ps[:na]:
                    a.clamp_(0.0, 1.0)
                for b in ps[na:]:
                    b.clamp_(min=0.0)
            if int(live.sum()) < 0.75 * live.numel():  # drop the proved ones (a gather)
                write_back([p[live] for p in ps], act[live])
                act = act[live]
                sub = gather(act)
                ps = leaves(act)
                m1 = [t[live] for t in m1]
                m2 = [t[live] for t in m2]
                live = torch.ones(act.numel(), dtype=torch.bool, device=C.device)
    write_back([p[live] for p in ps], act[live])
    al, bt = al_all, bt_all
    deadline.check()
    lower, Ax = evaluate(al, bt)  # the final parameters, in the network's dtype
    if best is None:  # (no iterate ran: an empty batch)
        return SpecBound(lower, Ax, al, bt)
    better = lower > best
    best = torch.where(better, lower, best)
    A_x = torch.where(better.unsqueeze(-1), Ax, A_x)
    return SpecBound(best, A_x, al, bt)


def disjunction_lower(A: torch.Tensor, lower: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor,
                      rows: tuple[int, ...], iters: int = 15) -> torch.Tensor:
    """A sound lower bound of ``max_{r ∈ rows} row_r(x)`` over each box, at least as tight as
    ``max_r lower_r``.

    Each row has a linear lower bound ``row_r(x) ≥ A_r·x + c_r`` on its box (``lower_r`` is its
    minimum there). For any λ in the simplex, ``max_r row_r ≥ Σ_r λ_r (A_r·x + c_r)``, whose
    minimum over the box is again a sound bound; λ is improved by a few projected-gradient
    steps (exponentiated gradient), and the best value seen — the one-hot λ's included — is
    returned. A (B, R, n), lower (B, R), lo/hi (B, n) → (B,)."""
    idx = list(rows)
    best = lower[:, idx].amax(-1)
    if len(idx) == 1:
        return best
    Ar = A[:, idx]
    mid, rad = (hi + lo) / 2, (hi - lo) / 2
    # c_r: constant of the linear bound, recovered from its box minimum
    c = lower[:, idx] - (torch.einsum("brn,bn->br", Ar, mid) - torch.einsum("brn,bn->br", Ar.abs(), rad))
    lam = torch.full_like(c, 1.0 / len(idx))
    for _ in range(iters):
        a = torch.einsum("br,brn->bn", lam, Ar)
        val = (lam * c).sum(-1) + (a * mid).sum(-1) - (a.abs() * rad).sum(-1)
        best = torch.maximum(best, val)
        # supergradient in λ: each row's linear bound at the minimising corner
        corner = mid - torch.sign(a) * rad
        g = c + torch.einsum("brn,bn->br", Ar, corner)
        g = g - g.mean(-1, keepdim=True)
        scale = g.abs().amax(-1, keepdim=True).clamp_min(1e-12)
        lam = lam * torch.exp(g / scale)
        lam = lam / lam.sum(-1, keepdim=True)
    return best
