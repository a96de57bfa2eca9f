"""ERAN's test-image CSVs: one row per image, ``label,p0,p1,...`` with pixels 0–255.

The shape follows from the column count: 785 → MNIST (1, 28, 28); 3073 → CIFAR-10, whose
pixels ERAN stores in **HWC** order (each pixel as R,G,B) and which are returned as CHW.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError
from .idx import read_bytes

_LAYOUTS = {785: ((28, 28, 1), "mnist"), 3073: ((32, 32, 3), "cifar")}


def _parse_row(path: Path, lineno: int, line: str) -> np.ndarray:
    cells = line.split(",")
    try:
        return np.array(cells, dtype=np.float64)
    except ValueError:
        for col, cell in enumerate(cells, 1):
            try:
                float(cell)
            except ValueError:
                raise DataError(f"{path}: row {lineno}, column {col}: {cell.strip()!r} is not a "
                                "number") from None
        raise


def load_eran_csv(path: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """Images (N, C, H, W), labels (N,) and the layout name ("mnist" or "cifar")."""
    try:
        text = read_bytes(path).decode("ascii")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a text CSV file (byte {e.start} is not ASCII)") from e
    rows = [(i, ln) for i, ln in enumerate(text.splitlines(), 1) if ln.strip()]
    if not rows:
        raise DataError(f"{path}: the CSV file has no rows")
    width = rows[0][1].count(",") + 1
    if width not in _LAYOUTS:
        raise DataError(f"{path}: unknown ERAN CSV layout: {width} columns (expected 785 for MNIST "
                        "or 3073 for CIFAR-10)")
    hwc, name = _LAYOUTS[width]
    table = np.empty((len(rows), width))
    for r, (lineno, line) in enumerate(rows):
        values = _parse_row(path, lineno, line)
        if values.shape[0] != width:
            raise DataError(f"{path}: row {lineno} has {values.shape[0]} columns, the first row {width}")
        table[r] = values
    labels = table[:, 0]
    if not np.array_equal(labels, np.round(labels)):
        bad = int(np.flatnonzero(labels != np.round(labels))[0])
        raise DataError(f"{path}: row {rows[bad][0]}: label {labels[bad]} is not an integer")
    images = table[:, 1:].reshape(len(rows), *hwc).transpose(0, 3, 1, 2)
    return np.ascontiguousarray(images), labels.astype(np.int64), name
