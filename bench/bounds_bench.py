"""Bound-propagation benchmark: certified robustness counts and time per image per method.

    python bench/bounds_bench.py                      # everything (several minutes on 2 cores)
    python bench/bounds_bench.py --nets 256x2 --eps 0.02 --skip-convnet --skip-memory
    python bench/bounds_bench.py --part memory        # only the ~50k-neuron CIFAR ConvNet

Networks: the mnistfc ONNX models (../shared/benchmarks/mnistfc/onnx) and a small MNIST ConvNet
trained here for one epoch on ../shared/data/mnist. Images: the first 100 of ERAN's
mnist_test.csv (pixels / 255, label in column 0), clipped L∞ balls, batched over the images.
Writes bench/out/bounds.md and prints it. auto_LiRPA is compared when importable (it is not a
dependency). Peak memory of CROWN on a random CIFAR-sized ConvNet (~45k ReLUs) is measured in
a subprocess (peak RSS from resource.getrusage).
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import nncert
from nncert.bounds import METHODS, compute_bounds
from nncert.bounds.alpha_crown import AlphaCrownConfig
from nncert.data import load_dataset, to_unit

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
ONNX = SHARED / "benchmarks" / "mnistfc" / "onnx"
ERAN_CSV = SHARED / "data" / "eran" / "mnist_test.csv"
MNIST = SHARED / "data" / "mnist"
OUT = ROOT / "bench" / "out"
ALL_METHODS = ("interval", "zonotope", "deeppoly", "crown", "alpha-crown")


def available_methods(wanted) -> list[str]:
    out = []
    for m in wanted:
        if importlib.util.find_spec(METHODS[m].split(":")[0]) is not None:
            out.append(m)
    return out


def eran_images(n: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    rows = np.loadtxt(ERAN_CSV, delimiter=",", dtype=np.float32, max_rows=n)
    return torch.from_numpy(rows[:, 1:] / 255.0), torch.from_numpy(rows[:, 0]).long()


def train_convnet(seconds_budget: float = 600.0) -> nn.Module:
    """A small MNIST ConvNet, one epoch of Adam (stops early at the time budget)."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 16, 4, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 4, 2, 1), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 100), nn.ReLU(), nn.Linear(100, 10))
    ds = load_dataset(MNIST / "train-images-idx3-ubyte.gz")
    x, y = to_unit(ds), ds.labels
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    t0 = time.perf_counter()
    perm = torch.randperm(len(y))
    for i in range(0, len(y), 128):
        idx = perm[i:i + 128]
        loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if time.perf_counter() - t0 > seconds_budget:
            break
    return net.eval()


def certify_table(name, graph, x, labels, eps_list, methods) -> list[dict]:
    rows = []
    x = x.reshape(-1, *graph.input_shape)
    correct = graph(x).argmax(1) == labels
    for eps in eps_list:
        prob = nncert.robustness_problem(graph, x, labels, eps)
        for m in methods:
            cfg = AlphaCrownConfig() if m == "alpha-crown" else None
            t0 = time.perf_counter()
            b = compute_bounds(prob, m, cfg)
            dt = time.perf_counter() - t0
            cert = int((prob.output_spec.proved(b.lower) & correct).sum())
            rows.append({"net": name, "eps": eps, "method": m, "certified": cert,
                         "accuracy": int(correct.sum()), "ms_per_image": 1000 * dt / len(labels)})
            print(f"  {name:>10} eps={eps:<6} {m:<12} certified {cert:>3}/{len(labels)} "
                  f"{1000 * dt / len(labels):8.2f} ms/image", flush=True)
    return rows


def auto_lirpa_note() -> str:
    if importlib.util.find_spec("auto_LiRPA") is None:
        return "auto_LiRPA is not importable: comparison skipped."
    return "auto_LiRPA is importable but this bench does not call it yet: comparison skipped."


def crown_timing(graph, x, labels, eps=0.02, repeats=3) -> str:
    prob = nncert.robustness_problem(graph, x.reshape(-1, *graph.input_shape), labels, eps)
    compute_bounds(prob, "crown")  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        compute_bounds(prob, "crown")
        times.append(time.perf_counter() - t0)
    return (f"CROWN, mnist-net_256x6, {len(labels)} images batched, eps={eps}: "
            f"best {min(times):.2f} s, median {sorted(times)[len(times) // 2]:.2f} s "
            f"of {repeats} runs ({torch.get_num_threads()} torch threads)")


