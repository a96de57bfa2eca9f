"""verify() and the VNN-COMP interface on self-built ONNX + VNN-LIB pairs."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import pytest
import torch
from complete_fixtures import abs_net, random_mlp, vnnlib_text, write_mlp_onnx

from nncert.benchmarks.vnncomp import read_instance_table, read_instances, read_results, run_suite
from nncert.cli.main import main
from nncert.complete import VerifyConfig, verify
from nncert.complete.vnncomp import (
    TEST_HOOK_ENV,
    load_instance,
    one_line,
    run_instance,
    run_instance_hard,
)
from nncert.errors import ConfigError, DataError
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
    r = verify(VerificationProblem(g, box, holds), VerifyConfig(timeout_s=120))
    assert r.verdict is Verdict.VERIFIED
    for complete in ("auto", "bab", "milp"):
        cfg = VerifyConfig(timeout_s=120, complete=complete, attack=None)
        r = verify(VerificationProblem(g, box, fails), cfg)
        assert r.verdict is Verdict.FALSIFIED
        x = r.counterexample.x.reshape(1, 1)
        assert bool(box.contains(x).all()) and float(g(x)[0, 0]) - 0.5 <= 0


def test_verify_rejects_bad_timeout():
    with pytest.raises(ConfigError):
        VerifyConfig(timeout_s=0)


def test_run_instance_sat_unsat(abs_files):
    d, onnx_path = abs_files
    assert run_instance(onnx_path, d / "unsat.vnnlib", 120).verdict is Verdict.VERIFIED
    r = run_instance(onnx_path, d / "sat.vnnlib", 120)
    assert r.verdict is Verdict.FALSIFIED
    text = r.to_vnncomp()
    assert text.startswith("sat\n((X_0 ") and "(Y_0 " in text
    r = run_instance(onnx_path, d / "or.vnnlib", 120)
    assert r.verdict is Verdict.FALSIFIED and float(r.counterexample.y[0]) >= 0.9


def test_cli_run_writes_result_file(abs_files, capsys):
    d, onnx_path = abs_files
    out = d / "res.txt"
    rc = main(["vnncomp", "run", "--onnx", str(onnx_path), "--vnnlib", str(d / "unsat.vnnlib"),
               "--timeout", "120", "--out", str(out)])
    assert rc == 0 and out.read_text() == "unsat\n"
    rc = main(["vnncomp", "run", "--onnx", str(onnx_path), "--vnnlib", str(d / "sat.vnnlib"),
               "--timeout", "120", "--out", str(out)])
    assert rc == 0 and out.read_text().startswith("sat\n")


@pytest.mark.parametrize("case", ["vars", "onnx", "timeout"])
def test_cli_run_bad_input(abs_files, capsys, case):
    d, onnx_path = abs_files
    vnn = d / "unsat.vnnlib"
    timeout = "120"
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
    # restart: finished rows are kept verbatim, only the two error rows run again
    before = [ln for ln in out.read_text().splitlines() if ",error," not in ln]
    run_suite(d / "instances.csv", d, out, jobs=2, progress=False)
    after = out.read_text().splitlines()
    assert after[:len(before)] == before and len(after) == len(before) + 2
    assert all(",error," in ln for ln in after[len(before):])


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


def _write_instances(path: Path, rows) -> None:
    with path.open("w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)


def _abs_suite(tmp_path, names=("a.onnx",)):
    for name in names:
        write_mlp_onnx(abs_net(), tmp_path / name)
    (tmp_path / "unsat.vnnlib").write_text(vnnlib_text([-1.0], [1.0], "(<= Y_0 -0.1)", 1))
    (tmp_path / "sat.vnnlib").write_text(vnnlib_text([-1.0], [1.0], "(<= Y_0 0.5)", 1))
    return tmp_path


def _results(out: Path) -> dict:
    return {k: w for k, (w, _t) in read_results(out).items()}


def test_suite_crashed_worker_is_only_its_instance_error(tmp_path, monkeypatch):
    """A worker killed by SIGKILL (a real crash) fails its own instance only; the healthy
    worker's instance and the later ones are answered, and the summary counts the crash."""
    d = _abs_suite(tmp_path, ("a.onnx", "crash.onnx"))
    _write_instances(d / "instances.csv", [("crash.onnx", "unsat.vnnlib", 120),
                                           ("a.onnx", "unsat.vnnlib", 120),
                                           ("a.onnx", "sat.vnnlib", 120)])
    monkeypatch.setenv(TEST_HOOK_ENV, "crash:crash.onnx")
    out = d / "results.csv"
    s = run_suite(d / "instances.csv", d, out, jobs=2, progress=False)
    assert _results(out) == {("crash.onnx", "unsat.vnnlib"): "error",
                             ("a.onnx", "unsat.vnnlib"): "unsat", ("a.onnx", "sat.vnnlib"): "sat"}
    assert s.crashed == 1 and s.errors == 1 and s.total == 3 and "crashed" in s.text()
    # resume retries the error row: without the crash it is answered, the others are kept
    monkeypatch.delenv(TEST_HOOK_ENV)
    s = run_suite(d / "instances.csv", d, out, jobs=1, progress=False)
    assert _results(out)[("crash.onnx", "unsat.vnnlib")] == "unsat" and s.errors == 0
    assert out.read_text().count("\n") == 4


