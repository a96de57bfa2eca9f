"""Tiny networks, ONNX files and VNN-LIB texts for the complete-verification tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from nncert.models import ops
from nncert.models.graph import sequential


def abs_net():
    """y = relu(x0) + relu(-x0) = |x0| (one input, one output): min over [-1, 1] is 0."""
    l1 = ops.Linear(torch.tensor([[1.0], [-1.0]]), torch.zeros(2))
    l2 = ops.Linear(torch.tensor([[1.0, 1.0]]), torch.zeros(1))
    return sequential([l1, ops.ReLU(), l2], (1,))


def random_mlp(seed: int, widths=(2, 8, 8, 2), scale: float = 1.5):
    g = torch.Generator().manual_seed(seed)
    layers = []
    for i in range(len(widths) - 1):
        w = torch.randn(widths[i + 1], widths[i], generator=g) * scale / widths[i] ** 0.5
        b = torch.randn(widths[i + 1], generator=g) * 0.3
        layers.append(ops.Linear(w, b))
        if i < len(widths) - 2:
            layers.append(ops.ReLU())
    return sequential(layers, (widths[0],))


def write_mlp_onnx(graph, path: Path) -> Path:
    """A ReLU chain of Linear layers as a Gemm/Relu ONNX file with input [1, n]."""
    nodes, inits = [], []
    prev = "input"
    n_in = graph.input_shape[0]
    for i, node in enumerate(graph.nodes):
        out = f"t{i}"
        if isinstance(node.op, ops.Linear):
            w = node.op.weight.detach().float().numpy()
            b = node.op.bias_.detach().float().numpy()
            inits += [numpy_helper.from_array(w, f"W{i}"), numpy_helper.from_array(b, f"B{i}")]
            nodes.append(helper.make_node("Gemm", [prev, f"W{i}", f"B{i}"], [out], transB=1))
        else:
            nodes.append(helper.make_node("Relu", [prev], [out]))
        prev = out
    n_out = graph.num_outputs
    g = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, n_in])],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, n_out])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def vnnlib_text(lo, hi, violation: str, n_out: int) -> str:
    """Box constraints on X and one violation assert given as raw SMT text."""
    lines = [f"(declare-const X_{i} Real)" for i in range(len(lo))]
    lines += [f"(declare-const Y_{j} Real)" for j in range(n_out)]
    for i, (a, b) in enumerate(zip(lo, hi)):
        lines += [f"(assert (>= X_{i} {a!r}))", f"(assert (<= X_{i} {b!r}))"]
    lines.append(f"(assert {violation})")
    return "\n".join(lines) + "\n"


def grid_min(graph, lo, hi, spec, n: int = 201) -> float:
    """Minimum of the spec margin on a dense grid (2-input nets): an upper bound of the true min."""
    xs = [torch.linspace(float(a), float(b), n, dtype=torch.float64) for a, b in zip(lo, hi)]
    grid = torch.stack(torch.meshgrid(*xs, indexing="ij"), -1).reshape(-1, len(xs))
    g64 = graph.to(dtype=torch.float64)
    with torch.no_grad():
        y = g64(grid)
    return float(spec.to(dtype=torch.float64).expand(1).margin(y.unsqueeze(1)).min())


__all__ = ["abs_net", "grid_min", "np", "random_mlp", "vnnlib_text", "write_mlp_onnx"]
