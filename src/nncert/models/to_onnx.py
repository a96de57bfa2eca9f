"""Graph → ONNX file, for every op of :data:`~nncert.models.ops.ALL_OPS`.

The file has one float32 input named ``input`` of shape ``[N, *input_shape]`` (N symbolic) and
one output named ``output``; :func:`~nncert.models.from_onnx.from_onnx` reads it back to an
equivalent Graph, and onnxruntime runs it with the same results up to float32 rounding.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from ..errors import UnsupportedOpError
from . import ops
from .graph import Graph, Node


class _Builder:
    """Accumulates ONNX nodes and initializers."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def const(self, base: str, value) -> str:
        self.count += 1
        name = f"{base}__c{self.count}"
        arr = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        if arr.dtype.kind == "f":
            arr = arr.astype(np.float32)
        self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def node(self, op_type: str, inputs: list[str], output: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=output, **attrs))
        return output

    def tmp(self, base: str) -> str:
        self.count += 1
        return f"{base}__t{self.count}"


Exporter = Callable[[_Builder, Node, list[str], str], None]


def _linear(b: _Builder, n: Node, xs: list[str], out: str) -> None:
    inputs = [xs[0], b.const(n.name, n.op.weight)]
    if n.op.bias_ is not None:
        inputs.append(b.const(n.name, n.op.bias_))
    b.node("Gemm", inputs, out, transB=1)


def _conv(b: _Builder, n: Node, xs: list[str], out: str) -> None:
    op = n.op
    inputs = [xs[0], b.const(n.name, op.weight)]
    if op.bias_ is not None:
        inputs.append(b.const(n.name, op.bias_))
    ph, pw = op.padding
    b.node("Conv", inputs, out, strides=list(op.stride), pads=[ph, pw, ph, pw],
           dilations=list(op.dilation), group=op.groups, kernel_shape=list(op.weight.shape[2:]))


def _affine(b: _Builder, n: Node, xs: list[str], out: str) -> None:
    op, cur = n.op, xs[0]
    if op.scale is not None:
        cur = b.node("Mul", [cur, b.const(n.name, op.scale)], out if op.shift is None else b.tmp(out))
    if op.shift is not None:
        cur = b.node("Add", [cur, b.const(n.name, op.shift)], out)
    if cur != out:
        b.node("Identity", [cur], out)


def _reshape(b: _Builder, n: Node, xs: list[str], out: str) -> None:
    shape = [-1, *b.graph.shapes[n.name]]
    b.node("Reshape", [xs[0], b.const(n.name, np.array(shape, dtype=np.int64))], out)


def _flatten(b: _Builder, n: Node, xs: list[str], out: str) -> None:
    b.node("Flatten", xs, out, axis=1)


def _transpose(b: _Builder, n: Node, xs: list[str], out: str) -> None:
    b.node("Transpose", xs, out, perm=[0, *(p + 1 for p in n.op.perm)])


def _pad(b: _Builder, n: Node, xs: list[str], out: str) -> None:
    op = n.op
    rank = 1 + len(b.graph.shapes[n.inputs[0]])
    begin, end = [0] * rank, [0] * rank
    for i in range(len(op.pads) // 2):  # F.pad order: last dim first
        begin[rank - 1 - i], end[rank - 1 - i] = op.pads[2 * i], op.pads[2 * i + 1]
    mode = {"constant": "constant", "reflect": "reflect", "replicate": "edge"}[op.mode]
    inputs = [xs[0], b.const(n.name, np.array(begin + end, dtype=np.int64))]
    if op.mode == "constant":
        inputs.append(b.const(n.name, np.array(op.value, dtype=np.float32)))
    b.node("Pad", inputs, out, mode=mode)


def _avgpool(b: _Builder, n: Node, xs: list[str], out: str) -> None:
    op = n.op
    ph, pw = op.padding
    b.node("AveragePool", xs, out, kernel_shape=list(op.kernel), strides=list(op.stride),
           pads=[ph, pw, ph, pw], count_include_pad=int(op.count_include_pad))


def _maxpool(b: _Builder, n: Node, xs: list[str], out: str) -> None:
    op = n.op
    ph, pw = op.padding
    b.node("MaxPool", xs, out, kernel_shape=list(op.kernel), strides=list(op.stride),
           pads=[ph, pw, ph, pw], dilations=list(op.dilation))


def _simple(op_type: str) -> Exporter:
    def export(b: _Builder, n: Node, xs: list[str], out: str) -> None:
        b.node(op_type, xs, out)
    return export


def _leaky(b: _Builder, n: Node, xs: list[str], out: str) -> None:
    b.node("LeakyRelu", xs, out, alpha=float(n.op.negative_slope))


def _concat(b: _Builder, n: Node, xs: list[str], out: str) -> None:
    b.node("Concat", xs, out, axis=n.op.axis + 1)


EXPORTERS: dict[type[ops.Op], Exporter] = {
    ops.Linear: _linear, ops.Conv2d: _conv, ops.ElementwiseAffine: _affine,
    ops.Flatten: _flatten, ops.Reshape: _reshape, ops.Transpose: _transpose, ops.Pad: _pad,
    ops.AvgPool2d: _avgpool, ops.MaxPool2d: _maxpool,
    ops.Add: _simple("Add"), ops.Sub: _simple("Sub"), ops.Concat: _concat,
    ops.ReLU: _simple("Relu"), ops.Sigmoid: _simple("Sigmoid"), ops.Tanh: _simple("Tanh"),
    ops.LeakyReLU: _leaky,
}


def to_onnx(graph: Graph, path, opset: int = 13) -> Path:
    """Write ``graph`` as an ONNX file (float32 weights) and return its path."""
    graph = graph.to(device="cpu", dtype=torch.float32)
    b = _Builder(graph)
    names = {graph.input_name: "input"}
    for node in graph.nodes:
        exporter = EXPORTERS.get(type(node.op))
        if exporter is None:
            raise UnsupportedOpError(node.op.kind, node.name, "ONNX export",
                                     [t.__name__ for t in EXPORTERS])
        out = "output" if node.name == graph.output_name else f"n{len(names)}_{node.name}"
        exporter(b, node, [names[s] for s in node.inputs], out)
        names[node.name] = out
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *graph.input_shape])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", *graph.output_shape])
    g = helper.make_graph(b.nodes, "nncert", [x], [y], b.inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="nncert")
    model.ir_version = min(model.ir_version, 8)
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
