"""Dataset readers → one ``Dataset`` of raw pixels (normalisation is an op of the graph).

``load_dataset(source, count=None, kind=None)`` reads:

* ``"digits"``, ``"digits:train"`` (first 1500), ``"digits:test"`` (other 297): scikit-learn's
  embedded 8×8 digits, (N, 1, 8, 8), pixels 0–16;
* an MNIST / Fashion-MNIST IDX images file (``.gz`` or raw; labels found beside it), or a
  directory holding them (the t10k split): (N, 1, 28, 28), pixels 0–255;
* a CIFAR-10 python batch (``data_batch_1``, ``test_batch``) or ``.npz`` with ``data``/``labels``,
  or a directory with the test batch: (N, 3, 32, 32) CHW, pixels 0–255;
* an ERAN test CSV (``label,p0,...``): MNIST (785 columns) or CIFAR-10 (3073, HWC → CHW).

``kind`` forces the format: "digits", "idx", "cifar" (python pickle batch), "npz" or "eran".
Bad or truncated files raise ``DataError`` naming the file and what is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, DataError
from .cifar import find_test_batch, load_cifar_pickle, load_npz
from .digits import load_digits
from .eran import load_eran_csv
from .idx import find_test_images, load_idx

KINDS = ("digits", "idx", "cifar", "npz", "eran")


@dataclass(frozen=True, eq=False)
class Dataset:
    """Images (N, C, H, W) float32 in raw pixel units [0, pixel_max], labels (N,) int64."""

    images: torch.Tensor
    labels: torch.Tensor
    pixel_max: float
    name: str

    def __post_init__(self) -> None:
        if self.images.dim() != 4 or self.labels.shape != self.images.shape[:1]:
            raise DataError(f"{self.name}: images {tuple(self.images.shape)} and labels "
                            f"{tuple(self.labels.shape)} do not form a dataset")

    def __len__(self) -> int:
        return self.images.shape[0]


def to_unit(ds: Dataset) -> torch.Tensor:
    """The images scaled to [0, 1] (``images / pixel_max``)."""
    return ds.images / ds.pixel_max


def _is_digits(source: str | Path) -> bool:
    return isinstance(source, str) and source.split(":")[0] == "digits" and not Path(source).exists()


def _guess_kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith((".csv", ".csv.gz")):
        return "eran"
    if name.endswith(".npz"):
        return "npz"
    if "idx" in name:
        return "idx"
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] == b"\x00\x00":
        return "idx"
    if head[:1] == b"\x80":
        return "cifar"
    if head[:2] == b"PK":
        return "npz"
    raise DataError(f"{path}: unknown dataset format (not an IDX file, a CIFAR-10 batch, an .npz "
                    "or an ERAN CSV); pass kind= to force one")


def _resolve_dir(path: Path) -> tuple[Path, str]:
    images = find_test_images(path)
    if images is not None:
        return images, "idx"
    batch = find_test_batch(path)
    if batch is not None:
        return batch, "npz" if batch.suffix == ".npz" else "cifar"
    raise DataError(f"{path}: the directory holds no MNIST t10k IDX files and no CIFAR-10 test batch")


def _read(source: str | Path, kind: str | None) -> tuple[np.ndarray, np.ndarray, float, str]:
    if kind == "digits" or (kind is None and _is_digits(source)):
        split = str(source).split(":", 1)[1] if ":" in str(source) else None
        images, labels = load_digits(split)
        return images, labels, 16.0, str(source)
    path = Path(source)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if path.is_dir():
        path, guessed = _resolve_dir(path)
    else:
        guessed = kind or _guess_kind(path)
    if guessed == "idx":
        images, labels = load_idx(path)
    elif guessed == "cifar":
        images, labels = load_cifar_pickle(path)
    elif guessed == "npz":
        images, labels = load_npz(path)
    elif guessed == "eran":
        images, labels, layout = load_eran_csv(path)
        guessed = f"eran-{layout}"
    else:
        raise ConfigError(f"unknown dataset kind {kind!r}; use one of {', '.join(KINDS)}")
    return images, labels, 255.0, f"{guessed}:{path.name}"


def load_dataset(source: str | Path, count: int | None = None, kind: str | None = None) -> Dataset:
    """Read a dataset (see the module docstring); ``count`` keeps the first ``count`` images."""
    if count is not None and count < 0:
        raise ConfigError(f"count must be ≥ 0, got {count}")
    if kind is not None and kind not in KINDS:
        raise ConfigError(f"unknown dataset kind {kind!r}; use one of {', '.join(KINDS)}")
    images, labels, pixel_max, name = _read(source, kind)
    if count is not None:
        images, labels = images[:count], labels[:count]
    return Dataset(torch.from_numpy(np.asarray(images, dtype=np.float32).copy()),
                   torch.from_numpy(np.asarray(labels, dtype=np.int64).copy()), pixel_max, name)


__all__ = ["Dataset", "load_dataset", "to_unit"]
