"""Small utilities shared by library and CLI: progress bars and files that are never
half-written."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], total: int | None = None, desc: str = "",
             enabled: bool = True) -> Iterator[T]:
    """A tqdm progress bar on stderr (silent when disabled or when stderr is not a terminal
    and NNCERT_PROGRESS is unset)."""
    from tqdm import tqdm

    show = enabled and (sys.stderr.isatty() or os.environ.get("NNCERT_PROGRESS") == "1")
    return iter(tqdm(items, total=total, desc=desc, file=sys.stderr, disable=not show,
                     dynamic_ncols=True, leave=False))


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and rename: never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=2) + "\n")
