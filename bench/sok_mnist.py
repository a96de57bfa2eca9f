"""The SoK MNIST table (Li et al., "SoK: Certified Robustness for Deep Neural Networks") on
networks trained here: FCNNa (3 FC of 50), FCNNb (4 FC of 310), CNNa (Conv-Small), naturally
trained; ε = 0.02 (L∞, pixels in [0, 1]); uniformly sampled MNIST test images; a per-instance
timeout. Runs the packaged suite ``sok-mnist`` (resumable) and prints, per network, the clean
accuracy, the PGD upper bound and each method's certified count and mean time per image, next
to SoK's figures for the same protocol (on its own networks). Checks: every method's certified
count ≤ the PGD upper bound, and whether complete verification reaches it on FCNNa.
Writes ``bench/out/sok_mnist.md`` (and the results file, the trained models, a full report).

    python bench/sok_mnist.py --shared ../shared --jobs 2                  # the table: 100 images, 60 s
    python bench/sok_mnist.py --shared ../shared --count 10 --timeout 10   # a small version
    python bench/sok_mnist.py --shared ../shared --count 10 --timeout 10 --quick   # smoke run
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

from nncert.benchmarks.executors import executor_for
from nncert.benchmarks.plan import plan, run_plan
from nncert.benchmarks.report import load_rows, write_report
from nncert.benchmarks.suites import load_suite

HERE = Path(__file__).resolve().parent
METHODS = ("interval", "zonotope", "deeppoly", "crown", "alpha-crown", "complete")
#: SoK's certified accuracy (%) on its FCNNa / FCNNb / CNNa at eps 0.02 (100 images, 60 s)
SOK = {"crown": (79, 85, 89), "deeppoly": (79, 85, 89), "pgd upper bound": (80, 86, 92)}
NETS = ("FCNNa", "FCNNb", "CNNa")


def table(rows: list[dict], n: int) -> tuple[list[str], list[str]]:
    """Markdown lines of the table, and the failed checks."""
    lines = ["| network | clean | PGD upper bound | " + " | ".join(METHODS) + " |",
             "|---|---:|---:|" + "---:|" * len(METHODS)]
    failed = []
    for net in NETS:
        rs = [r for r in rows if r["model"] == net]
        if not rs:
            continue
        pgd = [r for r in rs if r["method"] == "pgd"]
        clean = sum(r["prediction"] == r["label"] for r in pgd)
        ub = len(pgd) - sum(r["verdict"] == "falsified" for r in pgd)
        cells = []
        for m in METHODS:
            mr = [r for r in rs if r["method"] == m]
            ver = sum(r["verdict"] == "verified" for r in mr)
            t = sum(r["time_s"] for r in mr) / len(mr) if mr else 0.0
            cells.append(f"{ver} ({t:.3f} s)")
            if ver > ub:
                failed.append(f"{net}: {m} certified {ver} > PGD upper bound {ub}")
            if net == "FCNNa" and m == "complete" and ver < ub:
                failed.append(f"FCNNa: complete verification certified {ver} < PGD upper bound {ub} "
                              "(not reached)")
        lines.append(f"| {net} | {clean}/{len(pgd)} | {ub} | " + " | ".join(cells) + " |")
    sok = [f"| SoK {k} (their nets, 100 images) | | | {'/'.join(map(str, v))} |" for k, v in SOK.items()]
    return lines + ["", "| SoK figure | | | FCNNa/FCNNb/CNNa |", "|---|---|---|---|", *sok], failed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=str(HERE.parent.parent / "shared"))
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--ray", default=None)
    ap.add_argument("--quick", action="store_true",
                    help="train each network for 1 epoch on 10,000 images (a smoke run, not the table)")
    ap.add_argument("--out", default=str(HERE / "out"))
    args = ap.parse_args(argv)
    out = Path(args.out)
    tag = f"sok_mnist_n{args.count}_t{args.timeout:g}" + ("_quick" if args.quick else "")
    suite = load_suite("sok-mnist")
    if args.quick:
        suite = replace(suite, models=tuple(replace(m, epochs=1, count=10000) for m in suite.models))
    t0 = time.perf_counter()
    p = plan(suite, args.shared, out / "models", args.timeout, count=args.count)
    t_plan = time.perf_counter() - t0
    run_plan(p, out / f"{tag}.jsonl", executor_for(args.jobs, args.ray))
    wall = time.perf_counter() - t0 - t_plan
    rows = load_rows([out / f"{tag}.jsonl"])
    write_report(rows, out / f"{tag}_report", "SoK MNIST table")
    lines, failed = table(rows, args.count)
    head = [f"# SoK MNIST, eps 0.02, {args.count} sampled images, {args.timeout:g} s per instance",
            "", f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; jobs {args.jobs}; "
            f"planning (training included) {t_plan:.0f} s; instances {wall:.0f} s wall", "",
            "Certified count (mean time per image):", ""]
    text = "\n".join(head + lines + ["", "Checks: " + ("; ".join(failed) if failed else "all pass")])
    (out / f"{tag}.md").write_text(text + "\n")
    print(text)
    return 1 if any("> PGD" in f for f in failed) else 0


if __name__ == "__main__":
    sys.exit(main())
