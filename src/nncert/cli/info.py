"""``nncert info MODEL``: layers, parameter count, shapes, and which methods support it."""

from __future__ import annotations

import argparse
import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..models.graph import Graph


def method_support(graph: Graph) -> dict[str, str]:
    """For each bound method: 'yes', or the reason it cannot run on this graph."""
    from ..bounds import METHODS

    out: dict[str, str] = {}
    seen: set[str] = set()
    for name, target in METHODS.items():
        if target in seen:  # an alias (ibp = interval)
            continue
        seen.add(target)
        module_name = target.split(":")[0]
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            out[name] = "not installed"
            continue
        table = getattr(module, "TRANSFORMERS", None)
        if table is None:
            out[name] = "yes"
            continue
        missing = sorted({n.op.kind for n in graph if type(n.op) not in table})
        out[name] = "yes" if not missing else "no (" + ", ".join(missing) + ")"
    return out


def run(args: argparse.Namespace) -> int:
    from ..models import load

    graph = load(args.model)
    print(f"model:        {args.model}")
    print(f"input shape:  {graph.input_shape}  (batch dim excluded)")
    print(f"output shape: {graph.output_shape}")
    print(f"parameters:   {graph.num_parameters():,}")
    print(f"nodes:        {len(graph)}  ops: {', '.join(graph.op_kinds())}")
    print()
    print(graph.summary())
    print()
    print("methods:")
    for name, status in method_support(graph).items():
        print(f"  {name:<12} {status}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="describe a model: layers, shapes, supported methods",
                       description="Load MODEL (ONNX; .pt files are never unpickled) and print "
                                   "its layers, shapes, parameter count and which bound methods "
                                   "support every one of its ops.")
    p.add_argument("model", help="path to an .onnx (or .onnx.gz) file")
    p.set_defaults(func=run)
