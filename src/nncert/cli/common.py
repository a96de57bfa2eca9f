"""Helpers shared by the subcommands: device choice, argument types and model loading.
Progress bars and output files live in ``nncert.utils`` (library code uses them too) and are
re-exported here."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..tables import format_row
from ..utils import JsonLines, is_special, read_json_lines
from ..utils import check_writable as check_writable
from ..utils import one_line as one_line
from ..utils import open_output as open_output
from ..utils import progress as progress
from ..utils import write_atomic as write_atomic
from ..utils import write_json as write_json

if TYPE_CHECKING:
    import torch

TORCH_SUFFIXES = (".pt", ".pth")


class LazyChoices(Sequence):
    """An option's ``choices`` computed on first use by ``names()`` (which imports the library
    table they come from), so that building the parser (``nncert --help``, a usage error)
    imports neither the library nor torch. Give the option a ``metavar`` (argparse lists the
    choices of an option without one when it is added); ``%(choices)s`` in its help lists them."""

    def __init__(self, names: Callable[[], Iterable[str]]) -> None:
        self._compute = names
        self._names: list[str] | None = None

    def _load(self) -> list[str]:
        if self._names is None:
            self._names = list(self._compute())
        return self._names

    def __getitem__(self, i):  # type: ignore[override]
        return self._load()[i]

    def __len__(self) -> int:
        return len(self._load())

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __contains__(self, name: object) -> bool:
        return name in self._load()

    def __repr__(self) -> str:
        return repr(self._load())

    def __str__(self) -> str:  # as a default in help: ``%(default)s``
        return ",".join(self._load())


def add_device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu",
                   help="torch device for all tensors: cpu, cuda, cuda:1, ... (default: cpu)")


def resolve_device(name: str) -> torch.device:
    import torch

    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"invalid device {name!r}: {one_line(e)}") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available here")
    return dev


# -- argument types: argparse turns an ArgumentTypeError into one usage line -------------------
def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def positive_float(text: str) -> float:
    """A finite number > 0."""
    v = _float(text)
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return v


def nonnegative_float(text: str) -> float:
    """A finite number ≥ 0."""
    v = _float(text)
    if not (v >= 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"must be a finite number ≥ 0, got {text}")
    return v


def positive_int(text: str) -> int:
    return _int_at_least(text, 1)


def nonnegative_int(text: str) -> int:
    return _int_at_least(text, 0)


def _int_at_least(text: str, low: int) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < low:
        raise argparse.ArgumentTypeError(f"must be ≥ {low}, got {text}")
    return v


def finite_floats(text: str) -> list[float]:
    """Comma-separated finite numbers, e.g. ``0.4914,0.4822,0.4465``."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected finite numbers, got {text!r}")
    return values


def positive_floats(text: str) -> list[float]:
    """Comma-separated finite numbers > 0 (e.g. per-channel std)."""
    values = finite_floats(text)
    if not all(v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"every value must be > 0, got {text!r}")
    return values


def shape(text: str) -> tuple[int, ...]:
    """A shape without the batch dim, e.g. ``1,28,28`` or ``784``."""
    try:
        dims = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated dims such as 1,28,28, got {text!r}") from None
    if not dims or any(d < 1 for d in dims):
        raise argparse.ArgumentTypeError(f"dims must be ≥ 1, got {text!r}")
    return dims


# -- models ------------------------------------------------------------------------------------
def is_torch_file(path: str | Path) -> bool:
    return Path(path).suffix in TORCH_SUFFIXES


# -- result rows written as they are decided ---------------------------------------------------
#: arguments that do not change a command's rows: a resumed run may differ in these
_NOT_SETTINGS = frozenset({"out", "resume", "func", "config", "device", "batch", "count", "strip",
                           "threads", "debug",
                           "strip_images", "command", "semantic_command"})


