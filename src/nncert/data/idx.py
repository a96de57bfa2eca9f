"""MNIST / Fashion-MNIST IDX files (gzip-compressed or raw).

An IDX file is a big-endian header — two zero bytes, a type code, the number of dimensions, one
uint32 per dimension — followed by the values in row-major order.
"""

from __future__ import annotations

import gzip
import math
import re
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..utils import one_line

_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
# (image file name pattern, its label file) for both naming schemes of the MNIST mirrors
_LABEL_NAMES = ((re.compile(r"images-idx3-ubyte"), "labels-idx1-ubyte"),
                (re.compile(r"images\.idx3-ubyte"), "labels.idx1-ubyte"))
_TEST_IMAGES = ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte", "test-images-idx3-ubyte")


def read_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed when it starts with the gzip magic number."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from e
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: corrupt or truncated gzip data ({one_line(e)})") from e
    return raw


def read_idx(path: Path) -> np.ndarray:
    """The array stored in one IDX file; DataError on a bad header or a size mismatch."""
    raw = read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _TYPES:
        raise DataError(f"{path}: bad IDX magic number {raw[:4].hex() or '(empty file)'} "
                        "(expected 0000 followed by a type code and the number of dimensions)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes, {ndim} dimensions)")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_TYPES[raw[2]])
    expected = math.prod(dims) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(f"{path}: size mismatch: the header says {'×'.join(map(str, dims))} values "
                        f"({expected} bytes) but the payload has {len(raw) - header} bytes")
    return np.frombuffer(raw, dtype, offset=header).reshape(dims)


def labels_path(images: Path) -> Path:
    """The labels file beside an images file (``t10k-images-idx3-ubyte.gz`` →
    ``t10k-labels-idx1-ubyte.gz``, with or without ``.gz``)."""
    for pattern, repl in _LABEL_NAMES:
        if pattern.search(images.name):
            base = pattern.sub(repl, images.name).removesuffix(".gz")
            for cand in (images.with_name(base + ".gz"), images.with_name(base)):
                if cand.is_file():
                    return cand
            raise DataError(f"{images}: no labels file beside it (looked for {base}[.gz])")
    raise DataError(f"{images}: cannot tell the labels file from this name (expected "
                    "'...images-idx3-ubyte' or '...images.idx3-ubyte')")


def find_test_images(directory: Path) -> Path | None:
    """The test-split images file in ``directory``, if any."""
    for name in _TEST_IMAGES:
        for cand in (directory / (name + ".gz"), directory / name):
            if cand.is_file():
                return cand
    return None


def load_idx(images_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 1, H, W) and labels (N,) from an IDX images file and the labels beside it."""
    images = read_idx(images_path)
    if images.ndim != 3:
        raise DataError(f"{images_path}: an IDX images file has 3 dimensions (N, H, W), "
                        f"this one has shape {images.shape}")
    lpath = labels_path(images_path)
    labels = read_idx(lpath)
    if labels.ndim != 1:
        raise DataError(f"{lpath}: an IDX labels file has 1 dimension, this one has shape {labels.shape}")
    if labels.shape[0] != images.shape[0]:
        raise DataError(f"{lpath}: {labels.shape[0]} labels but {images.shape[0]} images in {images_path}")
    return images[:, None], labels
