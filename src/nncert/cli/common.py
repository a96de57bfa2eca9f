"""Helpers shared by the subcommands: device choice and argument types. Progress bars and
atomic files live in ``nncert.utils`` (library code uses them too) and are re-exported here."""

from __future__ import annotations

import argparse

import torch

from ..errors import ConfigError
from ..utils import progress as progress
from ..utils import write_atomic as write_atomic
from ..utils import write_json as write_json


def add_device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu",
                   help="torch device for all tensors: cpu, cuda, cuda:1, ... (default: cpu)")


def resolve_device(name: str) -> torch.device:
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"invalid device {name!r}: {e}") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available here")
    return dev


def positive_float(text: str) -> float:
    v = float(text)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return v


def nonnegative_float(text: str) -> float:
    v = float(text)
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0, got {text}")
    return v
