"""Clause bounds (bounds/clauses.py): sound on samples of the set, never below the best row,
and proving max(x, −x) ≥ 0 where no single row can."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nncert.bounds.clauses import clause_lowers, disjunction_lower, linear_constant
from nncert.bounds.crown import backward_bounds, intermediate_bounds
from nncert.models.from_torch import from_torch
from nncert.specs import Box, LpBall, OutputSpec

D = torch.float64


@pytest.mark.parametrize("kind", ["box", "l2"])
def test_a_combination_proves_what_no_row_can(kind):
    xs = (Box(-torch.ones(1, 1, dtype=D), torch.ones(1, 1, dtype=D)) if kind == "box"
          else LpBall(torch.zeros(1, 1, dtype=D), 1.0, 2))
    A = torch.tensor([[[1.0], [-1.0]]], dtype=D)
    const = torch.zeros(1, 2, dtype=D)
    single = (const + xs.concretize(A)[0]).amax(-1)
    assert float(single) <= -1 + 1e-12
    assert float(disjunction_lower(xs, A, const, (0, 1))) >= -1e-9


@pytest.mark.parametrize("kind", ["box", "l2"])
def test_sound_on_samples_and_never_below_the_best_row(kind):
    torch.manual_seed(0)
    g = from_torch(nn.Sequential(nn.Linear(3, 12), nn.ReLU(), nn.Linear(12, 10), nn.ReLU(),
                                 nn.Linear(10, 4)).double(), (3,))
    c = torch.rand(2, 3, dtype=D)
    xs = Box(c - 0.4, c + 0.4) if kind == "box" else LpBall(c, 0.6, 2)
    C = torch.randn(1, 4, 4, dtype=D).expand(2, -1, -1)
    d = torch.randn(1, 4, dtype=D).expand(2, -1)
    spec = OutputSpec(C, d, ((0, 1, 2), (3,)))
    inter = intermediate_bounds(g, xs)
    cap = {g.input_name: None}
    lower, _ = backward_bounds(g, xs, C, d, inter, need_upper=False, capture=cap)
    A = cap[g.input_name]
    const = linear_constant(xs, A, lower)
    cl = clause_lowers(spec, xs, A, const)
    assert bool((cl >= spec.clause_max(lower) - 1e-12).all())
    given = clause_lowers(spec, xs, A, const, lower=lower)  # the rows' minima reused
    assert torch.allclose(given, cl, atol=1e-9)
    x = xs.sample(20000, torch.Generator().manual_seed(1))  # (N, B, 3)
    vals = spec.values(g.forward(x.reshape(-1, 3)).reshape(20000, 2, -1))
    true_min = spec.clause_max(vals).amin(0)  # (B, K)
    assert bool((true_min >= cl - 1e-9).all())
