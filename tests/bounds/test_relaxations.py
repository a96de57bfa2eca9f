"""Soundness of every activation relaxation on dense grids, over random, degenerate and huge
intervals, for every mode and for random alpha-CROWN parameters."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nncert.bounds import relaxations
from nncert.errors import ConfigError
from nncert.models import ops

ACTIVATIONS = [ops.ReLU(), ops.LeakyReLU(0.1), ops.LeakyReLU(1.0), ops.Sigmoid(), ops.Tanh()]
GRID = torch.linspace(0, 1, 1001, dtype=torch.float64).unsqueeze(1)


def _intervals(seed: int, scale: float, n: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(n, generator=g, dtype=torch.float64) * scale
    w = torch.rand(n, generator=g, dtype=torch.float64) * 2 * scale
    w[:20] = 0.0  # lb == ub
    w[20:40] *= 1e-10  # nearly degenerate
    c[40:60] = -w[40:60] / 2  # lb = 0 or ub = 0 exactly... close to it
    return c - w / 2, c + w / 2


def _violation(op, rel, lb, ub, grid=GRID) -> tuple[float, float]:
    x = lb + grid * (ub - lb)
    y = op.fn(x)
    below = (rel.lower_slope * x + rel.lower_bias - y).max().item()
    above = (y - rel.upper_slope * x - rel.upper_bias).max().item()
    return below, above


@pytest.mark.parametrize("op", ACTIVATIONS, ids=lambda o: repr(o))
@pytest.mark.parametrize("mode", relaxations.MODES)
@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 10**6), scale=st.sampled_from([1e-3, 0.5, 3.0, 40.0, 1e4, 1e8]),
       params=st.booleans())
def test_relaxation_sound_on_grid(op, mode, seed, scale, params):
    lb, ub = _intervals(seed, scale)
    pl = pu = None
    if params:
        g = torch.Generator().manual_seed(seed + 1)
        pl = torch.rand(lb.shape, generator=g, dtype=lb.dtype) * 1.4 - 0.2  # also out of range
        pu = torch.rand(lb.shape, generator=g, dtype=lb.dtype) * 1.4 - 0.2
    rel = relaxations.relax(op, lb, ub, mode, pl, pu)
    below, above = _violation(op, rel, lb, ub)
    assert below <= 1e-6 and above <= 1e-6
    for t in (rel.lower_slope, rel.lower_bias, rel.upper_slope, rel.upper_bias):
        assert bool(torch.isfinite(t).all())


@pytest.mark.parametrize("op", ACTIVATIONS, ids=lambda o: repr(o))
def test_float32_sound(op):
    lb, ub = _intervals(3, 4.0)
    rel = relaxations.relax(op, lb.float(), ub.float())
    assert rel.lower_slope.dtype == torch.float32
    rel64 = relaxations.LinearRelaxation(*(t.double() for t in (
        rel.lower_slope, rel.lower_bias, rel.upper_slope, rel.upper_bias)))
    below, above = _violation(op, rel64, lb.float().double(), ub.float().double())
    assert below <= 1e-6 and above <= 1e-6


@pytest.mark.parametrize("op", [ops.ReLU(), ops.LeakyReLU(0.2)], ids=repr)
@pytest.mark.parametrize("mode", relaxations.MODES)
def test_piecewise_linear_slopes_in_range_and_stable_exact(op, mode):
    s = op.negative_slope if isinstance(op, ops.LeakyReLU) else 0.0
    lb, ub = _intervals(5, 2.0)
    rel = relaxations.relax(op, lb, ub, mode)
    for k in (rel.lower_slope, rel.upper_slope):
        assert bool(((k >= s) & (k <= 1)).all())
    stable = (lb >= 0) | (ub <= 0)
    assert torch.equal(rel.lower_slope[stable], rel.upper_slope[stable])
    assert torch.equal(rel.lower_bias[stable], rel.upper_bias[stable])
    assert bool((rel.lower_bias == 0).all())


def test_relu_modes_hand_computed():
    lb, ub = torch.tensor([-1.0, -2.0, -2.0]), torch.tensor([3.0, 1.0, 2.0])
    chord = ub / (ub - lb)
    for mode, expected in [("adaptive", [1.0, 0.0, 1.0]), ("deeppoly", [1.0, 0.0, 0.0]),
                           ("fastlin", chord.tolist())]:
        rel = relaxations.relax(ops.ReLU(), lb, ub, mode)
        assert torch.allclose(rel.lower_slope, torch.tensor(expected))
        assert torch.allclose(rel.upper_slope, chord)
        assert torch.allclose(rel.upper_bias, -chord * lb)


def test_s_shaped_tangent_is_tight_in_mixed_case():
    """The default upper line in the mixed case touches σ at lb (tangent through (lb, σ(lb)))."""
    lb, ub = torch.tensor([-4.0], dtype=torch.float64), torch.tensor([6.0], dtype=torch.float64)
    rel = relaxations.relax(ops.Sigmoid(), lb, ub)
    assert abs(float(rel.upper_slope * lb + rel.upper_bias - torch.sigmoid(lb))) < 1e-9
    assert abs(float(rel.lower_slope * ub + rel.lower_bias - torch.sigmoid(ub))) < 1e-9


def test_init_params_reproduce_default():
    lb, ub = _intervals(7, 3.0)
    for op in ACTIVATIONS:
        fam = relaxations.RELAXATIONS[type(op)]
        pl, pu = fam.init(op, lb, ub, "adaptive")
        a, b = relaxations.relax(op, lb, ub), relaxations.relax(op, lb, ub, "adaptive", pl, pu)
        assert torch.allclose(a.lower_slope, b.lower_slope)
        assert torch.allclose(a.upper_bias, b.upper_bias)


def test_unknown_mode():
    with pytest.raises(ConfigError, match="relaxation"):
        relaxations.check_mode("magic")
