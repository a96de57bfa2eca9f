"""The VNN-COMP interface: one instance (ONNX + VNN-LIB + timeout → result file) and whole
benchmark suites (instances.csv → results.csv, resumable, with a summary against expected.csv).

Result words are VNN-COMP's: ``sat`` (with the witness), ``unsat``, ``timeout``, ``unknown``,
and ``error`` when the instance could not be run (unreadable model, spec not matching it, a
crashed worker, ...).

Hard stop: :func:`run_instance_hard` and :func:`run_suite` run the verifier in worker processes
(:mod:`.supervise`) and kill a worker still busy at the instance's timeout plus a small grace, so
the answer (``timeout``) comes on time even when the library overruns its own deadline checks.

Confinement: the paths of an instances.csv must stay under the suite's root (symlinks resolved)
unless the caller allows outside paths explicitly.
"""

from __future__ import annotations

import math
import os
import re
import signal
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ..errors import ConfigError, DataError, NncertError
from ..result import Result
from ..tables import Row, append_row, excerpt, read_rows, write_rows
from .bab import BaBConfig
from .milp import MilpConfig
from .supervise import Outcome, Task, supervise
from .verify import VerifyConfig, verify_all

RESULT_COLUMNS = ("onnx", "vnnlib", "result", "time_s")
RESULT_WORDS = ("sat", "unsat", "timeout", "unknown", "error")
#: seconds past an instance's timeout before its worker is killed (suite)
SUITE_GRACE_S = 1.0
#: seconds past the timeout before ``vnncomp run`` kills its verifier process
RUN_GRACE_S = 0.5
#: test-only: "crash:NAME" or "hang:NAME" makes a worker whose ONNX path contains NAME die by
#: SIGKILL or hang (to test the hard stop and crash recovery); never set it otherwise
TEST_HOOK_ENV = "NNCERT_TEST_WORKER_HOOK"


def instance_config(timeout: float, base: VerifyConfig | None = None) -> VerifyConfig:
    """The default configuration for a VNN-COMP instance with ``timeout`` seconds."""
    if not timeout > 0:
        raise ConfigError(f"timeout must be > 0 seconds, got {timeout}")
    base = base or VerifyConfig(timeout_s=timeout)
    margin = min(1.0, 0.05 * timeout)  # leave time to write the answer
    t = max(timeout - margin, 0.05)
    return replace(base, timeout_s=t, bab=replace(base.bab, timeout_s=t),
                   milp=replace(base.milp, timeout_s=t))


def load_instance(onnx_path: str | os.PathLike, vnnlib_path: str | os.PathLike):
    """(model graph, [VerificationProblem in float64, one per input box])."""
    from ..models.load import load
    from ..specs.problem import VerificationProblem
    from ..specs.vnnlib import parse_vnnlib

    graph = load(str(onnx_path))
    pairs = parse_vnnlib(Path(vnnlib_path), graph.num_inputs, graph.num_outputs,
                         input_shape=graph.input_shape, dtype=torch.float64)
    name = Path(vnnlib_path).name
    return graph, [VerificationProblem(graph, box, spec, name) for box, spec in pairs]


def run_instance(onnx_path, vnnlib_path, timeout: float,
                 config: VerifyConfig | None = None) -> Result:
    """Decide one instance within ``timeout`` seconds (loading included)."""
    t0 = time.perf_counter()
    cfg = instance_config(timeout, config)
    graph, problems = load_instance(onnx_path, vnnlib_path)
    deadline = t0 + cfg.timeout_s
    return verify_all(problems, cfg, str(onnx_path), deadline=deadline)


def write_result(path, text: str) -> None:
    from ..utils import write_atomic

    write_atomic(path, text)