def cifar_convnet() -> nncert.Graph:
    """Random CIFAR-sized ConvNet: 16·32² + 32·16² + 64·16² + 64·8² + 512 = 45,568 ReLUs."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, 1, 1), nn.ReLU(), nn.Conv2d(16, 32, 4, 2, 1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, 1, 1), nn.ReLU(), nn.Conv2d(64, 64, 4, 2, 1), nn.ReLU(),
        nn.Flatten(), nn.Linear(64 * 8 * 8, 512), nn.ReLU(), nn.Linear(512, 10))
    return nncert.load(net, (3, 32, 32))


def peak_rss_mib() -> float:
    """Peak resident memory of this process: VmHWM where /proc has it (reset by exec, unlike
    getrusage's ru_maxrss, which a child inherits from the process that started it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_part() -> None:
    g = cifar_convnet()
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    label = g(x).argmax(1)
    prob = nncert.robustness_problem(g, x, label, 2 / 255)
    before = peak_rss_mib()
    t0 = time.perf_counter()
    b = compute_bounds(prob, "crown")
    dt = time.perf_counter() - t0
    peak = peak_rss_mib()
    relus = sum(math.prod(g.shapes[n.name]) for n in g if isinstance(n.op, nncert.models.ops.ReLU))
    print(f"CROWN on a random CIFAR ConvNet with {relus} ReLUs (eps=2/255, 1 image): {dt:.1f} s, "
          f"peak RSS {peak:.0f} MiB (before bounding {before:.0f} MiB); "
          f"lower bound margin min {float(b.lower.min()):.3f}")


def markdown(rows, notes, argv, images: int) -> str:
    lines = ["# Bound propagation benchmark", "",
             "Command: `python " + " ".join(argv) + "`", "",
             f"Certified = property proved and the image correctly classified (of {images}).", "",
             "| net | eps | method | certified | ms / image |", "|---|---:|---|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['net']} | {r['eps']} | {r['method']} | {r['certified']} | "
                     f"{r['ms_per_image']:.2f} |")
    lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nets", nargs="*", default=["256x2", "256x4", "256x6"])
    ap.add_argument("--eps", nargs="*", type=float, default=[0.005, 0.01, 0.02, 0.05])
    ap.add_argument("--methods", nargs="*", default=list(ALL_METHODS))
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--skip-convnet", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--part", choices=["all", "memory"], default="all")
    args = ap.parse_args(argv)
    if args.part == "memory":
        memory_part()
        return
    methods = available_methods(args.methods)
    x, labels = eran_images(args.images)
    rows, notes = [], []
    nets = {n: nncert.load(ONNX / f"mnist-net_{n}.onnx") for n in args.nets}
    for name, g in nets.items():
        rows += certify_table(name, g, x, labels, args.eps, methods)
    if not args.skip_convnet:
        t0 = time.perf_counter()
        conv = nncert.load(train_convnet(), (1, 28, 28))
        notes.append(f"ConvNet (conv16-conv32-fc100, 1 epoch Adam): trained in "
                     f"{time.perf_counter() - t0:.0f} s")
        rows += certify_table("convnet", conv, x.reshape(-1, 1, 28, 28), labels, args.eps, methods)
    if "256x6" in nets:
        notes.append(crown_timing(nets["256x6"], x, labels))
    notes.append(auto_lirpa_note())
    if not args.skip_memory:
        out = subprocess.run([sys.executable, __file__, "--part", "memory"], capture_output=True,
                             text=True, check=True)
        notes.append(out.stdout.strip() + f" (command: `python {Path(__file__).relative_to(ROOT)}"
                     " --part memory`)")
    OUT.mkdir(parents=True, exist_ok=True)
    text = markdown(rows, notes, [str(Path(__file__).relative_to(ROOT))] + sys.argv[1:],
                    int(labels.shape[0]))  # the images that ran (the CSV may hold fewer)
    (OUT / "bounds.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
