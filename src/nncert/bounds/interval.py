"""Interval bound propagation (IBP; Gowal et al. 2018, Mirman et al. 2018's Box domain).

Sound for every op of the IR: affine ops map (center, radius) to (forward(center),
|linear|(radius)); monotone ops map endpoints to endpoints.
"""

from __future__ import annotations

import torch

from ..models import ops
from ..models.graph import Graph
from ..specs.input_sets import InputSet
from ..specs.output import OutputSpec
from ..specs.problem import VerificationProblem
from .core import Bounds, Interval
from .traversal import forward_walk


def _affine(op: ops.AffineOp, x: Interval) -> Interval:
    c, r = op.forward(x.center), op.abs_linear(x.radius)
    return Interval(c - r, c + r)


def _linear_multi(op: ops.LinearMultiOp, *xs: Interval) -> Interval:
    c = op.forward(*(x.center for x in xs))
    r = op.abs_forward(*(x.radius for x in xs))
    return Interval(c - r, c + r)


def _monotone(op: ops.Op, x: Interval) -> Interval:
    return Interval(op.forward(x.lower), op.forward(x.upper))


TRANSFORMERS = {
    **dict.fromkeys(ops.AFFINE_OPS, _affine),
    **dict.fromkeys((ops.Add, ops.Sub, ops.Concat), _linear_multi),
    **dict.fromkeys((ops.ReLU, ops.LeakyReLU, ops.Sigmoid, ops.Tanh, ops.MaxPool2d), _monotone),
}


def interval_walk(graph: Graph, input_set: InputSet) -> dict[str, Interval]:
    """Sound elementwise bounds of every node's output over ``input_set``."""
    return forward_walk(graph, TRANSFORMERS, Interval(input_set.lower, input_set.upper),
                        "interval")


def spec_bounds_from_interval(
    graph: Graph, spec: OutputSpec, values: dict[str, Interval]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds of ``C·y + d`` from node intervals. When the output node is a Linear layer the
    spec is folded into it (``(C·W)·h + C·b + d``), which is never looser than bounding y."""
    out = graph.node(graph.output_name)
    if isinstance(out.op, ops.Linear):
        h = values[out.inputs[0]]
        W = torch.einsum("bro,oi->bri", spec.C, out.op.weight)
        b = spec.d if out.op.bias_ is None else spec.d + spec.C @ out.op.bias_
        mid = torch.einsum("bri,bi->br", W, h.center) + b
        rad = torch.einsum("bri,bi->br", W.abs(), h.radius)
        return mid - rad, mid + rad
    y = values[graph.output_name]
    yc, yr = y.center.flatten(1), y.radius.flatten(1)
    mid = torch.einsum("brn,bn->br", spec.C, yc) + spec.d
    rad = torch.einsum("brn,bn->br", spec.C.abs(), yr)
    return mid - rad, mid + rad


def interval_bounds(problem: VerificationProblem, config: None = None) -> Bounds:
    """IBP bounds of the problem's spec rows; every node's interval is kept as intermediate."""
    values = interval_walk(problem.graph, problem.input_set)
    lower, upper = spec_bounds_from_interval(problem.graph, problem.output_spec, values)
    return Bounds(lower, upper, "interval", values)
