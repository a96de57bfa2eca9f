"""to_onnx round trips (Graph → ONNX → onnxruntime and → from_onnx) and run_onnx conventions."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from nncert.errors import ShapeError, UnsupportedOpError
from nncert.models import Graph, Node, ops, sequential, zoo
from nncert.models.from_onnx import from_onnx
from nncert.models.onnx_runtime import _session, run_onnx
from nncert.models.to_onnx import to_onnx


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))


def roundtrip(g: Graph, path, n=100):
    to_onnx(g, path)
    onnx.checker.check_model(onnx.load(str(path)))
    x = zoo.sample_inputs(g, n, seed=1) * 2 - 1
    ref = g(x)
    assert _rel(run_onnx(path, x), ref) <= 1e-5
    back = from_onnx(path)
    assert back.input_shape == g.input_shape and back.output_shape == g.output_shape
    assert _rel(back(x), ref) <= 1e-5
    return back


@pytest.mark.parametrize("kind", zoo.KINDS)
def test_zoo_roundtrip(tmp_path, kind):
    g = zoo.random_graph(kind, seed=2)
    back = roundtrip(g, tmp_path / f"{kind}.onnx")
    assert set(back.op_kinds()) <= set(g.op_kinds())


def test_op_variants_roundtrip(tmp_path):
    """Pad modes and values, strided/dilated conv, AvgPool without counting pads, dilated MaxPool,
    Transpose, Reshape, a scalar shift."""
    g0 = torch.Generator().manual_seed(0)
    layers = [
        ops.Pad((1, 2, 0, 1), mode="constant", value=0.3), ops.Pad((1, 1, 1, 1), mode="reflect"),
        ops.Pad((0, 1, 2, 0), mode="replicate"),
        ops.Conv2d(torch.randn(4, 2, 3, 3, generator=g0), None, (2, 1), (1, 0), (2, 1), 1),
        ops.AvgPool2d((3, 3), (1, 2), (1, 1), count_include_pad=False), ops.Sigmoid(),
        ops.MaxPool2d((2, 2), (1, 1), (0, 0), (2, 2)), ops.Transpose((1, 2, 0)),
    ]
    c, h, w = sequential(layers, (2, 6, 7)).output_shape
    g = sequential([*layers, ops.Reshape((c * h, w)), ops.Flatten(),
                    ops.ElementwiseAffine(None, torch.randn(1, generator=g0))], (2, 6, 7))
    roundtrip(g, tmp_path / "v.onnx")


def test_float64_graph_exported_as_float32(tmp_path):
    g = zoo.random_graph("relu").to(dtype=torch.float64)
    to_onnx(g, tmp_path / "m.onnx")
    m = onnx.load(str(tmp_path / "m.onnx"))
    assert m.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert m.graph.input[0].name == "input"
    dims = m.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "N" and [d.dim_value for d in dims[1:]] == [6]


def test_unknown_op_rejected(tmp_path):
    class Weird(ops.Activation):
        def fn(self, x):
            return x

    g = Graph([Node("w", Weird(), ("input",))], (3,))
    with pytest.raises(UnsupportedOpError, match="Weird"):
        to_onnx(g, tmp_path / "m.onnx")


# -- run_onnx ------------------------------------------------------------------------------------
def _fixed_batch_model(path, in_shape, w):
    nodes = [helper.make_node("Flatten", ["x"], ["f"], axis=1),
             helper.make_node("Gemm", ["f", "W"], ["y"], transB=1)]
    g = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, w.shape[0]])],
                          [numpy_helper.from_array(w, "W")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 7
    onnx.save(m, str(path))
    return path


@pytest.mark.parametrize("in_shape,graph_shape", [([1, 6, 1], (6, 1)), ([1, 1, 1, 6], (1, 1, 6)),
                                                  ([1, 6], (6,))])
def test_run_onnx_fixed_batch_and_leading_ones(tmp_path, in_shape, graph_shape):
    w = np.random.default_rng(0).standard_normal((3, 6)).astype(np.float32)
    p = _fixed_batch_model(tmp_path / "m.onnx", in_shape, w)
    g = from_onnx(p)
    assert g.input_shape == graph_shape
    x = torch.rand(17, *graph_shape)
    y = run_onnx(p, x)
    assert y.shape == (17, 3)
    torch.testing.assert_close(y, x.reshape(17, 6) @ torch.from_numpy(w).T)
    torch.testing.assert_close(g(x), y)
    with pytest.raises(ShapeError):
        run_onnx(p, torch.rand(2, 5))


def test_run_onnx_symbolic_batch_and_cache(tmp_path):
    g = zoo.random_graph("residual")
    p = to_onnx(g, tmp_path / "r.onnx")
    x = zoo.sample_inputs(g, 8)
    before = _session.cache_info().hits
    torch.testing.assert_close(run_onnx(p, x), g(x), rtol=1e-5, atol=1e-6)
    run_onnx(str(p), x[:1])
    assert _session.cache_info().hits > before
    assert run_onnx(p, x).dtype == torch.float32
