"""Every robust loss upper-bounds the adversarial loss PGD finds on the same batch and equals
the natural loss at ε = 0; SABR upper-bounds the loss at its own PGD point."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nncert.bounds.zonotope import RELU_RULES
from nncert.errors import ConfigError
from nncert.training import (
    IBP,
    PGD,
    SABR,
    Constant,
    CrownIBP,
    DiffAI,
    GaussianNoise,
    Natural,
    Ramp,
    Step,
    build,
    live_graph,
)
from nncert.training.losses import ibp_init_, pgd_ce

SOUND = [IBP, CrownIBP, *[lambda e, r=r: DiffAI(e, relu=r) for r in RELU_RULES]]


def _setup(seed: int, arch: str = "fc", shape=(1, 5, 5), n: int = 16):
    torch.manual_seed(seed)
    m = build(arch, shape, num_classes=4, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand((n, *shape), generator=gen)
    y = torch.randint(0, 4, (n,), generator=gen)
    return m, live_graph(m, shape), x, y


def _step(m, g, seed=0):
    return Step(m, g, 0.0, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("seed,arch,shape", [(0, "fc", (1, 5, 5)), (1, "fc", (1, 5, 5)),
                                             (2, "cnn", (1, 8, 8)), (4, "resnet2b", (3, 8, 8))])
@pytest.mark.parametrize("make", SOUND)
def test_sound_losses_bound_the_pgd_loss(seed, arch, shape, make):
    m, g, x, y = _setup(seed, arch, shape)
    eps = 0.05
    adv, _ = PGD(Constant(eps), steps=20)(_step(m, g), x, y)
    rob, logs = make(Constant(eps))(_step(m, g), x, y)
    assert float(rob.detach()) >= float(adv.detach()) - 1e-6
    assert logs["rob"] >= float(F.cross_entropy(m(x), y).detach()) - 1e-6


@pytest.mark.parametrize("make", [*SOUND, SABR, lambda e: PGD(e), lambda e: Natural()])
def test_every_loss_is_the_natural_loss_at_eps_zero(make):
    m, g, x, y = _setup(3)
    nat = F.cross_entropy(m(x), y)
    got, _ = make(Constant(0.0))(_step(m, g), x, y)
    assert torch.allclose(got, nat, atol=1e-5)


def test_sabr_bounds_the_loss_at_its_pgd_point_and_is_ibp_at_lambda_one():
    m, g, x, y = _setup(4)
    eps = 0.1
    sabr = SABR(Constant(eps), lam=0.3, steps=5)
    got, _ = sabr(_step(m, g, 7), x, y)
    xa = pgd_ce(m, x, y, eps, 5, 0.5 * eps, (0.0, 1.0), torch.Generator().manual_seed(7))
    assert float(got.detach()) >= float(F.cross_entropy(m(xa), y).detach()) - 1e-6
    full, _ = SABR(Constant(eps), lam=1.0)(_step(m, g), x, y)
    ibp, _ = IBP(Constant(eps))(_step(m, g), x, y)
    assert torch.allclose(full, ibp, atol=1e-6)
    assert float(got.detach()) <= float(ibp.detach()) + 1e-6  # a smaller box gives a smaller bound


def test_kappa_mixes_natural_and_robust():
    m, g, x, y = _setup(5)
    nat = F.cross_entropy(m(x), y)
    rob, _ = IBP(Constant(0.1))(_step(m, g), x, y)
    mixed, logs = IBP(Constant(0.1), kappa=Constant(0.25))(_step(m, g), x, y)
    assert torch.allclose(mixed, 0.25 * nat + 0.75 * rob, atol=1e-6)
    assert logs["kappa"] == 0.25


def test_crown_ibp_beta_zero_is_ibp_and_gradients_reach_every_weight():
    m, g, x, y = _setup(6)
    ibp, _ = IBP(Constant(0.05))(_step(m, g), x, y)
    c0, _ = CrownIBP(Constant(0.05), beta=Constant(0.0))(_step(m, g), x, y)
    assert torch.allclose(ibp, c0)
    c1, _ = CrownIBP(Constant(0.05), beta=Constant(1.0))(_step(m, g), x, y)
    c1.backward()
    assert all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in m.parameters())


def test_warmup_regulariser_is_added_during_the_ramp_only():
    m, g, x, y = _setup(7)
    ibp_init_(m, torch.Generator().manual_seed(0))
    loss = IBP(Ramp(0.0, 0.1, 0.0, 2.0), warmup_reg=0.5)
    _, logs = loss(Step(m, g, 1.0), x, y)
    assert "reg" in logs and logs["reg"] >= 0
    _, logs = loss(Step(m, g, 3.0), x, y)
    assert "reg" not in logs


def test_ibp_init_std():
    m = build("fc3x100", (1, 28, 28), seed=0)
    ibp_init_(m, torch.Generator().manual_seed(0))
    w = m[1].weight
    assert abs(float(w.detach().std()) - (2 * torch.pi) ** 0.5 / 784) < 2e-4


def test_bad_loss_settings():
    with pytest.raises(ConfigError):
        DiffAI(Constant(0.1), relu="nope")
    with pytest.raises(ConfigError):
        SABR(Constant(0.1), lam=0.0)
    with pytest.raises(ConfigError):
        GaussianNoise(-1.0)
