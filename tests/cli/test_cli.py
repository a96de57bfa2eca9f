"""The CLI end to end: help, info, verify, demo, and one clear line for every bad input."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from nncert.cli.main import main


@pytest.fixture(scope="module")
def mnist_like(tmp_path_factory):
    """A tiny 28x28 classifier as ONNX and an ERAN-style CSV of 5 images."""
    d = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 16), torch.nn.ReLU(),
                              torch.nn.Linear(16, 10))
    onnx_path = d / "net.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 1, 28, 28),), str(onnx_path), dynamo=False,
                          input_names=["input"], dynamic_axes={"input": {0: "N"}})
    rng = np.random.default_rng(0)
    rows = np.concatenate([rng.integers(0, 10, (5, 1)), rng.integers(0, 256, (5, 784))], 1)
    csv_path = d / "data.csv"
    np.savetxt(csv_path, rows, fmt="%d", delimiter=",")
    return onnx_path, csv_path


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("demo", "info", "verify"):
        assert cmd in out


def test_info(capsys, mnist_like):
    code, out, _ = run_cli(capsys, "info", mnist_like[0])
    assert code == 0
    assert "input shape:  (1, 28, 28)" in out and "output shape: (10,)" in out
    assert "interval     yes" in out


def test_verify_writes_json(capsys, mnist_like, tmp_path):
    out_path = tmp_path / "r.json"
    code, out, _ = run_cli(capsys, "verify", "--model", mnist_like[0], "--data", mnist_like[1],
                           "--eps", "0.001", "--method", "interval", "--out", out_path)
    assert code == 0 and "verified" in out
    res = json.loads(out_path.read_text())
    assert res["summary"]["count"] == 5 and len(res["results"]) == 5
    assert {"index", "label", "verdict", "time_s"} <= set(res["results"][0])
    for r in res["results"]:  # a verified point must be classified correctly
        assert r["verdict"] != "verified" or r["label"] == r["prediction"]


@pytest.mark.parametrize("case", ["missing", "not-onnx", "negative-eps", "shape"])
def test_bad_input_is_one_clear_line(capsys, mnist_like, tmp_path, case):
    model, data = mnist_like
    args = ["verify", "--model", model, "--data", data, "--eps", "0.01"]
    if case == "missing":
        args[2] = tmp_path / "nope.onnx"
        expect = "not found"
    elif case == "not-onnx":
        bad = tmp_path / "bad.onnx"
        bad.write_text("this is not a model")
        args[2] = bad
        expect = "ONNX"
    elif case == "negative-eps":
        args[-1] = "-0.1"
        expect = "epsilon"
    else:
        small = tmp_path / "small.csv"
        np.savetxt(small, np.zeros((2, 3073)), fmt="%d", delimiter=",")  # CIFAR-sized
        args[4] = small
        expect = "shape"
    code, out, err = run_cli(capsys, *args)
    assert code == 2
    assert err.startswith("nncert: error:") and expect in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_demo_runs(capsys):
    code, out, _ = run_cli(capsys, "demo", "--epochs", "3", "--count", "20")
    assert code == 0
    assert "test accuracy" in out and "0.005 |" in out
