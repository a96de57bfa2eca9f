"""Schedules of the certified-training hyper-parameters, as functions of training time ``t``
in (fractional) epochs: ``t = step / steps_per_epoch``.

* :class:`Ramp`: ``start`` until ``begin``, then a ramp to ``end`` over ``length`` epochs, then
  ``end``. ``shape="linear"`` (Gowal et al. 2018's ε ramp and κ schedule; Zhang et al. 2020's
  β schedule) or ``"smooth"`` (Shi et al. 2021 / CROWN-IBP's "SmoothedScheduler": exponential
  growth for the first ``mid`` of the ramp, then linear).
* :class:`Constant`.

Every schedule is a small frozen value with ``__call__(t) -> float``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ConfigError


@dataclass(frozen=True)
class Constant:
    value: float

    def __call__(self, t: float) -> float:
        return self.value


@dataclass(frozen=True)
class Ramp:
    """``start`` for t ≤ begin, ``end`` for t ≥ begin + length, a ramp between.

    Shape "smooth": with ``f`` the ramp fraction and ``u = f / mid``, the fraction used is
    ``mid·u·1000^(u − 1)`` for f < mid (0 at f = 0, ``mid/1000`` at u ≈ 0 up to ``mid`` at
    f = mid: exponential-like growth) and f after: continuous and non-decreasing.
    """

    start: float
    end: float
    begin: float = 0.0
    length: float = 0.0
    shape: str = "linear"
    mid: float = 0.25

    def __post_init__(self) -> None:
        if self.shape not in ("linear", "smooth"):
            raise ConfigError(f"ramp shape must be 'linear' or 'smooth', got {self.shape!r}")
        if self.length < 0 or self.begin < 0 or not 0 < self.mid < 1:
            raise ConfigError("ramp begin and length must be ≥ 0 and mid in (0, 1)")

    def fraction(self, t: float) -> float:
        """Progress through the ramp in [0, 1]."""
        if self.length == 0:
            return 0.0 if t < self.begin else 1.0
        return min(max((t - self.begin) / self.length, 0.0), 1.0)

    def __call__(self, t: float) -> float:
        f = self.fraction(t)
        if self.shape == "smooth" and 0 < f < self.mid:
            f = self.mid * math.exp(math.log(1e3) * (f / self.mid - 1)) * (f / self.mid)
        return self.start + (self.end - self.start) * f
