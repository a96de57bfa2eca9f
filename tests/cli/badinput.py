"""Harness for the bad-input suite: run the ``nncert`` CLI and check that a bad input ends in one
clean line on stderr, exit status 2, no traceback and no file written.

:func:`run_nncert` calls ``nncert.cli.main.main`` in this process by default (a subprocess costs
seconds of interpreter and torch start-up per case) and reports what a separate process would
show: exit status (``SystemExit`` included), everything written to stdout and stderr at the
Python and the file-descriptor level (C libraries write to fd 2), warnings under Python's
default filters, and an uncaught exception as a traceback on stderr with status 1.
``isolated=True`` runs the real entry point, ``python -m nncert.cli.main``, in a subprocess:
for what only a process of its own shows (a model file's pickle, the entry point itself).
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import tempfile
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class CliRun:
    code: int
    stdout: str
    stderr: str


def run_nncert(*argv, cwd: str | os.PathLike | None = None, timeout: float = 300,
               env: dict | None = None, isolated: bool = False) -> CliRun:
    """``nncert ARGV`` in this process, or with ``isolated`` as ``python -m nncert.cli.main ARGV``
    in a subprocess (the source tree first on the path); ``timeout`` bounds the subprocess."""
    args = [str(a) for a in argv]
    if isolated:
        return _subprocess(args, cwd, timeout, env)
    return _in_process(args, cwd, env)


def _subprocess(argv: list[str], cwd, timeout: float, env: dict | None) -> CliRun:
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src")] + [p for p in full_env.get("PYTHONPATH", "").split(os.pathsep) if p])
    full_env.setdefault("OMP_NUM_THREADS", "1")
    full_env.pop("NNCERT_PROGRESS", None)
    if env:
        full_env.update(env)
    proc = subprocess.run([sys.executable, "-m", "nncert.cli.main", *argv],
                          cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=full_env, stdin=subprocess.DEVNULL)
    return CliRun(proc.returncode, proc.stdout, proc.stderr)


def _in_process(argv: list[str], cwd, env: dict | None) -> CliRun:
    from nncert.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with _process_state(cwd, env), _fd_capture() as fds, \
            warnings.catch_warnings(record=True) as caught, \
            contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        _default_warning_filters()
        try:
            code = main(argv)
        except SystemExit as e:  # argparse usage errors and --help
            code = _exit_status(e, err)
        except BaseException:  # what the interpreter would print for an uncaught exception
            traceback.print_exc(file=err)
            code = 1
        for w in caught:
            err.write(warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line))
    return CliRun(int(code), out.getvalue() + fds["stdout"], err.getvalue() + fds["stderr"])


def _exit_status(e: SystemExit, err: io.StringIO) -> int:
    if e.code is None or isinstance(e.code, int):
        return e.code or 0
    print(e.code, file=err)  # sys.exit("message"): printed, status 1
    return 1


def _default_warning_filters() -> None:
    """The warning filters of a fresh interpreter (pytest's own configuration aside)."""
    warnings.resetwarnings()
    for category in (ResourceWarning, ImportWarning, PendingDeprecationWarning, DeprecationWarning):
        warnings.simplefilter("ignore", category)
    warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")


@contextlib.contextmanager
def _process_state(cwd, env: dict | None) -> Iterator[None]:
    """Working directory, environment, stdin (/dev/null) and torch's thread count as a fresh
    process would have them; all restored afterwards."""
    import torch

    saved_env, saved_cwd, saved_stdin = dict(os.environ), os.getcwd(), sys.stdin
    threads = torch.get_num_threads()
    os.environ.pop("NNCERT_PROGRESS", None)
    os.environ.update(env or {})
    try:
        with open(os.devnull) as devnull:
            sys.stdin = devnull
            if cwd is not None:
                os.chdir(cwd)
            yield
    finally:
        sys.stdin = saved_stdin
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        torch.set_num_threads(threads)


@contextlib.contextmanager
def _fd_capture() -> Iterator[dict[str, str]]:
    """Collect what is written to file descriptors 1 and 2 (C code, ``--out /dev/stdout``)."""
    found = {"stdout": "", "stderr": ""}
    with tempfile.TemporaryFile() as f1, tempfile.TemporaryFile() as f2:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        os.dup2(f1.fileno(), 1)
        os.dup2(f2.fileno(), 2)
        try:
            yield found
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            for name, f in (("stdout", f1), ("stderr", f2)):
                f.seek(0)
                found[name] = f.read().decode("utf-8", "replace")


def files_under(folder: str | os.PathLike) -> set[str]:
    """Every path below ``folder`` (to check that a failed command wrote nothing)."""
    folder = Path(folder)
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def assert_clean_error(run: CliRun, needle: str | None = None) -> None:
    """Exit 2, exactly one non-empty line on stderr starting ``nncert: error:``, no traceback,
    and ``needle`` (case-insensitive) in that line when given."""
    lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert run.code == 2, f"exit {run.code}, stderr:\n{run.stderr}"
    assert "Traceback" not in run.stderr, run.stderr
    assert len(lines) == 1, f"expected one line on stderr, got:\n{run.stderr}"
    assert lines[0].startswith("nncert: error:"), lines[0]
    assert "\x1b[" not in run.stderr, "terminal colour codes in the message"
    if needle is not None:
        assert needle.lower() in lines[0].lower(), f"{needle!r} not in {lines[0]!r}"