def test_suite_hard_stop_records_timeout_and_goes_on(tmp_path, monkeypatch):
    """A worker that never returns (library code ignoring its deadline) is killed at timeout +
    grace: its instance is ``timeout`` and the suite finishes the others."""
    d = _abs_suite(tmp_path, ("a.onnx", "hang.onnx"))
    _write_instances(d / "instances.csv", [("hang.onnx", "unsat.vnnlib", 0.5),
                                           ("a.onnx", "unsat.vnnlib", 120)])
    monkeypatch.setenv(TEST_HOOK_ENV, "hang:hang.onnx")
    out = d / "results.csv"
    s = run_suite(d / "instances.csv", d, out, jobs=1, progress=False, grace=0.2)
    assert _results(out) == {("hang.onnx", "unsat.vnnlib"): "timeout",
                             ("a.onnx", "unsat.vnnlib"): "unsat"}
    assert s.stopped == 1 and s.errors == 0


def test_run_instance_hard_stop_and_crash(tmp_path, monkeypatch):
    d = _abs_suite(tmp_path, ("a.onnx", "hang.onnx", "crash.onnx"))
    monkeypatch.setenv(TEST_HOOK_ENV, "hang:hang.onnx")
    r = run_instance_hard(d / "hang.onnx", d / "unsat.vnnlib", 0.5, grace=0.2)
    assert r.text == "timeout\n" and r.stopped and r.error is None
    assert run_instance_hard(d / "a.onnx", d / "unsat.vnnlib", 120).text == "unsat\n"
    monkeypatch.setenv(TEST_HOOK_ENV, "crash:crash.onnx")
    r = run_instance_hard(d / "crash.onnx", d / "unsat.vnnlib", 120)
    assert r.text == "error\n" and "SIGKILL" in r.error and not r.internal
    # time already spent (interpreter start-up) counts against the timeout
    assert run_instance_hard(d / "a.onnx", d / "unsat.vnnlib", 1.0, spent=2.0).text == "timeout\n"


def test_cli_run_hard_stop_writes_timeout(tmp_path, monkeypatch, capsys):
    d = _abs_suite(tmp_path, ("hang.onnx",))
    monkeypatch.setenv(TEST_HOOK_ENV, "hang:hang.onnx")
    out = d / "res.txt"
    out.write_text("unsat\n")  # a stale answer of an earlier run must not survive
    rc = main(["vnncomp", "run", "--onnx", str(d / "hang.onnx"), "--vnnlib",
               str(d / "unsat.vnnlib"), "--timeout", "0.5", "--out", str(out)])
    assert rc == 0 and out.read_text() == "timeout\n"
    assert "hard stop" in capsys.readouterr().out


