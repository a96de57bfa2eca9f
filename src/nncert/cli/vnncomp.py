"""``nncert vnncomp``: VNN-COMP instances and benchmark suites.

* ``run``: one ONNX + VNN-LIB pair → the competition's result file (sat + witness, unsat,
  timeout, unknown; ``error`` when the instance cannot be run).
  The verifier runs in a child process that is killed if it overruns: the command returns
  within about the timeout + 0.5 s (counted from its start) and the file then says ``timeout``.
* ``suite``: every row of an instances.csv → results.csv (resumable; ``error`` rows are run
  again), with a summary against the folder's expected.csv. An instance whose worker crashes is
  that instance's ``error``; one still running at its timeout + 1 s is stopped (``timeout``);
  the suite goes on either way. Paths must stay under --root unless --allow-outside-root.
  Exit status 1 only for a wrong answer, which is printed loudly.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from ..errors import ConfigError, NncertError
from ..utils import check_writable
from .common import add_device_arg, resolve_device, write_atomic
from .config import resolve_threads


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
    s.add_argument("--out", required=True,
                   help="results.csv (finished rows are kept; error rows run again)")
    s.add_argument("--jobs", type=int, default=1, help="instances run in parallel (default 1)")
    s.add_argument("--timeout", type=_timeout, default=None,
                   help="override every instance's timeout (seconds)")
    s.add_argument("--threads", type=int, default=1,
                   help="torch threads per instance (default 1: the networks are small; "
                   "0 = cores / jobs)")
    s.add_argument("--cex-dir", default=None, help="write each sat witness to this folder")
    s.add_argument("--allow-outside-root", action="store_true",
                   help="allow instance paths outside --root (absolute, '..', escaping symlinks)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=run_suite_cmd)
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])


def _write_out(path: str, text: str) -> None:
    try:
        write_atomic(path, text)
    except OSError as e:
        raise ConfigError(f"cannot write --out {path}: {e.strerror or e}") from e


def _own_process(args: argparse.Namespace) -> bool:
    """Whether this process was started for this command (not ``main`` called from a test or
    a notebook)."""
    named = "vnncomp" in sys.argv or sys.argv[0].endswith("vnncomp.py")
    out = str(args.out)
    return named and any(a == out or a.endswith("=" + out) for a in sys.argv[1:])


def _startup_spent(args: argparse.Namespace) -> float:
    """Seconds this process spent before the command started (interpreter start-up, imports),
    which count against the timeout as the VNN-COMP harness counts them."""
    from ..clock import since_process_start

    return since_process_start() if _own_process(args) else 0.0


def _done(args: argparse.Namespace, status: int) -> int:
    """Return ``status``; in a process of its own, exit at once: the answer is written and the
    interpreter's teardown with torch loaded takes seconds on a loaded machine."""
    if _own_process(args):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status


def run_one(args: argparse.Namespace) -> int:
    from ..complete.vnncomp import run_instance_hard

    check_writable(args.out, "--out")
    try:
        if not (args.timeout > 0 and math.isfinite(args.timeout)):
            raise ConfigError(f"timeout must be a positive number of seconds, got {args.timeout}")
        if args.threads < 0:
            raise ConfigError(f"--threads must be ≥ 0, got {args.threads}")
        device = resolve_device(args.device)
    except NncertError:
        _write_out(args.out, "error\n")
        raise
    if device.type != "cpu":
        print("nncert: note: vnncomp run computes on the CPU", file=sys.stderr)
    _write_out(args.out, "timeout\n")  # what the file says if this process is killed
    threads = args.threads if args.threads > 0 else (os.cpu_count() or 1)
    res = run_instance_hard(args.onnx, args.vnnlib, args.timeout, threads, spent=_startup_spent(args))
    _write_out(args.out, res.text)
    if res.error is None:
        how = res.method
        if res.stopped:
            how = ("hard stop: the verifier overran" if res.time_s > res.startup_s
                   else "no time left after start-up")
        if res.startup_s:
            how += f"; start-up and imports {res.startup_s:.2f} s"
        print(f"{res.word} in {res.time_s:.2f} s ({how})")
        return _done(args, 0)
    if res.internal and getattr(args, "debug", False):
        print(res.trace, file=sys.stderr, end="")
    prefix = "internal error: " if res.internal else ""
    print(f"nncert: error: {prefix}{res.error}", file=sys.stderr)
    return _done(args, 2)


def run_suite_cmd(args: argparse.Namespace) -> int:
    from ..benchmarks.vnncomp import run_suite

    root = args.root or str(Path(args.instances).resolve().parent)
    if args.timeout is not None and not (args.timeout > 0 and math.isfinite(args.timeout)):
        raise ConfigError(f"timeout must be a positive number of seconds, got {args.timeout}")
    check_writable(args.out, "--out")
    if args.cex_dir:
        check_writable(str(Path(args.cex_dir) / "x.txt"), "--cex-dir")
    summary = run_suite(args.instances, root, args.out, jobs=args.jobs, timeout=args.timeout,
                        progress=not args.no_progress, cex_dir=args.cex_dir,
                        threads=resolve_threads(args.threads, args.jobs),  # never oversubscribed
                        allow_outside_root=args.allow_outside_root)
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


def main(argv: list[str] | None = None) -> int:
    """``python -m nncert.cli.vnncomp ACTION ...``: the same as ``nncert vnncomp ACTION ...``
    (``nncert`` imports only the named subcommand's module, so start-up is as short; the
    vnncomp_scripts use this entry). Same errors and exit statuses as ``nncert``."""
    from .main import main as nncert_main

    return nncert_main(["vnncomp", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
