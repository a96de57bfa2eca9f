"""The training datasets by name: ``mnist``, ``cifar10`` (from a data directory such as
``../shared/data``) and ``digits`` (embedded), as images in [0, 1] with their normalisation."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data import load_dataset
from ..errors import DataError

DATASETS = ("mnist", "cifar10", "digits")
#: per-channel (mean, std) the architectures normalise with (the literature's values)
NORMALIZATION = {
    "mnist": ([0.1307], [0.3081]),
    "cifar10": ([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]),
    "digits": (None, None),
}


@dataclass(frozen=True, eq=False)
class Split:
    """Images (N, C, H, W) in [0, 1] and labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def head(self, count: int | None) -> Split:
        return self if count is None else Split(self.images[:count], self.labels[:count])


def default_data_dir() -> Path:
    """``$NNCERT_DATA``, else ``../shared/data`` (from the working directory)."""
    return Path(os.environ.get("NNCERT_DATA", "../shared/data"))


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise DataError(f"{what} not found at {path} (pass --data-dir, the folder holding "
                        "mnist/ and cifar10/)")
    return path


def _unit(ds) -> Split:
    return Split(ds.images / float(ds.pixel_max), ds.labels)


def load_split(name: str, train: bool, data_dir: str | Path | None = None) -> Split:
    """The training or test split of dataset ``name`` (see :data:`DATASETS`)."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    if name == "digits":
        return _unit(load_dataset("digits:train" if train else "digits:test"))
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    if name == "mnist":
        f = "train-images-idx3-ubyte.gz" if train else "t10k-images-idx3-ubyte.gz"
        return _unit(load_dataset(_need(root / "mnist" / f, "MNIST"), kind="idx"))
    files = [f"data_batch_{i}.npz" for i in range(1, 6)] if train else ["test_batch_first1000.npz"]
    parts = [_unit(load_dataset(_need(root / "cifar10" / f, "CIFAR-10"), kind="npz"))
             for f in files]
    return Split(torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]))
