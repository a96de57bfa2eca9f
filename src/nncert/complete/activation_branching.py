"""Which general activation neuron to split (LeakyReLU, Sigmoid, Tanh): a BaBSR-like score.

For a neuron with pre-activation bounds [l, u] and split point p (``split_points``), the
relaxation's *gap* on an interval is the largest vertical distance between its upper and lower
lines there (lines: the distance is largest at an endpoint). The score is

    |A_j| · (gap on [l, u] − max(gap on [l, p], gap on [p, u]))

with A_j the coefficient of the subdomain's worst spec row on the activation's output (as
BaBSR, Bunel et al. 2020; GenBaB, Shi et al. 2024, scores general nonlinearities by how much a
split shrinks the relaxation). A tiny width term breaks ties, so any candidate (see
``split_candidates``) scores > 0 and a split always happens while one is left. Heuristic only:
soundness never depends on the choice.
"""

from __future__ import annotations

import torch

from ..bounds.activation_splits import activation_inputs, split_candidates, split_points
from ..bounds.relaxations import relax
from ..bounds.subdomains import SubdomainBounds
from ..models.graph import Graph


def relaxation_gap(op, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """max over [lower, upper] of (upper line − lower line) of ``op``'s default relaxation."""
    r = relax(op, lower, upper)
    at_l = (r.upper_slope - r.lower_slope) * lower + (r.upper_bias - r.lower_bias)
    at_u = (r.upper_slope - r.lower_slope) * upper + (r.upper_bias - r.lower_bias)
    return torch.maximum(at_l, at_u).clamp_min(0)


def split_gain(op, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """How much splitting at ``split_points`` shrinks the gap (≥ 0), elementwise."""
    p = split_points(op, lower, upper)
    parent = relaxation_gap(op, lower, upper)
    kids = torch.maximum(relaxation_gap(op, lower, p), relaxation_gap(op, p, upper))
    return (parent - kids).clamp_min(0)


def activation_scores(graph: Graph, bounds: SubdomainBounds, worst_row: torch.Tensor,
                      min_width: float) -> list[torch.Tensor]:
    """(B, n) scores per branchable activation node (``activation_inputs`` order); 0 for
    neurons that no split can tighten. ``worst_row`` (B,): the row whose coefficients count."""
    out = []
    rows = torch.arange(worst_row.shape[0], device=worst_row.device)
    for a, z in activation_inputs(graph).items():
        op = graph.node(a).op
        iv = bounds.intermediate[z]
        lo, hi = iv.lower.flatten(1), iv.upper.flatten(1)
        cand = split_candidates(op, lo, hi, min_width)
        A = bounds.coefficients.get(a)
        a_abs = torch.zeros_like(lo) if A is None else A[rows, worst_row].flatten(1).abs()
        s = a_abs * split_gain(op, lo, hi) + 1e-9 * (hi - lo)
        out.append(torch.where(cand, s, torch.zeros_like(s)))
    return out
