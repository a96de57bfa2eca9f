"""The one canonical problem every parser yields and every method consumes."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import ConfigError, ShapeError
from ..models.graph import Graph
from .input_sets import InputSet, LpBall
from .output import OutputSpec


@dataclass(frozen=True, eq=False)
class VerificationProblem:
    """Prove ``output_spec`` for every input in ``input_set`` (per batch element).

    Invariants checked here: the set's shape is the model's input shape, the spec reads the
    model's flattened output, and the set and spec have the same batch size.
    """

    graph: Graph
    input_set: InputSet
    output_spec: OutputSpec
    name: str = ""

    def __post_init__(self) -> None:
        self.input_set.check_shape(self.graph.input_shape)
        if self.output_spec.num_outputs != self.graph.num_outputs:
            raise ShapeError("spec output size vs model output size",
                             (self.graph.num_outputs,), (self.output_spec.num_outputs,))
        if self.output_spec.batch_size != self.input_set.batch_size:
            raise ShapeError("spec batch vs input-set batch", (self.input_set.batch_size,),
                             (self.output_spec.batch_size,))

    @property
    def batch_size(self) -> int:
        return self.input_set.batch_size

    def __getitem__(self, idx) -> VerificationProblem:
        return VerificationProblem(self.graph, self.input_set[idx], self.output_spec[idx],
                                   self.name)

    def to(self, device=None, dtype=None) -> VerificationProblem:
        return VerificationProblem(self.graph.to(device, dtype), self.input_set.to(device, dtype),
                                   self.output_spec.to(device, dtype), self.name)


def robustness_problem(
    graph: Graph,
    x: torch.Tensor,
    labels,
    eps: float,
    p: float = math.inf,
    clip: tuple[float, float] | None = (0.0, 1.0),
    name: str = "",
) -> VerificationProblem:
    """Local robustness of each ``x[b]`` (batch-first, model input shape) at ``labels[b]``
    within the L_p ball of radius ``eps``, intersected with ``clip`` when given."""
    if eps < 0:
        raise ConfigError(f"epsilon must be ≥ 0, got {eps}")
    graph.check_input(x)
    x = x.to(device=graph.device, dtype=graph.dtype)
    lo, hi = (None, None) if clip is None else clip
    ball = LpBall(x, float(eps), p, lo, hi)
    spec = OutputSpec.robustness(labels, graph.num_outputs, dtype=graph.dtype, device=graph.device)
    if spec.batch_size != x.shape[0]:
        raise ShapeError("labels vs inputs", (x.shape[0],), (spec.batch_size,))
    return VerificationProblem(graph, ball, spec, name)
