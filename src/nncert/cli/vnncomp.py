"""``nncert vnncomp``: VNN-COMP instances and benchmark suites.

* ``run``: one ONNX + VNN-LIB pair → the competition's result file (sat + witness, unsat,
  timeout, unknown; ``error`` when the instance cannot be run).
* ``suite``: every row of an instances.csv → results.csv (resumable), with a summary against
  the folder's expected.csv; a wrong answer is printed loudly and makes the exit status 1.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

from ..errors import ConfigError, NncertError
from .common import add_device_arg, resolve_device, write_atomic


def _timeout(text: str) -> float:
    try:
        return float(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from e


def register(subparsers) -> None:
    p = subparsers.add_parser("vnncomp", help="VNN-COMP instances and suites",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="vnncomp_command", metavar="ACTION")
    r = sub.add_parser("run", help="decide one instance and write the VNN-COMP result file")
    r.add_argument("--onnx", required=True, help="the network (.onnx)")
    r.add_argument("--vnnlib", required=True, help="the property (.vnnlib, .vnnlib.gz)")
    r.add_argument("--timeout", type=_timeout, required=True, help="seconds (> 0)")
    r.add_argument("--out", required=True, help="result file to write")
    r.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: fastest for small networks; 0 = all cores)")
    add_device_arg(r)
    r.set_defaults(func=run_one)
    s = sub.add_parser("suite", help="run a whole benchmark (instances.csv) into results.csv")
    s.add_argument("--instances", required=True, help="instances.csv: onnx,vnnlib,timeout")
    s.add_argument("--root", default=None, help="folder the csv paths are relative to "
                   "(default: the csv's folder)")
    s.add_argument("--out", required=True, help="results.csv (rows already there are kept)")
    s.add_argument("--jobs", type=int, default=1, help="instances run in parallel (default 1)")
    s.add_argument("--timeout", type=_timeout, default=None,
                   help="override every instance's timeout (seconds)")
    s.add_argument("--threads", type=int, default=1,
                   help="torch threads per instance (default 1: the networks are small; "
                   "0 = cores / jobs)")
    s.add_argument("--cex-dir", default=None, help="write each sat witness to this folder")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=run_suite_cmd)
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])


def run_one(args: argparse.Namespace) -> int:
    import torch

    from ..complete.vnncomp import run_instance

    try:
        if not (args.timeout > 0 and math.isfinite(args.timeout)):
            raise ConfigError(f"timeout must be a positive number of seconds, got {args.timeout}")
        torch.set_num_threads(args.threads if args.threads > 0 else (os.cpu_count() or 1))
        device = resolve_device(args.device)
        if device.type != "cpu":
            print("nncert: note: vnncomp run computes on the CPU", file=sys.stderr)
        t0 = time.perf_counter()
        res = run_instance(args.onnx, args.vnnlib, args.timeout)
    except (NncertError, OSError) as e:
        write_atomic(args.out, "error\n")
        if isinstance(e, OSError) and not isinstance(e, NncertError):
            raise NncertErrorWrapper(f"{e.strerror or e}: {e.filename}") from e
        raise
    except Exception as e:
        write_atomic(args.out, "error\n")
        if getattr(args, "debug", False):
            raise
        print(f"nncert: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    write_atomic(args.out, res.to_vnncomp())
    print(f"{res.verdict.vnncomp()} in {time.perf_counter() - t0:.2f} s ({res.method})")
    return 0


class NncertErrorWrapper(NncertError):  # noqa: N818
    pass


def run_suite_cmd(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..complete.vnncomp import run_suite

    root = args.root or str(Path(args.instances).resolve().parent)
    if args.timeout is not None and not args.timeout > 0:
        raise ConfigError(f"timeout must be > 0 seconds, got {args.timeout}")
    summary = run_suite(args.instances, root, args.out, jobs=args.jobs, timeout=args.timeout,
                        progress=not args.no_progress, cex_dir=args.cex_dir,
                        threads=args.threads)
    print(summary.text())
    if summary.wrong:
        bar = "!" * 72
        print(bar, file=sys.stderr)
        print(f"WRONG ANSWERS: {summary.wrong} — release-blocking bug", file=sys.stderr)
        for onnx, vnnlib, got, exp in summary.wrong_rows:
            print(f"  {onnx} {vnnlib}: answered {got}, expected {exp}", file=sys.stderr)
        print(bar, file=sys.stderr)
        return 1
    return 0
