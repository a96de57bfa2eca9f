"""Shared test fixtures. Tests needing ../shared use ``requires_shared``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
BENCHMARKS = SHARED / "benchmarks"
DATA = SHARED / "data"

requires_shared = pytest.mark.skipif(
    not BENCHMARKS.is_dir() or not DATA.is_dir(),
    reason=f"needs the shared data and benchmarks at {SHARED} (absent on this machine)",
)


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield
