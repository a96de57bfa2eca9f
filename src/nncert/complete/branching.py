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
* ``topk_candidates`` / ``flat_argmax``: the best-scored neurons over every ReLU node (the
  searches in ``relu_split.py`` and ``graph_bab.py`` key them by ReLU node name); FSB (try the
  top-k, keep the one whose worse child is best) lives with each search, bounding through
  ``bounds/``.
"""

from __future__ import annotations

import torch

from ..specs.output import OutputSpec


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


def babsr_scores(inter: list[tuple[torch.Tensor, torch.Tensor]], layer_As: list[torch.Tensor],
                 worst_row: torch.Tensor) -> list[torch.Tensor]:
    """Per ReLU node (in the order given), (B, n_k) scores from its flat pre-activation
    bounds and the rows' coefficients A (B, R, n_k) on its output; 0 for stable or split
    neurons."""
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