def test_one_line_cuts_file_excerpts_keeps_prose():
    secret = "root:x:0:0:" + "S" * 80
    msg = one_line(f"p:1: unexpected '{secret}'\nnext\x1b[31m line; the model's x, the file's y")
    assert "S" * 40 not in msg and "'root:x:0:0:" in msg and "\n" not in msg and "\x1b" not in msg
    assert msg.endswith("the model's x, the file's y")
    assert len(one_line("x" * 1000)) == 300


def _children(pid: int) -> list[int]:
    import subprocess

    out = subprocess.run(["ps", "--ppid", str(pid), "-o", "pid="], capture_output=True, text=True)
    return [int(x) for x in out.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_worker_dies_with_a_killed_suite(tmp_path):
    """SIGKILL of the suite process (as a harness would do) leaves no worker computing."""
    import os
    import signal
    import subprocess
    import sys

    d = _abs_suite(tmp_path, ("hang.onnx",))
    _write_instances(d / "instances.csv", [("hang.onnx", "unsat.vnnlib", 300)])
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1",
               **{TEST_HOOK_ENV: "hang:hang.onnx"})
    proc = subprocess.Popen([sys.executable, "-m", "nncert.cli.vnncomp", "suite", "--instances",
                             d / "instances.csv", "--out", d / "r.csv", "--no-progress"], env=env)
    try:
        for _ in range(1200):  # polling budget, not a timing assertion
            kids = _children(proc.pid)
            if kids or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert kids, "no worker started"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    for _ in range(600):
        if not any(_alive(k) for k in kids):
            break
        time.sleep(0.1)
    assert not any(_alive(k) for k in kids)


def test_suite_paths_with_commas_and_quotes_round_trip(tmp_path):
    name = 'net, "v1".onnx'
    d = _abs_suite(tmp_path, (name,))
    _write_instances(d / "instances.csv", [(name, "unsat.vnnlib", 120), (name, "sat.vnnlib", 120)])
    out = d / "results.csv"
    run_suite(d / "instances.csv", d, out, progress=False)
    assert _results(out) == {(name, "unsat.vnnlib"): "unsat", (name, "sat.vnnlib"): "sat"}
    before = out.read_bytes()
    run_suite(d / "instances.csv", d, out, progress=False)  # resume: nothing to do
    assert out.read_bytes() == before and b"\r" not in before


def test_suite_duplicate_rows_run_once(tmp_path):
    d = _abs_suite(tmp_path)
    rows = [("a.onnx", "unsat.vnnlib", 120), ("a.onnx", "unsat.vnnlib", 120),
            ("a.onnx", "sat.vnnlib", 120), ("a.onnx", "unsat.vnnlib", 5)]
    _write_instances(d / "instances.csv", rows)
    assert read_instance_table(d / "instances.csv")[1] == 2
    out = d / "results.csv"
    s = run_suite(d / "instances.csv", d, out, progress=False)
    assert s.total == 2 and s.duplicates == 2 and "2 duplicate instance rows dropped" in s.text()
    assert len(out.read_text().splitlines()) == 3


def test_suite_resume_drops_torn_and_normalises_line_ends(tmp_path):
    d = _abs_suite(tmp_path)
    _write_instances(d / "instances.csv", [("a.onnx", "unsat.vnnlib", 120),
                                           ("a.onnx", "sat.vnnlib", 120)])
    out = d / "results.csv"
    # a CRLF file whose last append was cut short
    out.write_bytes(b"onnx,vnnlib,result,time_s\r\na.onnx,unsat.vnnlib,unsat,0.5\r\na.onnx,sat.vn")
    s = run_suite(d / "instances.csv", d, out, progress=False)
    assert out.read_text().startswith("onnx,vnnlib,result,time_s\na.onnx,unsat.vnnlib,unsat,0.5\n")
    assert b"\r" not in out.read_bytes() and s.total == 2
    assert _results(out)[("a.onnx", "sat.vnnlib")] == "sat"


def test_suite_refuses_to_overwrite_another_file(tmp_path):
    d = _abs_suite(tmp_path)
    _write_instances(d / "instances.csv", [("a.onnx", "unsat.vnnlib", 120)])
    before = (d / "instances.csv").read_text()
    with pytest.raises(DataError, match="not a results file"):
        run_suite(d / "instances.csv", d, d / "instances.csv", progress=False)
    assert (d / "instances.csv").read_text() == before


