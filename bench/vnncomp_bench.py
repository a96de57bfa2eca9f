"""Run the VNN-COMP suites on ../shared/benchmarks/{acasxu,mnistfc} and summarise them.

Writes ``bench/out/vnncomp_<suite>.csv`` (resumable: rerunning continues where it stopped) and
``bench/out/vnncomp_summary.md`` with solved / correct / wrong / unsolved counts and total
verification time per suite. Exits 1 when any answer contradicts ``expected.csv``.

    python bench/vnncomp_bench.py [--suites acasxu,mnistfc] [--timeout T] [--jobs N] [--tag _t30]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from nncert.benchmarks.vnncomp import read_expected, read_instances, read_results, run_suite, summarize

HERE = Path(__file__).resolve().parent
BENCHMARKS = HERE.parent.parent / "shared" / "benchmarks"
# VNN-COMP 2021 figures quoted by the complete-verification issue (on a larger cloud machine):
# the ACAS Xu category winner solved all 186 in 285 s; the mnistfc winner solved 70
BASELINE = {"acasxu": {"solved": 186, "time_s": 285.0}, "mnistfc": {"solved": 70}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suites", default="acasxu,mnistfc")
    ap.add_argument("--root", default=str(BENCHMARKS))
    ap.add_argument("--timeout", type=float, default=None, help="override instance timeouts")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per instance")
    ap.add_argument("--out", default=str(HERE / "out"))
    ap.add_argument("--tag", default="", help="suffix for the csv names (e.g. _t20)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# VNN-COMP suites", "",
             f"Machine: {__import__('os').cpu_count()} cores; timeout override: {args.timeout}; "
             f"jobs: {args.jobs}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
             "| suite | instances | solved | correct | wrong | unsolved | errors | total time (s) |",
             "|---|---|---|---|---|---|---|---|"]
    wrong_rows = []
    for suite in [s for s in args.suites.split(",") if s]:
        root = Path(args.root) / suite
        if not (root / "instances.csv").exists():
            print(f"skipping {suite}: {root / 'instances.csv'} not found", file=sys.stderr)
            continue
        csv_path = out / f"vnncomp_{suite}{args.tag}.csv"
        run_suite(root / "instances.csv", root, csv_path, jobs=args.jobs, timeout=args.timeout,
                  threads=args.threads)
        s = summarize(read_instances(root / "instances.csv", args.timeout), read_results(csv_path),
                      read_expected(root / "expected.csv"))
        print(f"{suite}: {s.text()}")
        base = BASELINE.get(suite, {})
        if base:
            ratio = f"{suite} vs VNN-COMP 2021 winner: solved {s.solved}/{base['solved']}"
            if "time_s" in base:
                ratio += f", time {s.time_s:.1f} s / {base['time_s']:.0f} s = " \
                         f"{s.time_s / base['time_s']:.2f}x"
            print(ratio)
        lines.append(f"| {suite} | {s.total} | {s.solved} | {s.correct} | {s.wrong} | "
                     f"{s.unsolved} | {s.errors} | {s.time_s:.1f} |")
        wrong_rows += [(suite, *r) for r in s.wrong_rows or []]
    if wrong_rows:
        lines += ["", "## WRONG ANSWERS", ""]
        lines += [f"- {suite}: {o} {v}: answered {g}, expected {e}" for suite, o, v, g, e in wrong_rows]
    (out / f"vnncomp_summary{args.tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if wrong_rows:
        print("WRONG ANSWERS — release-blocking", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
