"""VNN-COMP benchmark suites: instances.csv (onnx,vnnlib,timeout) → results.csv (onnx,vnnlib,result,
time_s), resumable, with a summary against the folder's expected.csv; run by the one runner
(:mod:`.runner`) on the local pool or on Ray.

Result words are VNN-COMP's: ``sat``, ``unsat``, ``timeout``, ``unknown``, and ``error`` when the
instance could not be run (unreadable model, spec not matching it, a crashed worker, ...).

Confinement: the paths of an instances.csv must stay under the suite's root (symlinks resolved)
unless the caller allows outside paths explicitly.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ..complete.vnncomp import one_line, run_instance, worker_test_hook, write_result
from ..errors import ConfigError, DataError, NncertError
from ..tables import Row, append_row, excerpt, read_rows, write_rows
from ..utils import reset_peak_memory
from .executors import LocalPool
from .runner import Work, run_work, with_peak_memory

RESULT_COLUMNS = ("onnx", "vnnlib", "result", "time_s")
RESULT_WORDS = ("sat", "unsat", "timeout", "unknown", "error")
#: seconds past an instance's timeout before its worker is killed
SUITE_GRACE_S = 1.0
#: nncert's verdict → VNN-COMP's result word
WORDS = {"verified": "unsat", "falsified": "sat", "unknown": "unknown", "timeout": "timeout",
         "error": "error"}


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


def instance_key(onnx: str, vnnlib: str) -> str:
    """The runner's key of an instance (unique, unambiguous for any path)."""
    return json.dumps([onnx, vnnlib])


def solve_instance(onnx_path: str, vnnlib_path: str, timeout: float, threads: int,
                   cex_path: str | None) -> dict:
    """Worker: the row fields of one instance (``verdict``, ``result``, ``time_s``, ``error``).
    Bad input is the instance's ``error``; a bug becomes an ``error`` too (with its type),
    never the suite's end."""
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    worker_test_hook(onnx_path)
    reset_peak_memory()
    err = None
    try:
        res = run_instance(onnx_path, vnnlib_path, timeout)
        if cex_path and res.counterexample is not None:
            write_result(cex_path, res.to_vnncomp())
        verdict = res.verdict.value
    except NncertError as e:
        verdict, err = "error", str(e)
    except Exception as e:  # noqa: BLE001 - a bug in one instance must not stop the suite
        verdict, err = "error", f"{type(e).__name__}: {e}"
    row = {"verdict": verdict, "result": WORDS[verdict],
           "time_s": round(time.perf_counter() - t0, 3)}
    if err is not None:
        row["error"] = one_line(err)
    return with_peak_memory(row)


def warm_up() -> None:
    """Import what the first instance would import lazily (see ``instances.warm_up``)."""
    from ..utils import tune_allocator

    tune_allocator()  # (Ray workers are not forked from the CLI)
    import onnxruntime  # noqa: F401

    from ..bounds import alpha_crown, crown, interval, zonotope  # noqa: F401
    from ..models import from_onnx, onnx_runtime  # noqa: F401
    from ..specs import vnnlib  # noqa: F401


def vnncomp_works(instances: list[Instance], paths: dict, expected: dict, threads: int = 1,
                  cex_dir: str | None = None, suite: str = "") -> list[Work]:
    """The runner's work items for VNN-COMP instances (``paths``: :func:`instance_paths`)."""
    works = []
    for inst in instances:
        onnx, vnnlib = paths[inst.key]
        cex = None
        if cex_dir:
            cex = str(Path(cex_dir) / f"{Path(inst.onnx).stem}__{Path(inst.vnnlib).stem}.txt")
        fields = {"suite": suite, "kind": "vnncomp", "onnx": inst.onnx, "vnnlib": inst.vnnlib,
                  "timeout": inst.timeout}
        if inst.key in expected:
            fields["expected"] = expected[inst.key]
        works.append(Work(instance_key(*inst.key), fields, (str(onnx), str(vnnlib), inst.timeout,
                                                           threads, cex), inst.timeout,
                          f"{one_line(inst.onnx, 120)} {one_line(inst.vnnlib, 120)}"))
    return works


@dataclass
class CsvStore:
    """A VNN-COMP results.csv as the runner's store (see :func:`_resume`)."""

    path: Path
    done: dict = field(default_factory=dict)
    answers: dict = field(default_factory=dict)  # (onnx, vnnlib) -> (word, seconds)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.answers = _resume(self.path)
        self.done = {instance_key(*k): v for k, v in self.answers.items()}

    def append(self, work: Work, row: dict) -> None:
        word, t = WORDS[row["verdict"]], float(row["time_s"])
        fields = work.fields
        append_row(self.path, (fields["onnx"], fields["vnnlib"], word, f"{t:.3f}"), RESULT_COLUMNS)
        self.answers[(fields["onnx"], fields["vnnlib"])] = (word, t)
        self.done[work.key] = (word, t)


def prepare_suite(instances_csv, root, timeout: float | None = None,
                  allow_outside_root: bool = False) -> tuple[list[Instance], int, dict, dict]:
    """(instances, duplicate rows dropped, confined paths, expected answers) of a suite; every
    check that can fail (bad rows, paths outside the root, a wrong root, a bad expected.csv)
    fails here, before any work."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"root folder {root} does not exist or is not a folder")
    instances, dups = read_instance_table(instances_csv, timeout)
    paths = instance_paths(instances, root, instances_csv, allow_outside_root)
    expected = read_expected(root / "expected.csv")
    return instances, dups, paths, expected


def run_suite(instances_csv, root, out_csv, jobs: int = 1, timeout: float | None = None,
              progress: bool = True, cex_dir: str | None = None, log=None,
              threads: int = 1, allow_outside_root: bool = False,
              grace: float = SUITE_GRACE_S, executor=None) -> SuiteSummary:
    """Run every instance not yet in ``out_csv``; rows are appended (and fsynced) as they
    finish, so an interrupted run loses nothing and a restart resumes (``error`` rows are run
    again). Each instance's worker is killed at its timeout + ``grace`` (``timeout``); a crashed
    worker is that instance's ``error``; either way a fresh worker takes the next instance.
    ``executor``: the local pool of ``jobs`` workers by default, or a :class:`~.executors.RayPool`."""
    executor = executor or LocalPool(jobs)
    log = log if log is not None else sys.stderr
    instances, dups, paths, expected = prepare_suite(instances_csv, root, timeout,
                                                     allow_outside_root)
    store = CsvStore(Path(out_csv))
    workers = getattr(executor, "jobs", None) or 1
    threads = threads if threads > 0 else max(1, (os.cpu_count() or 1) // workers)
    works = vnncomp_works(instances, paths, expected, threads, cex_dir)
    counts = run_work(solve_instance, works, executor, store, grace, log, progress, "vnncomp")
    s = summarize(instances, store.answers, expected)
    s.duplicates, s.crashed, s.stopped = dups, counts.crashed, counts.stopped
    return s


__all__ = ["CsvStore", "Instance", "RESULT_COLUMNS", "RESULT_WORDS", "SUITE_GRACE_S",
           "SuiteSummary", "confined", "instance_key", "instance_paths", "prepare_suite",
           "read_expected", "read_instance_table", "read_instances", "read_results", "run_suite",
           "solve_instance", "summarize", "vnncomp_works", "warm_up"]
