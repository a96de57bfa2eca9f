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

from ..specs.input_sets import InputSet
from ..specs.output import OutputSpec


def linear_constant(input_set: InputSet, A: torch.Tensor, lower: torch.Tensor) -> torch.Tensor:
    """The constants ``c`` (B, R) of linear lower bounds ``A·x + c`` whose minima over the set
    are ``lower`` (B, R): only sound when ``lower`` is exactly that minimum (the raw output of
    one backward pass with these ``A``), never after intersecting it with other bounds."""
    return lower - input_set.concretize(A)[0]


def disjunction_lower(input_set: InputSet, A: torch.Tensor, const: torch.Tensor,
                      rows: tuple[int, ...], iters: int = 15) -> torch.Tensor:
    """A sound lower bound (B,) of ``max_{r ∈ rows} row_r(x)`` over each set element, given
    ``row_r(x) ≥ A_r·x + const_r`` there (A (B, R, *in), const (B, R)); at least the best
    single row's bound."""
    idx = list(rows)
    Ar, c = A[:, idx], const[:, idx]
    best = (c + input_set.concretize(Ar)[0]).amax(-1)
    if len(idx) == 1 or iters <= 0:
        return best
    lam = torch.full_like(c, 1.0 / len(idx))
    with torch.enable_grad():
        for _ in range(iters):
            lam = lam.detach().requires_grad_(True)
            a = torch.einsum("br,br...->b...", lam, Ar).unsqueeze(1)
            val = (lam * c).sum(-1) + input_set.concretize(a)[0][:, 0]
            best = torch.maximum(best, val.detach())
            # supergradient in λ (Danskin): each row's linear bound at the minimising point
            (g,) = torch.autograd.grad(val.sum(), lam)
            g = g - g.mean(-1, keepdim=True)
            scale = g.abs().amax(-1, keepdim=True).clamp_min(1e-12)
            lam = lam.detach() * torch.exp(g / scale)
            lam = lam / lam.sum(-1, keepdim=True)
    return best


def clause_lowers(spec: OutputSpec, input_set: InputSet, A: torch.Tensor, const: torch.Tensor,
                  iters: int = 15) -> torch.Tensor:
    """(B, K) sound lower bounds of every clause of ``spec`` (see :func:`disjunction_lower`)."""
    return torch.stack([disjunction_lower(input_set, A, const, cl, iters) for cl in spec.clauses],
                       -1)
