"""Exact graph rewrites that make loaded graphs smaller and bounds tighter.

``simplify(graph)`` applies, until none matches:

* drop identity-like nodes (a Reshape to the same shape, a Flatten of a 1-D value, an identity
  Transpose, a zero Pad, an ElementwiseAffine with scale 1 and shift 0), and merge chains of
  Reshape/Flatten;
* fold an ElementwiseAffine that follows a Linear or Conv2d into it, when its scale and shift
  are per output feature / per channel and nothing else reads the layer (MatMul + Add → Linear
  with bias, Conv + BatchNorm → Conv);
* merge consecutive ElementwiseAffines (the first read by nothing else);
* merge Linear∘Linear when nothing else reads the middle and the product is no larger.

An input-normalisation ElementwiseAffine at the front stays where it is: it is never folded
forward into the first layer (bounds on the normalised input are tighter).

Guarantee: the result computes the same function (up to float rounding: folding is done in
float64 and cast back to the graph's dtype).
"""

from __future__ import annotations

import dataclasses

import torch

from . import ops
from .graph import Graph, Node


def simplify(graph: Graph) -> Graph:
    """An equivalent, usually smaller graph (see the module docstring for the rewrites)."""
    changed = True
    while changed:
        changed = False
        for rule in RULES:
            edit = _Edit(graph)
            rule(graph, edit)
            if edit.changed:
                graph, changed = edit.result(), True
    return graph


