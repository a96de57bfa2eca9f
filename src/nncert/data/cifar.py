"""CIFAR-10 batches: the python-version pickles (``data_batch_1``, ``test_batch``) and numpy
``.npz`` archives with the same ``data``/``labels`` arrays. Rows are planar CHW (1024 red, then
1024 green, then 1024 blue values), so ``data.reshape(N, 3, 32, 32)`` is the image batch.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..utils import one_line
from .idx import read_bytes

# A python batch holds a dict of bytes, lists and numpy arrays; nothing else may be unpickled
# (pickles can run arbitrary code, so only these constructors are allowed).
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"), ("copyreg", "_reconstructor"), ("builtins", "object"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),  # protocol 5
    ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR batch")
        if module.startswith("numpy.core.") and hasattr(np, "_core"):
            module = "numpy._core." + module[len("numpy.core."):]  # numpy ≥ 2 moved it
        return super().find_class(module, name)


def _image_shape(path: Path, data: np.ndarray) -> tuple[int, ...]:
    if data.ndim == 4:
        return data.shape[1:]
    if data.ndim == 2 and data.shape[1] == 3072:
        return (3, 32, 32)
    if data.ndim == 2 and data.shape[1] == 784:
        return (1, 28, 28)
    raise DataError(f"{path}: 'data' has shape {data.shape}; expected (N, 3072) planar CIFAR rows, "
                    "(N, 784) MNIST rows or (N, C, H, W)")


def _finish(path: Path, data, labels) -> tuple[np.ndarray, np.ndarray]:
    data, labels = np.asarray(data), np.asarray(labels).reshape(-1)
    shape = _image_shape(path, data)
    if labels.shape[0] != data.shape[0]:
        raise DataError(f"{path}: {labels.shape[0]} labels but {data.shape[0]} images")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: labels have type {labels.dtype}, expected integers")
    return data.reshape(data.shape[0], *shape), labels


def load_cifar_pickle(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) and labels (N,) from a python-version CIFAR-10 batch."""
    raw = read_bytes(path)
    try:
        batch = _SafeUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as e:  # any unpickling failure means a corrupt or foreign file
        raise DataError(f"{path}: not a CIFAR-10 python batch ({type(e).__name__}: {one_line(e)})") from e
    if not isinstance(batch, dict):
        raise DataError(f"{path}: a CIFAR-10 batch is a dict, got {type(batch).__name__}")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    missing = [k for k in ("data", "labels") if k not in batch]
    if missing:
        raise DataError(f"{path}: the batch has no {' or '.join(missing)} entry")
    return _finish(path, batch["data"], batch["labels"])


def load_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels from an ``.npz`` with ``data`` and ``labels`` arrays (no pickles)."""
    try:
        with open(path, "rb") as fh:
            z = np.load(fh, allow_pickle=False)
            if not hasattr(z, "files"):
                raise DataError(f"{path}: a single .npy array, not an .npz archive with data and labels")
            missing = [k for k in ("data", "labels") if k not in z.files]
            if missing:
                raise DataError(f"{path}: the archive has no {' or '.join(missing)} array "
                                f"(it has {', '.join(z.files) or 'none'})")
            return _finish(path, z["data"], z["labels"])
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: not a readable .npz archive ({one_line(e)})") from e


def find_test_batch(directory: Path) -> Path | None:
    """The CIFAR-10 test batch in ``directory``, if any."""
    for name in ("test_batch", "test_batch.npz", "test_batch_first1000.npz"):
        if (directory / name).is_file():
            return directory / name
    return None
