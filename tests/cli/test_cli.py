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
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse usage errors
        code = e.code
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
        expect = "--eps"
    else:
        small = tmp_path / "small.csv"
        np.savetxt(small, np.zeros((2, 3073)), fmt="%d", delimiter=",")  # CIFAR-sized
        args[4] = small
        expect = "shape"
    code, out, err = run_cli(capsys, *args)
    assert code == 2
    assert err.startswith("nncert: error:") and expect in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_verify_streams_rows_and_keeps_them_when_killed(capsys, mnist_like, tmp_path, monkeypatch):
    """A run that dies after k rows (simulated: an exception from the method) leaves k rows
    in OUT.partial.jsonl; a complete run assembles OUT and removes the partial file."""
    import nncert.benchmarks.robustness as rob

    model, data = mnist_like
    out = tmp_path / "r.json"
    real = rob.certify
    _dying_after(monkeypatch, rob, "certify", 2)
    with pytest.raises(MemoryError):
        main(["verify", "--model", str(model), "--data", str(data), "--eps", "0.001",
              "--batch", "1", "--out", str(out)])
    partial = tmp_path / "r.json.partial.jsonl"
    head, *rows = [json.loads(line) for line in partial.read_text().splitlines()]
    assert head["command"] == "verify" and head["settings"]["eps"] == 0.001
    assert [r["index"] for r in rows] == [0, 1] and not out.exists()
    monkeypatch.setattr(rob, "certify", real)
    code, _, _ = run_cli(capsys, "verify", "--model", model, "--data", data, "--eps", "0.001",
                         "--batch", "2", "--out", out)
    assert code == 0 and not partial.exists()
    assert len(json.loads(out.read_text())["results"]) == 5


def test_verify_jsonl_output(capsys, mnist_like, tmp_path):
    model, data = mnist_like
    out = tmp_path / "r.jsonl"
    code, _, _ = run_cli(capsys, "verify", "--model", model, "--data", data, "--eps", "0.001",
                         "--batch", "2", "--out", out)
    assert code == 0
    head, *lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert head["nncert_rows"] == 1 and head["command"] == "verify"
    assert [r["index"] for r in lines[:-1]] == list(range(5))
    assert lines[-1]["summary"]["count"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.jsonl"]


def _dying_after(monkeypatch, module, name, calls_ok: int, stop=MemoryError):
    """Make ``module.name`` raise ``stop`` on call calls_ok + 1; returns the call counter."""
    real, calls = getattr(module, name), {"n": 0}

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == calls_ok + 1:
            raise stop()
        return real(*a, **k)

    monkeypatch.setattr(module, name, dying)
    return calls


@pytest.mark.parametrize("suffix,stop", [(".json", MemoryError), (".csv", KeyboardInterrupt),
                                         (".jsonl", KeyboardInterrupt)])
def test_verify_resume_computes_only_the_missing_points(capsys, mnist_like, tmp_path, monkeypatch,
                                                        suffix, stop):
    """A run stopped after 2 of 5 points (killed, or Ctrl-C) is continued by --resume: the
    other 3 are computed, once each, and OUT holds all 5 in order with one summary."""
    import csv

    import nncert.benchmarks.robustness as rob

    model, data = mnist_like
    out = tmp_path / f"r{suffix}"
    args = ["verify", "--model", str(model), "--data", str(data), "--eps", "0.001", "--batch",
            "1", "--out", str(out)]
    _dying_after(monkeypatch, rob, "certify", 2, stop)
    if stop is KeyboardInterrupt:
        assert run_cli(capsys, *args)[0] == 130
    else:
        with pytest.raises(stop):
            main(args)
    calls = _dying_after(monkeypatch, rob, "certify", 99)
    code, _, err = run_cli(capsys, *args, "--resume")
    assert code == 0 and "2 of 5 inputs already decided" in err, err
    assert calls["n"] == 3
    if suffix == ".csv":
        assert [r["index"] for r in csv.DictReader(out.open())] == [str(i) for i in range(5)]
    elif suffix == ".json":
        got = json.loads(out.read_text())
        assert [r["index"] for r in got["results"]] == list(range(5))
        assert got["summary"]["count"] == 5 and got["summary"]["resumed_rows"] == 2
    else:
        head, *lines = [json.loads(line) for line in out.read_text().splitlines()]
        assert [r["index"] for r in lines[:-1]] == list(range(5))
        assert "summary" in lines[-1] and lines[-1]["summary"]["interrupted"] is False
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]
    calls = _dying_after(monkeypatch, rob, "certify", 99)  # a finished .jsonl run: nothing left
    if suffix == ".jsonl":
        assert run_cli(capsys, *args, "--resume")[0] == 0 and calls["n"] == 0