# -- helpers ---------------------------------------------------------------------------------
class _Edit:
    """Non-overlapping rewrites of one graph, applied together by :meth:`result` (one rebuild
    per pass: building a Graph runs it once)."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.replace: dict[str, Node] = {}
        self.rename: dict[str, str] = {}  # dropped node → the value its readers read instead
        self.touched: set[str] = set()
        self.readers: dict[str, int] = {}
        for n in graph.nodes:
            for src in set(n.inputs):
                self.readers[src] = self.readers.get(src, 0) + 1

    @property
    def changed(self) -> bool:
        return bool(self.replace or self.rename)

    def free(self, *names: str) -> bool:
        return not self.touched.intersection(names)

    def put(self, node: Node, drop: str | None = None, also: str | None = None) -> None:
        """``node`` replaces the node of the same name; node ``drop`` is removed, its readers
        rewired to ``node``; ``also`` is marked as used by this rewrite."""
        self.replace[node.name] = node
        self.touched.update(x for x in (node.name, drop, also) if x)
        if drop:
            self.rename[drop] = node.name

    def drop(self, name: str, src: str) -> None:
        self.rename[name] = src
        self.touched.update((name, src))

    def resolve(self, name: str) -> str:
        while name in self.rename:
            name = self.rename[name]
        return name

    def sole_reader(self, name: str) -> bool:
        """Node ``name`` is read by exactly one node and is not the graph output."""
        return name != self.graph.output_name and self.readers.get(name, 0) == 1

    def producer(self, node: Node, kinds: tuple[type, ...]) -> Node | None:
        """The node feeding ``node`` when it is of one of ``kinds``, read by nothing else and
        untouched by this pass."""
        if len(node.inputs) != 1 or node.inputs[0] == self.graph.input_name:
            return None
        prev = self.graph.node(node.inputs[0])
        if isinstance(prev.op, kinds) and self.sole_reader(prev.name) and self.free(prev.name, node.name):
            return prev
        return None

    def result(self) -> Graph:
        g = self.graph
        nodes = []
        for n in g.nodes:
            if n.name in self.rename:
                continue
            n = self.replace.get(n.name, n)
            nodes.append(Node(n.name, n.op, tuple(self.resolve(s) for s in n.inputs)))
        output = self.resolve(g.output_name)
        live = {output}
        for n in reversed(nodes):
            if n.name in live:
                live.update(n.inputs)
        return Graph([n for n in nodes if n.name in live], g.input_shape, g.input_name, output)


def _f64(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach().to(torch.float64)


def _is_identity(graph: Graph, node: Node) -> bool:
    op = node.op
    if len(node.inputs) != 1:
        return False
    same_shape = graph.shapes[node.inputs[0]] == graph.shapes[node.name]
    if isinstance(op, (ops.Reshape, ops.Flatten)):
        return same_shape
    if isinstance(op, ops.Transpose):
        return list(op.perm) == sorted(op.perm)
    if isinstance(op, ops.Pad):
        return not any(op.pads)
    if isinstance(op, ops.ElementwiseAffine):
        return same_shape and (op.scale is None or bool((op.scale == 1).all())) and (
            op.shift is None or bool((op.shift == 0).all()))
    return False


# -- rules: each records its rewrites in the edit ----------------------------------------------
def drop_identity(graph: Graph, edit: _Edit) -> None:
    for node in graph.nodes:
        if not _is_identity(graph, node):
            continue
        src = edit.resolve(node.inputs[0])
        if node.name == graph.output_name and src == graph.input_name:
            continue
        edit.drop(node.name, node.inputs[0])


def merge_reshapes(graph: Graph, edit: _Edit) -> None:
    """Reshape/Flatten of a Reshape/Flatten read by nothing else → one Reshape."""
    for node in graph.nodes:
        if not isinstance(node.op, (ops.Reshape, ops.Flatten)):
            continue
        prev = edit.producer(node, (ops.Reshape, ops.Flatten))
        if prev is not None:
            edit.put(Node(node.name, ops.Reshape(graph.shapes[node.name]), prev.inputs), also=prev.name)


def _per_feature(op: ops.ElementwiseAffine, shape: tuple[int, ...]) -> tuple | None:
    """(scale, shift) of ``op`` as float64 vectors over dim 0 of ``shape``, or None when they
    vary along other dims."""
    out = []
    for t, default in ((op.scale, 1.0), (op.shift, 0.0)):
        if t is None:
            out.append(torch.full((shape[0],), default, dtype=torch.float64))
            continue
        try:
            full = torch.broadcast_to(_f64(t), shape)
        except RuntimeError:
            return None
        if torch.broadcast_shapes(t.shape, shape) != torch.Size(shape):
            return None
        first = full.reshape(shape[0], -1)
        if not bool((first == first[:, :1]).all()):
            return None
        out.append(first[:, 0])
    return tuple(out)


def fold_affine(graph: Graph, edit: _Edit) -> None:
    """ElementwiseAffine after a Linear/Conv2d (read only by it) → one Linear/Conv2d."""
    for node in graph.nodes:
        if not isinstance(node.op, ops.ElementwiseAffine):
            continue
        prev = edit.producer(node, (ops.Linear, ops.Conv2d))
        if prev is None:
            continue
        vec = _per_feature(node.op, graph.shapes[prev.name])
        if vec is not None:
            edit.put(Node(prev.name, _scaled(prev.op, *vec), prev.inputs), drop=node.name)


def _scaled(op: ops.Linear | ops.Conv2d, scale: torch.Tensor, shift: torch.Tensor):
    """``op`` followed by ``y * scale + shift`` per output feature/channel."""
    dtype = op.weight.dtype
    w = _f64(op.weight)
    b = _f64(op.bias_) if op.bias_ is not None else torch.zeros(w.shape[0], dtype=torch.float64)
    w = w * scale.view(-1, *([1] * (w.dim() - 1)))
    b = b * scale + shift
    return dataclasses.replace(op, weight=w.to(dtype), bias_=b.to(dtype))


def merge_affines(graph: Graph, edit: _Edit) -> None:
    """ElementwiseAffine of an ElementwiseAffine read by nothing else → one."""
    for node in graph.nodes:
        if not isinstance(node.op, ops.ElementwiseAffine):
            continue
        prev = edit.producer(node, (ops.ElementwiseAffine,))
        if prev is None:
            continue
        a, b = prev.op, node.op
        dtype = graph.dtype
        s1 = _f64(a.scale) if a.scale is not None else None
        s2 = _f64(b.scale) if b.scale is not None else None
        scale = s1 if s2 is None else (s2 if s1 is None else s1 * s2)
        shift = None
        if a.shift is not None:
            shift = _f64(a.shift) if s2 is None else _f64(a.shift) * s2
        if b.shift is not None:
            shift = _f64(b.shift) if shift is None else shift + _f64(b.shift)
        op = ops.ElementwiseAffine(None if scale is None else scale.to(dtype),
                                   None if shift is None else shift.to(dtype))
        edit.put(Node(node.name, op, prev.inputs), also=prev.name)


def merge_linears(graph: Graph, edit: _Edit) -> None:
    """Linear of a Linear read by nothing else → one Linear, when that is no larger."""
    for node in graph.nodes:
        if not isinstance(node.op, ops.Linear):
            continue
        prev = edit.producer(node, (ops.Linear,))
        if prev is None:
            continue
        w1, w2 = _f64(prev.op.weight), _f64(node.op.weight)
        if w2.shape[0] * w1.shape[1] > w1.numel() + w2.numel():
            continue
        b = torch.zeros(w2.shape[0], dtype=torch.float64)
        if prev.op.bias_ is not None:
            b = b + w2 @ _f64(prev.op.bias_)
        if node.op.bias_ is not None:
            b = b + _f64(node.op.bias_)
        dtype = node.op.weight.dtype
        op = ops.Linear((w2 @ w1).to(dtype), b.to(dtype))
        edit.put(Node(node.name, op, prev.inputs), also=prev.name)


RULES = (drop_identity, merge_reshapes, fold_affine, merge_affines, merge_linears)
