"""Tiny random networks covering every op of the IR, for tests, demos and benchmarks.

``random_graph(kind, seed)`` is deterministic in ``seed``. ``KINDS`` lists the kinds; together
they exercise every op in ``ops.ALL_OPS``.
"""

from __future__ import annotations

import torch

from . import ops
from .graph import Graph, Node, sequential


def _lin(g: torch.Generator, n_in: int, n_out: int, scale: float = 1.0) -> ops.Linear:
    w = torch.randn(n_out, n_in, generator=g) * scale / n_in**0.5
    return ops.Linear(w, torch.randn(n_out, generator=g) * 0.1)


def _conv(g: torch.Generator, c_in: int, c_out: int, k: int = 3, **kw) -> ops.Conv2d:
    groups = kw.get("groups", 1)
    w = torch.randn(c_out, c_in // groups, k, k, generator=g) / (c_in * k * k / groups) ** 0.5
    return ops.Conv2d(w, torch.randn(c_out, generator=g) * 0.1, **kw)


def _act(kind: str) -> ops.Op:
    return {
        "relu": ops.ReLU(), "leaky": ops.LeakyReLU(0.1), "sigmoid": ops.Sigmoid(),
        "tanh": ops.Tanh(),
    }[kind]


def mlp(seed: int = 0, act: str = "relu", widths=(6, 8, 8, 3)) -> Graph:
    g = torch.Generator().manual_seed(seed)
    layers: list[ops.Op] = []
    for i in range(len(widths) - 1):
        layers.append(_lin(g, widths[i], widths[i + 1], 2.0))
        if i < len(widths) - 2:
            layers.append(_act(act))
    return sequential(layers, (widths[0],))


def _conv_net(seed: int, pool: str) -> Graph:
    g = torch.Generator().manual_seed(seed)
    norm = ops.normalize([0.5, 0.4], [0.3, 0.25])
    layers = [
        norm,
        ops.Pad((1, 0, 0, 1)),
        _conv(g, 2, 4, 3, stride=(1, 1), padding=(1, 1)),
        ops.ReLU(),
        ops.MaxPool2d((2, 2), (2, 2)) if pool == "max" else ops.AvgPool2d((2, 2), (2, 2)),
        _conv(g, 4, 4, 3, stride=(2, 2), padding=(1, 1), dilation=(1, 1), groups=2),
        ops.ElementwiseAffine(torch.rand(4, 1, 1, generator=g) + 0.5,
                              torch.randn(4, 1, 1, generator=g) * 0.1),  # folded BatchNorm
        ops.ReLU(),
        ops.Flatten(),
        _lin(g, 4 * 2 * 2, 10),
        ops.ReLU(),
        _lin(g, 10, 3),
    ]
    return sequential(layers, (2, 7, 7))


def residual(seed: int = 0) -> Graph:
    """x → Linear → ReLU → (Linear → ReLU) + skip → Sub/Concat mix → Linear."""
    g = torch.Generator().manual_seed(seed)
    nodes = [
        Node("fc1", _lin(g, 5, 8, 2.0), ("input",)),
        Node("r1", ops.ReLU(), ("fc1",)),
        Node("fc2", _lin(g, 8, 8, 2.0), ("r1",)),
        Node("r2", ops.ReLU(), ("fc2",)),
        Node("add", ops.Add(), ("r2", "r1")),
        Node("fc3", _lin(g, 8, 8, 2.0), ("add",)),
        Node("sub", ops.Sub(), ("fc3", "fc1")),
        Node("r3", ops.LeakyReLU(0.2), ("sub",)),
        Node("cat", ops.Concat(0), ("r3", "add")),
        Node("fc4", _lin(g, 16, 3), ("cat",)),
    ]
    return Graph(nodes, (5,))


def reshape_net(seed: int = 0) -> Graph:
    """Reshape and Transpose between dense layers."""
    g = torch.Generator().manual_seed(seed)
    layers = [
        _lin(g, 6, 12, 2.0), ops.Tanh(), ops.Reshape((3, 4)), ops.Transpose((1, 0)),
        ops.Flatten(), _lin(g, 12, 3),
    ]
    return sequential(layers, (6,))


KINDS = ("relu", "leaky", "sigmoid", "tanh", "conv-max", "conv-avg", "residual", "reshape")


def random_graph(kind: str = "relu", seed: int = 0) -> Graph:
    """A small random network of the given kind (see ``KINDS``)."""
    if kind in ("relu", "leaky", "sigmoid", "tanh"):
        return mlp(seed, kind)
    if kind == "conv-max":
        return _conv_net(seed, "max")
    if kind == "conv-avg":
        return _conv_net(seed, "avg")
    if kind == "residual":
        return residual(seed)
    if kind == "reshape":
        return reshape_net(seed)
    raise ValueError(f"unknown kind {kind!r}; choose from {KINDS}")


def sample_inputs(graph: Graph, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` inputs in [0, 1] of the graph's input shape."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, *graph.input_shape), generator=g, dtype=graph.dtype)
