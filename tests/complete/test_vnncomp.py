"""verify() and the VNN-COMP interface on self-built ONNX + VNN-LIB pairs."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from complete_fixtures import abs_net, random_mlp, vnnlib_text, write_mlp_onnx

from nncert.cli.main import main
from nncert.complete import VerifyConfig, verify
from nncert.complete.vnncomp import load_instance, read_instances, run_instance, run_suite
from nncert.errors import ConfigError
from nncert.result import Verdict
from nncert.specs import Box, OutputSpec, VerificationProblem

ROOT = Path(__file__).resolve().parents[2]
ACAS = ROOT.parent / "shared" / "benchmarks" / "acasxu"


@pytest.fixture
def abs_files(tmp_path):
    onnx_path = write_mlp_onnx(abs_net(), tmp_path / "abs.onnx")
    # |x| on [-1, 1]: "Y_0 <= -0.1" is impossible (unsat); "Y_0 <= 0.5" holds at 0 (sat)
    (tmp_path / "unsat.vnnlib").write_text(vnnlib_text([-1.0], [1.0], "(<= Y_0 -0.1)", 1))
    (tmp_path / "sat.vnnlib").write_text(vnnlib_text([-1.0], [1.0], "(<= Y_0 0.5)", 1))
    # a disjunction of two output conditions, one of them reachable
    (tmp_path / "or.vnnlib").write_text(
        vnnlib_text([-1.0], [1.0], "(or (and (<= Y_0 -1.0)) (and (>= Y_0 0.9)))", 1))
    return tmp_path, onnx_path


def test_verify_known_answers():
    g = abs_net()
    box = Box(torch.tensor([[-1.0]]), torch.tensor([[1.0]]))
    holds = OutputSpec.conjunction(torch.tensor([[[1.0]]]), torch.tensor([0.1]))
    fails = OutputSpec.conjunction(torch.tensor([[[1.0]]]), torch.tensor([-0.5]))
    r = verify(VerificationProblem(g, box, holds), VerifyConfig(timeout_s=10))
    assert r.verdict is Verdict.VERIFIED
    for complete in ("auto", "bab", "milp"):
        cfg = VerifyConfig(timeout_s=10, complete=complete, attack=None)
        r = verify(VerificationProblem(g, box, fails), cfg)
        assert r.verdict is Verdict.FALSIFIED
        x = r.counterexample.x.reshape(1, 1)
        assert bool(box.contains(x).all()) and float(g(x)[0, 0]) - 0.5 <= 0


def test_verify_rejects_bad_timeout():
    with pytest.raises(ConfigError):
        VerifyConfig(timeout_s=0)


def test_run_instance_sat_unsat(abs_files):
    d, onnx_path = abs_files
    assert run_instance(onnx_path, d / "unsat.vnnlib", 10).verdict is Verdict.VERIFIED
    r = run_instance(onnx_path, d / "sat.vnnlib", 10)
    assert r.verdict is Verdict.FALSIFIED
    text = r.to_vnncomp()
    assert text.startswith("sat\n((X_0 ") and "(Y_0 " in text
    r = run_instance(onnx_path, d / "or.vnnlib", 10)
    assert r.verdict is Verdict.FALSIFIED and float(r.counterexample.y[0]) >= 0.9


def test_cli_run_writes_result_file(abs_files, capsys):
    d, onnx_path = abs_files
    out = d / "res.txt"
    rc = main(["vnncomp", "run", "--onnx", str(onnx_path), "--vnnlib", str(d / "unsat.vnnlib"),
               "--timeout", "10", "--out", str(out)])
    assert rc == 0 and out.read_text() == "unsat\n"
    rc = main(["vnncomp", "run", "--onnx", str(onnx_path), "--vnnlib", str(d / "sat.vnnlib"),
               "--timeout", "10", "--out", str(out)])
    assert rc == 0 and out.read_text().startswith("sat\n")


@pytest.mark.parametrize("case", ["vars", "onnx", "timeout"])
def test_cli_run_bad_input(abs_files, capsys, case):
    d, onnx_path = abs_files
    vnn = d / "unsat.vnnlib"
    timeout = "10"
    if case == "vars":
        vnn = d / "two.vnnlib"
        vnn.write_text(vnnlib_text([0.0, 0.0], [1.0, 1.0], "(<= Y_0 0.0)", 1))
    elif case == "onnx":
        onnx_path = d / "bad.onnx"
        onnx_path.write_bytes(b"not an onnx file")
    else:
        timeout = "0"
    out = d / "res.txt"
    rc = main(["vnncomp", "run", "--onnx", str(onnx_path), "--vnnlib", str(vnn),
               "--timeout", timeout, "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0
    assert out.read_text().strip() == "error"
    assert len(err) == 1 and err[0].startswith("nncert: error:")


def _suite_dir(tmp_path):
    nets = {"a.onnx": abs_net(), "m.onnx": random_mlp(4)}
    for name, g in nets.items():
        write_mlp_onnx(g, tmp_path / name)
    (tmp_path / "unsat.vnnlib").write_text(vnnlib_text([-1.0], [1.0], "(<= Y_0 -0.1)", 1))
    (tmp_path / "sat.vnnlib").write_text(vnnlib_text([-1.0], [1.0], "(<= Y_0 0.5)", 1))
    (tmp_path / "bad.vnnlib").write_text("(declare-const X_0 Real)\n(assert (<= X_0\n")
    rows = ["a.onnx,unsat.vnnlib,10", "a.onnx,sat.vnnlib,10", "m.onnx,sat.vnnlib,10",
            "a.onnx,bad.vnnlib,10"]
    (tmp_path / "instances.csv").write_text("\n".join(rows))
    return tmp_path


def test_suite_resumable_with_summary(tmp_path, capsys):
    d = _suite_dir(tmp_path)
    (d / "expected.csv").write_text("onnx,vnnlib,expected\na.onnx,unsat.vnnlib,unsat\n"
                                    "a.onnx,sat.vnnlib,sat\n")
    out = d / "results.csv"
    s = run_suite(d / "instances.csv", d, out, jobs=1, progress=False)
    rows = list(csv.DictReader(out.open()))
    got = {(r["onnx"], r["vnnlib"]): r["result"] for r in rows}
    assert got[("a.onnx", "unsat.vnnlib")] == "unsat"
    assert got[("a.onnx", "sat.vnnlib")] == "sat"
    assert got[("m.onnx", "sat.vnnlib")] == "error"  # 2 inputs, the file declares 1
    assert got[("a.onnx", "bad.vnnlib")] == "error"
    assert s.correct == 2 and s.wrong == 0 and s.total == 4
    assert "error" in capsys.readouterr().err
    # restart: nothing is re-run, finished rows are kept
    before = out.read_text()
    run_suite(d / "instances.csv", d, out, jobs=2, progress=False)
    assert out.read_text() == before


def test_suite_cli_flags_wrong_answers(tmp_path, capsys):
    d = _suite_dir(tmp_path)
    (d / "instances.csv").write_text("a.onnx,unsat.vnnlib,10\n")
    (d / "expected.csv").write_text("onnx,vnnlib,expected\na.onnx,unsat.vnnlib,sat\n")
    rc = main(["vnncomp", "suite", "--instances", str(d / "instances.csv"),
               "--out", str(d / "r.csv"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "WRONG" in err and "a.onnx unsat.vnnlib" in err


def test_read_instances_override(tmp_path):
    p = tmp_path / "i.csv"
    p.write_text("x.onnx,y.vnnlib,116\n")
    assert read_instances(p)[0].timeout == 116
    assert read_instances(p, 5.0)[0].timeout == 5.0


@pytest.mark.slow
@pytest.mark.skipif(not ACAS.is_dir(), reason="needs ../shared/benchmarks/acasxu")
@pytest.mark.parametrize("net,prop,expected", [
    ("2_1", 2, "sat"), ("1_1", 1, "unsat"), ("1_2", 3, "unsat"), ("3_5", 2, "sat"),
])
def test_acasxu_instances(net, prop, expected):
    onnx_path = ACAS / "onnx" / f"ACASXU_run2a_{net}_batch_2000.onnx"
    vnn = ACAS / "vnnlib" / f"prop_{prop}.vnnlib"
    graph, problems = load_instance(onnx_path, vnn)
    assert graph.input_shape == (1, 1, 5)
    r = run_instance(onnx_path, vnn, 116)
    assert r.verdict.vnncomp() == expected
