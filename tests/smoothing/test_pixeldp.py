"""PixelDP: noise calibration, exact sensitivity, the robustness condition, and that certified
points survive attacks within their certified size. All seeded."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from nncert.errors import ConfigError, ModelError, ShapeError
from nncert.smoothing import pixeldp as pdp
from nncert.smoothing.train import train_pixeldp


@pytest.mark.parametrize("eps,delta,L", [(1.0, 0.05, 0.1), (0.5, 1e-5, 0.3), (0.1, 0.2, 1.0)])
def test_gaussian_noise_scale_matches_formula(eps, delta, L):
    expected = math.sqrt(2 * math.log(1.25 / delta)) * L / eps
    assert pdp.gaussian_sigma(eps, delta, L) == pytest.approx(expected, rel=1e-12)
    assert pdp.PixelDPConfig(eps, delta, L).noise_scale == pytest.approx(expected, rel=1e-12)
    assert pdp.gaussian_sigma(eps, delta, L, sensitivity=2.0) == pytest.approx(2 * expected)
    # the paper's headline configuration: ε = 1, δ = 0.05, L = 0.1 → σ ≈ 0.2537
    assert pdp.gaussian_sigma(1.0, 0.05, 0.1) == pytest.approx(0.25373, abs=1e-5)


def test_laplace_scale_and_sampled_noise_statistics():
    cfg = pdp.PixelDPConfig(epsilon=2.0, delta=0.3, L=0.5, norm="l1", mechanism="laplace")
    assert cfg.delta == 0.0  # pure ε-DP
    assert cfg.noise_scale == pytest.approx(0.25)  # b = Δ L / ε
    net = pdp.PixelDPNet(None, nn.Identity(), (4,), 4, cfg)
    g = torch.Generator().manual_seed(0)
    z = net.noise_like(torch.zeros(200_000, 4), g)
    assert float(z.var()) == pytest.approx(2 * 0.25 ** 2, rel=0.02)  # Laplace variance 2b²
    assert float(z.abs().mean()) == pytest.approx(0.25, rel=0.02)  # E|Z| = b
    gcfg = pdp.PixelDPConfig(1.0, 0.05, 0.1)
    zg = pdp.PixelDPNet(None, nn.Identity(), (4,), 4, gcfg).noise_like(torch.zeros(200_000, 4), g)
    assert float(zg.std()) == pytest.approx(gcfg.noise_scale, rel=0.01)


@pytest.mark.parametrize("kwargs", [
    {"epsilon": 1.5}, {"epsilon": 0.0}, {"delta": 0.0}, {"delta": 1.0}, {"L": 0.0}, {"L": -1.0},
    {"norm": "linf"}, {"mechanism": "uniform"}, {"norm": "l2", "mechanism": "laplace"},
])
def test_bad_configs(kwargs):
    with pytest.raises(ConfigError):
        pdp.PixelDPConfig(**kwargs)


def test_sensitivity_is_exact():
    torch.manual_seed(0)
    lin = nn.Linear(6, 5)
    assert pdp.sensitivity(lin, (6,), 2, 2) == pytest.approx(
        float(torch.linalg.matrix_norm(lin.weight.detach().double(), 2)), rel=1e-10)
    assert pdp.sensitivity(lin, (6,), 1, 2) == pytest.approx(
        float(lin.weight.detach().double().norm(dim=0).max()), rel=1e-10)
    assert pdp.sensitivity(lin, (6,), 1, 1) == pytest.approx(
        float(lin.weight.detach().double().abs().sum(0).max()), rel=1e-10)
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1)
    shape = (2, 5, 5)
    w = conv.weight.detach().double()
    jac = torch.autograd.functional.jacobian(
        lambda v: nn.functional.conv2d(v.view(1, *shape), w, None, 2, 1).flatten(),
        torch.zeros(50, dtype=torch.float64))  # (out, in)
    assert pdp.sensitivity(conv, shape, 2, 2) == pytest.approx(
        float(torch.linalg.matrix_norm(jac, 2)), rel=1e-9)
    assert pdp.sensitivity(conv, shape, 1, 2) == pytest.approx(float(jac.norm(dim=0).max()), rel=1e-9)
    assert pdp.sensitivity(None, (7,), 2, 2) == pytest.approx(1.0)


def test_projection_and_training_keep_sensitivity_at_most_one():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(120, 1, 6, 6, generator=g)
    y = (x.mean((1, 2, 3)) > 0.5).long()
    for norm, mech in (("l2", "gaussian"), ("l1", "laplace"), ("l1", "gaussian")):
        torch.manual_seed(0)
        net = pdp.build_pixeldp("cnn", (1, 6, 6), 2, pdp.PixelDPConfig(1.0, 0.05, 0.1, norm, mech))
        with torch.no_grad():
            net.first.weight.mul_(10)
        assert net.sensitivity() > 1
        train_pixeldp(net, x, y, epochs=2, batch_size=40, lr=1e-2)
        assert net.sensitivity() <= 1.0 + 1e-9


def test_max_certified_epsilon_is_the_boundary():
    for lo, hi, delta in [(0.8, 0.1, 0.05), (0.6, 0.3, 0.01), (0.5, 0.05, 0.0)]:
        eps = pdp.max_certified_epsilon(lo, hi, delta)

        def holds(e, lo=lo, hi=hi, delta=delta):
            return lo > math.exp(2 * e) * hi + (1 + math.exp(e)) * delta

        assert eps > 0 and holds(eps * (1 - 1e-9)) and not holds(eps * (1 + 1e-6))
    assert pdp.max_certified_epsilon(0.4, 0.39, 0.01) == 0.0
    assert pdp.max_certified_epsilon(0.99, 0.001, 0.001, eps_cap=1.0) == 1.0


def two_d_net(config: pdp.PixelDPConfig) -> pdp.PixelDPNet:
    """First layer = identity matrix (Δ = 1); body = sharp linear scores for 'which coordinate is
    larger', so the expected scores are smooth probabilities."""
    first = nn.Linear(2, 2, bias=False)
    body = nn.Linear(2, 2)
    with torch.no_grad():
        first.weight.copy_(torch.eye(2))
        body.weight.copy_(torch.tensor([[8.0, -8.0], [-8.0, 8.0]]))
        body.bias.zero_()
    return pdp.PixelDPNet(first, body, (2,), 2, config).eval()


