"""scikit-learn's embedded 8×8 digits (1797 images, pixels 0–16, 10 classes); no files needed.

The data ship inside the scikit-learn wheel as ``sklearn/datasets/data/digits.csv.gz`` (64
pixels and the label per row). That file is read directly, which avoids importing
``sklearn.datasets`` (seconds); ``sklearn.datasets.load_digits`` is the fallback.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from ..errors import DataError

TRAIN_SIZE = 1500  # "digits:train" = the first 1500 images, "digits:test" = the other 297


def _embedded_csv() -> Path | None:
    spec = importlib.util.find_spec("sklearn")
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            return path
    return None


def _all_digits() -> tuple[np.ndarray, np.ndarray]:
    path = _embedded_csv()
    if path is not None:
        table = np.loadtxt(path, delimiter=",")
        if table.shape == (1797, 65):
            return table[:, :64].reshape(-1, 1, 8, 8), table[:, 64].astype(np.int64)
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as e:
        raise DataError("the digits dataset needs scikit-learn (pip install scikit-learn)") from e
    bunch = sk_load_digits()
    return bunch.images[:, None], bunch.target


def load_digits(split: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 1, 8, 8) and labels (N,); ``split`` is None (all), "train" or "test"."""
    if split not in (None, "train", "test"):
        raise DataError(f"unknown digits split {split!r} (use 'digits', 'digits:train' or 'digits:test')")
    images, labels = _all_digits()
    if split == "train":
        return images[:TRAIN_SIZE], labels[:TRAIN_SIZE]
    if split == "test":
        return images[TRAIN_SIZE:], labels[TRAIN_SIZE:]
    return images, labels
