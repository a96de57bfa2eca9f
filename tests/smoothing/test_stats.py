"""The statistics of smoothing/PixelDP against closed forms, R/statsmodels reference values and
exact coverage computations (no Monte Carlo: every check here is deterministic)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import beta, binom, binomtest, norm

from nncert.errors import ConfigError
from nncert.smoothing import stats


@pytest.mark.parametrize("n", [1, 10, 100, 10_000])
@pytest.mark.parametrize("alpha", [0.001, 0.05, 0.3])
def test_clopper_pearson_closed_forms(n, alpha):
    # k = n: P(Bin(n, p) ≥ n) = p^n = alpha  →  p = alpha^(1/n)
    assert stats.clopper_pearson_lower(n, n, alpha) == pytest.approx(alpha ** (1 / n), rel=1e-10)
    # k = 1: P(Bin(n, p) ≥ 1) = 1 - (1-p)^n = alpha  →  p = 1 - (1-alpha)^(1/n)
    assert stats.clopper_pearson_lower(1, n, alpha) == pytest.approx(1 - (1 - alpha) ** (1 / n),
                                                                     rel=1e-8)
    assert stats.clopper_pearson_lower(0, n, alpha) == 0.0
    assert stats.clopper_pearson_upper(n, n, alpha) == 1.0
    assert stats.clopper_pearson_upper(0, n, alpha) == pytest.approx(1 - alpha ** (1 / n), rel=1e-8)


@pytest.mark.parametrize("k,n", [(1, 7), (5, 10), (37, 50), (990, 1000), (99_123, 100_000)])
@pytest.mark.parametrize("alpha", [0.001, 0.01, 0.05])
def test_clopper_pearson_matches_scipy_exact_interval(k, n, alpha):
    # the one-sided bound at alpha is the lower end of the two-sided exact interval at 2·alpha,
    # which is what the reference code gets from statsmodels' proportion_confint(method="beta")
    ci = binomtest(k, n).proportion_ci(confidence_level=1 - 2 * alpha, method="exact")
    assert stats.clopper_pearson_lower(k, n, alpha) == pytest.approx(ci.low, rel=1e-9, abs=1e-12)
    assert stats.clopper_pearson_upper(k, n, alpha) == pytest.approx(ci.high, rel=1e-9, abs=1e-12)
    # defining property: at the bound, seeing ≥ k successes has probability exactly alpha
    lo = stats.clopper_pearson_lower(k, n, alpha)
    assert binom.sf(k - 1, n, lo) == pytest.approx(alpha, rel=1e-6)
    assert lo == pytest.approx(beta.ppf(alpha, k, n - k + 1), rel=1e-12)


def test_clopper_pearson_matches_statsmodels_when_installed():
    sm = pytest.importorskip("statsmodels.stats.proportion")
    for k, n, alpha in [(5, 10, 0.05), (980, 1000, 0.001), (3, 300, 0.01)]:
        ref = sm.proportion_confint(k, n, alpha=2 * alpha, method="beta")[0]
        assert stats.clopper_pearson_lower(k, n, alpha) == pytest.approx(ref, rel=1e-9)


def test_clopper_pearson_matches_r_binom_test():
    # R: binom.test(5, 10)$conf.int, binom.test(0, 10), binom.test(10, 10) (95 %, two-sided)
    assert stats.clopper_pearson_interval(5, 10, 0.05) == pytest.approx((0.1870860, 0.8129140), abs=1e-7)
    assert stats.clopper_pearson_interval(0, 10, 0.05) == pytest.approx((0.0, 0.3084971), abs=1e-7)
    assert stats.clopper_pearson_interval(10, 10, 0.05) == pytest.approx((0.6915029, 1.0), abs=1e-7)


@pytest.mark.parametrize("n", [20, 200])
@pytest.mark.parametrize("alpha", [0.01, 0.1])
def test_lower_bound_coverage_is_exact_and_conservative(n, alpha):
    """P(lower(K) > p) ≤ alpha for K ~ Bin(n, p), computed exactly by summing the pmf."""
    lowers = np.array([stats.clopper_pearson_lower(k, n, alpha) for k in range(n + 1)])
    for p in np.linspace(0.01, 0.99, 99):
        miss = binom.pmf(np.arange(n + 1), n, p)[lowers > p].sum()
        assert miss <= alpha + 1e-12, (p, miss)


def test_binomial_pvalue():
    # P(X ≥ 7) for Bin(10, 1/2) = 176/1024; two-sided doubles it
    assert stats.binomial_pvalue(7, 10) == pytest.approx(0.34375)
    assert stats.binomial_pvalue(5, 10) == pytest.approx(1.0)
    assert stats.binomial_pvalue(100, 100) == pytest.approx(2 * 0.5 ** 100)
    assert stats.binomial_pvalue(0, 0) == 1.0


def test_smoothing_radius():
    assert stats.smoothing_radius(0.5, 1.0) == 0.0
    assert stats.smoothing_radius(0.3, 1.0) == 0.0
    assert stats.smoothing_radius(0.975, 0.5) == pytest.approx(0.5 * 1.959963985, rel=1e-8)
    assert stats.smoothing_radius(norm.cdf(2.0), 0.25) == pytest.approx(0.5, rel=1e-10)


def test_hoeffding_halfwidth():
    # t = sqrt(ln(2K/alpha) / 2n)
    assert stats.hoeffding_halfwidth(1000, 0.05, num_bounds=10) == pytest.approx(
        math.sqrt(math.log(400) / 2000))
    assert stats.hoeffding_halfwidth(100, 0.1, two_sided=False) == pytest.approx(
        math.sqrt(math.log(10) / 200))


def test_certified_accuracy():
    radii = [0.0, 0.3, 0.6, 1.2, 0.9]
    correct = [False, True, True, True, False]
    assert stats.certified_accuracy(radii, correct) == pytest.approx([0.6, 0.6, 0.4, 0.2, 0.2])
    assert stats.certified_accuracy([], []) == [0.0] * 5


@pytest.mark.parametrize("call", [
    lambda: stats.clopper_pearson_lower(3, 10, 0.0),
    lambda: stats.clopper_pearson_lower(3, 10, 1.0),
    lambda: stats.clopper_pearson_lower(11, 10, 0.05),
    lambda: stats.clopper_pearson_lower(1, 0, 0.05),
    lambda: stats.check_positive(0.0, "sigma"),
    lambda: stats.check_positive(float("nan"), "sigma"),
    lambda: stats.check_count(0, "n"),
    lambda: stats.check_count(2.5, "n"),
])
def test_bad_arguments_raise_config_error(call):
    with pytest.raises(ConfigError):
        call()
