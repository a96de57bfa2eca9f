"""The small networks of the certified-training literature, as ``nn.Sequential`` modules, and
:func:`live_graph`: a Graph whose weights *are* a module's Parameters.

Architectures (``ARCHITECTURES``; inputs (C, H, W) in [0, 1], an optional per-channel
normalisation as the first layer):

* ``fc3x100`` (alias ``fc``): three dense ReLU layers of 100 (ERAN's 3×100 MLP);
* ``convsmall`` / ``convmed`` / ``convbig``: ERAN's ConvSmall (16×4×4/2, 32×4×4/2, 100),
  ConvMed (the same with padding 1) and ConvBig (32×3×3, 32×4×4/2, 64×3×3, 64×4×4/2, 512, 512);
* ``dm-small`` / ``dm-medium`` / ``dm-large``: the models of Gowal et al. 2018, used by
  CROWN-IBP (Zhang et al. 2020);
* ``mlp`` / ``cnn``: the small nets of ``nncert smooth`` (128-128 MLP; Wong & Kolter's CNN);
* ``resnet2b`` / ``resnet4b``: the residual networks of VNN-COMP 2021's ``cifar10_resnet``
  (Wang et al. 2021): a 3×3 stride-2 stem, then 2 or 4 :class:`Residual` blocks (3×3 conv,
  ReLU, 3×3 conv, plus the input or a 1×1 strided conv of it, then ReLU), a dense layer of
  100 and the output layer.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..errors import ConfigError
from ..models import ops
from ..models.from_torch import MODULES, _leaves
from ..models.graph import Graph, Node

Shape = tuple[int, ...]


class Normalize(nn.Module):
    """``(x − mean) / std`` per channel (constants, not trained); ``nncert.load`` traces it."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        if any(s <= 0 for s in std):
            raise ConfigError(f"normalisation std must be > 0, got {list(std)}")
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(-1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(-1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Residual(nn.Module):
    """``body(x) + shortcut(x)`` (``shortcut`` None: the identity), the ReLU after it a
    separate layer. ``live_graph`` and ``nncert.load`` turn it into an Add node."""

    def __init__(self, body: nn.Sequential, shortcut: nn.Module | None = None):
        super().__init__()
        self.body = body
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + (x if self.shortcut is None else self.shortcut(x))


def _conv_stack(c: int, spec: Sequence[tuple[int, int, int, int]]) -> list[nn.Module]:
    """Conv2d + ReLU for each (out channels, kernel, stride, padding)."""
    layers: list[nn.Module] = []
    for out, k, s, p in spec:
        layers += [nn.Conv2d(c, out, k, stride=s, padding=p), nn.ReLU()]
        c = out
    return layers


def _dense(widths: Sequence[int]) -> list[nn.Module]:
    """Linear layers between ``widths`` (ReLU between them, none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return layers


def _cnn(convs: Sequence[tuple[int, int, int, int]], dense: Sequence[int]):
    def build(shape: Shape, classes: int) -> list[nn.Module]:
        if len(shape) != 3:
            raise ConfigError(f"a convolutional net needs (C, H, W) inputs, got {shape}")
        feats = _conv_stack(shape[0], convs)
        with torch.no_grad():
            n = nn.Sequential(*feats, nn.Flatten())(torch.zeros(1, *shape)).shape[1]
        return [*feats, nn.Flatten(), *_dense([n, *dense, classes])]
    return build


def _block(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
    body = nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.ReLU(),
                         nn.Conv2d(c_out, c_out, 3, stride=1, padding=1))
    same = c_in == c_out and stride == 1
    return [Residual(body, None if same else nn.Conv2d(c_in, c_out, 1, stride=stride)), nn.ReLU()]


def _resnet(stem: int, blocks: Sequence[tuple[int, int]], dense: Sequence[int]):
    """A stem conv of ``stem`` channels (3×3, stride 2), then a residual block per
    (channels, stride), then the dense layers."""
    def build(shape: Shape, classes: int) -> list[nn.Module]:
        if len(shape) != 3:
            raise ConfigError(f"a residual net needs (C, H, W) inputs, got {shape}")
        feats, c = _conv_stack(shape[0], [(stem, 3, 2, 1)]), stem
        for out, stride in blocks:
            feats += _block(c, out, stride)
            c = out
        with torch.no_grad():
            n = nn.Sequential(*feats, nn.Flatten())(torch.zeros(1, *shape)).shape[1]
        return [*feats, nn.Flatten(), *_dense([n, *dense, classes])]
    return build


def _fc(hidden: Sequence[int]):
    def build(shape: Shape, classes: int) -> list[nn.Module]:
        return [nn.Flatten(), *_dense([math.prod(shape), *hidden, classes])]
    return build


Builder = Callable[[Shape, int], list[nn.Module]]
ARCHITECTURES: dict[str, Builder] = {
    "fc3x100": _fc((100, 100, 100)),
    "fc": _fc((100, 100, 100)),
    "mlp": _fc((128, 128)),
    "cnn": _cnn([(16, 4, 2, 1), (32, 4, 2, 1)], (100,)),
    "convsmall": _cnn([(16, 4, 2, 0), (32, 4, 2, 0)], (100,)),
    "convmed": _cnn([(16, 4, 2, 1), (32, 4, 2, 1)], (100,)),
    "convbig": _cnn([(32, 3, 1, 1), (32, 4, 2, 1), (64, 3, 1, 1), (64, 4, 2, 1)], (512, 512)),
    "dm-small": _cnn([(16, 4, 2, 0), (32, 4, 1, 0)], (100,)),
    "dm-medium": _cnn([(32, 3, 1, 0), (32, 4, 2, 0), (64, 3, 1, 0), (64, 4, 2, 0)], (512, 512)),
    "dm-large": _cnn([(64, 3, 1, 1), (64, 3, 1, 1), (128, 3, 2, 1), (128, 3, 1, 1),
                      (128, 3, 1, 1)], (512,)),
    "resnet2b": _resnet(8, [(16, 2), (16, 1)], (100,)),
    "resnet4b": _resnet(16, [(32, 2), (32, 1), (32, 2), (32, 1)], (100,)),
}


def _with_batchnorm(layers: Sequence[nn.Module], last_is_output: bool) -> list[nn.Module]:
    """``layers`` with a BatchNorm after every Conv2d and Linear (inside residual blocks too),
    except the output layer (the last Linear when ``last_is_output``)."""
    out: list[nn.Module] = []
    for i, m in enumerate(layers):
        if isinstance(m, Residual):
            short = m.shortcut
            if short is not None:
                short = nn.Sequential(*_with_batchnorm(list(_leaves(short)), False))
            out.append(Residual(nn.Sequential(*_with_batchnorm(list(_leaves(m.body)), False)),
                                short))
            continue
        out.append(m)
        if isinstance(m, nn.Conv2d):
            out.append(nn.BatchNorm2d(m.out_channels))
        elif isinstance(m, nn.Linear) and not (last_is_output and i == len(layers) - 1):
            out.append(nn.BatchNorm1d(m.out_features))
    return out


def build(arch: str, input_shape: Sequence[int], num_classes: int = 10,
          mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
          seed: int | None = None, batchnorm: bool = False) -> nn.Sequential:
    """Architecture ``arch`` for inputs ``input_shape`` (C, H, W) in [0, 1], with a
    :class:`Normalize` first layer when ``mean``/``std`` are given. ``seed`` fixes the
    initialisation (PyTorch's default one). ``batchnorm`` puts a BatchNorm after every
    convolution and hidden dense layer (before its ReLU), as Shi et al. 2021 train: in
    training mode the bounds use the batch's statistics (:func:`live_graph`), in eval mode and
    in the exported model the running ones, a fixed affine map."""
    if arch not in ARCHITECTURES:
        raise ConfigError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHITECTURES)}")
    shape = tuple(int(s) for s in input_shape)
    if seed is not None:
        torch.manual_seed(seed)
    try:
        layers = ARCHITECTURES[arch](shape, num_classes)
    except RuntimeError as e:
        raise ConfigError(f"architecture {arch!r} does not fit inputs of shape {shape} "
                          f"(too small for its convolutions)") from e
    if batchnorm:
        layers = _with_batchnorm(layers, True)
    if mean is not None or std is not None:
        c = shape[0]
        mean = list(mean if mean is not None else [0.0] * c)
        std = list(std if std is not None else [1.0] * c)
        layers.insert(0, Normalize(mean, std))
    return nn.Sequential(*layers)


# -- a graph on the module's own parameters --------------------------------------------------


def _live_ops(m: nn.Module, shape: Shape) -> list[ops.Op]:
    if isinstance(m, Normalize):
        return [ops.ElementwiseAffine(1.0 / m.std, -m.mean / m.std)]
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return [batchnorm_affine(m, len(shape))]
    conv = MODULES.get(type(m))
    if conv is None:
        raise ConfigError(f"layer {type(m).__name__} is not supported for certified training; "
                          f"use {', '.join(t.__name__ for t in MODULES)}")
    out = conv(m, shape)
    if isinstance(m, (nn.Linear, nn.Conv2d)):  # the converter copied the weights: use the live ones
        out[-1] = dataclasses.replace(out[-1], weight=m.weight, bias_=m.bias)
    return out


def live_graph(module: nn.Sequential, input_shape: Sequence[int]) -> Graph:
    """A Graph computing ``module`` whose Linear/Conv2d weights are the module's Parameter
    objects themselves (not copies): build it once, after moving the module to its device;
    every optimiser step is then seen by the graph, and bounds computed on it with
    ``compute_bounds(..., grad=True)`` are differentiable in the parameters. BatchNorm nodes
    hold the affine map of the statistics at build time: see :func:`live_batchnorm`."""
    return _live(module, input_shape)[0]


def _live(module: nn.Module, input_shape: Sequence[int]) -> tuple[Graph, dict[str, nn.Module]]:
    shape: Shape = tuple(int(s) for s in input_shape)
    nodes: list[Node] = []
    bn: dict[str, nn.Module] = {}
    _live_chain(nodes, module, "input", shape, "", _device(module), bn)
    return Graph(nodes, shape), bn


def batchnorm_affine(m: nn.Module, rank: int) -> ops.ElementwiseAffine:
    """BatchNorm ``m`` as the map ``x·scale + shift`` it applies to inputs of ``rank`` dims
    (batch excluded): while ``m.training``, with the statistics of the batch its last forward
    pass saw (recorded by :class:`LiveBatchNorm`'s hook; differentiable in them and in γ, β,
    as BatchNorm's own output is), else (or before any forward pass) with its running ones."""
    batch = m.__dict__.get("_nncert_batch") if m.training else None
    if batch is None and m.running_mean is None:
        raise ConfigError("BatchNorm without running statistics (track_running_stats=False) "
                          "has no fixed map to certify")
    mean, var = batch if batch is not None else (m.running_mean, m.running_var)
    scale = torch.rsqrt(var + m.eps)
    shift = -mean * scale
    if m.weight is not None:
        scale, shift = scale * m.weight, shift * m.weight
    if m.bias is not None:
        shift = shift + m.bias
    view = (-1,) + (1,) * (rank - 1)
    return ops.ElementwiseAffine(scale.reshape(view), shift.reshape(view))


def _record_batch(m: nn.Module, inputs: tuple, output) -> None:
    if m.training:
        x = inputs[0]
        dims = (0, *range(2, x.dim()))
        m.__dict__["_nncert_batch"] = (x.mean(dims), x.var(dims, unbiased=False))


class LiveBatchNorm:
    """Keeps a live graph's BatchNorm nodes in step with their modules. Training with
    BatchNorm (Shi et al. 2021): the module's forward pass on the clean batch, in training
    mode, normalises with that batch's statistics and records them; :meth:`graph` is then
    the live graph with each BatchNorm node the affine map of those statistics, so the bounds
    of that step are sound bounds of the very function the clean pass computed. In eval mode
    :meth:`graph` uses the running statistics: the exported network's map."""

    def __init__(self, graph: Graph, modules: dict[str, nn.Module]):
        self.base, self.modules = graph, modules
        for m in modules.values():
            if not m.__dict__.get("_nncert_hooked"):
                m.register_forward_hook(_record_batch)
                m.__dict__["_nncert_hooked"] = True

    def graph(self) -> Graph:
        g = self.base
        return g.with_ops({name: batchnorm_affine(m, len(g.shapes[name]))
                           for name, m in self.modules.items()})


def live_batchnorm(module: nn.Module, input_shape: Sequence[int]) -> tuple[Graph, LiveBatchNorm | None]:
    """:func:`live_graph`, and a :class:`LiveBatchNorm` for it when ``module`` has BatchNorm
    layers (None otherwise: the graph is then always current)."""
    graph, bn = _live(module, input_shape)
    return graph, (LiveBatchNorm(graph, bn) if bn else None)


def _live_chain(nodes: list[Node], module: nn.Module, src: str, shape: Shape, prefix: str,
                device: torch.device, bn: dict[str, nn.Module]) -> tuple[str, Shape]:
    """Append the nodes of ``module``'s leaves after node ``src``; the last node and its shape.
    BatchNorm nodes are entered in ``bn`` (node name → module)."""
    for i, m in enumerate(_leaves(module)):
        name = f"{prefix}{type(m).__name__.lower()}{i}"
        if isinstance(m, Residual):
            body, body_shape = _live_chain(nodes, m.body, src, shape, f"{name}_body_", device, bn)
            short, short_shape = src, shape
            if m.shortcut is not None:
                short, short_shape = _live_chain(nodes, m.shortcut, src, shape,
                                                 f"{name}_shortcut_", device, bn)
            if body_shape != short_shape:
                raise ConfigError(f"residual block {name}: its body gives shape {body_shape}, "
                                  f"its shortcut {short_shape}")
            nodes.append(Node(name, ops.Add(), (body, short)))
            src, shape = name, body_shape
            continue
        for j, op in enumerate(_live_ops(m, shape)):
            nodes.append(Node(name + (f"_{j}" if j else ""), op, (src,)))
            src = nodes[-1].name
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                bn[src] = m
            with torch.no_grad():
                shape = tuple(op.forward(torch.zeros((1, *shape), device=device)).shape[1:])
    return src, shape


def _device(module: nn.Module) -> torch.device:
    for t in [*module.parameters(), *module.buffers()]:
        return t.device
    return torch.device("cpu")
