"""Helpers shared by the subcommands: device choice, argument types and model loading.
Progress bars and output files live in ``nncert.utils`` (library code uses them too) and are
re-exported here."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError
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
