"""The import direction of DESIGN.md: a module may only import from layers above it."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "src" / "nncert"

# DESIGN.md's pipeline order; a module may import only from earlier layers (or its own).
LAYERS = [
    "errors", "tables", "utils", "clock", "result", "models", "data", "specs", "attacks",
    "bounds", "complete", "training", "smoothing", "semantic", "benchmarks", "cli",
]


def _layer(parts: list[str]) -> int | None:
    return LAYERS.index(parts[0]) if parts and parts[0] in LAYERS else None


def _imports(path: Path) -> list[list[str]]:
    rel = path.relative_to(PKG).with_suffix("").parts
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(rel[: len(rel) - node.level])
                mod = base + (node.module.split(".") if node.module else [])
                if not node.module:
                    mod = [*mod, node.names[0].name]
            elif node.module and node.module.startswith("nncert."):
                mod = node.module.split(".")[1:]
            else:
                continue
            found.append(mod)
        elif isinstance(node, ast.Import):
            found += [a.name.split(".")[1:] for a in node.names if a.name.startswith("nncert.")]
    return found


def test_imports_point_up_the_pipeline():
    bad = []
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG).with_suffix("").parts
        own = _layer(list(rel))
        if own is None:
            continue
        for mod in _imports(path):
            other = _layer(mod)
            if other is not None and other > own:
                bad.append(f"{'/'.join(rel)} imports {'.'.join(mod)}")
    assert not bad, "imports against the pipeline direction:\n" + "\n".join(bad)


def test_no_function_over_80_lines_in_the_engine_and_the_search():
    """Issue 13's code target: the bound engine and the search stay in small functions."""
    long = []
    for pkg in ("bounds", "complete"):
        for path in sorted((PKG / pkg).glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > 80:
                        long.append(f"{pkg}/{path.name}:{node.lineno} {node.name} ({lines})")
    assert long == []
