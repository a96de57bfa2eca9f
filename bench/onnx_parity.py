"""ONNX loader parity: every ONNX file under a root, loaded by nncert and run by onnxruntime.

For each file: load it with ``nncert.models.from_onnx``, draw 100 random inputs (ACAS Xu: uniform
inside the normalised input range of the properties; anything else: uniform in [0, 1]), and
compare our Graph's outputs with onnxruntime's on the file.

Relative error = max |ours − ort| / max(max |ort|, 1e-12), over all outputs of all 100 inputs
(the error normalised by the largest output magnitude, not per element).

Usage: ``python bench/onnx_parity.py [ROOT] [--n 100] [--out bench/out/onnx_parity.md]``
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import onnx
import torch

from nncert.models.from_onnx import from_onnx
from nncert.models.onnx_runtime import run_onnx

REPO = Path(__file__).resolve().parents[1]
ACAS_LO = [-0.328423, -0.499999, -0.499999, -0.5, -0.5]
ACAS_HI = [0.679857, 0.499999, 0.499999, 0.5, 0.5]


def _inputs(path: Path, shape: tuple[int, ...], n: int, dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    u = torch.rand((n, *shape), generator=g, dtype=dtype)
    if "acas" in path.name.lower() and shape[-1] == 5:
        lo = torch.tensor(ACAS_LO, dtype=dtype)
        hi = torch.tensor(ACAS_HI, dtype=dtype)
        return lo + (hi - lo) * u
    return u


def check(path: Path, n: int) -> dict:
    onnx_ops = sorted({node.op_type for node in onnx.load(str(path)).graph.node})
    t0 = time.perf_counter()
    try:
        graph = from_onnx(path)
    except Exception as e:  # a report row, not a crash
        return {"model": path, "onnx_ops": onnx_ops, "error": f"{type(e).__name__}: {e}"}
    load_s = time.perf_counter() - t0
    x = _inputs(path, graph.input_shape, n, graph.dtype)
    ours, ref = graph(x).double(), run_onnx(path, x).double()
    abs_err = float((ours - ref).abs().max())
    rel_err = abs_err / max(float(ref.abs().max()), 1e-12)
    return {"model": path, "onnx_ops": onnx_ops, "graph_ops": graph.op_kinds(), "nodes": len(graph),
            "rel": rel_err, "abs": abs_err, "load_s": load_s}


def table(rows: list[dict], root: Path) -> str:
    lines = ["| model | ONNX ops | graph ops | nodes | max rel err | max abs err | load s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        name = r["model"].relative_to(root) if r["model"].is_relative_to(root) else r["model"]
        if "error" in r:
            lines.append(f"| {name} | {', '.join(r['onnx_ops'])} | **{r['error']}** | | | | |")
            continue
        lines.append(f"| {name} | {', '.join(r['onnx_ops'])} | {', '.join(r['graph_ops'])} | "
                     f"{r['nodes']} | {r['rel']:.2e} | {r['abs']:.2e} | {r['load_s']:.3f} |")
    ok = [r for r in rows if "error" not in r]
    if ok:
        lines.append("")
        worst_rel, worst_abs = max(r["rel"] for r in ok), max(r["abs"] for r in ok)
        lines.append(f"{len(ok)}/{len(rows)} files loaded; worst relative error {worst_rel:.2e}, "
                     f"worst absolute error {worst_abs:.2e}.")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", nargs="?", default=str(REPO.parent / "shared" / "benchmarks"))
    ap.add_argument("--n", type=int, default=100, help="random inputs per model")
    ap.add_argument("--out", default=str(REPO / "bench" / "out" / "onnx_parity.md"))
    args = ap.parse_args(argv)
    root = Path(args.root).resolve()
    files = sorted(root.glob("**/*.onnx"))
    if not files:
        print(f"no .onnx files under {root}")
        return 1
    rows = [check(p, args.n) for p in files]
    text = table(rows, root)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    header = (f"# ONNX loader parity vs onnxruntime\n\nRoot: `{root}`; {args.n} random inputs per model. "
              "Relative error = max|ours − ort| / max(max|ort|, 1e-12) over all outputs.\n\n")
    out.write_text(header + text + "\n")
    print(f"\nwritten to {out}")
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
