"""Old code against this checkout on the same VNN-COMP instances, back to back.

The old code is ``git archive REF src`` unpacked into a temporary folder (no worktree, the
repository is not touched); each side runs ``nncert vnncomp suite`` in a subprocess with its own
``PYTHONPATH``, on the same instance list, one after the other (``--order`` picks which first;
``both`` runs old, new, new, old and sums). Prints solved / wrong / total verification time
per side and the ratio new/old, writes ``bench/out/engine_vs_old_<suite>.md`` (and each run's
results csv next to it), exits 1 if either
side answers wrongly.

    python bench/engine_vs_old.py --ref 91ab8d8 --suite acasxu --jobs 2
    python bench/engine_vs_old.py --ref 91ab8d8 --suite mnistfc --jobs 2
    python bench/engine_vs_old.py --ref 91ab8d8 --suite acasxu --only prop_2 --limit 6
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BENCHMARKS = REPO.parent / "shared" / "benchmarks"


def _unpack(ref: str, into: Path) -> Path:
    """``src/`` of ``ref`` unpacked under ``into``; returns the src folder."""
    blob = subprocess.run(["git", "-C", str(REPO), "archive", ref, "src"], check=True,
                          capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(blob)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def _subset(suite_root: Path, only: str | None, limit: int | None, out: Path) -> Path:
    """The suite's instances.csv filtered by a substring and cut to ``limit`` rows."""
    rows = [r for r in csv.reader((suite_root / "instances.csv").open()) if r]
    if only:
        rows = [r for r in rows if any(only in c for c in r[:2])]
    rows = rows[:limit] if limit else rows
    path = out / "instances.csv"
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def _run(src: Path, instances: Path, root: Path, out_csv: Path, args) -> float:
    """One side's suite run; returns its wall time (s)."""
    cmd = [sys.executable, "-m", "nncert.cli.main", "vnncomp", "suite", "--instances",
           str(instances), "--root", str(root), "--out", str(out_csv), "--jobs", str(args.jobs),
           "--no-progress"]
    if args.timeout:
        cmd += ["--timeout", str(args.timeout)]
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    return time.perf_counter() - t


def _summary(instances: Path, out_csv: Path, root: Path, timeout):
    sys.path.insert(0, str(REPO / "src"))
    from nncert.benchmarks.vnncomp import read_expected, read_instances, read_results, summarize

    return summarize(read_instances(instances, timeout), read_results(out_csv),
                     read_expected(root / "expected.csv"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref", required=True, help="git ref of the old code (e.g. 91ab8d8)")
    ap.add_argument("--suite", default="acasxu")
    ap.add_argument("--root", default=str(BENCHMARKS))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=None, help="override instance timeouts")
    ap.add_argument("--only", default=None, help="keep instances whose paths contain this")
    ap.add_argument("--limit", type=int, default=None, help="at most this many instances")
    ap.add_argument("--order", choices=("old-first", "new-first", "both"), default="old-first")
    ap.add_argument("--out", default=str(HERE / "out"))
    args = ap.parse_args(argv)
    root = Path(args.root) / args.suite
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="nncert-old-") as tmp:
        tmp = Path(tmp)
        sides = {"old": _unpack(args.ref, tmp / "old"), "new": REPO / "src"}
        instances = _subset(root, args.only, args.limit, tmp)
        order = {"old-first": ["old", "new"], "new-first": ["new", "old"],
                 "both": ["old", "new", "new", "old"]}[args.order]
        totals = {k: [0.0, 0.0, 0, 0, 0] for k in sides}  # verif. time, wall, solved, wrong, n
        for i, side in enumerate(order):
            res = out / f"engine_vs_old_{args.suite}_{side}_{i}.csv"
            res.unlink(missing_ok=True)  # (the suite resumes from an existing file)
            wall = _run(sides[side], instances, root, res, args)
            s = _summary(instances, res, root, args.timeout)
            print(f"{side} (run {i + 1}): {s.text()}; wall {wall:.1f} s", flush=True)
            t = totals[side]
            t[0] += s.time_s
            t[1] += wall
            t[2] += s.solved
            t[3] += s.wrong
            t[4] += 1
    return _report(args, totals, out)


def _report(args, totals: dict, out: Path) -> int:
    o, n = totals["old"], totals["new"]
    ratio = n[0] / o[0] if o[0] else float("nan")
    lines = [f"# {args.suite}: {args.ref} (old) vs this checkout (new)", "",
             f"jobs {args.jobs}; timeout override {args.timeout}; only {args.only}; "
             f"limit {args.limit}; order {args.order}; "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
             "| side | runs | solved (sum) | wrong (sum) | verification time (s, sum) | wall (s) |",
             "|---|---:|---:|---:|---:|---:|"]
    for k, t in (("old", o), ("new", n)):
        lines.append(f"| {k} | {t[4]} | {t[2]} | {t[3]} | {t[0]:.1f} | {t[1]:.1f} |")
    lines += ["", f"ratio new/old (verification time on solved): {ratio:.3f}"]
    (out / f"engine_vs_old_{args.suite}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 1 if (o[3] or n[3]) else 0


if __name__ == "__main__":
    raise SystemExit(main())
