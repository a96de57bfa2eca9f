"""The one runner for everything that runs instances: suites of robustness points and VNN-COMP
instance lists alike.

Promises:

* one row per instance, written (flushed and fsynced) as soon as the instance ends, so a killed
  run loses nothing finished; a restart runs only the instances without a row (``error`` rows
  are run again, a row torn by the kill is dropped);
* a row depends only on the instance and on what its worker returned, never on the executor:
  the local pool and Ray give the same rows (up to the measured times, ``time_s``);
* an instance whose worker overruns its timeout + grace is recorded as ``timeout`` (the worker is
  killed); one whose worker dies or raises is recorded as ``error``; the run goes on either way.

Workers add ``peak_mb`` to their rows (:func:`with_peak_memory`): the worker process's peak
resident memory in MiB while it ran that instance (Linux; elsewhere over the worker's life).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..complete.supervise import Outcome, Task
from ..errors import DataError
from ..utils import one_line, peak_memory_mb, progress, sync

#: the first line of a results file: ``{"nncert_results": FORMAT, "suite": NAME}``
FORMAT = 1
#: fields that may differ between two runs of the same instance (measured, not computed)
VOLATILE = frozenset({"time_s"})


@dataclass(frozen=True)
class Work:
    """One instance: ``fn(*args)`` (a module-level function, importable by workers) returns a
    dict of result fields; ``fields`` identify the instance and start its row; ``key`` is unique
    within a suite; ``timeout_s`` is the instance's own budget (its worker is killed at
    ``timeout_s`` + the run's grace)."""

    key: Hashable
    fields: dict[str, Any]
    args: tuple
    timeout_s: float
    label: str = ""


@dataclass
class RunCounts:
    """What happened in one run (not counting rows found from an earlier run)."""

    ran: int = 0
    crashed: int = 0
    stopped: int = 0
    errors: int = 0
    kept: int = 0  # rows of an earlier run, kept


class Store(Protocol):
    """Where rows go: ``done`` holds the finished rows by key (errors excluded, so they run
    again); ``append`` writes one row durably."""

    done: dict

    def append(self, work: Work, row: dict[str, Any]) -> None: ...


