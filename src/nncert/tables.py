"""CSV tables (instances.csv, results.csv, expected.csv, ...): one reader and one writer so that
every file nncert writes has the same dialect and line ending, and every path round-trips.

Promises:

* rows are written by the :mod:`csv` module with ``lineterminator="\\n"``: a field holding a
  comma, a quote or a newline is quoted, and reading it back gives the exact same string;
* :func:`append_row` returns only after the row is on disk (flush + fsync), so a finished row
  survives a crash; a row torn by a crash is the file's last line, without its newline, and
  :func:`read_rows` drops it;
* a file that is binary, not UTF-8 or not CSV raises :class:`~nncert.errors.DataError` naming the
  file (and the line), never echoing its content.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError

#: the one dialect nncert writes
LINE_END = "\n"


@dataclass(frozen=True)
class Row:
    """One CSV record: its fields and the (1-based) line it starts on."""

    line: int
    fields: tuple[str, ...]


def read_text(path: str | os.PathLike, what: str = "table") -> str:
    """The file's text (UTF-8, a leading BOM removed); DataError for binary or non-UTF-8 files."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except IsADirectoryError as e:
        raise DataError(f"{what} {p} is a folder, not a file") from e
    except OSError as e:
        raise DataError(f"cannot read {what} {p}: {e.strerror or e}") from e
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise DataError(f"{what} {p} is a binary file (byte {nul} is NUL), not CSV text")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{what} {p} is not UTF-8 text (byte {e.start} is invalid)") from e


def read_rows(path: str | os.PathLike, what: str = "table", drop_torn: bool = False) -> list[Row]:
    """Every non-empty record of the CSV file. With ``drop_torn``, a last line without its
    newline (an append cut short by a crash) is dropped instead of returned."""
    text = read_text(path, what)
    if drop_torn and text and not text.endswith(("\n", "\r")):
        cut = max(text.rfind("\n"), text.rfind("\r"))
        text = text[:cut + 1]
    return parse_rows(text, f"{what} {Path(path)}")


def parse_rows(text: str, where: str) -> list[Row]:
    """The records of CSV ``text``; ``where`` names the source in errors."""
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[Row] = []
    start = 1
    try:
        for fields in reader:
            if any(f.strip() for f in fields):
                rows.append(Row(start, tuple(fields)))
            start = reader.line_num + 1
    except csv.Error as e:
        raise DataError(f"{where}:{reader.line_num}: not valid CSV ({e})") from e
    return rows


def format_row(fields: Sequence[object]) -> str:
    """One record as text, in nncert's dialect (ends with ``\\n``)."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator=LINE_END).writerow(fields)
    return buf.getvalue()


def append_row(path: str | os.PathLike, fields: Sequence[object],
               header: Sequence[str] | None = None) -> None:
    """Append one record durably (flush + fsync before returning). ``header`` is written first
    when the file is new or empty."""
    p = Path(path)
    text = format_row(fields)
    if header is not None and (not p.exists() or p.stat().st_size == 0):
        text = format_row(header) + text
    with open(p, "a", encoding="utf-8", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def write_rows(path: str | os.PathLike, rows: Iterable[Sequence[object]],
               header: Sequence[str] | None = None) -> None:
    """Replace the file by these records atomically (temporary file, fsync, rename): a reader
    sees the old file or the new one, never a mix."""
    p = Path(path)
    text = "".join(format_row(r) for r in ([header] if header is not None else []))
    text += "".join(format_row(r) for r in rows)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def excerpt(text: str, limit: int = 40) -> str:
    """A short, printable excerpt of untrusted text for an error message: control and non-ASCII
    characters shown as ``?``, at most ``limit`` characters (then ``...``)."""
    safe = "".join(c if c.isascii() and c.isprintable() else "?" for c in text[:limit])
    return "'" + safe + ("..." if len(text) > limit else "") + "'"


__all__ = ["LINE_END", "Row", "append_row", "excerpt", "format_row", "parse_rows", "read_rows",
           "read_text", "write_rows"]
