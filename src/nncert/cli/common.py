"""Helpers shared by the subcommands: device choice, argument types and model loading.
Progress bars and output files live in ``nncert.utils`` (library code uses them too) and are
re-exported here."""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..tables import format_row
from ..utils import JsonLines, is_special
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
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1, got {text}")
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
class RowSink:
    """Rows of a per-input command written as they are decided, so a killed or interrupted run
    keeps them. By ``--out``'s suffix:

    * ``.jsonl``: JSON Lines, one row per line as it is decided, then ``{"summary": ...}``;
    * ``.csv``: rows go to ``OUT.partial.jsonl`` while running; at the end (or on Ctrl-C) OUT
      gets one CSV line per row (the union of the rows' fields; lists and dicts as JSON) and
      the partial file is removed; the summary is printed, not written;
    * anything else: likewise, OUT gets the JSON ``{summary, results}``.

    A symlink, device or pipe OUT gets no partial file (name it ``.jsonl`` to stream)."""

    def __init__(self, out: str | None):
        self.out = out
        self.jsonl = out is not None and out.lower().endswith(".jsonl")
        self.csv = out is not None and out.lower().endswith(".csv")
        self.partial = None if out is None or self.jsonl else _partial_path(out)
        self._lines: JsonLines | None = None

    def check(self) -> None:
        """Before computing: every file this sink will write can be written."""
        if self.out is not None:
            check_writable(self.out, "--out")
        if self.partial is not None:
            check_writable(self.partial, "--out (rows while running)")

    def collect(self, rows: Iterable[dict],
                summarize: Callable[[list[dict], bool], dict]) -> tuple[list[dict], dict]:
        """Take every row of ``rows`` (written as it comes), then write the summary
        (``summarize(rows, interrupted)``). On Ctrl-C the rows so far are written with the
        summary marked interrupted, then KeyboardInterrupt goes on; on an error they stay on
        disk (in the partial file) and the error goes on."""
        got: list[dict] = []
        path = self.out if self.jsonl else self.partial
        try:
            for row in rows:
                got.append(row)
                if path is not None and self._lines is None:  # (opened by the first row: an
                    self._lines = JsonLines(path)              # error before it leaves no file)
                if self._lines is not None:
                    self._lines.write(row)
        except KeyboardInterrupt:
            self._finish(summarize(got, True), got)
            raise
        except BaseException:
            self._close()
            raise
        summary = summarize(got, False)
        self._finish(summary, got)
        return got, summary

    def _finish(self, summary: dict, rows: list[dict]) -> None:
        if self.jsonl:
            if self._lines is None:
                self._lines = JsonLines(self.out)
            self._lines.write({"summary": summary})
        self._close()
        if self.out is None or self.jsonl:
            return
        if self.csv:
            write_atomic(self.out, rows_to_csv(rows))
        else:
            write_json(self.out, {"summary": summary, "results": rows})
        if self.partial is not None and os.path.lexists(self.partial):
            os.unlink(self.partial)

    def _close(self) -> None:
        if self._lines is not None:
            self._lines.close()
            self._lines = None


def _partial_path(out: str) -> Path | None:
    """Beside a plain file path only: a symlink (``/dev/stdout``), device or pipe is written at
    the end (use a ``.jsonl`` name to stream rows into it)."""
    if Path(out).is_symlink() or is_special(out):
        return None
    return Path(out).with_name(Path(out).name + ".partial.jsonl")


#: --out's help for the commands that write one row per input through :class:`RowSink`
OUT_HELP = ("results: .jsonl streams one JSON row per input as it is decided, then a "
            "{\"summary\": ...} line; .csv writes one CSV line per input; any other name gets "
            "the JSON {summary, results}. Rows go to OUT.partial.jsonl while running, so an "
            "interrupted run keeps what it decided")


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
