"""The statistics behind randomized smoothing and PixelDP certification.

All confidence statements are exact (Clopper–Pearson, binomial test) or distribution-free
(Hoeffding); none relies on a normal approximation. Uses ``scipy.stats.binomtest`` (SciPy ≥ 1.7;
the reference code's ``binom_test`` was removed in SciPy 1.12).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy.stats import beta, binomtest, norm

from ..errors import ConfigError

#: the radii of the standard certified-accuracy table (L2, pixel units in [0, 1])
STANDARD_RADII: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)


# -- argument checks (shared by the library and the CLI) -------------------------------------
def check_alpha(alpha: float, name: str = "alpha") -> float:
    a = float(alpha)
    if not 0.0 < a < 1.0:
        raise ConfigError(f"{name} must lie in (0, 1), got {alpha!r}")
    return a


def check_positive(value: float, name: str) -> float:
    v = float(value)
    if not (v > 0.0 and math.isfinite(v)):
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def check_count(value: int, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < minimum:
        raise ConfigError(f"{name} must be an integer ≥ {minimum}, got {value!r}")
    return int(value)


# -- binomial confidence bounds -----------------------------------------------------------
def clopper_pearson_lower(k: int, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper–Pearson lower confidence bound on a binomial proportion
    from ``k`` successes in ``n`` trials: ``beta.ppf(alpha, k, n - k + 1)``, 0 when k = 0.

    Equal to the lower end of the two-sided interval at level ``2·alpha``
    (``statsmodels.proportion_confint(k, n, alpha=2*alpha, method="beta")[0]``, which is what
    Cohen et al.'s reference code calls).
    """
    n = check_count(n, "n")
    k = check_count(k, "k", 0)
    if k > n:
        raise ConfigError(f"k = {k} successes exceed n = {n} trials")
    check_alpha(alpha)
    if k == 0:
        return 0.0
    return float(beta.ppf(alpha, k, n - k + 1))


def clopper_pearson_upper(k: int, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper–Pearson upper bound: ``beta.ppf(1 - alpha, k + 1, n - k)``,
    1 when k = n."""
    n = check_count(n, "n")
    k = check_count(k, "k", 0)
    if k > n:
        raise ConfigError(f"k = {k} successes exceed n = {n} trials")
    check_alpha(alpha)
    if k == n:
        return 1.0
    return float(beta.ppf(1.0 - alpha, k + 1, n - k))


def clopper_pearson_interval(k: int, n: int, alpha: float) -> tuple[float, float]:
    """Two-sided (1 - alpha) Clopper–Pearson interval (each tail alpha / 2)."""
    return clopper_pearson_lower(k, n, alpha / 2), clopper_pearson_upper(k, n, alpha / 2)


def binomial_pvalue(k: int, n: int, p: float = 0.5) -> float:
    """Two-sided exact binomial test p-value of ``k`` successes in ``n`` trials against ``p``;
    1 when ``n`` is 0 (no trial is no evidence). With p = 0.5 on discordant pairs this is
    McNemar's exact test and the sign test."""
    if int(n) == 0:
        return 1.0
    return float(binomtest(int(k), int(n), p, alternative="two-sided").pvalue)


# -- Gaussian smoothing radius ------------------------------------------------------------
def smoothing_radius(pa_lower: float, sigma: float) -> float:
    """Cohen et al.'s certified L2 radius ``sigma · Φ⁻¹(pA_lower)``; 0 when pA_lower ≤ 1/2."""
    if pa_lower <= 0.5:
        return 0.0
    return float(sigma * norm.ppf(pa_lower))


# -- Hoeffding bounds (PixelDP's expected scores) ----------------------------------------
def hoeffding_halfwidth(n: int, alpha: float, num_bounds: int = 1, two_sided: bool = True) -> float:
    """Half-width ``t`` such that, for ``n`` i.i.d. samples in [0, 1], all ``num_bounds``
    (two-sided) intervals ``mean ± t`` hold simultaneously with probability ≥ 1 - alpha
    (Hoeffding's inequality with a union bound)."""
    n = check_count(n, "n")
    check_alpha(alpha)
    tails = num_bounds * (2 if two_sided else 1)
    return math.sqrt(math.log(tails / alpha) / (2.0 * n))


# -- summaries ---------------------------------------------------------------------------
def certified_accuracy(radii: Sequence[float], correct: Sequence[bool | int],
                       at: Sequence[float] = STANDARD_RADII) -> list[float]:
    """Fraction of points that are correct *and* certified at radius ≥ r, for each r in ``at``
    (the convention of Cohen et al.'s analysis scripts; an abstention counts as wrong)."""
    if len(radii) != len(correct):
        raise ConfigError(f"{len(radii)} radii but {len(correct)} correctness flags")
    total = len(radii)
    if total == 0:
        return [0.0 for _ in at]
    return [sum(1 for rad, c in zip(radii, correct) if c and rad >= r) / total for r in at]
