"""compute_bounds(..., grad=True): the same sound bounds, differentiable in the weights."""

from __future__ import annotations

import math

import pytest
import torch

from nncert.bounds import compute_bounds
from nncert.bounds.crown import CrownConfig
from nncert.bounds.zonotope import RELU_RULES, ZonotopeConfig
from nncert.models import ops
from nncert.models.graph import sequential
from nncert.specs.input_sets import LpBall
from nncert.specs.output import OutputSpec
from nncert.specs.problem import VerificationProblem

_DT = torch.float64


def _problem(W1, b1, W2, b2, x, eps):
    g = sequential([ops.Linear(W1, b1), ops.ReLU(), ops.Linear(W2, b2)], (W1.shape[1],))
    spec = OutputSpec.robustness(torch.zeros(x.shape[0], dtype=torch.long), W2.shape[0],
                                 dtype=_DT)
    return VerificationProblem(g, LpBall(x, eps, math.inf), spec)


def _weights(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=_DT) for s in ((4, 3), (4,), (3, 4), (3,))]


def _hand_ibp(W1, b1, W2, b2, x, eps):
    """IBP written out: the lower bound of y_0 − y_j for j = 1, 2."""
    c1, r1 = x @ W1.T + b1, torch.full_like(x, eps) @ W1.abs().T
    lo, hi = torch.relu(c1 - r1), torch.relu(c1 + r1)
    c, r = (lo + hi) / 2, (hi - lo) / 2
    C = torch.tensor([[1.0, -1.0, 0.0], [1.0, 0.0, -1.0]], dtype=_DT)
    W = C @ W2
    return c @ W.T + C @ b2 - r @ W.abs().T


def test_grad_ibp_matches_hand_computed_and_autograd():
    ws = [w.requires_grad_(True) for w in _weights()]
    x = torch.tensor([[0.3, -0.2, 0.5]], dtype=_DT)
    got = compute_bounds(_problem(*ws, x, 0.2), "interval", grad=True).lower
    want = _hand_ibp(*ws, x, 0.2)
    assert torch.allclose(got, want)
    g_got = torch.autograd.grad(got.sum(), ws)
    g_want = torch.autograd.grad(want.sum(), ws)
    for a, b in zip(g_got, g_want):
        assert torch.allclose(a, b)


@pytest.mark.parametrize("method,config", [
    ("interval", None),
    ("crown", CrownConfig(intermediate="ibp")),
    ("crown", None),
    *[("zonotope", ZonotopeConfig(relu=r)) for r in RELU_RULES],
])
def test_grad_matches_finite_differences(method, config):
    x = torch.tensor([[0.3, -0.2, 0.5], [0.1, 0.4, -0.3]], dtype=_DT)

    def f(*ws):
        return compute_bounds(_problem(*ws, x, 0.15), method, config, grad=True).lower

    ws = tuple(w.requires_grad_(True) for w in _weights(1))
    assert torch.autograd.gradcheck(f, ws, eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("method,config", [
    ("interval", None), ("crown", CrownConfig(intermediate="ibp")),
    ("zonotope", ZonotopeConfig(relu="zsmooth")),
])
def test_grad_bounds_equal_verification_bounds_and_are_sound(method, config):
    ws = _weights(2)
    x = torch.tensor([[0.3, -0.2, 0.5]], dtype=_DT)
    p = _problem(*[w.requires_grad_(True) for w in ws], x, 0.3)
    b = compute_bounds(p, method, config, grad=True)
    assert b.lower.requires_grad
    ref = compute_bounds(_problem(*[w.detach() for w in ws], x, 0.3), method, config)
    assert not ref.lower.requires_grad
    assert torch.allclose(b.lower.detach(), ref.lower) and torch.allclose(b.upper.detach(), ref.upper)
    pts = p.input_set.sample(500, torch.Generator().manual_seed(0))[:, 0]
    with torch.no_grad():
        vals = p.output_spec.values(p.graph(pts).unsqueeze(1))[:, 0]
    assert bool((vals >= b.lower.detach() - 1e-9).all()) and bool((vals <= b.upper.detach() + 1e-9).all())
