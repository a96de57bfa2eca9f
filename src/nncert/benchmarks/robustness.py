"""Certify local robustness of every point of a dataset with a bound method, in batches.

The inputs are pixels scaled to [0, 1] (``images / scale``); any normalisation the model
expects is an explicit op at the front of its graph (see ``with_normalization``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from ..bounds import certify
from ..errors import ConfigError, DataError, ShapeError
from ..models import ops
from ..models.graph import Graph, prepend
from ..result import Result, Verdict
from ..specs.output import OutputSpec
from ..specs.problem import robustness_problem


@dataclass(frozen=True)
class RobustnessConfig:
    """What to certify: an L_p ball of radius ``eps`` (in [0,1] pixel units) with ``method``."""

    eps: float
    method: str = "interval"
    p: float = math.inf
    batch_size: int = 64
    clip: tuple[float, float] | None = (0.0, 1.0)
    method_config: Any = None
    timeout_s: float = 60.0  # method "complete": the budget of each point

    def __post_init__(self) -> None:
        if not (self.eps >= 0 and math.isfinite(self.eps)):
            raise ConfigError(f"epsilon must be a finite number ≥ 0, got {self.eps}")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be ≥ 1, got {self.batch_size}")
        if not (self.timeout_s > 0 and math.isfinite(self.timeout_s)):
            raise ConfigError(f"timeout must be a positive number of seconds, got {self.timeout_s}")


#: ``RobustnessConfig.method`` for complete verification (``nncert.complete.verify``) per point
COMPLETE = "complete"


class InvariantError(RuntimeError):
    """An internal soundness check failed (a bug, never bad input): a certificate was about to
    be given to a point whose own prediction is wrong."""


def _check_normalization(graph: Graph, mean: list[float], std: list[float]) -> None:
    channels = graph.input_shape[0]
    for name, values in (("mean", mean), ("std", std)):
        if len(values) not in (1, channels):
            raise ConfigError(f"--{name} has {len(values)} values (one per channel) but the model "
                              f"input {graph.input_shape} has {channels} channels (its first "
                              f"dim); give 1 value or {channels}")
        if not all(math.isfinite(v) for v in values):
            raise ConfigError(f"--{name} values must be finite, got {values}")
    if not all(v > 0 for v in std):
        raise ConfigError(f"--std values must be > 0, got {std}")


def with_normalization(graph: Graph, mean: list[float] | None, std: list[float] | None) -> Graph:
    """``graph`` preceded by ``(x − mean) / std`` (per channel: along the first input dim);
    unchanged when both are None. Wrong counts, std ≤ 0 or non-finite values are errors."""
    if mean is None and std is None:
        return graph
    mean = mean if mean is not None else [0.0]
    std = std if std is not None else [1.0]
    _check_normalization(graph, mean, std)
    op = ops.normalize(mean, std, ndim=len(graph.input_shape)).to(graph.device, graph.dtype)
    return prepend(graph, op, "normalize")


def prepare_inputs(images: torch.Tensor, graph: Graph, scale: float,
                   domain: tuple[float, float] | None = (0.0, 1.0)) -> torch.Tensor:
    """``images / scale`` reshaped to the model's input shape (same number of values), on the
    model's device and dtype. A size mismatch is a ShapeError naming both shapes; a scaled
    pixel outside ``domain`` is a DataError naming the image and the value (the certificates
    are for balls clipped to the domain, which must contain their centre)."""
    if not (scale > 0 and math.isfinite(scale)):
        raise ConfigError(f"the pixel scale must be a finite number > 0, got {scale}")
    n = images.shape[0]
    if n == 0:
        raise DataError("the dataset holds no images")
    if images[0].numel() != graph.num_inputs:
        raise ShapeError("dataset image vs model input", graph.input_shape, tuple(images.shape[1:]))
    x = images.reshape(n, *graph.input_shape) / scale
    if domain is not None:
        outside = _first_outside(x, domain)
        if outside is not None:
            i, v = outside
            raise DataError(f"image {i} has pixel value {v * scale:g}, outside [{domain[0] * scale:g}, "
                            f"{domain[1] * scale:g}] (the input domain [{domain[0]:g}, {domain[1]:g}] "
                            f"times the scale {scale:g}); pass the scale that matches the data")
    return x.to(device=graph.device, dtype=graph.dtype)


def _first_outside(x: torch.Tensor, domain: tuple[float, float]) -> tuple[int, float] | None:
    """(index, value) of the first point with a value outside ``domain`` (NaN included)."""
    flat = x.reshape(x.shape[0], -1)
    bad = ~((flat >= domain[0]) & (flat <= domain[1]))
    rows = bad.any(1).nonzero()
    if rows.numel() == 0:
        return None
    i = int(rows[0])
    return i, float(flat[i][bad[i]][0])


def _confirmed(result: Result, spec: OutputSpec, reference: Callable | None) -> Result:
    """A FALSIFIED result stays so only if ``reference`` (e.g. onnxruntime on the source model)
    also violates the spec at the counterexample; otherwise it becomes UNKNOWN."""
    if result.verdict is not Verdict.FALSIFIED or reference is None:
        return result
    y = reference(result.counterexample.x.unsqueeze(0)).reshape(1, -1).double()
    if bool(spec.to(dtype=torch.float64).holds(y.cpu()).all()):
        return Result(Verdict.UNKNOWN, result.method, result.time_s, result.lower, result.upper,
                      stats={"reason": "counterexample not confirmed by the reference model"})
    return result


def certify_points(
    graph: Graph,
    x: torch.Tensor,
    labels: torch.Tensor,
    config: RobustnessConfig,
    on_result: Callable[[dict[str, Any]], None] | None = None,
    reference: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Iterator[dict[str, Any]]:
    """Yields one row per point: index, label, prediction, verdict, time_s, margin_lower
    (the certified lower bound of min_j y_label − y_j). VERIFIED rows are sound certificates;
    a misclassified point is FALSIFIED with the point itself as counterexample, re-checked on
    the graph and, when given, on ``reference`` (the source model, e.g. onnxruntime: inputs in
    the graph's input space, outputs flat)."""
    if config.clip is not None:
        outside = _first_outside(x, config.clip)
        if outside is not None:
            raise DataError(f"point {outside[0]} has value {outside[1]:g} outside the input domain "
                            f"{list(config.clip)}: a ball clipped to the domain must contain its "
                            "centre")
    for start in range(0, x.shape[0], config.batch_size):
        xb = x[start:start + config.batch_size]
        yb = labels[start:start + config.batch_size]
        t0 = time.perf_counter()
        problem = robustness_problem(graph, xb, yb, config.eps, config.p, config.clip)
        if config.method == COMPLETE:
            results = _decided(graph, xb, yb, config)
        else:
            results = certify(problem, config.method, config.method_config)
        results = [_confirmed(r, problem.output_spec[i], reference) for i, r in enumerate(results)]
        with torch.no_grad():
            pred = graph(xb).flatten(1).argmax(1)
        per_item = (time.perf_counter() - t0) / xb.shape[0]
        for i, r in enumerate(results):
            if r.verdict is Verdict.VERIFIED and int(pred[i]) != int(yb[i]):
                raise InvariantError(f"point {start + i} was VERIFIED with {config.method} but its "
                                     f"own prediction {int(pred[i])} is not its label {int(yb[i])}")
            row = {
                "index": start + i,
                "label": int(yb[i]),
                "prediction": int(pred[i]),
                "verdict": r.verdict.value,
                "time_s": round(r.time_s if config.method == COMPLETE else per_item, 6),
                "margin_lower": float(r.lower.min()) if r.lower is not None else None,
            }
            if config.method == COMPLETE:
                row["strategy"] = r.method
            if on_result is not None:
                on_result(row)
            yield row


def _decided(graph: Graph, xb: torch.Tensor, yb: torch.Tensor, config: RobustnessConfig) -> list[Result]:
    """Complete verification of each point's ball, one at a time, ``config.timeout_s`` each
    (``config.method_config``: a ``VerifyConfig``, whose timeout is replaced)."""
    import dataclasses

    from ..complete.verify import VerifyConfig, verify

    base = config.method_config or VerifyConfig()
    vcfg = dataclasses.replace(base, timeout_s=config.timeout_s)
    out = []
    for i in range(xb.shape[0]):
        problem = robustness_problem(graph, xb[i:i + 1], yb[i:i + 1], config.eps, config.p, config.clip)
        out.append(verify(problem, vcfg))
    return out


def summarize(rows: list[dict[str, Any]], config: RobustnessConfig) -> dict[str, Any]:
    n = len(rows)
    verified = sum(r["verdict"] == Verdict.VERIFIED.value for r in rows)
    correct = sum(r["label"] == r["prediction"] for r in rows)
    if verified > sum(r["verdict"] == Verdict.VERIFIED.value and r["label"] == r["prediction"]
                      for r in rows):
        raise InvariantError(f"{verified} points verified but only {correct} classified correctly")
    return {
        "count": n,
        "method": config.method,
        "eps": config.eps,
        "p": "inf" if config.p == math.inf else config.p,
        "clean_accuracy": correct / n if n else 0.0,
        "verified": verified,
        "certified_accuracy": verified / n if n else 0.0,
        "mean_time_s": sum(r["time_s"] for r in rows) / n if n else 0.0,
        **({"decided_by": _strategies(rows)} if config.method == COMPLETE else {}),
    }


def _strategies(rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """verdict → {strategy that reached it: count} (complete verification only)."""
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        per = out.setdefault(r["verdict"], {})
        per[r.get("strategy", "?")] = per.get(r.get("strategy", "?"), 0) + 1
    return out
