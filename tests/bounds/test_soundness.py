"""The cross-method soundness suite: every bound method × every zoo network × input sets.

Outputs of sampled inputs and of PGD-attacked inputs (each spec row pushed down and up within
the set) must lie inside the bounds; interval bounds shrink with the set; alpha-CROWN is never
looser than CROWN and CROWN is tighter than interval on average.
"""

from __future__ import annotations

import importlib
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nncert.bounds import METHODS, compute_bounds
from nncert.bounds.alpha_crown import AlphaCrownConfig
from nncert.bounds.crown import CrownConfig, backward_bounds, intermediate_bounds
from nncert.models import ops, zoo
from nncert.models.graph import sequential
from nncert.specs import AffineBand, Box, LpBall, OutputSpec, VerificationProblem

D = torch.float64
CONFIGS = {"alpha-crown": AlphaCrownConfig(iterations=3, early_stop=False)}


def _available(method: str) -> bool:
    module = METHODS[method].split(":")[0]
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


SOUND_METHODS = [m for m in ("interval", "zonotope", "deeppoly", "crown", "alpha-crown")
                 if _available(m)]


def _input_set(kind: str, x: torch.Tensor, eps: float):
    if kind == "linf":
        return LpBall(x, eps)
    if kind == "l2":
        return LpBall(x, eps * 3, 2)
    if kind == "clipped":
        return LpBall(x, eps * 3, 2, 0.0, 1.0)
    if kind == "band":  # pixels linear in 1 or 2 parameters, plus an error box
        K = 1 + int(x.flatten()[0] * 1000) % 2
        gens = eps * torch.randn(x.shape[0], K, *x.shape[1:], dtype=x.dtype)
        e = eps * torch.rand_like(x) / 2
        return AffineBand(x, gens, -e, e)
    return Box(x - eps * torch.rand_like(x), x + eps * torch.rand_like(x))


def _spec(n_out: int, B: int, seed: int) -> OutputSpec:
    g = torch.Generator().manual_seed(seed)
    C = torch.randn(B, 4, n_out, generator=g, dtype=D)
    return OutputSpec.conjunction(C, torch.randn(B, 4, generator=g, dtype=D))


def _pgd(graph, spec: OutputSpec, xs, sign: float, steps: int = 10) -> torch.Tensor:
    """Points of the set (R, B, *shape) pushing each row ``sign·(C·y + d)`` down."""
    R, B = spec.num_rows, xs.batch_size
    x = xs.center.unsqueeze(0).repeat(R, *([1] * xs.center.dim()))
    size = float((xs.upper - xs.lower).max()) / 4
    for _ in range(steps):
        x = x.detach().requires_grad_(True)
        y = graph(x.reshape(R * B, *xs.shape)).reshape(R, B, -1)
        vals = spec.values(y)  # (R, B, R)
        obj = sign * torch.diagonal(vals, dim1=0, dim2=2).sum()
        (grad,) = torch.autograd.grad(obj, x)
        x = xs.project(x - size * grad.sign())
        size *= 0.8
    return x.detach()


def _row_values(graph, spec, pts):
    n = pts.shape[0]
    y = graph(pts.reshape(-1, *pts.shape[2:])).reshape(n, pts.shape[1], -1)
    return spec.values(y)  # (n, B, R)


@pytest.mark.parametrize("kind", zoo.KINDS)
@settings(max_examples=2, deadline=None)
@given(seed=st.integers(0, 1000), eps=st.sampled_from([0.01, 0.05, 0.2]),
       set_kind=st.sampled_from(["linf", "l2", "clipped", "box", "band"]))