def run_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The arguments that decide a per-input command's rows (what ``--resume`` compares),
    as JSON values: every argument except the output, device, batch size and ``--count``."""
    return {k: json.loads(json.dumps(v, default=str)) for k, v in sorted(vars(args).items())
            if k not in _NOT_SETTINGS and not callable(v)}


class RowSink:
    """Rows of a per-input command written as they are decided, so a killed or interrupted run
    keeps them and ``--resume`` continues it. The rows go to a journal as they come: OUT
    itself for ``.jsonl``, else ``OUT.partial.jsonl``. Its first line is
    ``{"nncert_rows": 1, "command", "settings"}``, then one row per input. By ``--out``'s
    suffix:

    * ``.jsonl``: the journal is the output; a ``{"summary": ...}`` line ends it;
    * ``.csv``: at the end OUT gets one CSV line per row (the union of the rows' fields; lists
      and dicts as JSON); the summary is printed, not written;
    * anything else: OUT gets the JSON ``{summary, results}``.

    A finished run removes the partial journal. Ctrl-C writes OUT with the rows so far (the
    summary marked interrupted) and keeps the journal; a crash keeps the journal. With
    ``resume``, the rows already in the journal (those of inputs below the current count) are
    kept and only the other inputs are computed; the journal's settings must equal this
    run's. A symlink, device or pipe OUT gets no partial file (name it ``.jsonl`` to stream)."""

    def __init__(self, out: str | None, resume: bool = False):
        self.out = out
        self.resume = resume
        self.jsonl = out is not None and out.lower().endswith(".jsonl")
        self.csv = out is not None and out.lower().endswith(".csv")
        self.partial = None if out is None or self.jsonl else _partial_path(out)
        self.journal = Path(out) if self.jsonl else self.partial
        self._lines: JsonLines | None = None
        self._header: dict[str, Any] = {}
        self._done: list[dict] = []

    def check(self) -> None:
        """Before computing: every file this sink will write can be written."""
        if self.resume and self.out is None:
            raise ConfigError("--resume continues the run written to --out: give --out")
        if self.out is not None:
            check_writable(self.out, "--out")
        if self.partial is not None:
            check_writable(self.partial, "--out (rows while running)")

    def start(self, command: str, settings: dict[str, Any], count: int) -> set[int]:
        """Once the inputs are known (``count`` of them): the indices whose rows a resumed
        run already has (empty without ``resume``). ConfigError when the journal was written
        by another command or with other settings, or when OUT is a finished run."""
        self._header = {"nncert_rows": 1, "command": command, "settings": settings}
        journal = self.journal
        found = journal is not None and journal.is_file() and journal.stat().st_size > 0
        if not self.resume:
            if found and not self.jsonl:
                print(f"note: {journal} from an earlier run is replaced (--resume continues "
                      "it)", file=sys.stderr)
            return set()
        if not found:
            if Path(self.out).is_file():
                raise ConfigError(f"--resume: {self.out} holds a finished run (no "
                                  f"{journal.name} beside it): nothing to resume")
            return set()
        rows = self._previous(journal)
        self._done = sorted((r for r in rows.values() if 0 <= r["index"] < count),
                            key=lambda r: r["index"])
        print(f"resuming {journal}: {len(self._done)} of {count} inputs already decided",
              file=sys.stderr)
        return {r["index"] for r in self._done}

    def _previous(self, journal: Path) -> dict[int, dict]:
        """The rows of an earlier run's journal, by index, once its header matches."""
        records = read_json_lines(journal)
        head = records[0] if records else {}
        if not isinstance(head, dict) or head.get("nncert_rows") != 1:
            raise ConfigError(f"--resume: {journal}:1 is not a row journal of nncert")
        if head.get("command") != self._header["command"]:
            raise ConfigError(f"--resume: {journal} was written by 'nncert {head.get('command')}'"
                              f", not 'nncert {self._header['command']}'")
        old, new = head.get("settings", {}), self._header["settings"]
        changed = [f"{k} {old.get(k)!r} → {new.get(k)!r}" for k in sorted({*old, *new})
                   if old.get(k) != new.get(k)]
        if changed:
            raise ConfigError(f"--resume: {journal} was written with other settings ("
                              + "; ".join(changed) + "); run without --resume to start over")
        rows = {}
        for line, r in enumerate(records[1:], 2):
            if isinstance(r, dict) and "summary" not in r:
                if not isinstance(r.get("index"), int):
                    raise ConfigError(f"--resume: {journal}:{line}: a row without an index")
                rows[r["index"]] = r
        return rows

    def collect(self, rows: Iterable[dict],
                summarize: Callable[[list[dict], bool], dict]) -> tuple[list[dict], dict]:
        """Take every row of ``rows`` (written as it comes) after the resumed ones, then write
        the summary (``summarize(rows, interrupted)``) over all of them. On Ctrl-C the rows so
        far are written with the summary marked interrupted, then KeyboardInterrupt goes on;
        on an error they stay on disk (in the journal) and the error goes on."""
        got: list[dict] = list(self._done)
        try:
            for row in rows:
                got.append(row)
                self._journal().write(row)
        except KeyboardInterrupt:
            self._finish(summarize, got, interrupted=True)
            raise
        except BaseException:
            self._close()
            raise
        return got, self._finish(summarize, got)

    def _journal(self) -> JsonLines | _NoLines:
        """The journal, opened at the first row written (an error before it leaves no file):
        the header, then the resumed rows (rewritten at once, so an earlier summary line goes),
        then rows appended as they come."""
        if self.journal is None:
            return _NoLines()
        if self._lines is None:
            head = [self._header, *self._done]
            write_atomic(self.journal, "".join(json.dumps(r) + "\n" for r in head))
            self._lines = JsonLines(self.journal, append=True)
        return self._lines

    def _finish(self, summarize, rows: list[dict], interrupted: bool = False) -> dict:
        """Sort ``rows`` by index (in place), write the summary and OUT; the summary."""
        rows.sort(key=lambda r: r["index"])
        summary = summarize(rows, interrupted)
        if self.resume:
            summary["resumed_rows"] = len(self._done)
        if self.jsonl:
            self._journal().write({"summary": summary})
        elif interrupted:
            self._journal()  # (so that --resume finds it even when no row was decided)
        self._close()
        if self.out is None or self.jsonl:
            return summary
        if self.csv:
            write_atomic(self.out, rows_to_csv(rows))
        else:
            write_json(self.out, {"summary": summary, "results": rows})
        if interrupted:
            if self.partial is not None and os.path.lexists(self.partial):
                print(f"interrupted: {len(rows)} rows are in {self.out}; --resume continues "
                      f"from {self.partial}", file=sys.stderr)
        elif self.partial is not None and os.path.lexists(self.partial):
            os.unlink(self.partial)
        return summary

    def _close(self) -> None:
        if self._lines is not None:
            self._lines.close()
            self._lines = None


