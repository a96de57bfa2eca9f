"""Harness for the bad-input suite: run the real ``nncert`` CLI in a subprocess and check that a
bad input ends in one clean line on stderr, exit status 2, no traceback and no file written."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class CliRun:
    code: int
    stdout: str
    stderr: str


def run_nncert(*argv, cwd: str | os.PathLike | None = None, timeout: float = 300,
               env: dict | None = None) -> CliRun:
    """``python -m nncert.cli.main ARGV`` in a subprocess (the source tree first on the path)."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src")] + [p for p in full_env.get("PYTHONPATH", "").split(os.pathsep) if p])
    full_env.setdefault("OMP_NUM_THREADS", "1")
    full_env.pop("NNCERT_PROGRESS", None)
    if env:
        full_env.update(env)
    proc = subprocess.run([sys.executable, "-m", "nncert.cli.main", *map(str, argv)],
                          cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=full_env, stdin=subprocess.DEVNULL)
    return CliRun(proc.returncode, proc.stdout, proc.stderr)


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
