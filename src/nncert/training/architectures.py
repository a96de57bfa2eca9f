"""The small networks of the certified-training literature, as ``nn.Sequential`` modules, and
:func:`live_graph`: a Graph whose weights *are* a module's Parameters.

Architectures (``ARCHITECTURES``; inputs (C, H, W) in [0, 1], an optional per-channel
normalisation as the first layer):

* ``fc3x100`` (alias ``fc``): three dense ReLU layers of 100 (ERAN's 3×100 MLP);
* ``convsmall`` / ``convmed`` / ``convbig``: ERAN's ConvSmall (16×4×4/2, 32×4×4/2, 100),
  ConvMed (the same with padding 1) and ConvBig (32×3×3, 32×4×4/2, 64×3×3, 64×4×4/2, 512, 512);
* ``dm-small`` / ``dm-medium`` / ``dm-large``: the models of Gowal et al. 2018, used by
  CROWN-IBP (Zhang et al. 2020);
* ``mlp`` / ``cnn``: the small nets of ``nncert smooth`` (128-128 MLP; Wong & Kolter's CNN).
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
}


def build(arch: str, input_shape: Sequence[int], num_classes: int = 10,
          mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
          seed: int | None = None) -> nn.Sequential:
    """Architecture ``arch`` for inputs ``input_shape`` (C, H, W) in [0, 1], with a
    :class:`Normalize` first layer when ``mean``/``std`` are given. ``seed`` fixes the
    initialisation (PyTorch's default one)."""
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
        raise ConfigError("BatchNorm is not supported in a trained network's bound graph "
                          "(its batch statistics are not a fixed affine map while training)")
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
    ``compute_bounds(..., grad=True)`` are differentiable in the parameters."""
    shape: Shape = tuple(int(s) for s in input_shape)
    nodes, src = [], "input"
    for i, m in enumerate(_leaves(module)):
        for j, op in enumerate(_live_ops(m, shape)):
            name = f"{type(m).__name__.lower()}{i}" + (f"_{j}" if j else "")
            nodes.append(Node(name, op, (src,)))
            src = name
            with torch.no_grad():
                probe = torch.zeros((1, *shape), device=_device(module))
                shape = tuple(op.forward(probe).shape[1:])
    return Graph(nodes, tuple(int(s) for s in input_shape))


def _device(module: nn.Module) -> torch.device:
    for t in [*module.parameters(), *module.buffers()]:
        return t.device
    return torch.device("cpu")
