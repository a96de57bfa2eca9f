"""Torch threads vs model size: the measurement behind ``nncert --threads``' default.

    python bench/threads_bench.py                    # 1, 2, 4, ... up to the core count
    python bench/threads_bench.py --threads 1,2 --repeats 5

For three model sizes (the demo's 64-64-32-10 MLP on 8x8 digits, a 784-256-256-10 MNIST MLP, a
CIFAR-sized ConvNet with ~3k ReLUs) it times, per thread count, CROWN bounds of a batch of 32
L∞ balls (4 for the ConvNet) and one training step (forward + backward + Adam) on a batch of
128. Prints the median of ``--repeats`` runs in milliseconds and each row's ratio to one thread
(< 1: more threads help). Timings depend on the machine and its load: run it on the machine you will use.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from torch import nn

import nncert

BOUNDS_BATCH = 32


def _models() -> dict[str, tuple[nn.Module, tuple[int, ...]]]:
    torch.manual_seed(0)
    return {
        "mlp-digits (6k params)": (nn.Sequential(
            nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(),
            nn.Linear(32, 10)), (1, 8, 8)),
        "mlp-mnist (270k params)": (nn.Sequential(
            nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
            nn.Linear(256, 10)), (1, 28, 28)),
        "convnet-cifar (3k ReLUs)": (nn.Sequential(
            nn.Conv2d(3, 8, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(8, 16, 4, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
            nn.Linear(16 * 8 * 8, 100), nn.ReLU(), nn.Linear(100, 10)), (3, 32, 32)),
    }


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def _bounds_fn(net: nn.Module, shape: tuple[int, ...]):
    graph = nncert.load(net, shape)
    batch = BOUNDS_BATCH if len(shape) < 3 or shape[0] == 1 else 4  # the ConvNet: 4 balls
    x = torch.rand(batch, *shape)
    problem = nncert.robustness_problem(graph, x, torch.zeros(batch, dtype=torch.long), 0.01)
    return lambda: nncert.compute_bounds(problem, "crown")


def _train_fn(net: nn.Module, shape: tuple[int, ...]):
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    x, y = torch.rand(128, *shape), torch.randint(0, 10, (128,))

    def step():
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cores = os.cpu_count() or 1
    default = ",".join(str(t) for t in sorted({1, 2, 4, 8, 16, cores}) if t <= cores)
    ap.add_argument("--threads", default=default, help=f"thread counts (default {default})")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--only", default=None, help="only models whose name contains this")
    args = ap.parse_args()
    counts = [int(t) for t in args.threads.split(",")]
    print(f"{cores} cores; median of {args.repeats} runs, ms (ratio to 1 thread)")
    print("| model | task | " + " | ".join(f"{t} thr" for t in counts) + " |")
    print("|---|---|" + "---|" * len(counts))
    for name, (net, shape) in _models().items():
        if args.only and args.only not in name:
            continue
        for task, make in (("crown, batch 32 (convnet 4)", _bounds_fn), ("train step, batch 128", _train_fn)):
            fn = make(net, shape)
            row = []
            for t in counts:
                torch.set_num_threads(t)
                row.append(_median_ms(fn, args.repeats))
            cells = [f"{ms:.1f} ({ms / row[0]:.2f})" for ms in row]
            print(f"| {name} | {task} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