def test_suite_paths_confined_to_root(tmp_path):
    root = tmp_path / "suite"
    root.mkdir()
    _abs_suite(root)
    write_mlp_onnx(abs_net(), tmp_path / "outside.onnx")
    (root / "link.onnx").symlink_to(tmp_path / "outside.onnx")
    out = tmp_path / "r.csv"
    for bad in ("../outside.onnx", str(tmp_path / "outside.onnx"), "link.onnx"):
        _write_instances(root / "instances.csv", [("a.onnx", "unsat.vnnlib", 120),
                                                  (bad, "unsat.vnnlib", 120)])
        with pytest.raises(ConfigError, match=r"instances.csv:2: .*outside the root"):
            run_suite(root / "instances.csv", root, out, progress=False)
        assert not out.exists()
    s = run_suite(root / "instances.csv", root, out, progress=False, allow_outside_root=True)
    assert s.total == 2 and s.errors == 0


def test_suite_wrong_root_is_one_error(tmp_path):
    (tmp_path / "s").mkdir()
    d = _abs_suite(tmp_path / "s")
    _write_instances(d / "instances.csv", [("a.onnx", "unsat.vnnlib", 120)])
    (tmp_path / "other").mkdir()
    with pytest.raises(ConfigError, match="none of the 1 networks"):
        run_suite(d / "instances.csv", tmp_path / "other", tmp_path / "r.csv", progress=False)


@pytest.mark.parametrize("text,needle", [
    ("a.onnx,x.vnnlib,abc\n", "instances.csv:1: timeout 'abc'"),
    ("a.onnx,x.vnnlib,-3\n", "instances.csv:1: timeout '-3'"),
    ("onnx,vnnlib,timeout\na.onnx,x.vnnlib,nan\n", "instances.csv:2: timeout"),
    ("a.onnx,b,c.vnnlib,60\n", "quote a path"),
    ("a.onnx\n", "got 1 fields"),
])
def test_read_instances_bad_rows(tmp_path, text, needle):
    p = tmp_path / "instances.csv"
    p.write_text(text)
    with pytest.raises(DataError, match=needle):
        read_instances(p)


def test_suite_cli_errors_are_summarised_not_fatal(tmp_path, capsys):
    d = _suite_dir(tmp_path)
    rc = main(["vnncomp", "suite", "--instances", str(d / "instances.csv"),
               "--out", str(d / "r.csv"), "--no-progress"])
    io = capsys.readouterr()
    assert rc == 0 and "errors 2" in io.out and "Traceback" not in io.err


def test_vnncomp_scripts(tmp_path):
    """The VNN-COMP shell scripts on a tiny instance: prepare, run (result file), and a bad
    VNN-LIB rejected by prepare in one line."""
    import os
    import subprocess
    import sys

    d = _abs_suite(tmp_path)
    (d / "bad.vnnlib").write_text("(assert (<= X_0\n")
    env = dict(os.environ, NNCERT_PYTHON=sys.executable, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    scripts = ROOT / "vnncomp_scripts"
    for name in ("install_tool.sh", "prepare_instance.sh", "run_instance.sh"):
        assert os.access(scripts / name, os.X_OK), name

    def sh(*argv):
        return subprocess.run(["bash", *map(str, argv)], env=env, capture_output=True, text=True,
                              timeout=600, stdin=subprocess.DEVNULL)

    assert sh(scripts / "prepare_instance.sh", "v1", "t", d / "a.onnx", d / "unsat.vnnlib").returncode == 0
    r = sh(scripts / "run_instance.sh", "v1", "t", d / "a.onnx", d / "unsat.vnnlib", d / "o.txt", 300)
    assert r.returncode == 0 and (d / "o.txt").read_text() == "unsat\n"
    r = sh(scripts / "prepare_instance.sh", "v1", "t", d / "a.onnx", d / "bad.vnnlib")
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("nncert: error:")]
    assert r.returncode != 0 and len(err) == 1 and "Traceback" not in r.stderr
    assert sh(scripts / "install_tool.sh", "v2").returncode == 1


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
