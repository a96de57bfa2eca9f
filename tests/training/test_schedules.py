"""Schedules give their documented values."""

from __future__ import annotations

import pytest

from nncert.errors import ConfigError
from nncert.training import Constant, Ramp


def test_linear_eps_ramp():
    r = Ramp(0.0, 0.3, begin=1.0, length=4.0)
    assert [r(t) for t in (0.0, 1.0, 3.0, 5.0, 9.0)] == pytest.approx([0, 0, 0.15, 0.3, 0.3])


def test_kappa_and_beta_schedules():
    kappa = Ramp(1.0, 0.5, begin=0.0, length=2.0)
    assert [kappa(t) for t in (0.0, 1.0, 2.0, 10.0)] == pytest.approx([1.0, 0.75, 0.5, 0.5])
    beta = Ramp(1.0, 0.0, begin=0.0, length=10.0)
    assert beta(2.5) == pytest.approx(0.75)
    assert Constant(0.3)(123.0) == 0.3


def test_smooth_ramp_is_continuous_monotone_and_hits_its_ends():
    r = Ramp(0.0, 0.4, begin=1.0, length=8.0, shape="smooth", mid=0.25)
    assert r(1.0) == 0.0 and r(9.0) == pytest.approx(0.4)
    assert r(3.0) == pytest.approx(0.1)  # the end of the exponential part: mid·end
    ts = [1 + 8 * i / 400 for i in range(401)]
    vals = [r(t) for t in ts]
    assert all(b >= a for a, b in zip(vals, vals[1:]))
    assert max(b - a for a, b in zip(vals, vals[1:])) < 0.01
    assert r(1.2) < Ramp(0.0, 0.4, 1.0, 8.0)(1.2) / 5  # starts much slower than linear


def test_zero_length_ramp_and_bad_ramps():
    assert Ramp(0.0, 1.0, begin=2.0)(1.9) == 0.0 and Ramp(0.0, 1.0, begin=2.0)(2.0) == 1.0
    with pytest.raises(ConfigError):
        Ramp(0.0, 1.0, length=-1)
    with pytest.raises(ConfigError):
        Ramp(0.0, 1.0, shape="cubic")
