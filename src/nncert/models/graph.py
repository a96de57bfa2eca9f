"""The one network IR: a batch-first DAG of nodes in topological order.

A Graph has exactly one input (named by ``input_name``) and one output. Nodes refer to their
inputs by name; the graph input is a valid name. Shapes stored here never include the batch
dim. The graph is immutable: ``to()`` returns a new one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

from ..errors import ModelError, NumericalError, ShapeError
from ..utils import one_line
from .ops import Op, Shape


@dataclass(frozen=True)
class Node:
    """One op applied to the outputs of earlier nodes (or the graph input), by name."""

    name: str
    op: Op
    inputs: tuple[str, ...]


class Graph:
    """Topologically ordered nodes with concrete evaluation.

    Guarantees after construction: names are unique, every input name refers to the graph input
    or an earlier node, op arities match, all weights are finite, and ``shapes`` holds the
    output shape (no batch dim) of every node and of the input.
    """

    def __init__(
        self,
        nodes: Iterable[Node],
        input_shape: Shape,
        input_name: str = "input",
        output_name: str | None = None,
    ):
        self.nodes: tuple[Node, ...] = tuple(nodes)
        self.input_name = input_name
        self.input_shape: Shape = tuple(int(s) for s in input_shape)
        if not self.nodes:
            raise ModelError("a graph needs at least one node")
        self.output_name = output_name or self.nodes[-1].name
        self._by_name = {n.name: n for n in self.nodes}
        self._check_structure()
        self.shapes: dict[str, Shape] = self._infer_shapes()

    # -- construction checks -------------------------------------------------------------
    def _check_structure(self) -> None:
        seen = {self.input_name}
        for node in self.nodes:
            if node.name in seen:
                raise ModelError(f"duplicate node name {node.name!r}")
            for src in node.inputs:
                if src not in seen:
                    raise ModelError(
                        f"node {node.name!r} reads {src!r}, which is not an earlier node"
                    )
            arity = type(node.op).n_inputs
            if arity >= 0 and len(node.inputs) != arity:
                raise ModelError(
                    f"node {node.name!r} ({node.op.kind}) takes {arity} inputs, "
                    f"got {len(node.inputs)}"
                )
            for t in node.op.tensors():
                if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                    raise NumericalError(f"node {node.name!r} ({node.op.kind}) has NaN/inf weights")
            seen.add(node.name)
        if self.output_name not in self._by_name:
            raise ModelError(f"output {self.output_name!r} is not a node")

    def _infer_shapes(self) -> dict[str, Shape]:
        x = torch.zeros((1, *self.input_shape), dtype=self.dtype, device=self.device)
        try:
            values = self.forward_all(x)
        except ShapeError:
            raise
        except (RuntimeError, ValueError, IndexError) as e:
            raise ModelError(f"graph does not run on input shape {self.input_shape}: {e}") from e
        return {name: tuple(v.shape[1:]) for name, v in values.items()}

    # -- queries ---------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def node(self, name: str) -> Node:
        return self._by_name[name]

    def consumers(self, name: str) -> list[Node]:
        return [n for n in self.nodes if name in n.inputs]

    @property
    def output_shape(self) -> Shape:
        return self.shapes[self.output_name]

    @property
    def num_inputs(self) -> int:
        return math.prod(self.input_shape)

    @property
    def num_outputs(self) -> int:
        return math.prod(self.output_shape)

    @property
    def dtype(self) -> torch.dtype:
        for n in self.nodes:
            for t in n.op.tensors():
                if t.is_floating_point():
                    return t.dtype
        return torch.get_default_dtype()

    @property
    def device(self) -> torch.device:
        for n in self.nodes:
            for t in n.op.tensors():
                return t.device
        return torch.device("cpu")

    def op_kinds(self) -> list[str]:
        return sorted({n.op.kind for n in self.nodes})

    def num_parameters(self) -> int:
        return sum(t.numel() for n in self.nodes for t in n.op.tensors())

    # -- evaluation ------------------------------------------------------------------------
    def check_input(self, x: torch.Tensor) -> None:
        if tuple(x.shape[1:]) != self.input_shape:
            raise ShapeError("model input (batch dim excluded)", self.input_shape, tuple(x.shape[1:]))

    def forward_all(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Values of the input and of every node, batch-first."""
        self.check_input(x)
        values = {self.input_name: x}
        for node in self.nodes:
            values[node.name] = node.op.forward(*(values[s] for s in node.inputs))
        return values

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The network's output on a batch ``x`` of shape (N, *input_shape)."""
        return self.forward_all(x)[self.output_name]

    __call__ = forward

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Graph:
        nodes = [Node(n.name, n.op.to(device, dtype), n.inputs) for n in self.nodes]
        return Graph(nodes, self.input_shape, self.input_name, self.output_name)

    def with_ops(self, replace: dict[str, Op]) -> Graph:
        """A copy whose named nodes compute ``replace[name]`` instead; each new op must keep its
        node's arity and output shape (not re-inferred: this is cheap enough to call per
        training step, e.g. to set BatchNorm nodes to a batch's statistics)."""
        unknown = set(replace) - set(self._by_name)
        if unknown:
            raise ModelError(f"with_ops: no node named {', '.join(sorted(unknown))}")
        g = object.__new__(Graph)
        g.__dict__.update(self.__dict__)
        g.nodes = tuple(Node(n.name, replace[n.name], n.inputs) if n.name in replace else n
                        for n in self.nodes)
        g._by_name = {n.name: n for n in g.nodes}
        return g

    def summary(self) -> str:
        """One line per node: name, op, inputs, output shape."""
        rows = [f"{'input':<24} {'Input':<18} {'':<20} {self.input_shape}"]
        for n in self.nodes:
            rows.append(
                f"{n.name:<24} {n.op.kind:<18} {','.join(n.inputs):<20} {self.shapes[n.name]}"
            )
        return "\n".join(rows)

    def __repr__(self) -> str:
        return (
            f"Graph({len(self.nodes)} nodes, input {self.input_shape}, output {self.output_shape})"
        )


