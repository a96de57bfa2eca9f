"""Sigmoid MLP on MNIST (784 inputs): instances decided by alpha-CROWN alone, by activation
BaB (``verify`` → "bab-activation") and by input BaB (``branching="input"``), per-instance
timeout.

    PYTHONPATH=$PWD/src OMP_NUM_THREADS=1 python bench/activation_bab.py \\
        --data /work/shared/data/mnist --count 20 --eps 0.012 --timeout 20

The network (784-100-100-10, Sigmoid) is trained here in seconds (10k training images, a
few epochs, plain cross-entropy; fixed seed); images are the first correctly classified test
images. Prints one line per instance and a summary table (Markdown).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import torch
from torch import nn

from nncert.bounds import compute_bounds
from nncert.complete.bab import BaBConfig
from nncert.complete.verify import VerifyConfig, verify
from nncert.data import load_dataset, to_unit
from nncert.models.from_torch import from_torch
from nncert.specs.problem import robustness_problem


def _train(data: Path, hidden: int, epochs: int) -> nn.Module:
    torch.manual_seed(0)
    ds = load_dataset(data / "train-images-idx3-ubyte.gz", count=10000)
    x, y = to_unit(ds).flatten(1), ds.labels
    m = nn.Sequential(nn.Linear(784, hidden), nn.Sigmoid(), nn.Linear(hidden, hidden),
                      nn.Sigmoid(), nn.Linear(hidden, 10))
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    for _ in range(epochs):
        for i in torch.randperm(len(x)).split(128):
            opt.zero_grad()
            nn.functional.cross_entropy(m(x[i]), y[i]).backward()
            opt.step()
    return m.eval()


def _strategies(timeout: float) -> dict[str, VerifyConfig]:
    bab = BaBConfig(timeout_s=timeout)
    return {
        "alpha-crown": VerifyConfig(timeout_s=timeout, complete="none"),
        "activation-bab": VerifyConfig(timeout_s=timeout, bab=bab),
        "input-bab": VerifyConfig(timeout_s=timeout, bab=BaBConfig(timeout_s=timeout,
                                                                   branching="input")),
    }


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("/work/shared/data/mnist"))
    ap.add_argument("--count", type=int, default=20)
    ap.add_argument("--eps", type=float, default=0.012)
    ap.add_argument("--timeout", type=float, default=20.0)
    ap.add_argument("--hidden", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    m = _train(args.data, args.hidden, args.epochs)
    g = from_torch(m, (784,))
    test = load_dataset(args.data, count=500)
    xs, ys = to_unit(test).flatten(1), test.labels
    with torch.no_grad():
        ok = (m(xs).argmax(1) == ys).nonzero().flatten()[:args.count]
    print(f"trained in {time.perf_counter() - t0:.1f} s; test accuracy (500) "
          f"{float((m(xs).argmax(1) == ys).float().mean()):.3f}", flush=True)
    rows, tally = [], {k: Counter() for k in _strategies(args.timeout)}
    for i in ok.tolist():
        p = robustness_problem(g, xs[i:i + 1], ys[i:i + 1], args.eps)
        lb = float(compute_bounds(p, "alpha-crown").lower.min())
        line = [f"img {i:3d} alpha-crown lb {lb:+.4f}"]
        for name, cfg in _strategies(args.timeout).items():
            t = time.perf_counter()
            r = verify(p, cfg)
            dt = time.perf_counter() - t
            tally[name][r.verdict.name] += 1
            tally[name]["time"] += dt
            line.append(f"{name}: {r.verdict.name} ({r.method}, {dt:.1f} s)")
        rows.append(" | ".join(line))
        print(rows[-1], flush=True)
    _summary(tally, args)


def _summary(tally: dict[str, Counter], args) -> None:
    print(f"\n{args.count} images, eps {args.eps}, timeout {args.timeout} s per instance\n")
    print("| strategy | verified | falsified | unknown | timeout | total time (s) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, c in tally.items():
        print(f"| {name} | {c['VERIFIED']} | {c['FALSIFIED']} | {c['UNKNOWN']} | {c['TIMEOUT']} "
              f"| {c['time']:.0f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
