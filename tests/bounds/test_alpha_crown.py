"""alpha-CROWN never looser than CROWN; beta-CROWN split bounds sound on the split subdomain."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nncert.bounds import compute_bounds
from nncert.bounds.alpha_crown import AlphaCrownConfig, optimize_bounds
from nncert.bounds.crown import intermediate_bounds
from nncert.errors import ConfigError
from nncert.models import zoo
from nncert.specs import LpBall, OutputSpec, VerificationProblem

D = torch.float64
FAST = AlphaCrownConfig(iterations=8)


def _problem(kind: str, B: int = 2, eps: float = 0.1, seed: int = 0):
    g = zoo.random_graph(kind, seed).to(dtype=D)
    x = zoo.sample_inputs(g, B, seed)
    spec = OutputSpec.identity(g.num_outputs, B, dtype=D)
    return VerificationProblem(g, LpBall(x, eps, math.inf, 0.0, 1.0), spec)


@pytest.mark.parametrize("kind", ["relu", "leaky", "sigmoid", "tanh", "residual", "conv-avg"])
def test_never_looser_than_crown_and_usually_tighter(kind):
    prob = _problem(kind)
    crown = compute_bounds(prob, "crown")
    alpha = compute_bounds(prob, "alpha-crown", AlphaCrownConfig(iterations=8, early_stop=False,
                                                                  optimize_upper=True))
    assert bool((alpha.lower >= crown.lower).all()) and bool((alpha.upper <= crown.upper).all())
    assert float(alpha.lower.sum()) > float(crown.lower.sum())


def test_optimized_intermediate_bounds_sound_and_tighter():
    prob = _problem("relu", eps=0.15)
    cfg = AlphaCrownConfig(iterations=5, optimize_intermediate=True)
    b = compute_bounds(prob, "alpha-crown", cfg)
    crown = compute_bounds(prob, "crown")
    pts = prob.input_set.sample(3000).reshape(-1, *prob.graph.input_shape)
    vals = prob.graph.forward_all(pts)
    for name, iv in b.intermediate.items():
        v = vals[name].reshape(3000, 2, *iv.shape)
        assert bool((v >= iv.lower - 1e-9).all()) and bool((v <= iv.upper + 1e-9).all())
    width = {n: float((iv.upper - iv.lower).sum()) for n, iv in b.intermediate.items()}
    assert width["n2"] <= float((crown.intermediate["n2"].upper - crown.intermediate["n2"].lower).sum())


def test_early_stop_when_crown_already_proves():
    g = zoo.random_graph("relu", 0).to(dtype=D)
    x = zoo.sample_inputs(g, 3)
    y = g(x)
    spec = OutputSpec.conjunction(torch.eye(3, dtype=D).expand(3, -1, -1), -y + 1.0)  # y > y0 − 1
    prob = VerificationProblem(g, LpBall(x, 1e-4), spec)
    b = compute_bounds(prob, "alpha-crown")
    assert bool(spec.proved(b.lower).all()) and b.stats["steps"] == 0


def test_config_validation():
    with pytest.raises(ConfigError):
        AlphaCrownConfig(lr_decay=0.0)
    with pytest.raises(ConfigError):
        AlphaCrownConfig(search_dtype="float16")


@pytest.mark.parametrize("kind", ["relu", "leaky", "sigmoid", "tanh", "residual", "conv-avg"])
def test_float32_search_is_sound_never_looser_and_decided_in_float64(kind):
    """The Adam steps on a float32 copy: the bounds are float64 evaluations (at the returned
    parameters, row by row), never looser than the start point, and hold on samples."""
    prob = _problem(kind, eps=0.15)
    g, xs, spec = prob.graph, prob.input_set, prob.output_spec
    values = intermediate_bounds(g, xs)
    cfg = AlphaCrownConfig(iterations=8, early_stop=False, search_dtype="float32")
    lower, slopes = optimize_bounds(g, xs, spec.C, spec.d, values, cfg)
    start, _ = optimize_bounds(g, xs, spec.C, spec.d, values, AlphaCrownConfig(iterations=0))
    again, _ = optimize_bounds(g, xs, spec.C, spec.d, values, AlphaCrownConfig(iterations=0),
                               init_slopes=slopes)
    assert lower.dtype == D and all(v.dtype == D for v in slopes.values())
    assert bool((lower >= start).all()) and float(lower.sum()) > float(start.sum())
    assert torch.allclose(again, lower, rtol=0, atol=1e-12)
    pts = xs.sample(2000).reshape(-1, *g.input_shape)
    y = g(pts).reshape(2000, lower.shape[0], -1)
    rows = torch.einsum("brn,kbn->kbr", spec.C, y) + spec.d
    assert bool((rows >= lower - 1e-9).all())


def _random_splits(values, names, seed, B):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for n in names:
        iv = values[n]
        s = torch.randint(-1, 2, iv.lower.shape, generator=g).to(torch.int8)
        unstable = (iv.lower < 0) & (iv.upper > 0)
        out[n] = torch.where(unstable & (torch.rand(iv.lower.shape, generator=g) < 0.4), s,
                             torch.zeros_like(s))
    return out


@pytest.mark.parametrize("search", [None, "float32"])
@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10**5))
def test_split_bounds_sound_on_subdomain(search, seed):
    """Rejection sampling of the split subdomain: every sampled output row ≥ the bound (also
    with the β/slope search on a float32 copy)."""
    g = zoo.mlp(seed, "relu", widths=(3, 8, 8, 2)).to(dtype=D)
    B = 2
    x = zoo.sample_inputs(g, B, seed)
    xs = LpBall(x, 0.3)
    values = intermediate_bounds(g, xs)
    splits = _random_splits(values, ["n0", "n2"], seed, B)
    C = torch.tensor([[[1.0, -1.0], [0.0, 1.0]]], dtype=D).expand(B, -1, -1)
    lower, slopes = optimize_bounds(g, xs, C, None, values,
                                    AlphaCrownConfig(iterations=15, search_dtype=search), splits)
    pts = xs.sample(20000).reshape(-1, 3)
    acts = g.forward_all(pts)
    ok = torch.ones(20000, B, dtype=torch.bool)
    for n, s in splits.items():
        z = acts[n].reshape(20000, B, -1)
        ok &= ((s.reshape(B, -1) > 0) & (z < 0) | (s.reshape(B, -1) < 0) & (z > 0)).sum(-1) == 0
    y = acts[g.output_name].reshape(20000, B, 2)
    rows = torch.einsum("brn,kbn->kbr", C, y)
    for b in range(B):
        if bool(ok[:, b].any()):
            assert bool((rows[ok[:, b], b] >= lower[b] - 1e-8).all())
    # warm start with the returned slopes gives a bound at least as good
    again, _ = optimize_bounds(g, xs, C, None, values, AlphaCrownConfig(iterations=0), splits,
                               slopes)
    assert again.shape == lower.shape


def test_beta_tightens_beyond_clipping_and_reaches_lp_value():
    """All hidden neurons of a one-layer net split by a sample's pattern: the net is linear on
    the subdomain, so the best bound is the LP value; beta-CROWN gets close, clipping alone not."""
    scipy_opt = pytest.importorskip("scipy.optimize")
    g = zoo.mlp(3, "relu", widths=(2, 6, 1)).to(dtype=D)
    x0 = torch.tensor([[0.3, 0.6]], dtype=D)
    xs = LpBall(x0, 0.5)
    values = intermediate_bounds(g, xs)
    z0 = g.forward_all(x0)["n0"]
    split = {"n0": torch.where(z0 >= 0, 1, -1).to(torch.int8)}
    C = torch.ones(1, 1, 1, dtype=D)
    clip_only, _ = optimize_bounds(g, xs, C, None, values, AlphaCrownConfig(iterations=0), split)
    beta, _ = optimize_bounds(g, xs, C, None, values,
                              AlphaCrownConfig(iterations=300, lr_beta=0.1, lr_decay=0.995), split)
    W1, b1 = g.node("n0").op.weight, g.node("n0").op.bias_
    W2, b2 = g.node("n2").op.weight, g.node("n2").op.bias_
    act = (split["n0"][0] > 0).to(D)
    c = (W2[0] * act) @ W1  # y = c·x + const on the subdomain
    const = float((W2[0] * act) @ b1 + b2[0])
    s = split["n0"][0].to(D)
    res = scipy_opt.linprog(c.numpy(), A_ub=(-s[:, None] * W1).numpy(), b_ub=(s * b1).numpy(),
                            bounds=list(zip((x0[0] - 0.5).tolist(), (x0[0] + 0.5).tolist())))
    lp = res.fun + const
    assert float(beta) <= lp + 1e-7
    assert float(beta) >= float(clip_only) - 1e-9
    assert float(beta) >= lp - 0.02 * (1 + abs(lp))


def test_empty_subdomain_gets_infinite_bound():
    g = zoo.mlp(0, "relu", widths=(3, 4, 2)).to(dtype=D)
    xs = LpBall(torch.full((2, 3), 0.5, dtype=D), 0.1)
    values = intermediate_bounds(g, xs)
    iv = values["n0"]
    s = torch.zeros((2, 4), dtype=torch.int8)
    stable_neg = iv.upper[0] < 0
    assert bool(stable_neg.any()) or bool((iv.lower[0] > 0).any())
    j = int(torch.nonzero(stable_neg | (iv.lower[0] > 0))[0])
    s[0, j] = 1 if bool(stable_neg[j]) else -1  # contradicts element 0's bounds
    C = torch.eye(2, dtype=D).expand(2, -1, -1)
    lower, _ = optimize_bounds(g, xs, C, None, values, FAST, {"n0": s})
    assert bool(torch.isinf(lower[0]).all()) and bool(torch.isfinite(lower[1]).all())
