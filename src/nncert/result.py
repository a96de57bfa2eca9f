"""The one result type every method returns, and its serialisations (JSON, VNN-COMP)."""

from __future__ import annotations

import enum
import json
import math
from dataclasses import dataclass, field
from typing import Any

import torch


class Verdict(enum.Enum):
    """VERIFIED: proved for the whole input set. FALSIFIED: a counterexample re-checked on the
    concrete model. UNKNOWN: neither within the method's power. TIMEOUT: budget exhausted."""

    VERIFIED = "verified"
    FALSIFIED = "falsified"
    UNKNOWN = "unknown"
    TIMEOUT = "timeout"

    def vnncomp(self) -> str:
        return {"verified": "unsat", "falsified": "sat"}.get(self.value, self.value)


def short_tensor(t: torch.Tensor | None, head: int = 6) -> str:
    """A one-line summary of a tensor for ``repr``: its values when it has at most ``head``
    elements, else its shape, range and first values (never a whole image)."""
    if t is None:
        return "None"
    flat = t.detach().flatten().double()
    vals = ", ".join(f"{v:.4g}" for v in flat[:head].tolist())
    if flat.numel() <= head:
        return f"[{vals}]"
    shape = "x".join(map(str, t.shape))
    return (f"<{shape} tensor, min {float(flat.min()):.4g}, max {float(flat.max()):.4g}: "
            f"{vals}, ...>")


@dataclass(frozen=True, eq=False)
class Counterexample:
    """An input inside the input set whose concrete output violates the property."""

    x: torch.Tensor  # one input, without batch dim
    y: torch.Tensor  # the concrete output at x, without batch dim

    def to_vnncomp(self) -> str:
        """The VNN-COMP witness: ``((X_0 v) ... (Y_0 v) ...)``, values as exact float reprs."""
        xs = [f"(X_{i} {float(v)!r})" for i, v in enumerate(self.x.flatten().tolist())]
        ys = [f"(Y_{i} {float(v)!r})" for i, v in enumerate(self.y.flatten().tolist())]
        return "(" + "\n".join(xs + ys) + ")"

    def __repr__(self) -> str:
        return f"Counterexample(x={short_tensor(self.x)}, y={short_tensor(self.y)})"


def _tensor_to_json(t: torch.Tensor | None) -> Any:
    if t is None:
        return None
    return [v if math.isfinite(v) else str(v) for v in t.detach().flatten().double().tolist()]


@dataclass(frozen=True, eq=False)
class Result:
    """Outcome of one verification query.

    ``lower``/``upper`` are sound bounds of the spec's rows ``C·y + d`` when a bound method ran;
    ``counterexample`` is set exactly when the verdict is FALSIFIED.
    """

    verdict: Verdict
    method: str
    time_s: float = 0.0
    lower: torch.Tensor | None = None
    upper: torch.Tensor | None = None
    counterexample: Counterexample | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.verdict is Verdict.FALSIFIED) != (self.counterexample is not None):
            raise ValueError("a FALSIFIED result must carry a counterexample, and only it")

    def __repr__(self) -> str:
        parts = [f"{self.verdict.name}", f"method={self.method!r}", f"time_s={self.time_s:.3g}"]
        if self.lower is not None:
            parts.append(f"lower={short_tensor(self.lower)}")
        if self.upper is not None:
            parts.append(f"upper={short_tensor(self.upper)}")
        if self.counterexample is not None:
            parts.append(f"counterexample={self.counterexample!r}")
        if self.stats:
            stats = repr(self.stats)
            parts.append(f"stats={stats if len(stats) <= 200 else stats[:197] + '...'}")
        return "Result(" + ", ".join(parts) + ")"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "verdict": self.verdict.value,
            "method": self.method,
            "time_s": round(self.time_s, 6),
            "lower": _tensor_to_json(self.lower),
            "upper": _tensor_to_json(self.upper),
            "stats": self.stats,
        }
        if self.counterexample is not None:
            d["counterexample"] = {
                "x": _tensor_to_json(self.counterexample.x),
                "y": _tensor_to_json(self.counterexample.y),
            }
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def to_vnncomp(self) -> str:
        """The VNN-COMP result file text: ``unsat``, ``sat`` + witness, ``timeout``, ``unknown``."""
        text = self.verdict.vnncomp()
        if self.counterexample is not None:
            text += "\n" + self.counterexample.to_vnncomp()
        return text + "\n"
