"""CROWN against auto_LiRPA on the same problems: bound differences and the time ratio.

auto_LiRPA is not a dependency of nncert, and its last PyPI release (0.3) needs torch < 2 and
numpy < 2, so it runs in a separate interpreter given by ``--lirpa-python`` (a virtual
environment with torch 1.13, numpy < 2 and auto_LiRPA). This script

1. loads each mnistfc network with nncert, builds the robustness problems of the first
   ``--count`` images of ERAN's MNIST CSV at each eps, and times nncert's CROWN (batched);
2. hands the same weights, inputs and spec matrices to the other interpreter (``--role lirpa``),
   which times auto_LiRPA's CROWN (``method="CROWN"``, same spec matrix C);
3. prints and writes (bench/out/crown_vs_auto_lirpa.md) the max |difference| of the lower
   bounds and the time ratio ours / theirs. Both sides use the same number of torch threads.

    python bench/crown_vs_auto_lirpa.py --lirpa-python /path/to/venv/bin/python
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def lirpa_role(npz: Path, out: Path, repeats: int) -> None:
    """Runs inside the auto_LiRPA interpreter: CROWN bounds of C·y for each problem."""
    import torch
    from auto_LiRPA import BoundedModule, BoundedTensor, PerturbationLpNorm

    data = np.load(npz)
    torch.set_num_threads(int(data["threads"]))
    layers = []
    n_layers = int(data["n_layers"])
    for i in range(n_layers):
        W, b = torch.from_numpy(data[f"W{i}"]), torch.from_numpy(data[f"b{i}"])
        lin = torch.nn.Linear(W.shape[1], W.shape[0])
        lin.weight.data, lin.bias.data = W, b
        layers += [lin, torch.nn.ReLU()] if i < n_layers - 1 else [lin]
    model = torch.nn.Sequential(*layers).eval()
    x, lo, hi = (torch.from_numpy(data[k]) for k in ("x", "lo", "hi"))
    C = torch.from_numpy(data["C"])
    bm = BoundedModule(model, torch.zeros_like(x), device="cpu")
    ptb = PerturbationLpNorm(norm=np.inf, x_L=lo, x_U=hi)
    bx = BoundedTensor(x, ptb)
    times = []
    with torch.no_grad():
        for _ in range(repeats):
            t0 = time.perf_counter()
            lb, _ = bm.compute_bounds(x=(bx,), method="CROWN", C=C, bound_upper=False)
            times.append(time.perf_counter() - t0)
    np.savez(out, lower=lb.numpy(), time=np.array(min(times)))


def nncert_side(net: str, eps: float, count: int, threads: int, repeats: int, tmp: Path):
    import torch

    import nncert
    from nncert.bounds.crown import CrownConfig
    from nncert.data import load_dataset, to_unit
    from nncert.models import ops

    torch.set_num_threads(threads)
    graph = nncert.load(SHARED / "benchmarks/mnistfc/onnx" / f"mnist-net_{net}.onnx")
    data = load_dataset(SHARED / "data/eran/mnist_test.csv", count=count)
    x = to_unit(data).reshape(count, *graph.input_shape)
    problem = nncert.robustness_problem(graph, x, data.labels, eps)
    out = {}
    for mode, cfg in (("default", CrownConfig()), ("textbook", CrownConfig(intersect_ibp=False))):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            b = nncert.compute_bounds(problem, "crown", cfg)
            times.append(time.perf_counter() - t0)
        out[mode] = (b.lower.numpy(), min(times))
    linears = [n.op for n in graph if isinstance(n.op, ops.Linear)]
    arrays = {f"W{i}": op.weight.numpy() for i, op in enumerate(linears)}
    arrays |= {f"b{i}": op.bias_.numpy() for i, op in enumerate(linears)}
    npz = tmp / f"{net}_{eps}.npz"
    np.savez(npz, n_layers=len(linears), x=x.reshape(count, -1).numpy(),
             lo=problem.input_set.lower.reshape(count, -1).numpy(),
             hi=problem.input_set.upper.reshape(count, -1).numpy(),
             C=problem.output_spec.C.numpy(), threads=threads, **arrays)
    return out, npz


def lirpa_python_problem(python: str) -> str | None:
    """Why ``python`` cannot run the auto_LiRPA side (one line), or None when it can."""
    path = shutil.which(python)
    if path is None:
        return "no such interpreter (give the path of a python with auto_LiRPA installed)"
    probe = subprocess.run([path, "-c", "import auto_LiRPA"], capture_output=True, text=True)
    if probe.returncode != 0:
        lines = (probe.stderr or "").strip().splitlines()
        return "cannot import auto_LiRPA" + (f" ({lines[-1]})" if lines else "")
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lirpa-python", help="interpreter with auto_LiRPA installed")
    ap.add_argument("--role", default="main", choices=["main", "lirpa"])
    ap.add_argument("--npz")
    ap.add_argument("--result")
    ap.add_argument("--nets", default="256x2,256x4,256x6")
    ap.add_argument("--eps", default="0.01,0.02")
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench/out/crown_vs_auto_lirpa.md"))
    args = ap.parse_args()
    if args.role == "lirpa":
        lirpa_role(Path(args.npz), Path(args.result), args.repeats)
        return 0
    if not args.lirpa_python:
        print("auto_LiRPA comparison skipped: pass --lirpa-python (see the module docstring)")
        return 0
    problem = lirpa_python_problem(args.lirpa_python)
    if problem:
        print(f"crown_vs_auto_lirpa: error: --lirpa-python {args.lirpa_python}: {problem}",
              file=sys.stderr)
        return 2
    rows = ["| net | eps | images | max abs diff (textbook) | nncert textbook s | nncert default s "
            "| auto_LiRPA s | ratio textbook/theirs | ratio default/theirs | default tighter by (max) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for net in args.nets.split(","):
            for eps in (float(e) for e in args.eps.split(",")):
                ours, npz = nncert_side(net, eps, args.count, args.threads, args.repeats, tmp)
                res = tmp / "lirpa.npz"
                subprocess.run([args.lirpa_python, __file__, "--role", "lirpa", "--npz", str(npz),
                                "--result", str(res), "--repeats", str(args.repeats)], check=True,
                               stderr=subprocess.DEVNULL)
                theirs = np.load(res)
                (text_lb, t_text), (def_lb, t_def) = ours["textbook"], ours["default"]
                diff = float(np.abs(text_lb - theirs["lower"]).max())
                gain = float((def_lb - theirs["lower"]).max())
                t_theirs = float(theirs["time"])
                rows.append(f"| {net} | {eps} | {args.count} | {diff:.2e} | {t_text:.3f} | {t_def:.3f} "
                            f"| {t_theirs:.3f} | {t_text / t_theirs:.2f} | {t_def / t_theirs:.2f} "
                            f"| {gain:.3f} |")
                print(rows[-1], flush=True)
    text = "\n".join([
        "# CROWN: nncert vs auto_LiRPA 0.3", "",
        f"Command: `python bench/crown_vs_auto_lirpa.py --lirpa-python PY --threads {args.threads}`; "
        f"best of {args.repeats} runs each, batch of {args.count} images, {args.threads} torch threads, CPU.",
        "textbook = `CrownConfig(intersect_ibp=False)`: the same algorithm as auto_LiRPA's CROWN (every",
        "relaxed neuron back-substituted, nothing intersected); max abs diff compares its lower bounds",
        "with auto_LiRPA's over all images and rows. default = nncert's default CROWN (back-substitutes",
        "only neurons that interval bounds leave unstable, intersects with interval bounds): never looser.",
        "", *rows, ""])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
