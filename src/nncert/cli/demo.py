"""``nncert demo``: the embedded default — train on scikit-learn digits, certify, print."""

from __future__ import annotations

import argparse
import importlib

from .common import check_writable, write_json


def _available(methods: tuple[str, ...]) -> list[str]:
    from ..bounds import METHODS

    out = []
    for m in methods:
        try:
            importlib.import_module(METHODS[m].split(":")[0])
            out.append(m)
        except ImportError:
            pass
    return out


def run(args: argparse.Namespace) -> int:
    from ..benchmarks.demo import DemoConfig, run_demo

    if args.out:
        check_writable(args.out, "--out")
    config = DemoConfig(epochs=args.epochs, count=args.count, seed=args.seed)
    methods = _available(config.methods)
    print(f"training a {'-'.join(map(str, (64, *config.hidden, 10)))} ReLU network "
          f"on scikit-learn digits (8x8, 1500 training images) ...")
    rows, train_s, acc = run_demo(config, methods)
    print(f"trained in {train_s:.1f} s; test accuracy {acc:.1%}\n")
    print(f"certified accuracy on the first {config.count} test digits (L-inf ball, pixels in [0,1]):")
    print()
    print(f"| {'eps':>6} | " + " | ".join(f"{m:>12}" for m in methods) + " |")
    print("|" + "-" * 8 + "|" + "|".join("-" * 14 for _ in methods) + "|")
    for eps in config.eps:
        cells = []
        for m in methods:
            r = next(r for r in rows if r["eps"] == eps and r["method"] == m)
            cells.append(f"{r['certified_accuracy']:>4.0%} {r['mean_time_s'] * 1e3:>5.1f}ms")
        print(f"| {eps:>6} | " + " | ".join(f"{c:>12}" for c in cells) + " |")
    print("\n(time: mean per image; every 'certified' is a sound proof for the whole ball)")
    if args.out:
        write_json(args.out, {"train_s": train_s, "test_accuracy": acc, "rows": rows})
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train a small network on embedded data and certify it",
                       description="Trains a small ReLU network on scikit-learn's digits in "
                                   "seconds, certifies its robustness at a few radii with every "
                                   "available bound method, and prints the table. No files needed.")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--count", type=int, default=100, help="test points to certify")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="also write the table as JSON")
    p.set_defaults(func=run)
