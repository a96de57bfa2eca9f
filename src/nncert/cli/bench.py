"""``nncert bench list|run``: benchmark suites (TOML) run side by side into one results file.

* ``list``: the suites shipped with nncert (a .toml file of your own works everywhere a name does).
* ``run SUITE --out results.jsonl``: every instance of the suite, one JSON row per instance as it
  finishes (resumable: rerun the same command to continue; ``error`` rows run again), on the
  local process pool (``--jobs N``) or on a Ray cluster (``--ray auto|local|ADDRESS``, the
  optional extra ``pip install 'nncert[ray]'``). An instance still running at its timeout + 1 s
  is stopped (``timeout``); one whose worker dies is that instance's ``error``. Relative paths in
  a suite resolve against --root/--shared (packaged suites: $NNCERT_SHARED, or a ``shared``
  folder in or above the working directory). Exit status 1 when a VNN-COMP answer contradicts
  the benchmark's expected.csv. Then: ``nncert report results.jsonl --out DIR``.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from ..errors import ConfigError
from ..utils import check_writable
from .common import nonnegative_float, positive_float, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmark suites: list them, run one into a results file",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    acts = p.add_subparsers(dest="bench_command", metavar="ACTION")
    ls = acts.add_parser("list", help="the suites shipped with nncert")
    ls.set_defaults(func=run_list)
    r = acts.add_parser("run", help="run a suite into a JSON Lines results file (resumable)")
    r.add_argument("suite", help="a packaged suite's name (see `nncert bench list`) or a .toml file")
    r.add_argument("--out", required=True, help="results file (.jsonl); an existing one is resumed")
    r.add_argument("--jobs", type=positive_int, default=None,
                   help="instances run at once (local pool: default 1; Ray: default the cluster's CPUs)")
    r.add_argument("--ray", default=None, metavar="ADDR",
                   help="run on Ray: 'auto' (a running cluster), 'local' (start one here with --jobs "
                        "CPUs) or a cluster address; paths must be readable on every node")
    r.add_argument("--root", "--shared", dest="root", default=None,
                   help="folder the suite's relative paths resolve against")
    r.add_argument("--timeout", type=positive_float, default=None,
                   help="override the per-instance timeout (seconds)")
    r.add_argument("--limit", type=positive_int, default=None, help="run only the first N instances")
    r.add_argument("--count", type=positive_int, default=None,
                   help="override the number of data points of a robustness suite")
    r.add_argument("--models", default=None,
                   help="folder for models the suite trains (default: 'models' beside --out)")
    r.add_argument("--grace", type=nonnegative_float, default=1.0,
                   help="seconds past an instance's timeout before its worker is killed (default 1)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.set_defaults(func=run_suite_cmd)
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])


def run_list(args: argparse.Namespace) -> int:
    from ..benchmarks.suites import load_suite, packaged_suites

    for path in packaged_suites():
        s = load_suite(path)
        print(f"{s.name:<28} {s.kind:<10} {s.description}")
    return 0


def run_suite_cmd(args: argparse.Namespace) -> int:
    from ..benchmarks.executors import executor_for
    from ..benchmarks.plan import plan, run_plan
    from ..benchmarks.runner import JsonlStore, read_results
    from ..benchmarks.suites import load_suite

    if not str(args.out).endswith(".jsonl"):
        raise ConfigError(f"--out {args.out}: results are JSON Lines; give a .jsonl file name")
    check_writable(args.out, "--out")
    suite = load_suite(args.suite)
    store = JsonlStore(Path(args.out), suite.name)  # refuses another file before any work
    models = args.models or str(Path(args.out).resolve().parent / "models")
    executor = executor_for(args.jobs, args.ray)
    if hasattr(executor, "connect"):
        executor.connect()  # an unreachable cluster fails before any model is trained
    p = plan(suite, args.root, models, args.timeout, args.limit, count=args.count)
    counts = run_plan(p, store, executor, args.grace, not args.no_progress)
    keys = {w.key for w in p.works}
    rows = [r for r in read_results(args.out) if r["key"] in keys]
    print(_summary(suite.name, rows, counts, executor.describe()))
    return _check_wrong(rows)


def _summary(name: str, rows: list[dict], counts, how: str) -> str:
    verdicts = Counter(r["verdict"] for r in rows)
    parts = ", ".join(f"{v} {verdicts[v]}" for v in
                      ("verified", "falsified", "unknown", "timeout", "error") if verdicts[v])
    text = (f"suite {name}: {len(rows)} rows ({counts.ran} run now on the {how}, {counts.kept} "
            f"kept from before): {parts or 'nothing'}")
    notes = [f"{n} {what}" for n, what in ((counts.crashed, "crashed workers"),
                                           (counts.stopped, "stopped at the hard deadline")) if n]
    return text + ("; " + "; ".join(notes) if notes else "")


def _check_wrong(rows: list[dict]) -> int:
    wrong = [r for r in rows if r.get("expected") in ("sat", "unsat")
             and r.get("result") in ("sat", "unsat") and r["result"] != r["expected"]]
    if not wrong:
        return 0
    bar = "!" * 72
    print(bar, file=sys.stderr)
    print(f"WRONG ANSWERS: {len(wrong)} — release-blocking bug", file=sys.stderr)
    for r in wrong:
        print(f"  {r['onnx']} {r['vnnlib']}: answered {r['result']}, expected {r['expected']}",
              file=sys.stderr)
    print(bar, file=sys.stderr)
    return 1