def test_sampled_and_attacked_outputs_inside_bounds(kind, seed, eps, set_kind):
    g = zoo.random_graph(kind, seed).to(dtype=D)
    B = 2
    torch.manual_seed(seed)
    xs = _input_set(set_kind, zoo.sample_inputs(g, B, seed), eps)
    spec = _spec(g.num_outputs, B, seed)
    prob = VerificationProblem(g, xs, spec)
    pts = torch.cat([xs.sample(200)] + [_pgd(g, spec, xs, s) for s in (1.0, -1.0)])
    assert bool(xs.contains(pts, atol=1e-9).all())
    vals = _row_values(g, spec, pts)
    acts = g.forward_all(pts.reshape(-1, *xs.shape))
    bounds = {m: compute_bounds(prob, m, CONFIGS.get(m)) for m in SOUND_METHODS}
    for m, b in bounds.items():
        tol = 1e-5 * (1 + b.lower.abs().max())
        assert bool((vals >= b.lower - tol).all()), f"{m} lower bound violated"
        assert bool((vals <= b.upper + tol).all()), f"{m} upper bound violated"
        for name, iv in b.intermediate.items():  # intermediate bounds are sound too
            v = acts[name].reshape(pts.shape[0], B, *iv.shape)
            assert bool((v >= iv.lower - tol).all() & (v <= iv.upper + tol).all()), (m, name)
    if "alpha-crown" in bounds and "crown" in bounds:
        assert bool((bounds["alpha-crown"].lower >= bounds["crown"].lower).all())


@pytest.mark.parametrize("kind", zoo.KINDS)
def test_crown_tighter_than_interval_on_average(kind):
    g = zoo.random_graph(kind, 1).to(dtype=D)
    xs = LpBall(zoo.sample_inputs(g, 3, 1), 0.05)
    prob = VerificationProblem(g, xs, _spec(g.num_outputs, 3, 1))
    ibp, crown = compute_bounds(prob, "interval"), compute_bounds(prob, "crown")
    assert float((crown.upper - crown.lower).mean()) < float((ibp.upper - ibp.lower).mean())


@pytest.mark.parametrize("kind", zoo.KINDS)
@settings(max_examples=2, deadline=None)
@given(seed=st.integers(0, 1000))
def test_interval_bounds_monotone_in_eps(kind, seed):
    g = zoo.random_graph(kind, seed).to(dtype=D)
    x = zoo.sample_inputs(g, 2, seed)
    spec = _spec(g.num_outputs, 2, seed)
    prev = None
    for eps in (0.2, 0.05, 0.01, 0.0):
        b = compute_bounds(VerificationProblem(g, LpBall(x, eps), spec), "interval")
        if prev is not None:
            assert bool((b.lower >= prev.lower - 1e-9).all() & (b.upper <= prev.upper + 1e-9).all())
        prev = b
    y0 = spec.values(g(x).flatten(1))
    assert torch.allclose(prev.lower, y0, atol=1e-9) and torch.allclose(prev.upper, y0, atol=1e-9)


def test_crown_is_not_monotone_in_the_set():
    """Why monotonicity is only asserted for intervals: CROWN's adaptive lower slope depends on
    the interval, so a *larger* set can give a tighter bound (y = relu(x), raw backward pass)."""
    g = sequential([ops.Linear(torch.ones(1, 1, dtype=D)), ops.ReLU()], (1,))
    C = torch.ones(1, 1, 1, dtype=D)
    lows = []
    for lo in (-1.0, -1.2):  # [−1, 1.1] ⊂ [−1.2, 1.1]
        xs = Box(torch.tensor([[lo]], dtype=D), torch.tensor([[1.1]], dtype=D))
        values = intermediate_bounds(g, xs, CrownConfig())
        lows.append(float(backward_bounds(g, xs, C, None, values)[0]))
    assert lows[0] == pytest.approx(-1.0) and lows[1] == pytest.approx(0.0)


@pytest.mark.parametrize("method", SOUND_METHODS)
def test_zero_radius_is_exact(method):
    g = zoo.random_graph("residual", 0).to(dtype=D)
    x = zoo.sample_inputs(g, 2)
    spec = _spec(g.num_outputs, 2, 0)
    b = compute_bounds(VerificationProblem(g, LpBall(x, 0.0), spec), method, CONFIGS.get(method))
    y0 = spec.values(g(x))
    assert torch.allclose(b.lower, y0, atol=1e-8) and torch.allclose(b.upper, y0, atol=1e-8)


def test_eps_tiny_sets_certify_robustness_everywhere():
    g = zoo.random_graph("conv-max", 2).to(dtype=D)
    x = zoo.sample_inputs(g, 3)
    labels = g(x).argmax(1)
    spec = OutputSpec.robustness(labels, g.num_outputs, dtype=D)
    prob = VerificationProblem(g, LpBall(x, 1e-6, math.inf, 0.0, 1.0), spec)
    for m in SOUND_METHODS:
        assert bool(spec.proved(compute_bounds(prob, m, CONFIGS.get(m)).lower).all()), m
