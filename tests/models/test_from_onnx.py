"""ONNX loader: every builder and variant, checked against onnxruntime on the same file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from conftest import BENCHMARKS, requires_shared
from nncert.errors import ModelError, UnsupportedOpError
from nncert.models import load, ops
from nncert.models.from_onnx import SUPPORTED, from_onnx
from nncert.models.onnx_runtime import run_onnx

RNG = np.random.default_rng(0)
RTOL = 1e-5


def _w(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def make(path: Path, nodes, in_shape, inits=None, opset=13, out="y", dtype=TensorProto.FLOAT) -> Path:
    """Write a one-input one-output ONNX model; ``inits`` maps names to numpy arrays."""
    inits = inits or {}
    g = helper.make_graph(
        nodes, "t", [helper.make_tensor_value_info("x", dtype, list(in_shape))],
        [helper.make_tensor_value_info(out, dtype, None)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 7
    onnx.save(m, str(path))
    return path


def rel_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """max |ours − ref| / max(max |ref|, 1e-12)."""
    return float((ours - ref).abs().max() / max(float(ref.abs().max()), 1e-12))


def parity(path, lo=0.0, hi=1.0, n=100, simplify=True, **kw):
    g = from_onnx(path, simplify=simplify)
    lo_t, hi_t = torch.as_tensor(lo, dtype=g.dtype), torch.as_tensor(hi, dtype=g.dtype)
    x = lo_t + (hi_t - lo_t) * torch.rand((n, *g.input_shape), dtype=g.dtype)
    ref = run_onnx(path, x)
    ours = g(x)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    err = rel_error(ours.double(), ref.double())
    assert err <= kw.get("rtol", RTOL), f"{path.name}: relative error {err:.2e}"
    return g


def nd(op, ins, out, **attrs):
    return helper.make_node(op, ins, [out], name=f"node_{out}", **attrs)


# -- Gemm / MatMul ------------------------------------------------------------------------------
@pytest.mark.parametrize("trans_b,alpha,beta,bias_shape", [
    (1, 1.0, 1.0, (3,)), (0, 0.5, 2.0, (1, 3)), (1, 1.0, 1.0, None), (0, 2.0, 1.0, ()),
])
def test_gemm(tmp_path, trans_b, alpha, beta, bias_shape):
    w = _w(3, 5) if trans_b else _w(5, 3)
    inits = {"W": w}
    ins = ["x", "W"]
    if bias_shape is not None:
        inits["B"] = _w(*bias_shape) if bias_shape else np.float32(0.7)
        ins.append("B")
    node = nd("Gemm", ins, "y", transB=trans_b, alpha=alpha, beta=beta)
    g = parity(make(tmp_path / "m.onnx", [node], [1, 5], inits))
    assert g.op_kinds() == ["Linear"] and g.input_shape == (5,)


def test_gemm_trans_a_unsupported(tmp_path):
    p = make(tmp_path / "m.onnx", [nd("Gemm", ["x", "W"], "y", transA=1)], [5, 1], {"W": _w(5, 3)})
    with pytest.raises(UnsupportedOpError, match="Gemm"):
        from_onnx(p)


def test_matmul_add_becomes_linear_with_bias(tmp_path):
    nodes = [nd("MatMul", ["x", "W"], "h"), nd("Add", ["h", "B"], "y")]
    p = make(tmp_path / "m.onnx", nodes, [1, 4], {"W": _w(4, 6), "B": _w(6)})
    g = parity(p)
    assert len(g) == 1 and isinstance(g.nodes[0].op, ops.Linear) and g.nodes[0].op.bias_ is not None
    assert len(parity(p, simplify=False)) == 2
    # bias first, constant on the left
    nodes = [nd("MatMul", ["x", "W"], "h"), nd("Add", ["B", "h"], "y")]
    assert len(parity(make(tmp_path / "m2.onnx", nodes, [1, 4], {"W": _w(4, 6), "B": _w(1, 6)}))) == 1


def test_matmul_constant_on_the_left_column_input(tmp_path):
    """W @ x with x a column vector [1, n, 1] (mnistfc-style inputs)."""
    nodes = [nd("MatMul", ["W", "x"], "h"), nd("Add", ["h", "B"], "r"), nd("Relu", ["r"], "y")]
    p = make(tmp_path / "m.onnx", nodes, [1, 4, 1], {"W": _w(6, 4), "B": _w(6, 1)})
    g = parity(p, lo=-1)
    assert g.input_shape == (4, 1) and g.output_shape == (6, 1)


def test_matmul_left_on_matrix_input(tmp_path):
    p = make(tmp_path / "m.onnx", [nd("MatMul", ["W", "x"], "y")], [1, 4, 3], {"W": _w(2, 4)})
    assert parity(p, lo=-1).output_shape == (2, 3)


def test_matmul_on_3d_input_and_vector_weight(tmp_path):
    p = make(tmp_path / "m.onnx", [nd("MatMul", ["x", "W"], "y")], [1, 3, 4], {"W": _w(4, 2)})
    assert parity(p, lo=-1).output_shape == (3, 2)
    p = make(tmp_path / "v.onnx", [nd("MatMul", ["x", "W"], "y")], [1, 4], {"W": _w(4)})
    assert parity(p, lo=-1).output_shape == (1,)


def test_matmul_of_two_data_tensors_unsupported(tmp_path):
    p = make(tmp_path / "m.onnx", [nd("MatMul", ["x", "x"], "y")], [1, 3, 3])
    with pytest.raises(UnsupportedOpError, match="MatMul"):
        from_onnx(p)


# -- elementwise with constants ----------------------------------------------------------------
@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
@pytest.mark.parametrize("left", [False, True])
def test_binary_with_constant(tmp_path, op, left):
    c = (np.abs(_w(1, 1, 1, 5)) + 0.5).astype(np.float32)  # ACAS-like [1,1,1,5] constant
    ins = ["C", "x"] if left else ["x", "C"]
    nodes = [nd(op, ins, "h"), nd("Flatten", ["h"], "f"), nd("Gemm", ["f", "W"], "y", transB=1)]
    p = make(tmp_path / "m.onnx", nodes, [1, 1, 1, 5], {"C": c, "W": _w(3, 5)})
    if op == "Div" and left:
        with pytest.raises(UnsupportedOpError, match="Div of a constant"):
            from_onnx(p)
        return
    g = parity(p, lo=-1)
    assert g.input_shape == (1, 1, 5)


def test_scalar_and_per_channel_constants(tmp_path):
    nodes = [nd("Sub", ["x", "M"], "a"), nd("Div", ["a", "S"], "b"), nd("Mul", ["b", "two"], "y")]
    inits = {"M": _w(2, 1, 1), "S": np.array([0.5, 2.0], np.float32).reshape(2, 1, 1),
             "two": np.float32(2.0)}
    g = parity(make(tmp_path / "m.onnx", nodes, [1, 2, 3, 3], inits))
    assert len(g) == 1 and g.op_kinds() == ["ElementwiseAffine"]


def test_constant_that_would_expand_data(tmp_path):
    p = make(tmp_path / "m.onnx", [nd("Add", ["x", "C"], "y")], [1, 3], {"C": _w(2, 3)})
    with pytest.raises(ModelError, match="expand"):
        from_onnx(p)


@pytest.mark.parametrize("op", ["Add", "Sub"])
def test_add_sub_of_two_data_tensors(tmp_path, op):
    nodes = [nd("Gemm", ["x", "W1"], "a", transB=1), nd("Relu", ["a"], "r"),
             nd("Gemm", ["r", "W2"], "b", transB=1), nd(op, ["b", "a"], "y")]
    p = make(tmp_path / "m.onnx", nodes, [1, 4], {"W1": _w(5, 4), "W2": _w(5, 5)})
    assert ("Add" if op == "Add" else "Sub") in parity(p, lo=-1).op_kinds()


def test_mul_of_two_data_tensors_unsupported(tmp_path):
    p = make(tmp_path / "m.onnx", [nd("Mul", ["x", "x"], "y")], [1, 3])
    with pytest.raises(UnsupportedOpError, match="Mul of two non-constant"):
        from_onnx(p)


# -- activations ---------------------------------------------------------------------------------
@pytest.mark.parametrize("op,attrs", [("Relu", {}), ("LeakyRelu", {"alpha": 0.2}), ("LeakyRelu", {}),
                                      ("Sigmoid", {}), ("Tanh", {})])
def test_activation(tmp_path, op, attrs):
    nodes = [nd("Gemm", ["x", "W"], "h", transB=1), nd(op, ["h"], "y", **attrs)]
    parity(make(tmp_path / "m.onnx", nodes, [1, 4], {"W": _w(6, 4, scale=2)}), lo=-1)


# -- convolutions and pooling --------------------------------------------------------------------
CONV = [
    dict(strides=[1, 1], pads=[1, 1, 1, 1]),
    dict(strides=[2, 2], pads=[0, 1, 0, 1], dilations=[1, 1]),
    dict(strides=[2, 1], pads=[1, 0, 2, 1]),  # asymmetric → Pad in front
    dict(dilations=[2, 2], pads=[2, 2, 2, 2]),
    dict(group=2),
    dict(auto_pad="VALID", strides=[2, 2]),
    dict(auto_pad="SAME_UPPER", strides=[2, 2]),
    dict(auto_pad="SAME_LOWER"),
    dict(auto_pad="NOTSET"),
]


@pytest.mark.parametrize("attrs", CONV, ids=[str(i) for i in range(len(CONV))])
@pytest.mark.parametrize("bias", [True, False])
def test_conv(tmp_path, attrs, bias):
    groups = attrs.get("group", 1)
    inits = {"W": _w(4, 4 // groups, 3, 2 if groups == 1 else 3)}
    ins = ["x", "W"]
    if bias:
        inits["B"] = _w(4)
        ins.append("B")
    p = make(tmp_path / "m.onnx", [nd("Conv", ins, "y", **attrs)], [1, 4, 9, 8], inits)
    g = parity(p, lo=-1)
    if attrs.get("pads") == [1, 0, 2, 1]:
        assert g.op_kinds() == ["Conv2d", "Pad"]


def test_conv_batchnorm_folds(tmp_path):
    c = 3
    inits = {"W": _w(c, 2, 3, 3), "B": _w(c), "g": _w(c), "b": _w(c), "m": _w(c),
             "v": (np.abs(_w(c)) + 0.1).astype(np.float32)}
    nodes = [nd("Conv", ["x", "W", "B"], "h", pads=[1, 1, 1, 1]),
             nd("BatchNormalization", ["h", "g", "b", "m", "v"], "n", epsilon=1e-3), nd("Relu", ["n"], "y")]
    g = parity(make(tmp_path / "m.onnx", nodes, [1, 2, 5, 5], inits), lo=-1)
    assert g.op_kinds() == ["Conv2d", "ReLU"]


def test_batchnorm_on_vectors(tmp_path):
    inits = {"g": _w(4), "b": _w(4), "m": _w(4), "v": (np.abs(_w(4)) + 0.1).astype(np.float32)}
    nodes = [nd("BatchNormalization", ["x", "g", "b", "m", "v"], "y")]
    parity(make(tmp_path / "m.onnx", nodes, [1, 4], inits), lo=-1)


@pytest.mark.parametrize("op,attrs", [
    ("MaxPool", dict(kernel_shape=[2, 2], strides=[2, 2])),
    ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    ("MaxPool", dict(kernel_shape=[3, 3])),
    ("AveragePool", dict(kernel_shape=[2, 2], strides=[2, 2])),
    ("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    ("AveragePool", dict(kernel_shape=[3, 3], strides=[1, 2], pads=[1, 1, 1, 1], count_include_pad=1)),
])
def test_pool(tmp_path, op, attrs):
    parity(make(tmp_path / "m.onnx", [nd(op, ["x"], "y", **attrs)], [1, 2, 7, 6]), lo=-1)


def test_pool_ceil_mode_unsupported(tmp_path):
    p = make(tmp_path / "m.onnx", [nd("MaxPool", ["x"], "y", kernel_shape=[2, 2], strides=[2, 2],
                                     ceil_mode=1)], [1, 2, 7, 7])
    with pytest.raises(UnsupportedOpError, match="ceil_mode"):
        from_onnx(p)


def test_global_average_pool(tmp_path):
    nodes = [nd("GlobalAveragePool", ["x"], "p"), nd("Flatten", ["p"], "y")]
    g = parity(make(tmp_path / "m.onnx", nodes, [1, 3, 5, 4]))
    assert g.output_shape == (3,)


# -- shape ops -----------------------------------------------------------------------------------
@pytest.mark.parametrize("axis", [1, 0, 2])
def test_flatten_axes(tmp_path, axis):
    parity(make(tmp_path / "m.onnx", [nd("Flatten", ["x"], "y", axis=axis)], [1, 2, 3, 2]))


@pytest.mark.parametrize("shape", [[1, -1], [0, 6, 2], [-1, 3, 4], [1, 2, 0, 6]])
def test_reshape_from_initializer(tmp_path, shape):
    nodes = [nd("Reshape", ["x", "s"], "r"), nd("Relu", ["r"], "y")]
    parity(make(tmp_path / "m.onnx", nodes, [1, 12, 1], {"s": np.array(shape, np.int64)}), lo=-1)


def test_reshape_from_shape_chain(tmp_path):
    """The torch.onnx export pattern: Shape → Gather → Unsqueeze → Concat → Reshape."""
    nodes = [
        nd("Shape", ["x"], "sh"), nd("Gather", ["sh", "zero"], "b", axis=0),
        nd("Unsqueeze", ["b", "ax0"], "bu"), nd("Constant", [], "minus1",
                                                  value=numpy_helper.from_array(np.array([-1], np.int64))),
        nd("Concat", ["bu", "minus1"], "target", axis=0), nd("Reshape", ["x", "target"], "f"),
        nd("Gemm", ["f", "W"], "y", transB=1),
    ]
    inits = {"zero": np.array(0, np.int64), "ax0": np.array([0], np.int64), "W": _w(3, 12)}
    g = parity(make(tmp_path / "m.onnx", nodes, ["batch", 3, 2, 2], inits))
    assert g.input_shape == (3, 2, 2) and g.output_shape == (3,)


def test_reshape_old_opset_attribute(tmp_path):
    node = nd("Reshape", ["x"], "y", shape=[1, 6])
    parity(make(tmp_path / "m.onnx", [node], [1, 2, 3], opset=4))


@pytest.mark.parametrize("perm", [[0, 2, 1], [0, 3, 1, 2], [1, 0, 2]])
def test_transpose(tmp_path, perm):
    shape = [1, 3, 4] if len(perm) == 3 else [1, 2, 3, 4]
    nodes = [nd("Transpose", ["x"], "t", perm=perm), nd("Relu", ["t"], "y")]
    parity(make(tmp_path / "m.onnx", nodes, shape), lo=-1)


def test_concat_of_branches(tmp_path):
    nodes = [nd("Conv", ["x", "W1"], "a", pads=[1, 1, 1, 1]), nd("Relu", ["x"], "b"),
             nd("Concat", ["a", "b"], "c", axis=1), nd("Concat", ["c", "c"], "y", axis=-1)]
    g = parity(make(tmp_path / "m.onnx", nodes, [1, 2, 4, 4], {"W1": _w(3, 2, 3, 3)}), lo=-1)
    assert g.output_shape == (5, 4, 8)


def test_concat_with_constant_unsupported(tmp_path):
    p = make(tmp_path / "m.onnx", [nd("Concat", ["x", "C"], "y", axis=1)], [1, 3], {"C": _w(1, 2)})
    with pytest.raises(UnsupportedOpError, match="Concat"):
        from_onnx(p)


@pytest.mark.parametrize("mode,pads,value", [
    ("constant", [0, 0, 1, 2, 0, 0, 2, 1], 0.0), ("constant", [0, 0, 1, 0, 0, 0, 0, 3], 0.5),
    ("reflect", [0, 0, 1, 1, 0, 0, 1, 1], 0.0), ("edge", [0, 0, 2, 0, 0, 0, 1, 2], 0.0),
    ("constant", [0, 1, 0, 0, 0, 2, 0, 0], 0.0),  # channel padding
])
def test_pad_input_form(tmp_path, mode, pads, value):
    inits = {"p": np.array(pads, np.int64), "v": np.array(value, np.float32)}
    node = nd("Pad", ["x", "p", "v"], "y", mode=mode)
    parity(make(tmp_path / "m.onnx", [node], [1, 2, 4, 5], inits), lo=-1)


def test_pad_attribute_form_old_opset(tmp_path):
    node = nd("Pad", ["x"], "y", mode="constant", pads=[0, 0, 1, 1, 0, 0, 2, 0], value=0.25)
    parity(make(tmp_path / "m.onnx", [node], [1, 2, 4, 5], opset=9), lo=-1)


def test_identity_dropout_constant(tmp_path):
    c = numpy_helper.from_array(_w(4), "c")
    nodes = [nd("Identity", ["x"], "a"), nd("Dropout", ["a"], "b"), nd("Constant", [], "k", value=c),
             nd("Add", ["b", "k"], "y")]
    g = parity(make(tmp_path / "m.onnx", nodes, [1, 4]), lo=-1)
    assert g.op_kinds() == ["ElementwiseAffine"]


def test_squeeze_unsqueeze_on_data_and_constants(tmp_path):
    nodes = [nd("Squeeze", ["x", "ax2"], "s"), nd("Unsqueeze", ["s", "ax1"], "u"),
             nd("Unsqueeze", ["B", "ax0"], "b2"), nd("Squeeze", ["b2", "ax0"], "b3"),
             nd("Flatten", ["u"], "f"), nd("Gemm", ["f", "W", "b3"], "y", transB=1)]
    inits = {"ax0": np.array([0], np.int64), "ax1": np.array([1], np.int64),
             "ax2": np.array([2], np.int64), "W": _w(2, 3), "B": _w(2)}
    parity(make(tmp_path / "m.onnx", nodes, [1, 3, 1], inits), lo=-1)


def test_squeeze_attribute_form(tmp_path):
    nodes = [nd("Squeeze", ["x"], "s", axes=[2]), nd("Unsqueeze", ["s"], "y", axes=[1])]
    parity(make(tmp_path / "m.onnx", nodes, [1, 3, 1], opset=11))


def test_constant_folding_of_arbitrary_ops(tmp_path):
    """Any op whose inputs are all constants is evaluated at load time (here Exp and Transpose)."""
    nodes = [nd("Exp", ["C"], "e"), nd("Transpose", ["e"], "et"), nd("MatMul", ["x", "et"], "y")]
    g = parity(make(tmp_path / "m.onnx", nodes, [1, 3], {"C": _w(2, 3)}))
    assert g.op_kinds() == ["Linear"]


# -- inputs, dtypes, errors ------------------------------------------------------------------------
def test_symbolic_batch_and_float64(tmp_path):
    nodes = [nd("Gemm", ["x", "W"], "y", transB=1)]
    inits = {"W": RNG.standard_normal((3, 4))}
    p = make(tmp_path / "m.onnx", nodes, ["N", 4], inits, dtype=TensorProto.DOUBLE)
    g = parity(p)
    assert g.dtype == torch.float64


def test_float32_weights_stay_float32(tmp_path):
    p = make(tmp_path / "m.onnx", [nd("Gemm", ["x", "W"], "y", transB=1)], [1, 4], {"W": _w(3, 4)})
    assert from_onnx(p).dtype == torch.float32


@pytest.mark.parametrize("op", ["Softmax", "Elu"])
def test_unsupported_op_message(tmp_path, op):
    p = make(tmp_path / "m.onnx", [nd("Relu", ["x"], "r"), nd(op, ["r"], "y")], [1, 4])
    with pytest.raises(UnsupportedOpError) as e:
        from_onnx(p)
    msg = str(e.value)
    assert f"'{op}'" in msg and "node_y" in msg and "supported: " in msg and "Conv" in msg
    assert e.value.op == op and e.value.node == "node_y"


def test_supported_list():
    assert {"Gemm", "MatMul", "Conv", "Relu", "Reshape", "Constant", "Pad"} <= set(SUPPORTED)
    assert "Softmax" not in SUPPORTED


def test_not_onnx_and_missing(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\xff\xfe not a protobuf \x00\x01" * 10)
    with pytest.raises(ModelError, match="not a valid ONNX model"):
        from_onnx(bad)
    with pytest.raises(ModelError, match="not found"):
        from_onnx(tmp_path / "missing.onnx")
    with pytest.raises(ModelError, match="not found"):
        load(tmp_path / "missing.onnx")


def test_two_inputs_rejected(tmp_path):
    g = helper.make_graph([nd("Add", ["x", "z"], "y")], "t",
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3]) for n in "xz"],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(m, str(tmp_path / "m.onnx"))
    with pytest.raises(ModelError, match="one ONNX input"):
        from_onnx(tmp_path / "m.onnx")


def test_load_dispatches_to_onnx(tmp_path):
    p = make(tmp_path / "m.onnx", [nd("Relu", ["x"], "y")], [1, 3])
    assert load(p).op_kinds() == ["ReLU"] and load(str(p)).input_shape == (3,)


# -- the shared benchmark files -------------------------------------------------------------------
ACAS_LO = [-0.328423, -0.499999, -0.499999, -0.5, -0.5]
ACAS_HI = [0.679857, 0.499999, 0.499999, 0.5, 0.5]


def _benchmark_files():
    return sorted(BENCHMARKS.glob("**/*.onnx")) if BENCHMARKS.is_dir() else []


@requires_shared
def test_every_shared_benchmark_model_matches_onnxruntime():
    files = _benchmark_files()
    assert files
    for path in files:
        if "acasxu" in str(path):
            g = parity(path, lo=torch.tensor(ACAS_LO).view(1, 1, 5), hi=torch.tensor(ACAS_HI).view(1, 1, 5))
            assert g.input_shape == (1, 1, 5) and g.output_shape == (5,)
        else:
            g = parity(path)
            if "mnistfc" in str(path):
                assert g.input_shape == (784, 1) and g.output_shape == (10,)


def test_empty_and_graphless_files_say_so(tmp_path):
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ModelError, match=r"empty \(0 bytes\)"):
        from_onnx(empty)
    bare = tmp_path / "bare.onnx"
    onnx.save(helper.make_model(helper.make_graph([], "g", [], [])), str(bare))
    with pytest.raises(ModelError, match="no ONNX graph"):
        from_onnx(bare)


def test_bad_attribute_names_node_and_op(tmp_path):
    """A LeakyRelu slope outside [0, 1] is a clean error naming the node, not a ValueError."""
    path = make(tmp_path / "m.onnx", [nd("LeakyRelu", ["x"], "y", alpha=1.5)], [1, 4])
    with pytest.raises(ModelError, match=r"'node_y' \(LeakyRelu\).*slope"):
        from_onnx(path)


def test_gzip_compressed_model_loads_and_runs(tmp_path):
    """``net.onnx.gz`` (later VNN-COMPs ship models that way) loads, and onnxruntime runs it."""
    import gzip

    path = make(tmp_path / "m.onnx", [nd("Gemm", ["x", "w", "b"], "h", transB=1), nd("Relu", ["h"], "y")],
                [1, 4], {"w": _w(3, 4), "b": _w(3)})
    gz = tmp_path / "m.onnx.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    g = parity(gz)
    x = torch.rand(5, *g.input_shape)
    assert torch.equal(run_onnx(gz, x), run_onnx(path, x))
