"""One robustness instance per method: what its row promises."""

from __future__ import annotations

import math

import pytest
import torch

from nncert.benchmarks.instances import certify_instance
from nncert.data import load_dataset
from nncert.smoothing.train import export_onnx, train_gaussian


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    torch.manual_seed(0)
    data = load_dataset("digits:train", count=400)
    x = data.images / data.pixel_max
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(),
                                torch.nn.Linear(16, 10))
    train_gaussian(model, x, data.labels, 0.0, epochs=20, lr=3e-3)
    path = tmp_path_factory.mktemp("net") / "net.onnx"
    export_onnx(model, (1, 8, 8), path)
    test = load_dataset("digits:test", count=8)
    return str(path), test.images / test.pixel_max, test.labels


def test_radius_search_gives_a_certified_radius(net):
    path, x, y = net
    for i in range(4):
        row = certify_instance(path, x[i], int(y[i]), 0.01, math.inf, "crown", 10, 1,
                               {"radius": (0.2, 6)})
        r = row["radius"]
        assert 0.0 <= r <= 0.2
        if r > 0:  # the radius found is certified, and then so is every smaller one
            at = certify_instance(path, x[i], int(y[i]), r, math.inf, "crown", 10, 1)
            assert at["verdict"] == "verified" and at["prediction"] == int(y[i])
        else:
            assert row["prediction"] != int(y[i]) or row["verdict"] != "verified"


def test_complete_and_pgd_rows(net):
    path, x, y = net
    for i in range(3):
        c = certify_instance(path, x[i], int(y[i]), 0.05, math.inf, "complete", 10, 1)
        p = certify_instance(path, x[i], int(y[i]), 0.05, math.inf, "pgd", 5, 1)
        assert c["verdict"] in ("verified", "falsified", "unknown", "timeout") and c["strategy"]
        assert p["verdict"] in ("falsified", "unknown")
        assert all(r["peak_mb"] > 0 for r in (c, p))  # the worker's peak resident memory
        assert not (c["verdict"] == "verified" and p["verdict"] == "falsified")


def test_smooth_row_is_probabilistic(net):
    path, x, y = net
    opts = {"smooth": {"sigma": 0.25, "n0": 50, "n": 400, "alpha": 0.01, "batch": 400}, "seed": 1}
    row = certify_instance(path, x[0], int(y[0]), 0.1, 2.0, "smooth", 30, 1, opts)
    assert row["probabilistic"] is True and row["radius"] >= 0
    assert row["verdict"] != "verified" or (row["smoothed_prediction"] == int(y[0])
                                            and row["radius"] >= 0.1)
    again = certify_instance(path, x[0], int(y[0]), 0.1, 2.0, "smooth", 30, 1, opts)
    assert {k: v for k, v in again.items() if k != "time_s"} == \
        {k: v for k, v in row.items() if k != "time_s"}  # seeded: the same row on any worker
