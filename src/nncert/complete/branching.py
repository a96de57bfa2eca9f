"""Branching heuristics: which input dimension or which ReLU to split.

* ``widest_input_dims``: per box, the widest side measured by its reach into the first layer,
  ``width_i · Σ_j |W0_ji|`` (invariant to how each input is scaled). On ACAS Xu this needs
  10–100× fewer boxes than the gradient-style score below: the looseness of deep relaxations
  comes from wide intermediate ranges, which the first-layer reach tracks, while the output
  row's input coefficients can be small exactly where the relaxation is loosest.
* ``input_split_dims``: per box, the dimension with the largest estimated effect on the bound,
  ``|A_i|·width_i`` summed over the best row of every clause not yet proved (A: the CROWN
  coefficients of the rows on the input).
* ``babsr_scores``: a BaBSR-style score per unstable ReLU: the looseness its triangle
  relaxation contributes to the bound of the worst row, ``|A_j|·(−l·u)/(u−l)`` (full weight on
  the upper-line side, half on the lower-line side).
* ``fsb_choose``: filtered smart branching: the top-k BaBSR candidates of each domain are tried
  — both children bounded with one cheap CROWN pass — and the one whose worse child has the
  best bound wins.
"""

from __future__ import annotations

import torch

from ..clock import NEVER, Deadline
from ..specs.output import OutputSpec
from . import relu_net as rn


def clause_best_rows(spec: OutputSpec, lb: torch.Tensor):
    """Per clause: (best row index (B, K), clause lower bound (B, K))."""
    idx, vals = [], []
    for cl in spec.clauses:
        sub = lb[:, list(cl)]
        v, i = sub.max(-1)
        idx.append(torch.as_tensor(cl, device=lb.device)[i])
        vals.append(v)
    return torch.stack(idx, -1), torch.stack(vals, -1)


def widest_input_dims(lo: torch.Tensor, hi: torch.Tensor, reach: torch.Tensor) -> torch.Tensor:
    """(B,) flat input dimension to bisect: argmax of ``(hi − lo) · reach`` with ``reach``
    (n,) the column sums of |W0|; dimensions that reach nothing fall back to plain width."""
    width = hi - lo
    score = width * reach
    flat = score.amax(-1) <= 0
    return torch.where(flat, width.argmax(-1), score.argmax(-1))


