"""Small models trained on the embedded digits, shared by the semantic tests (imported by
name: a conftest.py here would shadow tests/conftest.py for `from conftest import ...`)."""

from __future__ import annotations

import functools

import torch
from torch import nn

from nncert.data import load_dataset, to_unit
from nncert.models.from_torch import from_torch


def train_digits_mlp(seed: int = 0, hidden: int = 32, steps: int = 300):
    """A Flatten–Linear–ReLU–Linear classifier on digits:train pixels in [0, 1] (~95% test)."""
    torch.manual_seed(seed)
    ds = load_dataset("digits:train")
    x, y = to_unit(ds).float(), ds.labels
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return from_torch(net.eval(), (1, 8, 8))


@functools.cache
def cached_digits_mlp():
    return train_digits_mlp()


def digits_test_data():
    ds = load_dataset("digits:test")
    return to_unit(ds).float(), ds.labels
