"""Dataset readers: tiny files written here, corrupt ones, and the shared datasets."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import DATA, requires_shared
from nncert.data import Dataset, load_dataset, to_unit
from nncert.errors import ConfigError, DataError


def idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(">u1" if code == 0x08 else ">f4").tobytes()


def write_idx_pair(folder: Path, prefix: str, n: int = 5, gz: bool = True, dotted: bool = False):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    sep = "." if dotted else "-"
    img = folder / (f"{prefix}-images{sep}idx3-ubyte" + (".gz" if gz else ""))
    lab = folder / (f"{prefix}-labels{sep}idx1-ubyte" + (".gz" if gz else ""))
    pack = gzip.compress if gz else (lambda b: b)
    img.write_bytes(pack(idx_bytes(images)))
    lab.write_bytes(pack(idx_bytes(labels)))
    return img, lab, images, labels


# ---- IDX -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("gz, dotted", [(True, False), (False, False), (True, True), (False, True)])
def test_idx_files_and_directories(tmp_path: Path, gz: bool, dotted: bool):
    img, _, images, labels = write_idx_pair(tmp_path, "t10k", gz=gz, dotted=dotted)
    for source in (img, str(img), tmp_path):
        ds = load_dataset(source)
        assert isinstance(ds, Dataset) and len(ds) == 5
        assert ds.images.shape == (5, 1, 28, 28) and ds.images.dtype == torch.float32
        assert ds.labels.dtype == torch.int64 and ds.pixel_max == 255
        assert torch.equal(ds.images[:, 0], torch.from_numpy(images).float())
        assert ds.labels.tolist() == labels.tolist()
    assert load_dataset(img, count=2).images.shape[0] == 2
    assert float(to_unit(ds).max()) <= 1.0


def test_idx_errors(tmp_path: Path):
    img, lab, images, labels = write_idx_pair(tmp_path, "t10k", gz=False)
    raw = img.read_bytes()
    img.write_bytes(b"\x12\x34" + raw[2:])
    with pytest.raises(DataError, match="bad IDX magic number"):
        load_dataset(img)
    img.write_bytes(raw[:-10])
    with pytest.raises(DataError, match="size mismatch"):
        load_dataset(img)
    img.write_bytes(raw[:10])
    with pytest.raises(DataError, match="truncated IDX header"):
        load_dataset(img)
    img.write_bytes(raw)
    lab.write_bytes(idx_bytes(labels[:3]))
    with pytest.raises(DataError, match="3 labels but 5 images"):
        load_dataset(img)
    lab.unlink()
    with pytest.raises(DataError, match="no labels file"):
        load_dataset(img)


def test_truncated_gzip_is_a_data_error(tmp_path: Path):
    img, *_ = write_idx_pair(tmp_path, "train")
    img.write_bytes(img.read_bytes()[:200])
    with pytest.raises(DataError, match=str(img.name)):
        load_dataset(img)


# ---- CIFAR -----------------------------------------------------------------------------------------
def cifar_rows(n: int) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8), [int(v) for v in rng.integers(0, 10, n)]


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_pickle_batch_is_planar_chw(tmp_path: Path, protocol: int):
    data, labels = cifar_rows(4)
    f = tmp_path / "test_batch"
    with open(f, "wb") as fh:
        pickle.dump({b"batch_label": b"testing batch 1 of 1", b"labels": labels, b"data": data,
                     b"filenames": [b"a.png"] * 4}, fh, protocol=protocol)
    for source in (f, tmp_path):
        ds = load_dataset(source)
        assert ds.images.shape == (4, 3, 32, 32) and ds.labels.tolist() == labels
    n, c, h, w = 2, 1, 5, 7
    assert ds.images[n, c, h, w].item() == data[n, c * 1024 + h * 32 + w]


def test_cifar_pickle_refuses_foreign_objects(tmp_path: Path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    f = tmp_path / "data_batch_1"
    f.write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}, protocol=2))
    with pytest.raises(DataError, match="not allowed"):
        load_dataset(f)
    f.write_bytes(pickle.dumps({b"labels": [1]}, protocol=2))
    with pytest.raises(DataError, match="no data entry"):
        load_dataset(f)
    f.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1]}, protocol=2))
    with pytest.raises(DataError, match="1 labels but 2 images"):
        load_dataset(f)


def test_cifar_npz(tmp_path: Path):
    data, labels = cifar_rows(3)
    f = tmp_path / "b.npz"
    np.savez(f, data=data, labels=np.array(labels, np.uint8))
    ds = load_dataset(f)
    assert ds.images.shape == (3, 3, 32, 32) and ds.labels.tolist() == labels
    assert torch.equal(ds.images, torch.from_numpy(data.reshape(3, 3, 32, 32)).float())
    np.savez(f, data=data)
    with pytest.raises(DataError, match="no labels array"):
        load_dataset(f)
    np.savez(f, data=data[:, :100], labels=np.array(labels))
    with pytest.raises(DataError, match=r"shape \(3, 100\)"):
        load_dataset(f)
    f.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_dataset(f)


# ---- ERAN CSV --------------------------------------------------------------------------------------
def write_csv(path: Path, labels, pixels) -> None:
    path.write_text("".join(f"{lab}," + ",".join(str(int(v)) for v in row) + "\n"
                            for lab, row in zip(labels, pixels)))


def test_eran_mnist_and_cifar_csv(tmp_path: Path):
    rng = np.random.default_rng(2)
    m = rng.integers(0, 256, (3, 784))
    write_csv(tmp_path / "mnist_test.csv", [7, 2, 1], m)
    ds = load_dataset(tmp_path / "mnist_test.csv")
    assert ds.images.shape == (3, 1, 28, 28) and ds.labels.tolist() == [7, 2, 1]
    assert torch.equal(ds.images.reshape(3, -1), torch.from_numpy(m).float())
    assert ds.name.startswith("eran-mnist")
    c = rng.integers(0, 256, (2, 3072))
    write_csv(tmp_path / "cifar10_test.csv", [3, 8], c)
    ds = load_dataset(tmp_path / "cifar10_test.csv", count=1)
    assert ds.images.shape == (1, 3, 32, 32) and ds.labels.tolist() == [3]
    h, w, ch = 4, 9, 2  # ERAN rows are HWC: pixel (h, w) is at (h*32 + w)*3, then R, G, B
    assert ds.images[0, ch, h, w].item() == c[0, (h * 32 + w) * 3 + ch]


def test_eran_csv_errors(tmp_path: Path):
    f = tmp_path / "x.csv"
    f.write_text("1," + ",".join(["0"] * 784) + "\n2," + ",".join(["0"] * 100 + ["abc"] + ["0"] * 683))
    with pytest.raises(DataError, match="row 2, column 102: 'abc' is not a number"):
        load_dataset(f)
    f.write_text("1,2,3\n")
    with pytest.raises(DataError, match="unknown ERAN CSV layout: 3 columns"):
        load_dataset(f)
    f.write_text("1," + ",".join(["0"] * 784) + "\n2,0,0\n")
    with pytest.raises(DataError, match="row 2 has 3 columns"):
        load_dataset(f)
    f.write_text("1.5," + ",".join(["0"] * 784) + "\n")
    with pytest.raises(DataError, match="not an integer"):
        load_dataset(f)


# ---- digits, dispatch, options ---------------------------------------------------------------------
def test_digits():
    ds = load_dataset("digits")
    assert ds.images.shape == (1797, 1, 8, 8) and ds.pixel_max == 16 and ds.labels.shape == (1797,)
    assert float(ds.images.max()) == 16.0 and float(to_unit(ds).max()) == 1.0
    train, test = load_dataset("digits:train"), load_dataset("digits:test")
    assert len(train) == 1500 and len(test) == 297
    assert torch.equal(torch.cat([train.images, test.images]), ds.images)
    assert len(load_dataset("digits:test", count=10)) == 10
    with pytest.raises(DataError, match="unknown digits split"):
        load_dataset("digits:valid")


def test_digits_equal_scikit_learn():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    ds = load_dataset("digits")
    assert torch.equal(ds.images, torch.from_numpy(bunch.images[:, None]).float())
    assert torch.equal(ds.labels, torch.from_numpy(bunch.target).long())


def test_dispatch_errors(tmp_path: Path):
    with pytest.raises(DataError, match="no such file"):
        load_dataset(tmp_path / "missing.gz")
    with pytest.raises(DataError, match="directory holds no"):
        load_dataset(tmp_path)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"hello world")
    with pytest.raises(DataError, match="unknown dataset format"):
        load_dataset(junk)
    with pytest.raises(ConfigError):
        load_dataset("digits", count=-1)
    with pytest.raises(ConfigError):
        load_dataset(junk, kind="png")


def test_kind_forces_the_format(tmp_path: Path):
    img, *_ = write_idx_pair(tmp_path, "t10k", gz=False)
    with pytest.raises(DataError):
        load_dataset(img, kind="eran")
    assert len(load_dataset(img, kind="idx")) == 5


# ---- the shared datasets ---------------------------------------------------------------------------
@requires_shared
def test_shared_mnist():
    ds = load_dataset(DATA / "mnist")
    assert ds.images.shape == (10000, 1, 28, 28) and ds.labels[:5].tolist() == [7, 2, 1, 0, 4]
    assert float(ds.images.max()) == 255.0


@requires_shared
def test_shared_cifar():
    ds = load_dataset(DATA / "cifar10" / "test_batch_first1000.npz")
    assert ds.images.shape == (1000, 3, 32, 32) and ds.labels[:5].tolist() == [3, 8, 8, 0, 6]


@requires_shared
def test_shared_eran_equals_the_original_test_sets():
    em = load_dataset(DATA / "eran" / "mnist_test.csv")
    mn = load_dataset(DATA / "mnist" / "t10k-images-idx3-ubyte.gz", count=100)
    assert len(em) == 100 and torch.equal(em.images, mn.images) and torch.equal(em.labels, mn.labels)
    ec = load_dataset(DATA / "eran" / "cifar10_test.csv")
    cf = load_dataset(DATA / "cifar10" / "test_batch_first1000.npz", count=100)
    assert len(ec) == 100 and ec.images.shape == (100, 3, 32, 32)
    assert torch.equal(ec.images, cf.images) and torch.equal(ec.labels, cf.labels)
