"""Values shared by every bound method: the Interval element and the Bounds answer."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import NumericalError


@dataclass(frozen=True, eq=False)
class Interval:
    """Elementwise bounds ``lower ≤ v ≤ upper`` of a batched value, (B, *shape) each."""

    lower: torch.Tensor
    upper: torch.Tensor

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.lower.shape[1:])

    @property
    def center(self) -> torch.Tensor:
        return (self.upper + self.lower) / 2

    @property
    def radius(self) -> torch.Tensor:
        return (self.upper - self.lower) / 2

    def __getitem__(self, idx) -> Interval:
        return Interval(self.lower[idx], self.upper[idx])

    def intersect(self, other: Interval) -> Interval:
        """The elementwise intersection: sound wherever both are (never looser than either)."""
        return Interval(torch.maximum(self.lower, other.lower),
                        torch.minimum(self.upper, other.upper))

    def contains(self, v: torch.Tensor, atol: float = 1e-6) -> bool:
        return bool(((v >= self.lower - atol) & (v <= self.upper + atol)).all())


def map_stacked(fn, t: torch.Tensor, out_shape: tuple[int, ...]) -> torch.Tensor:
    """A batched map ``fn`` (N, *s) → (N, *out_shape) applied to every row of a stack
    (B, G, *s) → (B, G, *out_shape), as one batch of B·G (G may be 0)."""
    B, G = t.shape[:2]
    if G == 0:
        return t.new_zeros((B, 0, *out_shape))
    return fn(t.reshape(B * G, *t.shape[2:])).reshape(B, G, *out_shape)


@dataclass(frozen=True, eq=False)
class Bounds:
    """Sound bounds of the spec rows ``C·y + d`` over the input set, each (B, R).

    ``intermediate`` maps node names to sound bounds of those nodes' outputs (at least the
    inputs of every nonlinearity, for methods that compute them); later methods may reuse them.
    """

    lower: torch.Tensor
    upper: torch.Tensor
    method: str
    intermediate: Mapping[str, Interval] = field(default_factory=dict)
    time_s: float = 0.0
    stats: dict[str, Any] = field(default_factory=dict)

    def check_finite(self) -> Bounds:
        if not (bool(torch.isfinite(self.lower).all()) and bool(torch.isfinite(self.upper).all())):
            raise NumericalError(f"{self.method} produced NaN or infinite bounds")
        return self