def project_l1(v: torch.Tensor, radius: float) -> torch.Tensor:
    """Euclidean projection onto the L1 ball (Duchi et al. 2008)."""
    if float(v.abs().sum()) <= radius:
        return v
    u = v.abs().flatten().sort(descending=True).values
    css = u.cumsum(0)
    k = torch.arange(1, u.numel() + 1, dtype=u.dtype)
    rho = int((u - (css - radius) / k > 0).nonzero().max())
    theta = (css[rho] - radius) / (rho + 1)
    return v.sign() * (v.abs() - theta).clamp_min(0)


def pgd_on_expected_scores(net, x, label, radius, norm="l2", steps=60, draws=4000, seed=1):
    """L2 PGD maximising (other score - label score) of the Monte-Carlo expected scores, with
    fixed noise draws (common random numbers) so the objective is deterministic."""
    g = torch.Generator().manual_seed(seed)
    h0 = net.first(x.unsqueeze(0)).detach()
    noise = net.noise_like(h0.expand(draws, -1).clone(), g)
    delta = torch.zeros_like(x, requires_grad=True)
    for _ in range(steps):
        h = net.first((x + delta).unsqueeze(0)) + noise
        s = torch.softmax(net.body(h), 1).mean(0)
        loss = s[1 - label] - s[label]
        (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            delta += 0.25 * radius * grad / grad.norm().clamp_min(1e-12)
            if norm == "l2":
                delta *= min(1.0, radius / float(delta.norm().clamp_min(1e-12)))
            else:
                delta.copy_(project_l1(delta, radius))
    return (x + delta).detach()


@pytest.mark.parametrize("mechanism,norm", [("gaussian", "l2"), ("laplace", "l1")])
def test_certified_points_survive_attacks_within_their_size(mechanism, norm):
    cfg = pdp.PixelDPConfig(1.0, 0.05, 0.1, norm=norm, mechanism=mechanism)
    net = two_d_net(cfg)
    checked = 0
    for i, x in enumerate([torch.tensor([0.8, 0.2]), torch.tensor([0.3, 0.7]),
                           torch.tensor([0.6, 0.4]), torch.tensor([0.9, 0.0])]):
        cert = pdp.certify(net, x, n=5000, alpha=0.05, seed=i)
        assert cert.sensitivity == pytest.approx(1.0)
        if not cert.certified:
            continue
        checked += 1
        adv = pgd_on_expected_scores(net, x, cert.prediction, cert.size, norm)
        moved = float(torch.linalg.vector_norm(adv - x, ord=2 if norm == "l2" else 1))
        assert cert.size * 0.9 <= moved <= cert.size * (1 + 1e-5)
        fresh = pdp.expected_scores(net, adv, 100_000, 50_000, torch.Generator().manual_seed(99))
        assert int(fresh.argmax()) == cert.prediction
        # Lemma 1 at the attacked point, with the ε of the certified size (MC slack 0.01)
        clean = pdp.expected_scores(net, x, 100_000, 50_000, torch.Generator().manual_seed(98))
        bound = math.exp(cert.epsilon) * fresh + cert.delta + 0.01
        assert bool((clean <= bound).all())
    assert checked >= 3
    # the attack is not toothless: beyond the decision boundary it does flip the prediction
    x = torch.tensor([0.6, 0.4])
    adv = pgd_on_expected_scores(net, x, 0, 0.3, norm)
    assert int(pdp.expected_scores(net, adv, 20_000, 20_000, torch.Generator().manual_seed(5)).argmax()) == 1


def test_certificate_fields_and_errors():
    net = two_d_net(pdp.PixelDPConfig(1.0, 0.05, 0.1))
    cert = pdp.certify(net, torch.tensor([0.9, 0.1]), n=2000, alpha=0.05, seed=0)
    assert cert.prediction == 0 and cert.certified and 0 < cert.size <= 0.1 + 1e-12
    assert all(lo <= m <= hi for lo, m, hi in zip(cert.lower, cert.expected_scores, cert.upper))
    json.dumps(cert.to_dict())
    for kwargs in ({"alpha": 0.0}, {"n": 0}, {"batch_size": 0}):
        with pytest.raises(ConfigError):
            pdp.certify(net, torch.tensor([0.9, 0.1]), **{"n": 10, **kwargs})
    with pytest.raises(ShapeError):
        pdp.certify(net, torch.zeros(3), n=10)


def test_save_load_roundtrip(tmp_path):
    torch.manual_seed(0)
    net = pdp.build_pixeldp("cnn", (1, 8, 8), 10, pdp.PixelDPConfig(0.5, 0.01, 0.2))
    net.finalize_()
    path = tmp_path / "m.pt"
    pdp.save_pixeldp(net, path)
    back = pdp.load_pixeldp(path)
    assert back.config == net.config and back.input_shape == (1, 8, 8)
    x = torch.rand(1, 8, 8)
    assert torch.equal(back(x[None], noise=False), net.eval()(x[None], noise=False))
    a = pdp.certify(net, x, 300, 0.05, seed=3)
    b = pdp.certify(back, x, 300, 0.05, seed=3)
    assert a.expected_scores == b.expected_scores and a.size == b.size
    (tmp_path / "bad.pt").write_bytes(b"not a model")
    with pytest.raises(ModelError):
        pdp.load_pixeldp(tmp_path / "bad.pt")
    with pytest.raises(ModelError):
        pdp.load_pixeldp(tmp_path / "missing.pt")