def one_line(message: str, limit: int = 300) -> str:
    """An error message safe to print: one line, printable ASCII, each quoted token (an excerpt
    of a file: ``'...'`` without blanks) cut to 40 characters, at most ``limit`` in all."""
    text = " ".join(str(message).split())
    text = re.sub(r"'([^'\s]{40})[^'\s]+'", r"'\1...'", text)
    text = "".join(c if c.isascii() and c.isprintable() else "?" for c in text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _test_hook(onnx_path: str) -> None:
    """Test-only crash / hang of a worker (see TEST_HOOK_ENV); a no-op unless the variable is set."""
    hook = os.environ.get(TEST_HOOK_ENV, "")
    action, _, name = hook.partition(":")
    if not name or name not in str(onnx_path):
        return
    if action == "crash":
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "hang":
        while True:  # a library loop that never checks its deadline
            time.sleep(0.05)


# -- one instance, hard-stopped -----------------------------------------------------------------
@dataclass(frozen=True)
class RunOutcome:
    """What ``vnncomp run`` writes and says. ``text``: the result file's content; ``error``: a
    one-line message when the instance could not be run (``text`` is then ``error``);
    ``internal``: the error is a bug, not bad input (``trace`` holds its traceback);
    ``stopped``: the verifier overran and was killed at the hard stop (``text`` is ``timeout``)."""

    text: str
    method: str = ""
    error: str | None = None
    internal: bool = False
    trace: str = ""
    stopped: bool = False
    time_s: float = 0.0
    startup_s: float = 0.0  # of time_s: spent before the verifier started (the ``spent`` argument)

    @property
    def word(self) -> str:
        return self.text.split("\n", 1)[0]


def _solve(onnx_path: str, vnnlib_path: str, budget: float, threads: int) -> tuple:
    """Worker side of :func:`run_instance_hard`: (result text, method, error message or None)."""
    torch.set_num_threads(threads)
    _test_hook(onnx_path)
    try:
        res = run_instance(onnx_path, vnnlib_path, budget)
    except NncertError as e:
        return "error\n", "", str(e)
    except OSError as e:
        return "error\n", "", f"{e.strerror or e}: {e.filename}"
    return res.to_vnncomp(), res.method, None


def run_instance_hard(onnx_path, vnnlib_path, timeout: float, threads: int = 1,
                      spent: float = 0.0, grace: float = RUN_GRACE_S) -> RunOutcome:
    """Decide one instance in a child process that is killed if it is still running at
    ``timeout - spent + grace`` seconds from now (``spent``: time already used, e.g. the
    interpreter start-up); a killed child gives ``timeout``. A crashed child gives ``error``."""
    if not (timeout > 0 and math.isfinite(timeout)):
        raise ConfigError(f"timeout must be a positive number of seconds, got {timeout}")
    budget = timeout - spent
    if budget < 0.05:
        return RunOutcome("timeout\n", stopped=True, time_s=spent, startup_s=spent)
    outcomes: list[Outcome] = []
    task = Task("instance", (str(onnx_path), str(vnnlib_path), budget, threads), budget + grace)
    supervise(_solve, [task], 1, lambda _t, out: outcomes.append(out))
    out = outcomes[0]
    t = {"time_s": spent + out.elapsed, "startup_s": spent}
    if out.kind == "ok":
        text, method, err = out.value
        return RunOutcome(text, method, one_line(err) if err else None, **t)
    if out.kind == "killed":
        return RunOutcome("timeout\n", stopped=True, **t)
    if out.kind == "crashed":
        return RunOutcome("error\n", error=f"the verifier crashed: {out.detail}", **t)
    return RunOutcome("error\n", error=one_line(out.detail), internal=True, trace=out.trace, **t)


# -- suites -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Instance:
    onnx: str
    vnnlib: str
    timeout: float
    line: int = field(default=0, compare=False)

    @property
    def key(self) -> tuple[str, str]:
        return self.onnx, self.vnnlib


def _parse_timeout(text: str, where: str) -> float:
    try:
        t = float(text)
    except ValueError:
        t = math.nan
    if not (t > 0 and math.isfinite(t)):
        raise DataError(f"{where}: timeout {excerpt(text.strip(), 20)} is not a positive number "
                        "of seconds")
    return t


def _parse_instance(row: Row, path) -> Instance:
    where = f"{path}:{row.line}"
    f = [x.strip() for x in row.fields]
    if len(f) not in (2, 3):
        raise DataError(f"{where}: expected onnx,vnnlib[,timeout], got {len(f)} fields "
                        "(quote a path that holds a comma)")
    if not f[0] or not f[1]:
        raise DataError(f"{where}: empty onnx or vnnlib path")
    t = _parse_timeout(f[2], where) if len(f) == 3 and f[2] else 60.0
    return Instance(f[0], f[1], t, row.line)


def read_instance_table(path, timeout_override: float | None = None) -> tuple[list[Instance], int]:
    """(instances in file order, each (onnx, vnnlib) pair once; how many duplicate rows were
    dropped). Blank lines, ``#`` comments and an ``onnx,...`` header are skipped."""
    out: dict[tuple[str, str], Instance] = {}
    dups = 0
    first = True
    for row in read_rows(path, "instances file"):
        head = row.fields[0].strip()
        if head.startswith("#") or (first and head == "onnx"):
            first = first and head.startswith("#")
            continue
        first = False
        inst = _parse_instance(row, path)
        if timeout_override is not None:
            inst = replace(inst, timeout=timeout_override)
        if inst.key in out:
            dups += 1
        else:
            out[inst.key] = inst
    return list(out.values()), dups


def read_instances(path, timeout_override: float | None = None) -> list[Instance]:
    """The instances of an instances.csv (duplicates dropped); see :func:`read_instance_table`."""
    return read_instance_table(path, timeout_override)[0]


def confined(root: Path, rel: str, allow_outside: bool = False, where: str = "") -> Path:
    """``root / rel`` with symlinks resolved; ConfigError when it lies outside ``root`` (an
    absolute path, ``..``, or a symlink that escapes) unless ``allow_outside``."""
    real = (root / rel).resolve()
    if not allow_outside and not real.is_relative_to(root.resolve()):
        raise ConfigError(f"{where}path {excerpt(rel, 60)} is outside the root folder {root} "
                          "(pass --allow-outside-root to allow paths outside it)")
    return real


def instance_paths(instances: list[Instance], root: Path, csv_path,
                   allow_outside: bool = False) -> dict[tuple[str, str], tuple[Path, Path]]:
    """The confined (onnx, vnnlib) paths of every instance. ConfigError for a path outside the
    root, and when not one network exists (a wrong root: nothing would run)."""
    paths = {}
    for inst in instances:
        where = f"{csv_path}:{inst.line}: "
        paths[inst.key] = (confined(root, inst.onnx, allow_outside, where),
                           confined(root, inst.vnnlib, allow_outside, where))
    if paths and not any(o.is_file() for o, _ in paths.values()):
        raise ConfigError(f"none of the {len(paths)} networks named in {csv_path} exists under "
                          f"{root}: is the root folder (--root) right?")
    return paths


def _result_rows(path: Path) -> list[Row]:
    """The records of a results file after its header; DataError if it is another kind of file."""
    if not path.exists():
        return []
    rows = read_rows(path, "results file", drop_torn=True)
    if rows and tuple(f.strip() for f in rows[0].fields) != RESULT_COLUMNS:
        raise DataError(f"{path} is not a results file (its first line is not "
                        f"{','.join(RESULT_COLUMNS)}); refusing to overwrite it")
    return rows[1:]


def _valid_result(row: Row) -> tuple[str, float] | None:
    if len(row.fields) != 4 or row.fields[2] not in RESULT_WORDS:
        return None
    try:
        t = float(row.fields[3])
    except ValueError:
        return None
    return (row.fields[2], t) if math.isfinite(t) and t >= 0 else None


def read_results(path) -> dict[tuple[str, str], tuple[str, float]]:
    """{(onnx, vnnlib): (result word, seconds)} of a results file; a torn or invalid row is left
    out (its instance runs again), and so is every row after the first for one instance."""
    done: dict[tuple[str, str], tuple[str, float]] = {}
    for row in _result_rows(Path(path)):
        val = _valid_result(row)
        if val is not None:
            done.setdefault((row.fields[0], row.fields[1]), val)
    return done


def _resume(out: Path) -> dict[tuple[str, str], tuple[str, float]]:
    """The finished rows of ``out``, which is rewritten without torn, invalid, duplicate and
    ``error`` rows (errors are retried); fields are kept verbatim."""
    rows = _result_rows(out)
    if not out.exists() or out.stat().st_size == 0:
        return {}
    keep, done = [], {}
    for row in rows:
        val = _valid_result(row)
        key = (row.fields[0], row.fields[1]) if val else None
        if val is None or val[0] == "error" or key in done:
            continue
        done[key] = val
        keep.append(row.fields)
    write_rows(out, keep, RESULT_COLUMNS)
    return done


def read_expected(path) -> dict[tuple[str, str], str]:
    """{(onnx, vnnlib): expected word} of an expected.csv (header ``onnx,vnnlib,expected``)."""
    path = Path(path)
    if not path.exists():
        return {}
    rows = read_rows(path, "expected-results file")
    if not rows:
        return {}
    head = [f.strip() for f in rows[0].fields]
    if not {"onnx", "vnnlib", "expected"} <= set(head):
        raise DataError(f"{path}:1: expected a header with the columns onnx,vnnlib,expected")
    col = [head.index(c) for c in ("onnx", "vnnlib", "expected")]
    out = {}
    for row in rows[1:]:
        if len(row.fields) < len(head):
            raise DataError(f"{path}:{row.line}: expected {len(head)} fields, got {len(row.fields)}")
        o, v, e = (row.fields[c].strip() for c in col)
        out[(o, v)] = e
    return out


def _worker(onnx_path: str, vnnlib_path: str, timeout: float, threads: int,
            cex_path: str | None) -> tuple[str, float, str | None]:
    """Suite worker: (result word, seconds, error message or None). Bad input is the instance's
    ``error``; a bug becomes an ``error`` too (with its type), never the suite's end."""
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    _test_hook(onnx_path)
    try:
        res = run_instance(onnx_path, vnnlib_path, timeout)
        if cex_path and res.counterexample is not None:
            write_result(cex_path, res.to_vnncomp())
        return res.verdict.vnncomp(), time.perf_counter() - t0, None
    except NncertError as e:
        return "error", time.perf_counter() - t0, str(e)
    except Exception as e:  # noqa: BLE001 - a bug in one instance must not stop the suite
        return "error", time.perf_counter() - t0, f"{type(e).__name__}: {e}"


@dataclass
class SuiteSummary:
    total: int = 0
    solved: int = 0
    correct: int = 0
    wrong: int = 0
    unsolved: int = 0
    errors: int = 0
    time_s: float = 0.0
    wrong_rows: list | None = None
    with_expected: int = 0
    duplicates: int = 0  # duplicate rows of instances.csv, dropped
    crashed: int = 0  # workers that died in this run (their instances are errors)
    stopped: int = 0  # workers killed at timeout + grace in this run (their instances: timeout)

    def text(self) -> str:
        s = (f"instances {self.total}: solved {self.solved}, correct {self.correct}, "
             f"wrong {self.wrong}, unsolved {self.unsolved}, errors {self.errors}; "
             f"total time {self.time_s:.1f} s")
        if self.with_expected:
            s += f" ({self.with_expected} with a known answer)"
        notes = [f"{n} {what}" for n, what in (
            (self.crashed, "crashed workers (their instances are errors; the suite went on)"),
            (self.stopped, "workers stopped at the hard deadline (recorded as timeout)"),
            (self.duplicates, "duplicate instance rows dropped")) if n]
        return s + ("; " + "; ".join(notes) if notes else "")


def summarize(instances: list[Instance], results: dict, expected: dict) -> SuiteSummary:
    s = SuiteSummary(wrong_rows=[])
    for inst in dict.fromkeys(instances):
        key = (inst.onnx, inst.vnnlib)
        if key not in results:
            continue
        word, t = results[key]
        s.total += 1
        s.time_s += t
        solved = word in ("sat", "unsat")
        s.solved += solved
        s.errors += word == "error"
        exp = expected.get(key)
        if exp in ("sat", "unsat"):
            s.with_expected += 1
            if not solved:
                s.unsolved += 1
            elif word == exp:
                s.correct += 1
            else:
                s.wrong += 1
                s.wrong_rows.append((inst.onnx, inst.vnnlib, word, exp))
        elif not solved:
            s.unsolved += 1
    return s


def _suite_answer(inst: Instance, out: Outcome, grace: float, log) -> tuple[str, float]:
    """(result word, seconds) of a finished suite task; problems are one line each on ``log``."""
    name = f"{one_line(inst.onnx, 120)} {one_line(inst.vnnlib, 120)}"
    if out.kind == "ok":
        word, t, err = out.value
        if err:
            print(f"nncert: {name}: error: {one_line(err)}", file=log)
        return word, t
    if out.kind == "killed":
        print(f"nncert: {name}: still running {grace:g} s after its timeout: stopped, "
              "recorded as timeout", file=log)
        return "timeout", out.elapsed
    print(f"nncert: {name}: error: {one_line(out.detail)}", file=log)
    return "error", out.elapsed


def run_suite(instances_csv, root, out_csv, jobs: int = 1, timeout: float | None = None,
              progress: bool = True, cex_dir: str | None = None, log=None,
              threads: int = 1, allow_outside_root: bool = False,
              grace: float = SUITE_GRACE_S) -> SuiteSummary:
    """Run every instance not yet in ``out_csv``; rows are appended (and fsynced) as they
    finish, so an interrupted run loses nothing and a restart resumes (``error`` rows are run
    again). Each instance's worker is killed at its timeout + ``grace`` (``timeout``); a crashed
    worker is that instance's ``error``; either way a fresh worker takes the next instance."""
    from ..utils import progress as bar

    if jobs < 1:
        raise ConfigError(f"--jobs must be ≥ 1, got {jobs}")
    log = log if log is not None else sys.stderr
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"root folder {root} does not exist or is not a folder")
    instances, dups = read_instance_table(instances_csv, timeout)
    paths = instance_paths(instances, root, instances_csv, allow_outside_root)
    expected = read_expected(root / "expected.csv")  # a bad file fails before any work
    out = Path(out_csv)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = _resume(out)
    todo = [i for i in instances if i.key not in done]
    threads = threads if threads > 0 else max(1, (os.cpu_count() or 1) // jobs)
    it = bar(range(len(todo)), total=len(todo), desc="vnncomp", enabled=progress)
    counts = {"crashed": 0, "killed": 0}

    def finished(task: Task, outcome: Outcome) -> None:
        inst = task.key
        counts[outcome.kind] = counts.get(outcome.kind, 0) + 1
        word, t = _suite_answer(inst, outcome, grace, log)
        append_row(out, (inst.onnx, inst.vnnlib, word, f"{t:.3f}"), RESULT_COLUMNS)
        done[inst.key] = (word, t)
        next(it, None)

    def cex_path(inst: Instance) -> str | None:
        if not cex_dir:
            return None
        return str(Path(cex_dir) / f"{Path(inst.onnx).stem}__{Path(inst.vnnlib).stem}.txt")

    tasks = (Task(i, (*map(str, paths[i.key]), i.timeout, threads, cex_path(i)), i.timeout + grace)
             for i in todo)
    supervise(_worker, tasks, jobs, finished)
    s = summarize(instances, done, expected)
    s.duplicates, s.crashed, s.stopped = dups, counts["crashed"], counts["killed"]
    return s


__all__ = ["BaBConfig", "Instance", "MilpConfig", "RunOutcome", "SuiteSummary", "confined",
           "instance_config", "load_instance", "read_expected", "read_instance_table",
           "read_instances", "read_results", "run_instance", "run_instance_hard", "run_suite",
           "summarize"]
