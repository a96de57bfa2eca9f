"""Splits of general activations (LeakyReLU, Sigmoid, Tanh) for branch-and-bound.

General nonlinear BaB (GenBaB, Shi et al. 2024, "Neural network verification with
branch-and-bound for general nonlinearities"): a split of neuron j of an activation node
``a = σ(z)`` at a point p is the case distinction ``z_j ≤ p`` | ``z_j ≥ p``. The two cases
cover the parent (they overlap on ``z_j = p``), and on each side σ is relaxed on the narrower
interval, so its linear relaxation (``relaxations.py``) is tighter.

A subdomain records its activation splits as **limits**: activation node name → a float tensor
(B, 2, *shape of z) with ``limits[:, 0] ≤ z ≤ limits[:, 1]`` (−inf / +inf where unsplit); the
subdomain is the input set ∩ those constraints (∩ any ReLU sign splits). The engine
(``subdomains.bound_subdomains``) intersects z's intermediate bounds with the limits
(:func:`clip_to_limits`) and re-bounds the nodes downstream; every bound it returns then holds
on every point of the subdomain.

Split points (:func:`split_points`): 0 for LeakyReLU (each side is then linear, relaxed
exactly); for S-shaped σ, 0 when it lies in the middle half of [l, u] (each side is then convex
or concave, where tangents and chords are tight), else the midpoint. Either way each child's
width is at most 3/4 of the parent's, so repeated splits converge.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..models import ops
from ..models.graph import Graph
from .core import Interval
from .relaxations import RELAXATIONS

#: activations split at a point (ReLU has its own sign splits, keyed by its node name)
BRANCHABLE: tuple[type, ...] = tuple(t for t in RELAXATIONS if t is not ops.ReLU)

#: relative slack below which crossed bounds (lower > upper) are taken as rounding, not
#: emptiness (at least 1024 ulps of the dtype: float32 searches get 1.2e-4)
EMPTY_RTOL = 1e-9


def activation_inputs(graph: Graph) -> dict[str, str]:
    """Branchable activation node name → its input (pre-activation) node, in graph order."""
    return {n.name: n.inputs[0] for n in graph if isinstance(n.op, BRANCHABLE)}


def unsplit_limits(graph: Graph, intermediate: Mapping[str, Interval]) -> dict[str, torch.Tensor]:
    """Limits of a batch with no activation split: (B, 2, *shape) of −inf / +inf."""
    out = {}
    for a, z in activation_inputs(graph).items():
        lo = intermediate[z].lower
        inf = torch.full_like(lo, torch.inf)
        out[a] = torch.stack([-inf, inf], 1)
    return out


def limits_by_input(graph: Graph, limits: Mapping[str, torch.Tensor] | None
                    ) -> dict[str, torch.Tensor]:
    """Limits keyed by pre-activation node, only those with a finite entry somewhere (two
    activations of one node: their limits intersected, both hold on the subdomain)."""
    out: dict[str, torch.Tensor] = {}
    if not limits:
        return out
    z_of = activation_inputs(graph)
    for a, lim in limits.items():
        if not bool(torch.isfinite(lim).any()):
            continue
        z = z_of[a]
        if z in out:
            lim = torch.stack([torch.maximum(out[z][:, 0], lim[:, 0]),
                               torch.minimum(out[z][:, 1], lim[:, 1])], 1)
        out[z] = lim
    return out


def clip_interval(iv: Interval, lim: torch.Tensor) -> tuple[Interval, torch.Tensor]:
    """``iv ∩ [lim[:, 0], lim[:, 1]]`` and which batch elements are empty. Crossed bounds
    count as empty only beyond a relative slack (``EMPTY_RTOL``; else they are rounding: the
    interval is kept as [min, max], which contains every value both bounds admit)."""
    lim = lim.to(iv.lower)
    lo, hi = torch.maximum(iv.lower, lim[:, 0]), torch.minimum(iv.upper, lim[:, 1])
    scale = 1 + torch.maximum(iv.lower.abs(), iv.upper.abs())
    rtol = max(EMPTY_RTOL, 1024 * torch.finfo(lo.dtype).eps)
    bad = lo > hi + rtol * scale
    B = lo.shape[0]
    empty = bad.reshape(B, -1).any(1)
    return Interval(torch.minimum(lo, hi), torch.maximum(lo, hi)), empty


def clip_to_limits(intermediate: Mapping[str, Interval], limits_z: Mapping[str, torch.Tensor]
                   ) -> tuple[dict[str, Interval], torch.Tensor | None]:
    """``intermediate`` with each limited node intersected with its limits (sound on the
    subdomain: its points satisfy both), and which batch elements are empty (None: no limits)."""
    out = dict(intermediate)
    empty = None
    for z, lim in limits_z.items():
        out[z], e = clip_interval(out[z], lim)
        empty = e if empty is None else empty | e
    return out, empty


def split_points(op: ops.Op, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """Where to split neurons with bounds [lower, upper] (elementwise): see the module
    docstring. Strictly inside the interval when it has positive width."""
    if isinstance(op, ops.LeakyReLU):
        return torch.zeros_like(lower)
    w = upper - lower
    mid = (lower + upper) / 2
    zero_inside = (lower + w / 4 <= 0) & (upper - w / 4 >= 0)
    return torch.where(zero_inside, torch.zeros_like(mid), mid)


def split_candidates(op: ops.Op, lower: torch.Tensor, upper: torch.Tensor,
                     min_width: float) -> torch.Tensor:
    """Which neurons a split can tighten: LeakyReLU unstable ones (l < 0 < u), S-shaped ones
    wider than ``min_width``."""
    if isinstance(op, ops.LeakyReLU):
        return (lower < 0) & (upper > 0)
    return (upper - lower) > min_width


def split_limits(lim: torch.Tensor, rows: torch.Tensor, idx: torch.Tensor, point: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The limits (B, 2, *shape) of the two children of each subdomain ``rows[i]`` split on flat
    neuron ``idx[i]`` at ``point[i]``: (upper side ``z ≥ p``, lower side ``z ≤ p``). Other
    subdomains keep theirs. Each child's limits lie inside its parent's (a split never widens)."""
    B = lim.shape[0]
    flat = lim.reshape(B, 2, -1)
    up, down = flat.clone(), flat.clone()
    p = point.to(lim)
    up[rows, 0, idx] = torch.maximum(flat[rows, 0, idx], p)
    down[rows, 1, idx] = torch.minimum(flat[rows, 1, idx], p)
    return up.reshape(lim.shape), down.reshape(lim.shape)


