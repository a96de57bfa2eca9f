"""ONNX → :class:`~nncert.models.graph.Graph`.

One small builder per ONNX op type, dispatched through :data:`BUILDERS`. Every ONNX tensor is
either a *constant* (an initializer, a ``Constant`` output, or anything computed only from
constants: such nodes are folded with numpy at load time, any op type) or a *data* value (an
output of a Graph node, or the graph input).

Batch convention: the Graph is batch-first and its shapes exclude the batch dim. A data value
is *batched* when its ONNX shape carries a leading batch dim (of 1 or symbolic) that the Graph
shape leaves out; otherwise its ONNX shape (with any leading 1s) is the Graph shape itself.
Ops whose axes touch that leading dim first turn the value into an unbatched one (a Reshape),
so every ONNX axis maps to exactly one Graph axis.

Guarantee: on every input, the loaded Graph computes what onnxruntime computes on the file up to
float rounding (checked on the shared benchmarks by ``bench/onnx_parity.py``).
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from ..errors import ModelError, UnsupportedOpError
from ..utils import one_line
from . import ops
from .graph import Graph, Node

WHERE = "ONNX loader"


@dataclass(frozen=True)
class Data:
    """A non-constant ONNX tensor: produced by Graph node ``name``."""

    name: str
    oshape: tuple[int, ...]  # the ONNX shape, batch (if any) as 1
    batched: bool

    @property
    def shape(self) -> tuple[int, ...]:
        """The Graph shape (no batch dim)."""
        return self.oshape[1:] if self.batched else self.oshape


def const_for(c: np.ndarray, v: Data) -> np.ndarray:
    """Constant ``c``, which broadcasts against ONNX value ``v`` without changing its shape, laid
    out to broadcast against the Graph shape of ``v`` (batch dim dropped)."""
    c = np.asarray(c)
    if np.broadcast_shapes(c.shape, v.oshape) != v.oshape:
        raise ModelError(f"constant of shape {c.shape} would expand data of shape {v.oshape}")
    if not v.batched:
        return c
    c = c.reshape((1,) * (len(v.oshape) - c.ndim) + c.shape)
    return c[0]


class _Ctx:
    """Loader state: the values seen so far and the Graph nodes built."""

    def __init__(self, model: onnx.ModelProto, dtype: torch.dtype):
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
        self.dtype = dtype
        self.values: dict[str, Data | np.ndarray] = {}
        self.nodes: list[Node] = []
        self.names: set[str] = {"input"}

    # -- values --------------------------------------------------------------------------
    def get(self, name: str) -> Data | np.ndarray:
        if name not in self.values:
            raise ModelError(f"ONNX tensor {name!r} is used before it is defined")
        return self.values[name]

    def inputs(self, node: onnx.NodeProto) -> list[Data | np.ndarray | None]:
        return [self.get(n) if n else None for n in node.input]

    def const(self, node: onnx.NodeProto, i: int, default=None) -> np.ndarray | None:
        """Input ``i`` of ``node``, which must be a constant (or absent: ``default``)."""
        if i >= len(node.input) or not node.input[i]:
            return default
        v = self.get(node.input[i])
        if isinstance(v, Data):
            raise UnsupportedOpError(f"{node.op_type} with a non-constant input {i}",
                                     node.name or node.output[0], WHERE)
        return v

    def tensor(self, a) -> torch.Tensor:
        return torch.as_tensor(np.array(a, dtype=np.float64)).to(self.dtype)

    # -- nodes ---------------------------------------------------------------------------
    def add(self, base: str, op: ops.Op, srcs: list[Data], oshape, batched: bool) -> Data:
        name, i = base, 0
        while name in self.names:
            i += 1
            name = f"{base}/{i}"
        self.names.add(name)
        self.nodes.append(Node(name, op, tuple(s.name for s in srcs)))
        return Data(name, tuple(int(d) for d in oshape), batched)

    def reshape(self, base: str, v: Data, oshape, batched: bool | None = None) -> Data:
        """``v`` viewed as ONNX shape ``oshape``; batched when ``oshape`` starts with a 1 (the
        batch) unless ``batched`` says otherwise."""
        oshape = tuple(int(d) for d in oshape)
        if batched is None:
            batched = len(oshape) >= 1 and oshape[0] == 1 and v.batched
        new = Data(v.name, oshape, batched)
        if new.shape == v.shape:
            return new
        return self.add(base, ops.Reshape(new.shape), [v], oshape, batched)

    def unbatch(self, base: str, v: Data) -> Data:
        """``v`` with its ONNX shape as the Graph shape (so axis 0 is addressable)."""
        return self.reshape(base, v, v.oshape, batched=False) if v.batched else v


def _axis(a: int, rank: int) -> int:
    return a + rank if a < 0 else a


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _data_first(ctx: _Ctx, node: onnx.NodeProto) -> Data:
    x = ctx.get(node.input[0])
    if not isinstance(x, Data):
        raise ModelError(f"node {node.name!r}: input is constant")  # folded before we get here
    return x


def _out(node: onnx.NodeProto) -> str:
    return node.output[0]


# -- builders ------------------------------------------------------------------------------
Builder = Callable[[_Ctx, onnx.NodeProto], "Data | np.ndarray"]


def _act(op: ops.Op) -> Builder:
    def build(ctx: _Ctx, node: onnx.NodeProto) -> Data:
        x = _data_first(ctx, node)
        return ctx.add(_out(node), op, [x], x.oshape, x.batched)
    return build


def _identity(ctx, node):
    if len(node.output) > 1 and node.output[1]:
        raise UnsupportedOpError(f"{node.op_type} with a mask output", node.name, WHERE)
    return ctx.get(node.input[0])


def _matmul_right(ctx: _Ctx, base: str, x: Data, w: np.ndarray) -> Data:
    """ONNX ``x @ w`` for a constant 2-D ``w`` (n, m)."""
    if w.ndim == 1:
        w = w[:, None]
        x = _matmul_right(ctx, base, x, w)
        return ctx.reshape(base + "/squeeze", x, x.oshape[:-1])
    if w.ndim != 2:
        raise UnsupportedOpError(f"MatMul with a {w.ndim}-D constant", base, WHERE)
    n, m = w.shape
    if x.oshape[-1] != n:
        raise ModelError(f"node {base!r}: MatMul of shapes {x.oshape} and {w.shape}")
    out_oshape = (*x.oshape[:-1], m)
    lead = math.prod(x.shape[:-1])
    if len(x.shape) == 1:
        return ctx.add(base, ops.Linear(ctx.tensor(w.T)), [x], out_oshape, x.batched)
    flat = ctx.reshape(base + "/in", x, (math.prod(x.shape),), batched=False)
    weight = np.kron(np.eye(lead), w.T) if lead > 1 else w.T
    y = ctx.add(base + "/lin", ops.Linear(ctx.tensor(weight)), [flat], (lead * m,), False)
    return ctx.reshape(base, y, out_oshape, batched=x.batched)


def _matmul_left(ctx: _Ctx, base: str, w: np.ndarray, x: Data) -> Data:
    """ONNX ``w @ x`` for a constant 2-D ``w`` (m, n) and data ``x`` (..., n, k)."""
    if w.ndim != 2 or len(x.oshape) < 2:
        raise UnsupportedOpError(f"MatMul of a {w.ndim}-D constant by {len(x.oshape)}-D data", base,
                                 WHERE)
    r = len(x.oshape)
    if x.batched and r == 2:
        x = ctx.unbatch(base + "/unbatch", x)
    perm = list(range(r))
    perm[-1], perm[-2] = perm[-2], perm[-1]
    xt = _transpose_data(ctx, base + "/t", x, perm)
    y = _matmul_right(ctx, base + "/mm", xt, w.T)
    return _transpose_data(ctx, base, y, perm)


def _transpose_data(ctx: _Ctx, base: str, x: Data, perm: list[int]) -> Data:
    oshape = tuple(x.oshape[p] for p in perm)
    big = [p for p in perm if x.oshape[p] != 1]
    if big == sorted(big):  # the non-1 dims keep their order: a reshape
        return ctx.reshape(base, x, oshape, batched=x.batched and perm[0] == 0)
    if x.batched and perm[0] != 0:
        x = ctx.unbatch(base + "/unbatch", x)
    if x.batched:
        return ctx.add(base, ops.Transpose(tuple(p - 1 for p in perm[1:])), [x], oshape, True)
    return ctx.add(base, ops.Transpose(tuple(perm)), [x], oshape, False)


def _matmul(ctx, node):
    a, b = ctx.inputs(node)
    if isinstance(a, Data) and not isinstance(b, Data):
        return _matmul_right(ctx, _out(node), a, np.asarray(b))
    if isinstance(b, Data) and not isinstance(a, Data):
        return _matmul_left(ctx, _out(node), np.asarray(a), b)
    raise UnsupportedOpError("MatMul of two non-constant tensors", node.name, WHERE)


def _gemm(ctx, node):
    at = _attrs(node)
    a, b = ctx.inputs(node)[:2]
    c = ctx.const(node, 2)
    if not isinstance(a, Data) or isinstance(b, Data) or at.get("transA", 0):
        raise UnsupportedOpError("Gemm other than data·constant", node.name, WHERE)
    w = np.asarray(b, dtype=np.float64) * float(at.get("alpha", 1.0))
    if at.get("transB", 0):
        w = w.T
    y = _matmul_right(ctx, _out(node), a, w)
    if c is None:
        return y
    return _affine(ctx, _out(node) + "/bias", y, shift=np.asarray(c, np.float64) * float(at.get("beta", 1.0)))


def _affine(ctx: _Ctx, base: str, x: Data, scale=None, shift=None) -> Data:
    s = None if scale is None else ctx.tensor(const_for(scale, x))
    b = None if shift is None else ctx.tensor(const_for(shift, x))
    return ctx.add(base, ops.ElementwiseAffine(s, b), [x], x.oshape, x.batched)


def _same(ctx: _Ctx, base: str, a: Data, b: Data) -> tuple[Data, Data]:
    if a.oshape != b.oshape:
        raise UnsupportedOpError(f"broadcasting between data of shapes {a.oshape} and {b.oshape}",
                                 base, WHERE)
    if a.batched != b.batched:
        a, b = ctx.unbatch(base + "/ua", a), ctx.unbatch(base + "/ub", b)
    return a, b


def _binary(kind: str) -> Builder:
    def build(ctx: _Ctx, node: onnx.NodeProto) -> Data:
        a, b = ctx.inputs(node)
        base = _out(node)
        if isinstance(a, Data) and isinstance(b, Data):
            if kind not in ("Add", "Sub"):
                raise UnsupportedOpError(f"{kind} of two non-constant tensors", node.name, WHERE)
            a, b = _same(ctx, base, a, b)
            op = ops.Add() if kind == "Add" else ops.Sub()
            return ctx.add(base, op, [a, b], a.oshape, a.batched)
        if isinstance(a, Data):
            c = np.asarray(b, np.float64)
            if kind == "Add":
                return _affine(ctx, base, a, shift=c)
            if kind == "Sub":
                return _affine(ctx, base, a, shift=-c)
            return _affine(ctx, base, a, scale=c if kind == "Mul" else 1.0 / c)
        c = np.asarray(a, np.float64)
        if kind == "Add":
            return _affine(ctx, base, b, shift=c)
        if kind == "Sub":
            return _affine(ctx, base, b, scale=-np.ones_like(c), shift=c)
        if kind == "Mul":
            return _affine(ctx, base, b, scale=c)
        raise UnsupportedOpError("Div of a constant by a non-constant tensor (c / x)", node.name, WHERE)
    return build


def _flatten(ctx, node):
    x = _data_first(ctx, node)
    r = len(x.oshape)
    axis = _axis(int(_attrs(node).get("axis", 1)), r)
    oshape = (math.prod(x.oshape[:axis]), math.prod(x.oshape[axis:]))
    if x.batched and axis == 1:
        if r == 2:
            return x
        return ctx.add(_out(node), ops.Flatten(), [x], oshape, True)
    return ctx.reshape(_out(node), x, oshape)


def _reshape(ctx, node):
    x = _data_first(ctx, node)
    if len(node.input) < 2:  # opset < 5: shape attribute
        shape = [int(d) for d in _attrs(node)["shape"]]
    else:
        shape = [int(d) for d in np.asarray(ctx.const(node, 1)).reshape(-1)]
    if not _attrs(node).get("allowzero", 0):
        shape = [x.oshape[i] if d == 0 else d for i, d in enumerate(shape)]
    oshape = np.empty(x.oshape, dtype=np.int8).reshape(shape).shape
    return ctx.reshape(_out(node), x, oshape)


def _axes(ctx: _Ctx, node: onnx.NodeProto) -> list[int] | None:
    if "axes" in _attrs(node):
        return list(_attrs(node)["axes"])
    a = ctx.const(node, 1)
    return None if a is None else [int(v) for v in np.asarray(a).reshape(-1)]


def _squeeze(ctx, node):
    x = _data_first(ctx, node)
    axes = _axes(ctx, node)
    r = len(x.oshape)
    axes = [i for i in range(r) if x.oshape[i] == 1] if axes is None else [_axis(a, r) for a in axes]
    oshape = tuple(d for i, d in enumerate(x.oshape) if i not in axes)
    batched = x.batched and 0 not in axes
    return ctx.reshape(_out(node), x, oshape, batched=batched)


def _unsqueeze(ctx, node):
    x = _data_first(ctx, node)
    axes = _axes(ctx, node)
    r = len(x.oshape) + len(axes)
    axes = sorted(_axis(a, r) for a in axes)
    oshape = list(x.oshape)
    for a in axes:
        oshape.insert(a, 1)
    return ctx.reshape(_out(node), x, oshape, batched=x.batched and 0 not in axes)


def _transpose(ctx, node):
    x = _data_first(ctx, node)
    perm = list(_attrs(node).get("perm", range(len(x.oshape))[::-1]))
    return _transpose_data(ctx, _out(node), x, perm)


def _concat(ctx, node):
    xs = ctx.inputs(node)
    if not all(isinstance(v, Data) for v in xs):
        raise UnsupportedOpError("Concat of constant and non-constant tensors", node.name, WHERE)
    r = len(xs[0].oshape)
    axis = _axis(int(_attrs(node)["axis"]), r)
    if axis == 0 or not all(v.batched for v in xs):
        xs = [ctx.unbatch(f"{_out(node)}/u{i}", v) for i, v in enumerate(xs)]
    batched = xs[0].batched
    oshape = list(xs[0].oshape)
    oshape[axis] = sum(v.oshape[axis] for v in xs)
    op = ops.Concat(axis - 1 if batched else axis)
    return ctx.add(_out(node), op, xs, oshape, batched)


def _spatial(ctx: _Ctx, node: onnx.NodeProto, x: Data, kernel, dil=(1, 1)) -> tuple:
    """(strides, pads as ONNX [t, l, b, r]) for a 2-D conv/pool node, resolving auto_pad."""
    at = _attrs(node)
    if len(x.oshape) != 4 or not x.batched:
        raise UnsupportedOpError(f"{node.op_type} on a {len(x.oshape)}-D input (only NCHW)",
                                 node.name, WHERE)
    strides = tuple(at.get("strides", (1, 1)))
    pads = list(at.get("pads", (0, 0, 0, 0)))
    auto = at.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = [0, 0, 0, 0]
        for i, size in enumerate(x.oshape[2:]):
            total = max((math.ceil(size / strides[i]) - 1) * strides[i] + (kernel[i] - 1) * dil[i]
                        + 1 - size, 0)
            small = total // 2
            pads[i], pads[i + 2] = (small, total - small) if auto == "SAME_UPPER" else (total - small,
                                                                                      small)
    elif auto == "VALID":
        pads = [0, 0, 0, 0]
    return strides, pads


def _padded(ctx: _Ctx, base: str, x: Data, pads: list[int]) -> tuple[Data, tuple[int, int]]:
    """``x`` with asymmetric ONNX pads [t, l, b, r] applied by a Pad node; the symmetric rest."""
    top, left, bottom, right = pads
    if top == bottom and left == right:
        return x, (top, left)
    h, w = x.oshape[2:]
    y = ctx.add(base + "/pad", ops.Pad((left, right, top, bottom)), [x],
                (*x.oshape[:2], h + top + bottom, w + left + right), True)
    return y, (0, 0)


def _conv(ctx, node):
    x = _data_first(ctx, node)
    w = ctx.const(node, 1)
    bias = ctx.const(node, 2)
    at = _attrs(node)
    if w.ndim != 4:
        raise UnsupportedOpError(f"Conv with a {w.ndim}-D kernel (only 2-D)", node.name, WHERE)
    dil = tuple(at.get("dilations", (1, 1)))
    strides, pads = _spatial(ctx, node, x, w.shape[2:], dil)
    x, padding = _padded(ctx, _out(node), x, pads)
    op = ops.Conv2d(ctx.tensor(w), None if bias is None else ctx.tensor(bias), strides, padding, dil,
                    int(at.get("group", 1)))
    out = op.forward(torch.zeros((1, *x.shape), dtype=ctx.dtype))
    return ctx.add(_out(node), op, [x], out.shape, True)


def _pool(ctx, node):
    x = _data_first(ctx, node)
    at = _attrs(node)
    kernel = tuple(at["kernel_shape"])
    dil = tuple(at.get("dilations", (1, 1)))
    if at.get("ceil_mode", 0):
        raise UnsupportedOpError(f"{node.op_type} with ceil_mode=1", node.name, WHERE)
    if len(node.output) > 1 and node.output[1]:
        raise UnsupportedOpError("MaxPool with an Indices output", node.name, WHERE)
    strides, pads = _spatial(ctx, node, x, kernel, dil)
    if pads[:2] != pads[2:]:
        raise UnsupportedOpError(f"{node.op_type} with asymmetric pads {pads}", node.name, WHERE)
    if node.op_type == "MaxPool":
        op: ops.Op = ops.MaxPool2d(kernel, strides, tuple(pads[:2]), dil)
    else:
        if dil != (1, 1):
            raise UnsupportedOpError("AveragePool with dilations", node.name, WHERE)
        op = ops.AvgPool2d(kernel, strides, tuple(pads[:2]), bool(at.get("count_include_pad", 0)))
    out = op.forward(torch.zeros((1, *x.shape)))
    return ctx.add(_out(node), op, [x], out.shape, True)


def _global_avg_pool(ctx, node):
    x = _data_first(ctx, node)
    if len(x.oshape) != 4 or not x.batched:
        raise UnsupportedOpError("GlobalAveragePool on a non-NCHW input", node.name, WHERE)
    hw = tuple(x.oshape[2:])
    return ctx.add(_out(node), ops.AvgPool2d(hw, hw), [x], (*x.oshape[:2], 1, 1), True)


def _batchnorm(ctx, node):
    x = _data_first(ctx, node)
    gamma, beta, mean, var = (np.asarray(ctx.const(node, i), np.float64) for i in range(1, 5))
    eps = float(_attrs(node).get("epsilon", 1e-5))
    scale = gamma / np.sqrt(var + eps)
    view = (-1,) + (1,) * (len(x.oshape) - 2)
    return _affine(ctx, _out(node), x, scale.reshape(view), (beta - mean * scale).reshape(view))


def _pad(ctx, node):
    x = _data_first(ctx, node)
    at = _attrs(node)
    mode = at.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode not in ("constant", "reflect", "edge"):
        raise UnsupportedOpError(f"Pad with mode {mode!r}", node.name, WHERE)
    r = len(x.oshape)
    if "pads" in at:
        pads, value = list(at["pads"]), float(at.get("value", 0.0))
    else:
        pads = [int(p) for p in np.asarray(ctx.const(node, 1)).reshape(-1)]
        cv = ctx.const(node, 2)
        value = 0.0 if cv is None or np.asarray(cv).size == 0 else float(np.asarray(cv).reshape(-1)[0])
    axes = [_axis(int(a), r) for a in np.asarray(ctx.const(node, 3, range(r))).reshape(-1)]
    full = [0] * (2 * r)
    for i, a in enumerate(axes):
        full[a], full[a + r] = pads[i], pads[i + len(axes)]
    if any(p < 0 for p in full):
        raise UnsupportedOpError("Pad with negative pads (cropping)", node.name, WHERE)
    if (full[0] or full[r]) and x.batched:
        x = ctx.unbatch(_out(node) + "/unbatch", x)
    tpads: list[int] = []
    for a in reversed(range(1 if x.batched else 0, r)):
        tpads += [full[a], full[a + r]]
    while len(tpads) > 2 and tpads[-1] == 0 and tpads[-2] == 0:
        tpads = tpads[:-2]
    oshape = tuple(d + full[i] + full[i + r] for i, d in enumerate(x.oshape))
    op = ops.Pad(tuple(tpads), "replicate" if mode == "edge" else mode, value)
    return ctx.add(_out(node), op, [x], oshape, x.batched)


def _shape(ctx, node):
    s = np.array(_data_first(ctx, node).oshape, dtype=np.int64)  # the batch dim reads 1
    return s[_attrs(node).get("start", 0): _attrs(node).get("end", len(s))]


def _cast(ctx, node):
    to = int(_attrs(node)["to"])
    if to not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16):
        raise UnsupportedOpError(f"Cast of data to type {to}", node.name, WHERE)
    return _data_first(ctx, node)


BUILDERS: dict[str, Builder] = {
    "Relu": _act(ops.ReLU()), "Sigmoid": _act(ops.Sigmoid()), "Tanh": _act(ops.Tanh()),
    "LeakyRelu": lambda ctx, node: _act(ops.LeakyReLU(float(_attrs(node).get("alpha", 0.01))))(ctx, node),
    "Identity": _identity, "Dropout": _identity,
    "MatMul": _matmul, "Gemm": _gemm,
    "Add": _binary("Add"), "Sub": _binary("Sub"), "Mul": _binary("Mul"), "Div": _binary("Div"),
    "Flatten": _flatten, "Reshape": _reshape, "Squeeze": _squeeze, "Unsqueeze": _unsqueeze,
    "Transpose": _transpose, "Concat": _concat, "Conv": _conv,
    "AveragePool": _pool, "MaxPool": _pool, "GlobalAveragePool": _global_avg_pool,
    "BatchNormalization": _batchnorm, "Pad": _pad, "Shape": _shape, "Cast": _cast,
}
_HINTS = {
    "Softmax": " (drop the final Softmax: it keeps the argmax, and specs are stated on logits)",
}
#: Op types accepted (the Graph builders, plus Constant; anything else only when its inputs are
#: all constants, when it is folded at load time).
SUPPORTED: list[str] = sorted([*BUILDERS, "Constant"])


# -- loading ---------------------------------------------------------------------------------
def _fold(ctx: _Ctx, node: onnx.NodeProto, consts: list[np.ndarray | None]) -> list[np.ndarray]:
    """Evaluate a node whose inputs are all constants, with onnx's reference evaluator."""
    from onnx.reference import ReferenceEvaluator

    try:
        ev = ReferenceEvaluator(node, opsets={"": ctx.opset})
        feeds = {n: c for n, c in zip(node.input, consts) if n}
        return list(ev.run(None, feeds))
    except Exception as e:
        raise UnsupportedOpError(node.op_type, node.name or node.output[0],
                                 WHERE + f" (constant folding failed: {e})", SUPPORTED) from e


