"""Sound lower bounds of disjunctive clauses from the linear bounds of their rows.

A clause ``OR_{r ∈ rows} row_r(x) > 0`` holds on a set when ``max_r row_r(x) > 0`` everywhere
on it. Given linear lower bounds ``row_r(x) ≥ A_r·x + c_r`` valid on the set (what a backward
pass returns before concretisation), every convex combination λ of them is again a lower bound
of the max: ``max_r row_r(x) ≥ Σ_r λ_r (A_r·x + c_r)``, and the input set concretises it
(:meth:`~nncert.specs.input_sets.InputSet.concretize`, so boxes and Lp balls alike). The best λ
is searched by exponentiated (super)gradient steps, the one-hot λ's — the plain best row —
included, so the result is never below ``max_r (c_r + min_x A_r·x)``.
"""

from __future__ import annotations

import torch

from ..specs.input_sets import Box, InputSet
from ..specs.output import OutputSpec


def linear_constant(input_set: InputSet, A: torch.Tensor, lower: torch.Tensor) -> torch.Tensor:
    """The constants ``c`` (B, R) of linear lower bounds ``A·x + c`` whose minima over the set
    are ``lower`` (B, R): only sound when ``lower`` is exactly that minimum (the raw output of
    one backward pass with these ``A``), never after intersecting it with other bounds."""
    return lower - input_set.concretize(A)[0]


def disjunction_lower(input_set: InputSet, A: torch.Tensor, const: torch.Tensor,
                      rows: tuple[int, ...], iters: int = 15,
                      lower: torch.Tensor | None = None) -> torch.Tensor:
    """A sound lower bound (B,) of ``max_{r ∈ rows} row_r(x)`` over each set element, given
    ``row_r(x) ≥ A_r·x + const_r`` there (A (B, R, *in), const (B, R)); at least the best
    single row's bound, or the best of ``lower`` (B, R: sound bounds of the rows, e.g. the
    minima of those linear bounds, already computed) when given."""
    idx = list(rows)
    Ar, c = A[:, idx], const[:, idx]
    best = (c + input_set.concretize(Ar)[0] if lower is None else lower[:, idx]).amax(-1)
    if len(idx) == 1 or iters <= 0:
        return best
    step = _box_step if isinstance(input_set, Box) else _generic_step
    lam = torch.full_like(c, 1.0 / len(idx))
    for _ in range(iters):
        val, g = step(input_set, Ar, c, lam)
        best = torch.maximum(best, val)
        g = g - g.mean(-1, keepdim=True)
        scale = g.abs().amax(-1, keepdim=True).clamp_min(1e-12)
        lam = lam * torch.exp(g / scale)
        lam = lam / lam.sum(-1, keepdim=True)
    return best


def _box_step(box: Box, Ar: torch.Tensor, c: torch.Tensor, lam: torch.Tensor):
    """The combination's minimum over each box (its value: a sound bound) and a
    supergradient in λ (each row's linear bound at the minimising corner), in closed form."""
    B, R = Ar.shape[:2]
    Af = Ar.reshape(B, R, -1)
    lo, hi = box.lower.reshape(box.batch_size, -1), box.upper.reshape(box.batch_size, -1)
    mid, rad = (hi + lo) / 2, (hi - lo) / 2
    a = torch.einsum("br,brn->bn", lam, Af)
    val = (lam * c).sum(-1) + (a * mid).sum(-1) - (a.abs() * rad).sum(-1)
    corner = mid - torch.sign(a) * rad
    return val, c + torch.einsum("brn,bn->br", Af, corner)


def _generic_step(input_set: InputSet, Ar: torch.Tensor, c: torch.Tensor, lam: torch.Tensor):
    """As :func:`_box_step` for any set: the value through ``concretize``, the supergradient
    by autograd (Danskin: the gradient at the minimiser)."""
    with torch.enable_grad():
        lam = lam.detach().requires_grad_(True)
        a = torch.einsum("br,br...->b...", lam, Ar).unsqueeze(1)
        val = (lam * c).sum(-1) + input_set.concretize(a)[0][:, 0]
        (g,) = torch.autograd.grad(val.sum(), lam)
    return val.detach(), g


def clause_lowers(spec: OutputSpec, input_set: InputSet, A: torch.Tensor, const: torch.Tensor,
                  iters: int = 15, lower: torch.Tensor | None = None) -> torch.Tensor:
    """(B, K) sound lower bounds of every clause of ``spec`` (see :func:`disjunction_lower`)."""
    return torch.stack([disjunction_lower(input_set, A, const, cl, iters, lower)
                        for cl in spec.clauses], -1)
