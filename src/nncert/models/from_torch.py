"""torch ``nn.Module`` → :class:`~nncert.models.graph.Graph`.

Two paths, one table of module converters (:data:`MODULES`):

* an ``nn.Sequential`` (nested ones included) whose leaves are all in :data:`MODULES` is walked
  layer by layer;
* any other module is traced with ``torch.fx``: leaf modules go through :data:`MODULES`,
  functions and tensor methods through :data:`FUNCTIONS` (residual ``x + y``, ``torch.cat``,
  ``view``/``reshape``/``flatten``, ``F.relu``, arithmetic with constants for normalisation).
  Calls whose arguments are all constants (buffers, numbers, ``x.size(0)``) are evaluated.

Modules are converted in inference mode: BatchNorm uses its running statistics and Dropout is
dropped, whatever ``module.training`` says. Guarantee: the Graph computes what ``module.eval()``
computes, up to float rounding.
"""

from __future__ import annotations

import copy
import operator
import pickle
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError, UnsupportedOpError
from ..utils import one_line
from . import ops
from .from_onnx import Data, const_for
from .graph import Graph, Node

WHERE = "torch loader"
Shape = tuple[int, ...]


# -- modules -------------------------------------------------------------------------------------
def _w(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach().clone()


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _linear(m: nn.Linear, shape: Shape) -> list[ops.Op]:
    if len(shape) != 1:
        raise ModelError(f"nn.Linear on a {len(shape)}-D input {shape}: flatten first")
    return [ops.Linear(_w(m.weight), _w(m.bias))]


def _conv(m: nn.Conv2d, shape: Shape) -> list[ops.Op]:
    if m.padding_mode != "zeros":
        raise UnsupportedOpError(f"Conv2d(padding_mode={m.padding_mode!r})", "", WHERE)
    k, d = _pair(m.kernel_size), _pair(m.dilation)
    pre: list[ops.Op] = []
    if m.padding == "valid":
        pad = (0, 0)
    elif m.padding == "same":
        totals = [d[i] * (k[i] - 1) for i in range(2)]
        pad = (totals[0] // 2, totals[1] // 2)
        extra = [totals[i] - 2 * pad[i] for i in range(2)]
        if any(extra):
            pre = [ops.Pad((pad[1], pad[1] + extra[1], pad[0], pad[0] + extra[0]))]
            pad = (0, 0)
    else:
        pad = _pair(m.padding)
    conv = ops.Conv2d(_w(m.weight), _w(m.bias), _pair(m.stride), pad, d, m.groups)
    return [*pre, conv]


def _batchnorm(m: nn.modules.batchnorm._BatchNorm, shape: Shape) -> list[ops.Op]:
    if m.running_mean is None or m.running_var is None:
        raise ModelError("BatchNorm without running statistics (track_running_stats=False)")
    var, mean = m.running_var.detach().double(), m.running_mean.detach().double()
    scale = 1.0 / torch.sqrt(var + m.eps)
    shift = -mean * scale
    if m.weight is not None:
        scale, shift = scale * m.weight.detach().double(), shift * m.weight.detach().double()
    if m.bias is not None:
        shift = shift + m.bias.detach().double()
    view = (-1,) + (1,) * (len(shape) - 1)
    dtype = m.running_mean.dtype
    return [ops.ElementwiseAffine(scale.reshape(view).to(dtype), shift.reshape(view).to(dtype))]


def _reshaping(m: nn.Module, shape: Shape) -> list[ops.Op]:
    if isinstance(m, nn.Flatten) and m.start_dim == 1 and m.end_dim == -1:
        return [ops.Flatten()]
    out = m(torch.zeros((2, *shape)))
    if out.shape[0] != 2:
        raise ModelError(f"{type(m).__name__} must keep the batch dim (got shape {tuple(out.shape)})")
    return [ops.Reshape(tuple(out.shape[1:]))]


def _avgpool(m: nn.AvgPool2d, shape: Shape) -> list[ops.Op]:
    if m.ceil_mode or m.divisor_override is not None:
        raise UnsupportedOpError("AvgPool2d(ceil_mode or divisor_override)", "", WHERE)
    k = _pair(m.kernel_size)
    return [ops.AvgPool2d(k, _pair(m.stride or k), _pair(m.padding), m.count_include_pad)]


def _maxpool(m: nn.MaxPool2d, shape: Shape) -> list[ops.Op]:
    if m.ceil_mode or m.return_indices:
        raise UnsupportedOpError("MaxPool2d(ceil_mode or return_indices)", "", WHERE)
    k = _pair(m.kernel_size)
    return [ops.MaxPool2d(k, _pair(m.stride or k), _pair(m.padding), _pair(m.dilation))]


ModuleConverter = Callable[[nn.Module, Shape], list[ops.Op]]
MODULES: dict[type[nn.Module], ModuleConverter] = {
    nn.Linear: _linear, nn.Conv2d: _conv,
    nn.ReLU: lambda m, s: [ops.ReLU()], nn.Sigmoid: lambda m, s: [ops.Sigmoid()],
    nn.Tanh: lambda m, s: [ops.Tanh()],
    nn.LeakyReLU: lambda m, s: [ops.LeakyReLU(float(m.negative_slope))],
    nn.Flatten: _reshaping, nn.Unflatten: _reshaping,
    nn.AvgPool2d: _avgpool, nn.MaxPool2d: _maxpool,
    nn.BatchNorm1d: _batchnorm, nn.BatchNorm2d: _batchnorm,
    nn.Dropout: lambda m, s: [], nn.Dropout1d: lambda m, s: [], nn.Dropout2d: lambda m, s: [],
    nn.AlphaDropout: lambda m, s: [], nn.Identity: lambda m, s: [],
}


def _convert_module(m: nn.Module, shape: Shape, node: str) -> list[ops.Op]:
    conv = MODULES.get(type(m))
    if conv is None:
        raise UnsupportedOpError(type(m).__name__, node, WHERE,
                                 [t.__name__ for t in MODULES] + list(FUNCTION_NAMES))
    try:
        return conv(m, shape)
    except UnsupportedOpError as e:
        raise UnsupportedOpError(e.op, node, WHERE) from e


# -- the graph under construction -----------------------------------------------------------------
class _Builder:
    def __init__(self, input_shape: Shape, dtype: torch.dtype):
        self.input_shape, self.dtype = input_shape, dtype
        self.nodes: list[Node] = []
        self.shapes: dict[str, Shape] = {"input": input_shape}

    def add(self, base: str, op: ops.Op, srcs: list[str]) -> str:
        name, i = base, 0
        while name in self.shapes:
            i += 1
            name = f"{base}_{i}"
        op = op.to(dtype=self.dtype)
        xs = [torch.zeros((1, *self.shapes[s]), dtype=self.dtype) for s in srcs]
        self.shapes[name] = tuple(op.forward(*xs).shape[1:])
        self.nodes.append(Node(name, op, tuple(srcs)))
        return name

    def chain(self, base: str, op_list: list[ops.Op], src: str) -> str:
        for i, op in enumerate(op_list):
            src = self.add(base if i == len(op_list) - 1 else f"{base}_pre{i}", op, [src])
        return src

    def graph(self, output: str) -> Graph:
        if output == "input":
            output = self.add("identity", ops.Reshape(self.input_shape), ["input"])
        return Graph(self.nodes, self.input_shape, output_name=output)


def _leaves(m: nn.Module):
    for child in m.children() if isinstance(m, nn.Sequential) else [m]:
        if isinstance(child, nn.Sequential):
            yield from _leaves(child)
        else:
            yield child


def _from_sequential(module: nn.Sequential, b: _Builder) -> str:
    src = "input"
    for i, m in enumerate(_leaves(module)):
        src = b.chain(f"{type(m).__name__.lower()}{i}", _convert_module(m, b.shapes[src], str(i)), src)
    return src


# -- torch.fx ----------------------------------------------------------------------------------
class _Fx:
    """Values of one fx trace: a str is the Graph node name of a data tensor, anything else a
    constant."""

    def __init__(self, b: _Builder):
        self.b = b
        self.env: dict[torch.fx.Node, object] = {}

    def arg(self, a):
        if isinstance(a, torch.fx.Node):
            return self.env[a]
        if isinstance(a, (list, tuple)):
            return type(a)(self.arg(v) for v in a)
        if isinstance(a, dict):
            return {k: self.arg(v) for k, v in a.items()}
        return a


def _is_data(v) -> bool:
    return isinstance(v, _D)


class _D(str):
    """A data value (a Graph node name)."""


def _has_data(v) -> bool:
    if isinstance(v, (list, tuple)):
        return any(_has_data(x) for x in v)
    if isinstance(v, dict):
        return any(_has_data(x) for x in v.values())
    return _is_data(v)


def _const(b: _Builder, src: str, c) -> np.ndarray:
    arr = c.detach().cpu().double().numpy() if isinstance(c, torch.Tensor) else np.asarray(c, float)
    return const_for(arr, Data(src, (1, *b.shapes[src]), True))


def _affine(b: _Builder, base: str, src: str, scale=None, shift=None) -> str:
    def t(v):
        return None if v is None else torch.as_tensor(_const(b, src, v))
    return b.add(base, ops.ElementwiseAffine(t(scale), t(shift)), [src])


def _arith(kind: str):
    def conv(b: _Builder, name: str, args, kwargs, meta) -> str:
        if kwargs.get("alpha", 1) != 1 or len(args) != 2:
            raise UnsupportedOpError(f"{kind} with alpha/extra arguments", name, WHERE)
        x, y = args
        if _is_data(x) and _is_data(y):
            if kind not in ("add", "sub") or b.shapes[x] != b.shapes[y]:
                raise UnsupportedOpError(f"{kind} of two tensors of shapes {b.shapes[x]}, {b.shapes[y]}",
                                         name, WHERE)
            return b.add(name, ops.Add() if kind == "add" else ops.Sub(), [x, y])
        if _is_data(x):
            return {"add": lambda: _affine(b, name, x, shift=y),
                    "sub": lambda: _affine(b, name, x, shift=-_c64(y)),
                    "mul": lambda: _affine(b, name, x, scale=y),
                    "div": lambda: _affine(b, name, x, scale=1.0 / _c64(y))}[kind]()
        if kind == "div":
            raise UnsupportedOpError("division of a constant by a tensor", name, WHERE)
        if kind == "sub":
            return _affine(b, name, y, scale=-1.0, shift=x)
        return _affine(b, name, y, **({"shift": x} if kind == "add" else {"scale": x}))
    return conv


def _c64(c):
    return c.detach().double() if isinstance(c, torch.Tensor) else np.asarray(c, float)


def _simple(op: ops.Op):
    def conv(b, name, args, kwargs, meta):
        return b.add(name, op, [args[0]])
    return conv


def _leaky(b, name, args, kwargs, meta):
    slope = args[1] if len(args) > 1 else kwargs.get("negative_slope", 0.01)
    return b.add(name, ops.LeakyReLU(float(slope)), [args[0]])


def _reshape_fn(b, name, args, kwargs, meta):
    out = tuple(meta.shape)
    if out[0] != _BATCH:
        raise ModelError(f"fx node {name!r} reshapes across the batch dim (shape {out})")
    if len(out) == 2 and len(b.shapes[args[0]]) > 1:
        return b.add(name, ops.Flatten(), [args[0]])
    return b.add(name, ops.Reshape(out[1:]), [args[0]])


def _identity_fn(b, name, args, kwargs, meta):
    return args[0]


def _cat(b, name, args, kwargs, meta):
    xs = list(args[0])
    dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
    if not all(_is_data(x) for x in xs):
        raise UnsupportedOpError("torch.cat of constants and tensors", name, WHERE)
    dim = dim + 1 + len(b.shapes[xs[0]]) if dim < 0 else dim
    if dim == 0:
        raise UnsupportedOpError("torch.cat along the batch dim", name, WHERE)
    return b.add(name, ops.Concat(dim - 1), xs)


def _permute(b, name, args, kwargs, meta, transpose: bool = False):
    x = args[0]
    rank = 1 + len(b.shapes[x])
    if transpose:
        perm = list(range(rank))
        d0, d1 = (d % rank for d in args[1:3])
        perm[d0], perm[d1] = perm[d1], perm[d0]
    else:
        perm = [d % rank for d in (args[1] if len(args) == 2 and not isinstance(args[1], int) else args[1:])]
    if perm[0] != 0:
        raise UnsupportedOpError("permute/transpose moving the batch dim", name, WHERE)
    return b.add(name, ops.Transpose(tuple(p - 1 for p in perm[1:])), [x])


FxConverter = Callable[..., str]
_ARITH = {"add": (operator.add, operator.iadd, torch.add), "sub": (operator.sub, operator.isub, torch.sub),
          "mul": (operator.mul, operator.imul, torch.mul),
          "div": (operator.truediv, operator.itruediv, torch.div, torch.true_divide)}
FUNCTIONS: dict[object, FxConverter] = {
    **{f: _arith(k) for k, fs in _ARITH.items() for f in fs},
    **{k: _arith(k) for k in _ARITH}, "truediv": _arith("div"),
    F.relu: _simple(ops.ReLU()), torch.relu: _simple(ops.ReLU()), "relu": _simple(ops.ReLU()),
    torch.sigmoid: _simple(ops.Sigmoid()), F.sigmoid: _simple(ops.Sigmoid()),
    "sigmoid": _simple(ops.Sigmoid()), torch.tanh: _simple(ops.Tanh()), F.tanh: _simple(ops.Tanh()),
    "tanh": _simple(ops.Tanh()), F.leaky_relu: _leaky,
    operator.neg: lambda b, n, a, k, m: _affine(b, n, a[0], scale=-1.0),
    "view": _reshape_fn, "reshape": _reshape_fn, torch.reshape: _reshape_fn, "flatten": _reshape_fn,
    torch.flatten: _reshape_fn, "unsqueeze": _reshape_fn, "squeeze": _reshape_fn,
    torch.unsqueeze: _reshape_fn, torch.squeeze: _reshape_fn,
    torch.cat: _cat, torch.concat: _cat, "permute": _permute, torch.permute: _permute,
    "transpose": lambda b, n, a, k, m: _permute(b, n, a, k, m, True),
    "contiguous": _identity_fn, "clone": _identity_fn, "detach": _identity_fn, F.dropout: _identity_fn,
}
FUNCTION_NAMES = sorted({getattr(f, "__name__", str(f)) for f in FUNCTIONS})
_BATCH = 2  # the batch size fx shapes are propagated with (so a reshape across it is visible)


def _from_fx(module: nn.Module, b: _Builder, dtype: torch.dtype) -> str:
    from torch.fx.passes.shape_prop import ShapeProp

    try:
        gm = torch.fx.symbolic_trace(module)
        ShapeProp(gm).propagate(torch.zeros((_BATCH, *b.input_shape), dtype=dtype))
    except Exception as e:
        raise ModelError(f"cannot trace {type(module).__name__} with torch.fx: {e}") from e
    fx = _Fx(b)
    out = None
    for n in gm.graph.nodes:
        if n.op == "placeholder":
            if any(isinstance(v, _D) for v in fx.env.values()):
                raise ModelError(f"module takes more than one input (placeholder {n.name!r})")
            fx.env[n] = _D("input")
        elif n.op == "get_attr":
            fx.env[n] = _attr(gm, n.target)
        elif n.op == "output":
            out = fx.arg(n.args[0])
        else:
            fx.env[n] = _call(gm, fx, n)
    if not _is_data(out):
        raise ModelError("the module output must be one tensor that depends on the input")
    return out


def _attr(gm, target: str):
    obj = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _call(gm, fx: _Fx, n: torch.fx.Node):
    args, kwargs = fx.arg(n.args), fx.arg(n.kwargs)
    meta = n.meta.get("tensor_meta")
    if not _has_data(args) and not _has_data(kwargs):  # all constants: evaluate now
        if n.op == "call_module":
            return gm.get_submodule(n.target)(*args, **kwargs)
        if n.op == "call_method":
            return getattr(args[0], n.target)(*args[1:], **kwargs)
        return n.target(*args, **kwargs)
    if n.op == "call_module":
        m = gm.get_submodule(n.target)
        src = args[0]
        return _D(fx.b.chain(n.name, _convert_module(m, fx.b.shapes[src], n.name), src))
    if n.op == "call_method" and n.target in ("size", "dim") or n.target is getattr:
        return _shape_query(fx.b, n, args, kwargs)
    conv = FUNCTIONS.get(n.target)
    if conv is None:
        what = n.target if isinstance(n.target, str) else getattr(n.target, "__name__", str(n.target))
        raise UnsupportedOpError(what, n.name, WHERE, FUNCTION_NAMES + [t.__name__ for t in MODULES])
    return _D(conv(fx.b, n.name, args, kwargs, meta))


def _shape_query(b: _Builder, n, args, kwargs):
    """``x.size()``, ``x.size(d)``, ``x.dim()``, ``x.shape`` as constants (batch as traced)."""
    full = torch.Size((_BATCH, *b.shapes[args[0]]))
    if n.target == "dim":
        return len(full)
    if n.target is getattr:
        if args[1] != "shape":
            raise UnsupportedOpError(f"getattr {args[1]!r}", n.name, WHERE)
        return full
    d = args[1] if len(args) > 1 else kwargs.get("dim")
    return full if d is None else full[d]


# -- entry points ------------------------------------------------------------------------------
def _dtype(module: nn.Module) -> torch.dtype:
    for p in list(module.parameters()) + list(module.buffers()):
        if p.is_floating_point():
            return p.dtype
    return torch.get_default_dtype()


def from_torch(module: nn.Module, input_shape, simplify: bool = True) -> Graph:
    """A Graph computing ``module.eval()`` on inputs of shape (N, *input_shape), on the CPU.

    The module is not modified (a module on another device is copied to the CPU first).
    """
    input_shape = tuple(int(s) for s in input_shape)
    if not input_shape or any(s <= 0 for s in input_shape):
        raise ModelError(f"input_shape must be positive dims without the batch dim, got {input_shape}")
    if any(t.device.type != "cpu" for t in [*module.parameters(), *module.buffers()]):
        module = copy.deepcopy(module).cpu()  # the Graph is built on the CPU; .to() moves it
    dtype = _dtype(module)
    b = _Builder(input_shape, dtype)
    with torch.no_grad():
        if isinstance(module, nn.Sequential) and all(type(m) in MODULES for m in _leaves(module)):
            out = _from_sequential(module, b)
        else:
            out = _from_fx(module, b, dtype)
    graph = b.graph(out)
    if simplify:
        from .simplify import simplify as _simplify

        graph = _simplify(graph)
    return graph


ADVICE = "Export the model to ONNX, or save its state_dict and name its architecture"


def read_torch_file(path, advice: str = ADVICE) -> object:
    """What a ``torch.save`` file holds, read with ``torch.load(weights_only=True)``: tensors,
    numbers, strings, lists and dicts only, no code in the file runs. A pickled object (a whole
    module) or another file is a one-line ModelError that says what to do instead."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"model file not found: {p}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4"
            return torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "unsupported global" in str(e).lower():
            raise ModelError(
                f"{p} holds pickled Python objects (a whole module?), which nncert does not "
                f"unpickle: a pickle can run code. {advice}") from None
        reason = str(e).split("WeightsUnpickler error:")[-1].split("Check the documentation")[0]
        raise ModelError(f"{p} is not a torch weights file ({one_line(reason)})") from None
    except Exception as e:  # noqa: BLE001 - any read failure is a bad file
        raise ModelError(f"{p} is not a loadable torch file: {one_line(e)}") from None


def load_weights(path) -> dict[str, torch.Tensor]:
    """The state dict (tensors by name) in a ``torch.save`` file (see :func:`read_torch_file`:
    nothing in the file runs); ``{"state_dict": ...}`` checkpoints are accepted too."""
    p = Path(path)
    obj = read_torch_file(p)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise ModelError(f"{p} holds a {type(obj).__name__}, not a state_dict (tensors by name)")
    return obj


def from_torch_file(path) -> Graph:
    """Refuses a ``.pt``/``.pth`` model file with a ModelError that says what to do instead.

    Security: nncert never unpickles a model file. The file is read with
    ``torch.load(weights_only=True)`` (nothing in it runs): a pickled module is refused, and a
    state dict has no architecture (build the module, ``load_state_dict``, pass the module to
    ``load``; or ``nncert smooth --arch``; or export the model to ONNX).
    """
    p = Path(path)
    load_weights(p)  # refuses pickles; a state dict falls through to the error below
    raise ModelError(f"{p} holds a state_dict (weights only), not a model: name its "
                     "architecture (nncert smooth: --arch) or export the model to ONNX")