def input_split_dims(spec: OutputSpec, lb: torch.Tensor, A_x: torch.Tensor | None,
                     lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """(B,) flat input dimension to bisect in each box."""
    width = hi - lo
    if A_x is None:
        return width.argmax(-1)
    rows, vals = clause_best_rows(spec, lb)  # (B, K)
    B = lb.shape[0]
    A_rows = A_x[torch.arange(B).unsqueeze(-1), rows]  # (B, K, n)
    weight = (vals <= 0).to(A_x.dtype).unsqueeze(-1)
    score = (A_rows.abs() * weight).sum(1) * width
    score = torch.where(width > 0, score, torch.full_like(score, -1.0))
    # boxes with no informative gradient: widest side
    flat = score.amax(-1) <= 0
    return torch.where(flat, width.argmax(-1), score.argmax(-1))


def babsr_scores(inter: list[rn.Layer], layer_As: list[torch.Tensor], worst_row: torch.Tensor
                 ) -> list[torch.Tensor]:
    """Per ReLU layer, (B, n_k) scores; 0 for stable or split neurons."""
    B = worst_row.shape[0]
    out = []
    for (zl, u), A in zip(inter, layer_As):
        a = A[torch.arange(B), worst_row]  # (B, n)
        unstable = (zl < 0) & (u > 0)
        denom = torch.where(unstable, u - zl, torch.ones_like(u))
        gap = torch.where(unstable, -zl * u / denom, torch.zeros_like(u))
        s = (a.clamp_max(0).abs() + 0.5 * a.clamp_min(0)) * gap
        # tie-break towards wide unstable neurons so that a split always happens
        s = s + 1e-9 * torch.where(unstable, u - zl, torch.zeros_like(u))
        out.append(torch.where(unstable, s, torch.zeros_like(s)))
    return out


def top_share(score: torch.Tensor, share: float) -> torch.Tensor:
    """(B, n) mask of each row's ``ceil(share · m)`` highest positive scores (m: the row's
    positive ones)."""
    m = (score > 0).sum(-1, keepdim=True)
    k = torch.ceil(m * share).long()
    order = score.argsort(-1, descending=True)
    rank = torch.empty_like(order)
    ranks = torch.arange(score.shape[-1], device=score.device).expand_as(order).contiguous()
    rank.scatter_(-1, order, ranks)
    return (rank < k) & (score > 0)


def flat_argmax(scores: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(layer, index) of the best score per domain; layer −1 when no candidate."""
    cat = torch.cat(scores, -1)
    best, flat = cat.max(-1)
    offsets = torch.tensor([0] + [s.shape[-1] for s in scores]).cumsum(0)
    layer = torch.searchsorted(offsets[1:], flat, right=True)
    idx = flat - offsets[layer]
    layer = torch.where(best > 0, layer, torch.full_like(layer, -1))
    return layer, idx


def topk_candidates(scores: list[torch.Tensor], k: int):
    cat = torch.cat(scores, -1)
    k = min(k, cat.shape[-1])
    vals, flat = cat.topk(k, -1)
    offsets = torch.tensor([0] + [s.shape[-1] for s in scores]).cumsum(0)
    layer = torch.searchsorted(offsets[1:], flat, right=True)
    idx = flat - offsets[layer]
    return vals, layer, idx


def apply_split(splits: list[torch.Tensor], layer: torch.Tensor, idx: torch.Tensor
                ) -> list[torch.Tensor]:
    """Children of each domain (all +1 children, then all −1 children): 2B split sets."""
    B = layer.shape[0]
    out = []
    rows = torch.arange(B)
    for k, s in enumerate(splits):
        pos, neg = s.clone(), s.clone()
        sel = layer == k
        if bool(sel.any()):
            pos[rows[sel], idx[sel]] = 1
            neg[rows[sel], idx[sel]] = -1
        out.append(torch.cat([pos, neg]))
    return out


def fsb_choose(net: rn.ReluNet, spec: OutputSpec, inter: list[rn.Layer], splits,
               alphas, lo, hi, scores: list[torch.Tensor], k: int = 4,
               open_rows: torch.Tensor | None = None, deadline: Deadline = NEVER):
    """Filtered smart branching: (layer, idx) per domain.

    ``inter``: each domain's bounds with its splits applied; ``alphas``: per layer (B, R, n);
    all domains share the box ``lo``, ``hi`` (1 or B, n). ``open_rows`` (B, R) marks the rows
    of the clauses a domain has not proved yet: only those are bounded, each (child, row) as
    its own one-row problem. Bounds are computed in ``net``'s dtype (a heuristic: a
    lower-precision copy is fine), in chunks of about ``relu_net.CHUNK_MACS`` with a
    ``deadline`` check before each."""
    B = splits[0].shape[0]
    R = spec.num_rows
    dt = net.dtype
    vals, layer, idx = topk_candidates(scores, k)  # (B, k)
    k = layer.shape[1]
    if open_rows is None:
        open_rows = torch.ones(B, R, dtype=torch.bool)
    dom, row = open_rows.nonzero(as_tuple=True)  # P (domain, row) pairs
    P = dom.numel()
    # pair p, candidate c → children (±, p, c)
    pd, pr = dom.repeat_interleave(k), row.repeat_interleave(k)
    pc = torch.arange(k).repeat(P)
    kids = apply_split([s[pd] for s in splits], layer[pd, pc], idx[pd, pc])  # (2Pk, n)
    kinter = rn.clip_by_splits([(zl[pd].repeat(2, 1).to(dt), u[pd].repeat(2, 1).to(dt))
                                for zl, u in inter], kids)
    C = spec.C[0, pr].unsqueeze(1).repeat(2, 1, 1).to(dt)
    d = spec.d[0, pr].unsqueeze(1).repeat(2, 1).to(dt)
    al = None
    if alphas is not None:
        al = [a[pd, pr].unsqueeze(1).repeat(2, 1, 1).to(dt) for a in alphas]
    lbo = _chunked_spec_bound(net, C, d, kinter, lo[:1].to(dt), hi[:1].to(dt), al, deadline)
    lbo = torch.where(rn.empty_domains(kinter), float("inf"), lbo[:, 0])
    # back to (±, domain, candidate, row); rows not bounded count as proved
    full = torch.full((2, B, k, R), float("inf"), dtype=lbo.dtype)
    full[:, pd, pc, pr] = lbo.reshape(2, P * k)
    m = spec.clause_max(full).amin(-1).amin(0)  # (B, k): the worse child's margin bound
    m = torch.where(vals > 0, m, torch.full_like(m, -float("inf")))
    best = m.argmax(-1)
    rows = torch.arange(B)
    chosen_layer = torch.where(vals[rows, best] > 0, layer[rows, best], torch.full_like(best, -1))
    return chosen_layer, idx[rows, best]


def _chunked_spec_bound(net: rn.ReluNet, C, d, inter, lo1, hi1, alphas, deadline: Deadline):
    """``spec_bound``'s lower bounds (n, R) of n one-box problems sharing the box (1, n0), in
    chunks of problems with a deadline check before each."""
    n = C.shape[0]
    cost = C.shape[1] * rn.backward_macs(net, net.num_relu_layers)
    out = []
    for s in rn.chunks(n, cost):
        deadline.check()
        m = s.stop - s.start
        lb, _, _ = rn.spec_bound(net, C[s], d[s], [(zl[s], u[s]) for zl, u in inter],
                                 lo1.expand(m, -1), hi1.expand(m, -1),
                                 None if alphas is None else [a[s] for a in alphas])
        out.append(lb)
    return out[0] if len(out) == 1 else torch.cat(out)