class _NoLines:
    """The journal of a sink that keeps none (no --out, or an OUT that cannot stream)."""

    def write(self, record: Any) -> None:
        pass


def _partial_path(out: str) -> Path | None:
    """Beside a plain file path only: a symlink (``/dev/stdout``), device or pipe is written at
    the end (use a ``.jsonl`` name to stream rows into it)."""
    if Path(out).is_symlink() or is_special(out):
        return None
    return Path(out).with_name(Path(out).name + ".partial.jsonl")


#: --out's help for the commands that write one row per input through :class:`RowSink`
OUT_HELP = ("results: .jsonl streams one JSON row per input as it is decided (after a "
            "settings line), then a {\"summary\": ...} line; .csv writes one CSV line per input; "
            "any other name gets the JSON {summary, results}. Rows go to OUT.partial.jsonl "
            "while running, so an interrupted run keeps what it decided (see --resume)")

#: --resume's help (same commands)
RESUME_HELP = ("continue the run that --out names: inputs whose rows its journal (OUT itself "
               "for .jsonl, else OUT.partial.jsonl, kept by an interrupted or killed run) holds "
               "are not computed again; the settings must be the same (--count may grow)")


def add_out_args(p: argparse.ArgumentParser) -> None:
    """--out and --resume of a command that writes rows through :class:`RowSink`."""
    p.add_argument("--out", default=None, help=OUT_HELP)
    p.add_argument("--resume", action="store_true", help=RESUME_HELP)


def rows_to_csv(rows: list[dict]) -> str:
    """CSV text of ``rows`` in nncert's dialect (:mod:`nncert.tables`): a header of every
    field in first-seen order, one line per row (missing fields empty, lists and dicts as
    JSON)."""
    fields: dict[str, None] = {}
    for row in rows:
        fields.update(dict.fromkeys(row))
    return format_row(list(fields)) + "".join(
        format_row([_csv_cell(row.get(k)) for k in fields]) for row in rows)


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, list | tuple | dict):
        return json.dumps(value)
    return value
