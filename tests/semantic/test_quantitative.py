"""Quantitative bounds on the robust fraction of a segment bracket the exact fraction."""

from __future__ import annotations

import pytest
import torch

import nncert.clock
from nncert.clock import Deadline
from nncert.errors import ConfigError
from nncert.models import zoo
from nncert.result import Verdict
from nncert.semantic.quantitative import QuantConfig, robust_fraction
from nncert.semantic.segments import certify_segment_exact
from nncert.specs import OutputSpec

D = torch.float64


def _case(kind: str, seed: int, length: float):
    net = zoo.random_graph(kind, seed).to(dtype=D)
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(net.input_shape, generator=g, dtype=D)
    b = a + length * torch.randn(net.input_shape, generator=g, dtype=D)
    label = int(net(a.unsqueeze(0)).argmax())
    return net, a, b, OutputSpec.robustness([label], net.num_outputs, dtype=D)


@pytest.mark.parametrize("method", ["interval", "crown"])
@pytest.mark.parametrize("kind,seed,length", [
    ("relu", 0, 10.0), ("relu", 1, 3.0), ("conv-max", 2, 1.0), ("residual", 2, 10.0),
    ("residual", 4, 10.0), ("conv-avg", 1, 10.0)])
def test_bounds_bracket_exact_and_sampled_fraction(method, kind, seed, length):
    net, a, b, spec = _case(kind, seed, length)
    exact = certify_segment_exact(net, a, b, spec).fraction_lower
    q = robust_fraction(net, a, b, spec, QuantConfig(method=method, max_pieces=256))
    assert 0.0 <= q.fraction_lower <= exact + 1e-9
    assert exact - 1e-9 <= q.fraction_upper <= 1.0
    t = torch.linspace(0, 1, 5001, dtype=D)
    y = net(a + t.reshape(-1, *([1] * a.dim())) * (b - a)).flatten(1)
    sampled = float(spec.holds(y[:, None, :])[:, 0].double().mean())
    assert q.fraction_lower - 1e-3 <= sampled <= q.fraction_upper + 1e-3
    if q.result.verdict is Verdict.FALSIFIED:
        cex = q.result.counterexample
        assert not bool(spec.holds(net(cex.x.unsqueeze(0)).flatten(1))[0])
    if q.result.verdict is Verdict.VERIFIED:
        assert exact == 1.0


@pytest.mark.parametrize("kind,seed,length", [("relu", 0, 10.0), ("conv-max", 2, 1.0)])
def test_bounds_tighten_with_budget(kind, seed, length):
    net, a, b, spec = _case(kind, seed, length)
    gaps, lows, ups = [], [], []
    for budget in (8, 32, 128, 512):
        q = robust_fraction(net, a, b, spec, QuantConfig(max_pieces=budget, batch=8,
                                                         tolerance=0.0))
        gaps.append(q.fraction_upper - q.fraction_lower)
        lows.append(q.fraction_lower)
        ups.append(q.fraction_upper)
    assert all(x >= y - 1e-12 for x, y in zip(gaps, gaps[1:]))
    assert all(x <= y + 1e-12 for x, y in zip(lows, lows[1:]))
    assert all(x >= y - 1e-12 for x, y in zip(ups, ups[1:]))
    assert gaps[-1] < gaps[0]


def test_exact_method_gives_equal_bounds():
    net, a, b, spec = _case("relu", 0, 10.0)
    q = robust_fraction(net, a, b, spec, QuantConfig(method="exact"))
    assert 0 < q.fraction_lower < 1 and q.result.verdict is Verdict.FALSIFIED
    assert q.fraction_lower == q.fraction_upper


def test_deadline_gives_timeout_with_sound_bounds(monkeypatch):
    net, a, b, spec = _case("relu", 0, 10.0)
    ticks = iter(range(10_000))
    monkeypatch.setattr(nncert.clock, "now", lambda: float(next(ticks)))
    q = robust_fraction(net, a, b, spec, QuantConfig(batch=1), Deadline(5.0))
    exact = certify_segment_exact(net, a, b, spec).fraction_lower
    assert q.fraction_lower <= exact + 1e-9 <= q.fraction_upper + 2e-9
    assert q.result.verdict in (Verdict.TIMEOUT, Verdict.FALSIFIED, Verdict.VERIFIED)


def test_bad_config():
    with pytest.raises(ConfigError):
        QuantConfig(max_pieces=0)


def test_certify_line_between_two_images_matches_exact():
    from nncert.semantic.latent import certify_line

    net, a, b, spec = _case("conv-max", 2, 1.0)
    label = int(net(a.unsqueeze(0)).argmax())
    exact = certify_line(net, a, b, label, "exact")
    quant = certify_line(net, a, b, label, "quantitative", QuantConfig(max_pieces=128))
    once = certify_line(net, a, b, label, "interval")
    assert quant.fraction_lower - 1e-9 <= exact.fraction_lower <= quant.fraction_upper + 1e-9
    assert once.fraction_lower <= exact.fraction_lower <= once.fraction_upper
    with pytest.raises(ConfigError, match="label"):
        certify_line(net, a, b, 99)


@pytest.mark.parametrize("method", ["interval", "crown", "exact"])
@pytest.mark.parametrize("kind,seed,length", [("relu", 1, 3.0), ("residual", 2, 10.0)])
def test_reported_proved_and_violated_parts_are_sound(method, kind, seed, length):
    net, a, b, spec = _case(kind, seed, length)
    q = robust_fraction(net, a, b, spec, QuantConfig(method=method, max_pieces=256))
    proved, bad = q.proved, q.violations
    if method != "exact":  # the pieces' lengths are the bounds
        assert float((proved[:, 1] - proved[:, 0]).sum()) == pytest.approx(q.fraction_lower)
        assert float((bad[:, 1] - bad[:, 0]).sum()) == pytest.approx(1 - q.fraction_upper)
    else:
        assert float((proved[:, 1] - proved[:, 0]).sum()) == pytest.approx(q.fraction_lower)
    g = torch.Generator().manual_seed(seed)
    for iv, should_hold in ((proved, True), (bad, False)):
        if iv.shape[0] == 0:
            continue
        pick = torch.randint(0, iv.shape[0], (2000,), generator=g)
        u = torch.rand(2000, generator=g, dtype=D) * 0.998 + 0.001  # strictly inside
        t = iv[pick, 0] + u * (iv[pick, 1] - iv[pick, 0])
        y = net(a + t.reshape(-1, *([1] * a.dim())) * (b - a)).flatten(1)
        holds = spec.expand(2000).holds(y)
        assert bool((holds == should_hold).all()), (method, should_hold)