# -- Lagrangian multipliers of the limits (beta-CROWN's β, Wang et al. 2021, for z ≥ lo, z ≤ hi) --
def limit_key(name: str) -> str:
    """The β key of the limits of pre-activation node ``name`` (next to ReLU β, keyed by node)."""
    return name + ":limits"


def limit_betas(limits_z: Mapping[str, torch.Tensor], init: Mapping[str, torch.Tensor] | None,
                R: int, like: torch.Tensor) -> dict[str, torch.Tensor]:
    """Trainable β ≥ 0 (B, R, 2, *shape) per limited node: [:, :, 0] for ``z ≥ lo``, [:, :, 1]
    for ``z ≤ hi``; from ``init[limit_key(z)]`` (clamped at 0) where given, else zeros."""
    out = {}
    for z, lim in limits_z.items():
        shape = (lim.shape[0], R, *lim.shape[1:])
        key = limit_key(z)
        t = init[key].to(like).clamp(min=0).expand(shape) if init and key in init \
            else like.new_zeros(shape)
        out[key] = t.detach().clone().requires_grad_(True)
    return out


def limit_terms(betas: Mapping[str, torch.Tensor], limits_z: Mapping[str, torch.Tensor],
                offsets: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """Add the limits' Lagrangian to a backward pass: on the subdomain
    ``f ≥ f − β_lo·(z − lo) − β_hi·(hi − z)`` for β ≥ 0, so the pass bounds ``f + (β_hi − β_lo)·z``
    (added to ``offsets[z]``, in place) and the constant ``Σ β_lo·lo − β_hi·hi`` (returned, (B, R))
    is added to its result. Infinite limits get no multiplier. Sound for every β ≥ 0."""
    const = None
    for z, lim in limits_z.items():
        b = betas[limit_key(z)]
        fin = torch.isfinite(lim).unsqueeze(1)  # (B, 1, 2, *shape)
        b = b * fin.to(b.dtype)
        val = torch.where(fin, lim.unsqueeze(1).to(b.dtype), torch.zeros_like(b))
        off = b[:, :, 1] - b[:, :, 0]
        offsets[z] = offsets[z] + off if z in offsets else off
        c = (b[:, :, 0] * val[:, :, 0] - b[:, :, 1] * val[:, :, 1]).flatten(2).sum(-1)
        const = c if const is None else const + c
    return const