def sequential(ops: Iterable[Op], input_shape: Shape, prefix: str = "n") -> Graph:
    """A chain graph: each op reads the previous one. Names are ``{prefix}0, {prefix}1, ...``."""
    nodes, prev = [], "input"
    for i, op in enumerate(ops):
        name = f"{prefix}{i}"
        nodes.append(Node(name, op, (prev,)))
        prev = name
    return Graph(nodes, input_shape)


def prepend(graph: Graph, op: Op, name: str = "prep") -> Graph:
    """A graph computing ``graph(op(x))``: ``op`` (e.g. input normalisation) becomes the first
    node and reads the new input. ``op`` must preserve or define the graph's input shape."""
    while name in graph._by_name or name == graph.input_name:
        name += "_"
    x = torch.zeros((1, *graph.input_shape), dtype=graph.dtype, device=graph.device)
    try:
        got = tuple(op.forward(x).shape[1:])
    except RuntimeError as e:
        raise ShapeError(f"prepended {op.kind} cannot take the model input "
                         f"({one_line(e, 120)})", graph.input_shape, ()) from e
    if got != graph.input_shape:
        raise ShapeError(f"prepended {op.kind} must keep the input shape", graph.input_shape, got)
    nodes = [Node(name, op, (graph.input_name,))]
    for n in graph.nodes:
        nodes.append(Node(n.name, n.op, tuple(name if s == graph.input_name else s for s in n.inputs)))
    return Graph(nodes, graph.input_shape, graph.input_name, graph.output_name)


def fresh_name(name: str, taken: set[str]) -> str:
    """``name``, with ``_`` appended until it is not in ``taken`` (which is left unchanged)."""
    while name in taken:
        name += "_"
    return name


def compose(inner: Graph, outer: Graph, prefix: str = "f.") -> Graph:
    """The graph of ``outer(inner(x))`` (e.g. a classifier f after a generator G: f∘G).

    ``inner``'s output must have as many elements as ``outer``'s input; when the shapes differ
    a Reshape node is inserted between them. ``outer``'s nodes are renamed ``prefix + name``
    (with ``_`` appended on a clash); ``inner``'s names are kept. Concrete evaluation equals
    ``outer.forward(inner.forward(x).reshape(...))`` exactly (the same ops, in order)."""
    from .ops import Reshape

    if math.prod(inner.output_shape) != math.prod(outer.input_shape):
        raise ShapeError("composing graphs: inner output vs outer input",
                         outer.input_shape, inner.output_shape)
    outer = outer.to(inner.device, inner.dtype)
    taken = {inner.input_name, *(n.name for n in inner.nodes)}
    nodes = list(inner.nodes)
    link = inner.output_name
    if inner.output_shape != outer.input_shape:
        link = fresh_name(prefix + "reshape_in", taken)
        taken.add(link)
        nodes.append(Node(link, Reshape(outer.input_shape), (inner.output_name,)))
    rename = {outer.input_name: link}
    for n in outer.nodes:
        rename[n.name] = fresh_name(prefix + n.name, taken)
        taken.add(rename[n.name])
        nodes.append(Node(rename[n.name], n.op, tuple(rename[s] for s in n.inputs)))
    return Graph(nodes, inner.input_shape, inner.input_name, rename[outer.output_name])