def with_peak_memory(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with ``peak_mb``: this worker's peak resident memory (MiB) since the task began
    (the task calls :func:`nncert.utils.reset_peak_memory` first). Where the kernel cannot
    reset the peak, it is the worker's peak over its life: never below the task's own."""
    peak = peak_memory_mb()
    if peak is not None:
        row["peak_mb"] = round(peak, 1)
    return row


def row_of(work: Work, out: Outcome) -> dict[str, Any]:
    """The row of a finished instance: ``work.fields`` then the worker's fields; for a killed
    worker ``verdict`` timeout, for a dead or raising one ``verdict`` error with the reason."""
    row = dict(work.fields)
    if out.kind == "ok":
        row.update(out.value)
        return row
    row["verdict"] = "timeout" if out.kind == "killed" else "error"
    row["time_s"] = round(out.elapsed, 3)
    if out.kind == "killed":
        row["stopped"] = True
    elif out.kind == "crashed":  # how it died is executor-specific: logged, not in the row
        row["error"] = "the worker process died"
    else:
        row["error"] = one_line(out.detail, 300)
    return row


def run_work(fn: Callable, works: Iterable[Work], executor, store: Store, grace: float = 1.0,
             log=None, show_progress: bool = True, desc: str = "instances",
             on_row: Callable[[Work, dict], None] | None = None) -> RunCounts:
    """Run every work item whose key is not in ``store.done`` on ``executor`` and append its
    row to ``store`` as it ends (see the module docstring for the promises)."""
    log = log if log is not None else sys.stderr
    works = list(works)
    todo = [w for w in works if w.key not in store.done]
    counts = RunCounts(kept=len(works) - len(todo))
    bar = progress(range(len(todo)), total=len(todo), desc=desc, enabled=show_progress)

    def finished(task: Task, out: Outcome) -> None:
        work: Work = task.key
        row = row_of(work, out)
        counts.ran += 1
        counts.crashed += out.kind == "crashed"
        counts.stopped += out.kind == "killed"
        counts.errors += row.get("verdict") == "error"
        _log_problem(work, out, row, grace, log)
        store.append(work, row)
        if on_row is not None:
            on_row(work, row)
        next(bar, None)

    executor.run(fn, (Task(w, w.args, w.timeout_s + grace) for w in todo), finished)
    return counts


def _log_problem(work: Work, out: Outcome, row: dict, grace: float, log) -> None:
    name = work.label or str(work.key)
    if out.kind == "killed":
        print(f"nncert: {name}: still running {grace:g} s after its timeout: stopped, "
              "recorded as timeout", file=log)
    elif out.kind == "crashed":
        print(f"nncert: {name}: error: {one_line(out.detail, 300)}", file=log)
    elif row.get("verdict") == "error":
        print(f"nncert: {name}: error: {one_line(row.get('error', out.detail), 300)}", file=log)


# -- JSON Lines results ---------------------------------------------------------------------
@dataclass
class JsonlStore:
    """A results file: a header line, then one JSON row per instance with a unique ``key`` (a
    new file is created with the first row). Opening it resumes: torn, error and duplicate rows
    are dropped (the file is rewritten atomically without them); a file of another suite, or not
    a results file, is refused."""

    path: Path
    suite: str
    done: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        header = _header(self.path)
        rows = read_results(self.path, must_exist=False)
        if header is not None and header.get("suite") != self.suite:
            raise DataError(f"{self.path} holds results of suite {header.get('suite')!r}, not "
                            f"{self.suite!r}; refusing to mix them (choose another --out)")
        for row in rows:
            if row.get("verdict") != "error":
                self.done.setdefault(row["key"], row)
        if header is not None:  # a new file is written with the first row
            self._rewrite()

    def _rewrite(self) -> None:
        from ..utils import write_atomic

        lines = [json.dumps({"nncert_results": FORMAT, "suite": self.suite})]
        lines += [json.dumps(r) for r in self.done.values()]
        write_atomic(self.path, "\n".join(lines) + "\n")

    def append(self, work: Work, row: dict[str, Any]) -> None:
        row = {"key": work.key, **row}
        if not self.path.exists() or self.path.stat().st_size == 0:
            self._rewrite()
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
            sync(f)
        if row.get("verdict") != "error":
            self.done[work.key] = row


def _header(path: Path) -> dict | None:
    if not path.exists() or path.stat().st_size == 0:
        return None
    with open(path, encoding="utf-8", errors="replace") as f:
        first = f.readline()
    try:
        head = json.loads(first)
    except json.JSONDecodeError:
        head = None
    if not isinstance(head, dict) or "nncert_results" not in head:
        raise DataError(f"{path}:1: not an nncert results file (its first line is not the "
                        "results header); refusing to overwrite it")
    return head


def read_results(path: str | os.PathLike, must_exist: bool = True) -> list[dict[str, Any]]:
    """The rows of a results file (without its header), in file order; a last line cut short by
    a kill is ignored. DataError naming the file and line for anything else that is not a row."""
    path = Path(path)
    if not path.exists() and not must_exist:
        return []
    if path.is_dir():
        raise DataError(f"results file {path} is a folder")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read results file {path}: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"results file {path} is not UTF-8 text (byte {e.start})") from None
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # a torn last row
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{i}: not a JSON row ({e.msg})") from None
        if i == 1 and isinstance(rec, dict) and "nncert_results" in rec:
            continue
        if i == 1:
            raise DataError(f"{path}:1: not an nncert results file (no results header)")
        if not isinstance(rec, dict) or "key" not in rec or "verdict" not in rec:
            raise DataError(f"{path}:{i}: not a results row (a JSON object with 'key' and "
                            "'verdict')")
        rows.append(rec)
    return rows


def comparable(rows: Iterable[dict]) -> dict[Any, dict]:
    """Rows by key without their measured fields (``time_s``): what must be equal between two
    runs of the same suite, whatever the executor."""
    return {_hashable(r["key"]): {k: v for k, v in r.items() if k not in VOLATILE} for r in rows}


def _hashable(key: Any) -> Hashable:
    return tuple(key) if isinstance(key, list) else key


__all__ = ["FORMAT", "JsonlStore", "RunCounts", "Store", "Work", "comparable", "read_results",
           "row_of", "run_work"]