def test_verify_resume_refuses_other_settings_and_finished_runs(capsys, mnist_like, tmp_path,
                                                                monkeypatch):
    import nncert.benchmarks.robustness as rob

    model, data = mnist_like
    out = tmp_path / "r.json"
    args = ["verify", "--model", str(model), "--data", str(data), "--eps", "0.001", "--batch",
            "1", "--out", str(out)]
    _dying_after(monkeypatch, rob, "certify", 1)
    with pytest.raises(MemoryError):
        main(args)
    code, _, err = run_cli(capsys, *[a if a != "0.001" else "0.002" for a in args], "--resume")
    assert code == 2 and "other settings (eps 0.001 → 0.002)" in err
    code, _, err = run_cli(capsys, *args, "--resume", "--method", "crown")
    assert code == 2 and "method 'interval' → 'crown'" in err
    calls = _dying_after(monkeypatch, rob, "certify", 99)
    code, _, err = run_cli(capsys, *args, "--count", "3", "--resume")  # (--count may change)
    assert code == 0 and calls["n"] == 2
    assert len(json.loads(out.read_text())["results"]) == 3
    code, _, err = run_cli(capsys, *args, "--resume")
    assert code == 2 and "finished run" in err and "nothing to resume" in err
    code, _, err = run_cli(capsys, *args[:-2], "--resume")
    assert code == 2 and "--resume" in err and "--out" in err
    (tmp_path / "x.json.partial.jsonl").write_text('{"something": 1}\n')
    code, _, err = run_cli(capsys, *args[:-1], tmp_path / "x.json", "--resume")
    assert code == 2 and "x.json.partial.jsonl:1 is not a row journal" in err


def test_verify_csv_output(capsys, mnist_like, tmp_path):
    import csv

    model, data = mnist_like
    out = tmp_path / "r.csv"
    code, stdout, _ = run_cli(capsys, "verify", "--model", model, "--data", data, "--eps",
                              "0.001", "--batch", "2", "--out", out)
    assert code == 0 and "verified" in stdout  # (the summary is printed)
    rows = list(csv.DictReader(out.open()))
    assert [r["index"] for r in rows] == [str(i) for i in range(5)]
    assert {"label", "verdict", "time_s"} <= set(rows[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv"]


def test_rows_to_csv_takes_every_field_and_writes_lists_as_json():
    import csv
    import io

    from nncert.cli.common import rows_to_csv

    text = rows_to_csv([{"a": 1, "b": [1.5, 2]}, {"a": 2, "c": {"k": "v,w"}}])
    rows = list(csv.reader(io.StringIO(text)))
    assert rows == [["a", "b", "c"], ["1", "[1.5, 2]", ""], ["2", "", '{"k": "v,w"}']]


def test_verify_refuses_points_outside_the_domain(capsys, mnist_like, tmp_path):
    """The issue's case: pixels 0-255 read with --scale 1 lie outside [0, 1]. Clipping the
    ball while the point lies outside gave certificates at a wrong centre."""
    model, data = mnist_like
    code, _, err = run_cli(capsys, "verify", "--model", model, "--data", data, "--eps", "0.01",
                           "--scale", "1")
    assert code == 2 and "outside [0, 1]" in err
    big = tmp_path / "big.csv"
    rows = np.zeros((2, 785))
    rows[1, 5] = 300
    np.savetxt(big, rows, fmt="%d", delimiter=",")
    code, _, err = run_cli(capsys, "verify", "--model", model, "--data", big, "--eps", "0.01")
    assert code == 2 and "image 1" in err and "300" in err


def test_verified_never_exceeds_correct(capsys, mnist_like, tmp_path):
    from nncert.benchmarks.robustness import InvariantError, RobustnessConfig, summarize

    rows = [{"label": 1, "prediction": 2, "verdict": "verified", "time_s": 0.0}]
    with pytest.raises(InvariantError):
        summarize(rows, RobustnessConfig(eps=0.1))


def test_pt_models_are_refused_without_unpickling(capsys, mnist_like, tmp_path):
    """verify and info read ONNX; a .pt whole module is refused (never unpickled) with advice."""
    model, data = mnist_like
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    pt = tmp_path / "m.pt"
    torch.save(net, pt)
    code, _, err = run_cli(capsys, "verify", "--model", pt, "--data", data, "--eps", "0.001")
    assert code == 2 and "does not unpickle" in err and "ONNX" in err
    code, _, err = run_cli(capsys, "info", pt)
    assert code == 2 and "does not unpickle" in err


def test_demo_runs(capsys):
    code, out, _ = run_cli(capsys, "demo", "--epochs", "3", "--count", "20")
    assert code == 0
    assert "test accuracy" in out and "0.005 |" in out