def _read(path) -> onnx.ModelProto:
    """The model in ``path`` (plain or gzip-compressed, e.g. ``net.onnx.gz``)."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"model file not found: {p}")
    raw = p.read_bytes()
    if not raw:
        raise ModelError(f"{p} is empty (0 bytes): not an ONNX model")
    try:
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
            model = onnx.load_from_string(raw)
        else:
            model = onnx.load(str(p))
    except Exception as e:
        raise ModelError(f"{p} is not a valid ONNX model: {one_line(e)}") from e
    if not model.graph.node and not model.graph.input:
        raise ModelError(f"{p} holds no ONNX graph (no nodes, no inputs)")
    return model


_DTYPES = {onnx.TensorProto.FLOAT: torch.float32, onnx.TensorProto.DOUBLE: torch.float64}


def _input(model: onnx.ModelProto, init: set[str]) -> tuple[onnx.ValueInfoProto, Data, torch.dtype]:
    real = [i for i in model.graph.input if i.name not in init]
    if len(real) != 1:
        raise ModelError(f"expected one ONNX input, got {len(real)}: {[i.name for i in real]}")
    vi = real[0]
    tt = vi.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
    if not dims:
        raise ModelError(f"ONNX input {vi.name!r} has no static rank")
    batched = len(dims) >= 2 and dims[0] in (1, -1, 0)
    oshape = tuple(1 if (i == 0 and batched) else d for i, d in enumerate(dims))
    if any(d <= 0 for d in oshape):
        raise ModelError(f"ONNX input {vi.name!r} has a symbolic non-batch dim: {dims}")
    return vi, Data("input", oshape, batched), _DTYPES.get(tt.elem_type, torch.float32)


def from_onnx(path, simplify: bool = True) -> Graph:
    """Load an ONNX file as a Graph (batch-first; ``input_shape`` excludes the batch dim)."""
    model = _read(path)
    g = model.graph
    init = {t.name for t in g.initializer}
    vi, x, dtype = _input(model, init)
    ctx = _Ctx(model, dtype)
    for t in g.initializer:
        ctx.values[t.name] = numpy_helper.to_array(t)
    ctx.values[vi.name] = x
    for node in g.node:
        _build_node(ctx, node)
    if len(g.output) != 1:
        raise ModelError(f"expected one ONNX output, got {len(g.output)}")
    out = ctx.get(g.output[0].name)
    if not isinstance(out, Data):
        raise ModelError("the ONNX output does not depend on the input")
    # the output convention of run_onnx: drop a leading 1 unless the output is 1-D
    if not out.batched and len(out.oshape) > 1 and out.oshape[0] == 1:
        out = ctx.reshape("output", out, out.oshape[1:], batched=False)
    elif out.batched and len(out.oshape) == 1:
        out = ctx.reshape("output", out, out.oshape, batched=False)
    if not ctx.nodes or out.name == "input":
        out = ctx.add("output", ops.Reshape(out.shape), [out], out.oshape, out.batched)
    graph = Graph(_live(ctx.nodes, out.name), x.shape, output_name=out.name)
    if simplify:
        from .simplify import simplify as _simplify

        graph = _simplify(graph)
    return graph


def _build_node(ctx: _Ctx, node: onnx.NodeProto) -> None:
    if node.domain not in ("", "ai.onnx"):
        raise UnsupportedOpError(f"{node.domain}.{node.op_type}", node.name or node.output[0], WHERE,
                                 SUPPORTED)
    vals = [ctx.get(n) if n else None for n in node.input]
    if not any(isinstance(v, Data) for v in vals):
        results = _fold(ctx, node, vals)
        for name, v in zip(node.output, results):
            ctx.values[name] = np.asarray(v)
        return
    builder = BUILDERS.get(node.op_type)
    if builder is None:
        raise UnsupportedOpError(node.op_type, node.name or node.output[0],
                                 WHERE + _HINTS.get(node.op_type, ""), SUPPORTED)
    try:
        ctx.values[node.output[0]] = builder(ctx, node)
    except (ValueError, TypeError, IndexError, KeyError) as e:
        raise ModelError(f"ONNX node {node.name or node.output[0]!r} ({node.op_type}) cannot be "
                         f"read: {one_line(e)}") from e


def _live(nodes: list[Node], output: str) -> list[Node]:
    """The nodes ``output`` depends on."""
    live = {output}
    for n in reversed(nodes):
        if n.name in live:
            live.update(n.inputs)
    return [n for n in nodes if n.name in live]
