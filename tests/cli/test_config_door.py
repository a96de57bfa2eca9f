"""``--config`` files, ``--threads``, ``nncert config show`` and every ``verify --method``."""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest
import torch

from nncert.cli import config as cfg
from nncert.cli.main import build_parser, main


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 28x28 classifier as ONNX and an ERAN-style CSV of 4 images."""
    d = tmp_path_factory.mktemp("door")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 12), torch.nn.ReLU(),
                              torch.nn.Linear(12, 10))
    onnx_path = d / "net.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 1, 28, 28),), str(onnx_path), dynamo=False,
                          input_names=["input"], dynamic_axes={"input": {0: "N"}})
    rng = np.random.default_rng(0)
    rows = np.concatenate([rng.integers(0, 10, (4, 1)), rng.integers(0, 256, (4, 784))], 1)
    np.savetxt(d / "data.csv", rows, fmt="%d", delimiter=",")
    with torch.no_grad():  # the same images labelled with the net's own predictions
        rows[:, 0] = net(torch.tensor(rows[:, 1:] / 255.0, dtype=torch.float32)).argmax(1).numpy()
    np.savetxt(d / "pred.csv", rows, fmt="%d", delimiter=",")
    return onnx_path, d / "data.csv", d / "pred.csv"


@pytest.fixture(autouse=True)
def _keep_threads(monkeypatch):
    """--threads changes process state: put it back after each test."""
    n = torch.get_num_threads()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.setenv(var, os.environ.get(var, "1"))
    yield
    torch.set_num_threads(n)


def run(capsys, *argv):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def _toml(tmp_path, text: str, name: str = "run.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_file_sets_options_and_flags_override_it(capsys, tiny, tmp_path):
    conf = _toml(tmp_path, f'[verify]\nmodel = "{tiny[0]}"\ndata = "{tiny[1]}"\neps = 0.001\n'
                           'method = "crown"\ncount = 2\n')
    out = tmp_path / "r.json"
    code, stdout, err = run(capsys, "verify", "--config", conf, "--out", out)
    assert code == 0, err
    s = json.loads(out.read_text())["summary"]
    assert (s["count"], s["method"], s["eps"]) == (2, "crown", 0.001)
    code, stdout, err = run(capsys, "--config", conf, "verify", "--method", "interval",
                            "--count", "3", "--out", out)
    s = json.loads(out.read_text())["summary"]
    assert code == 0 and (s["count"], s["method"]) == (3, "interval")


@pytest.mark.parametrize("text, needles", [
    ("[verify]\nepss = 1\n", ["unknown key 'epss' in [verify]", "valid keys:", "eps,", "run.toml"]),
    ("verify = 1\n", ["unknown top-level key 'verify'"]),
    ("[verify]\neps = -1\n", ["[verify] eps", "must be a finite number"]),
    ("[verify]\nmethod = 'magic'\n", ["[verify] method", "'magic' is not one of"]),
    ("[verify\n", ["not valid TOML", "line 1"]),
    ("[vnncomp.run]\njobs = 2\n", ["unknown key 'jobs' in [vnncomp.run]", "timeout"]),
    ("threads = -1\n", ["threads must be an integer ≥ 0"]),
])
def test_bad_files_are_one_line(capsys, tmp_path, text, needles):
    conf = _toml(tmp_path, text)
    code, out, err = run(capsys, "verify", "--model", "m.onnx", "--data", "d", "--eps", "0.1",
                         "--config", conf) if "vnncomp" not in text else run(
        capsys, "vnncomp", "run", "--config", conf)
    assert code == 2 and out == "" and err.count("\n") == 1 and err.startswith("nncert: error:")
    for n in needles:
        assert n in err, err


def test_missing_config_file_and_value(capsys, tmp_path):
    code, _, err = run(capsys, "verify", "--config", tmp_path / "none.toml")
    assert code == 2 and "none.toml: no such file" in err
    code, _, err = run(capsys, "verify", "--config")
    assert code == 2 and "--config: expected one argument" in err and err.count("\n") == 1


def test_show_prints_the_effective_config_and_reads_back(capsys, tmp_path):
    conf = _toml(tmp_path, '[verify]\neps = 0.02\ncount = 7\nmean = [0.1307]\n')
    code, out, err = run(capsys, "config", "show", "verify", "--config", conf, "--count", "9",
                         "--method", "zbox")
    assert code == 0, err
    assert "[verify]" in out and "eps = 0.02" in out and "count = 9" in out
    assert 'method = "zbox"' in out and "mean = [0.1307]" in out
    assert "# model = (not set, required)" in out and out.startswith("threads = ")
    again = _toml(tmp_path, out, "again.toml")
    code, out2, _ = run(capsys, "config", "show", "verify", "--config", again)
    assert code == 0 and out2 == out


def test_show_of_an_action_and_nested_tables(capsys, tmp_path):
    conf = _toml(tmp_path, "[vnncomp]\ntimeout = 30\n[vnncomp.suite]\njobs = 2\n")
    code, out, _ = run(capsys, "config", "show", "vnncomp", "suite", "--config", conf)
    assert code == 0 and "[vnncomp.suite]" in out and "jobs = 2" in out and "timeout = 30.0" in out
    code, out, _ = run(capsys, "config", "show", "vnncomp", "run", "--config", conf)
    assert code == 0 and "timeout = 30.0" in out and "jobs" not in out
    code, _, err = run(capsys, "config", "show", "vnncomp")
    assert code == 2 and "name an action too (run, suite)" in err
    code, _, err = run(capsys, "config", "show", "nope")
    assert code == 2 and "unknown command 'nope'" in err


def test_every_command_takes_config_and_threads():
    parser = build_parser()
    for command, p in cfg.leaf_parsers(parser):
        flags = {s for a in p._actions for s in a.option_strings}
        assert {"--config", "--threads"} <= flags, command


@pytest.mark.parametrize("where", ["before", "after"])
def test_threads_before_or_after_the_command(capsys, tiny, where):
    argv = ["verify", "--model", tiny[0], "--data", tiny[1], "--eps", "0", "--count", "1"]
    argv = ["--threads", "2", *argv] if where == "before" else [*argv, "--threads=2"]
    code, _, err = run(capsys, *argv)
    assert code == 0, err
    assert torch.get_num_threads() == 2 and os.environ["OMP_NUM_THREADS"] == "2"


def test_global_threads_reach_a_commands_own_option(tmp_path):
    parser = build_parser("vnncomp")
    req = ["--onnx", "a.onnx", "--vnnlib", "a.vnnlib", "--out", "r.txt", "--timeout", "1"]
    p = cfg.prepare(parser, ["--threads", "3", "vnncomp", "run", *req])
    assert p.threads == 3 and "--threads=3" in p.argv
    assert parser.parse_args(p.argv).threads == 3
    p = cfg.prepare(parser, ["--threads", "3", "vnncomp", "run", *req, "--threads", "4"])
    assert parser.parse_args(p.argv).threads == 4  # the command line's own flag wins


def test_threads_never_oversubscribe(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    monkeypatch.delenv(cfg.THREADS_ENV, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert cfg.resolve_threads(None) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cfg.resolve_threads(None) == 3
    assert cfg.resolve_threads(0) == 16 and cfg.resolve_threads(0, jobs=4) == 4
    assert cfg.resolve_threads(8, jobs=4) == 4 and cfg.resolve_threads(8, jobs=32) == 1
    monkeypatch.setenv(cfg.THREADS_ENV, "6")
    assert cfg.resolve_threads(None) == 6


@pytest.mark.parametrize("method", ["zonotope", "deepzono", "zbox", "zswitch", "zsmooth",
                                    "hybrid-zonotope", "fast-lin", "crown-ibp", "deeppoly"])
def test_every_bound_method_is_reachable(capsys, tiny, tmp_path, method):
    out = tmp_path / "r.json"
    code, stdout, err = run(capsys, "verify", "--model", tiny[0], "--data", tiny[1], "--eps",
                            "0.002", "--method", method, "--out", out)
    assert code == 0, err
    res = json.loads(out.read_text())
    assert res["summary"]["method"] == method and f"with {method} at" in stdout
    for r in res["results"]:  # verified only where the label is predicted
        assert r["verdict"] != "verified" or r["label"] == r["prediction"]


def test_variants_build_their_configs():
    from nncert.bounds.crown import CrownConfig
    from nncert.bounds.zonotope import ZonotopeConfig
    from nncert.cli.verify import method_config

    assert method_config("zbox") == ("zonotope", ZonotopeConfig(relu="zbox"))
    assert method_config("hybrid-zonotope") == ("zonotope", ZonotopeConfig(relu="hybrid"))
    assert method_config("fast-lin") == ("crown", CrownConfig(relaxation="fastlin"))
    assert method_config("crown-ibp") == ("crown", CrownConfig(intermediate="ibp"))
    assert method_config("crown") == ("crown", None)


def test_complete_settings_from_the_command_line(capfd, tiny, tmp_path):
    """--complete milp decides by the MILP, and HiGHS prints nothing (capfd: its C output)."""
    out = tmp_path / "r.json"
    code, stdout, err = run(capfd, "verify", "--model", tiny[0], "--data", tiny[2], "--eps",
                            "0.01", "--method", "complete", "--complete", "milp",
                            "--count", "2", "--timeout", "300", "--out", out)
    assert code == 0, err
    rows = json.loads(out.read_text())["results"]
    assert all(r["verdict"] in ("verified", "falsified") for r in rows)
    assert "HiGHS" not in stdout + err and stdout.count("\n") == 2, stdout


def test_highs_prints_nothing(capfd):
    """The MILP decides (no attack, bounds too loose) and no solver banner reaches stdout."""
    import nncert
    from nncert.complete import VerifyConfig, verify

    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    g = nncert.load(net, (4,))
    x = torch.rand(1, 4)
    problem = nncert.robustness_problem(g, x, g(x).argmax(1), 2.0, clip=None)
    capfd.readouterr()
    r = verify(problem, VerifyConfig(timeout_s=300, attack=None, complete="milp"))
    out = capfd.readouterr()
    assert r.method == "milp" and r.verdict.value in ("verified", "falsified"), r
    assert out.out == "" and "HiGHS" not in out.err


def test_plot_axis_fits_the_certified_sizes():
    from nncert.cli.smooth import plot_span

    assert plot_span([0.0, 0.012, 0.018, float("inf")]) == pytest.approx(0.018 * 1.05)
    assert plot_span([0.3, 2.5]) == pytest.approx(2.5 * 1.05)
    assert plot_span([0.0, 0.0]) == pytest.approx(1.05)
