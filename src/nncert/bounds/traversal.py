"""Generic walks over the Graph: up-front support checks and forward propagation through a
domain's ``{op type: transformer}`` table."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..errors import UnsupportedOpError
from ..models.graph import Graph

Table = Mapping[type, Callable[..., Any]]


def check_supported(graph: Graph, table: Table, method: str) -> None:
    """Raise UnsupportedOpError naming the method, op and node before any work starts."""
    for node in graph:
        if type(node.op) not in table:
            raise UnsupportedOpError(node.op.kind, node.name, f"method {method!r}",
                                     [t.__name__ for t in table])


def forward_walk(graph: Graph, table: Table, init: Any, method: str) -> dict[str, Any]:
    """Apply each node's transformer in topological order, starting from the element ``init``
    of the graph input. Returns the element of every node (and of the input)."""
    check_supported(graph, table, method)
    values: dict[str, Any] = {graph.input_name: init}
    for node in graph:
        fn = table[type(node.op)]
        values[node.name] = fn(node.op, *(values[s] for s in node.inputs))
    return values
