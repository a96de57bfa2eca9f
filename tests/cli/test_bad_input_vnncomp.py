"""Bad input to ``nncert vnncomp run`` / ``suite``: one line ``nncert: error: ...``, exit 2, no
traceback, nothing computed or overwritten, and no file content echoed beyond a short excerpt."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "complete"))
from badinput import assert_clean_error, files_under, run_nncert  # noqa: E402
from complete_fixtures import abs_net, vnnlib_text, write_mlp_onnx  # noqa: E402

SECRET = "root:x:0:0:" + "S" * 80 + ":/root:/bin/bash"


@pytest.fixture
def suite(tmp_path):
    d = tmp_path / "suite"
    d.mkdir()
    write_mlp_onnx(abs_net(), d / "a.onnx")
    (d / "unsat.vnnlib").write_text(vnnlib_text([-1.0], [1.0], "(<= Y_0 -0.1)", 1))
    (d / "instances.csv").write_text("a.onnx,unsat.vnnlib,10\n")
    return d


def _suite(d: Path, *extra):
    return run_nncert("vnncomp", "suite", "--instances", d / "instances.csv", "--no-progress",
                      *extra, cwd=d)


@pytest.mark.parametrize("content,needle", [
    (b"a.onnx,unsat.vnnlib,abc\n", "instances.csv:1: timeout 'abc'"),
    (b"\x00\x01binary\x00", "binary file"),
    (b"a.onnx,unsat.vnnlib,10\n\xff\xfe\n", "not UTF-8"),
])
def test_suite_bad_instances_file(suite, content, needle):
    (suite / "instances.csv").write_bytes(content)
    before = files_under(suite)
    run = _suite(suite, "--out", suite / "results.csv")
    assert_clean_error(run, needle)
    assert files_under(suite) == before


def test_suite_non_utf8_results_file_is_kept(suite):
    out = suite / "results.csv"
    out.write_bytes(b"onnx,vnnlib,result,time_s\n\xff\xfe,x,sat,1\n")
    run = _suite(suite, "--out", out)
    assert_clean_error(run, "not UTF-8")
    assert out.read_bytes() == b"onnx,vnnlib,result,time_s\n\xff\xfe,x,sat,1\n"


def test_suite_out_under_a_file(suite):
    (suite / "somefile").write_text("x")
    assert_clean_error(_suite(suite, "--out", suite / "somefile" / "r.csv"), "is not a directory")


def test_run_out_under_a_file(suite):
    (suite / "somefile").write_text("x")
    run = run_nncert("vnncomp", "run", "--onnx", suite / "a.onnx", "--vnnlib",
                     suite / "unsat.vnnlib", "--timeout", "300", "--out",
                     suite / "somefile" / "r.txt")
    assert_clean_error(run, "is not a directory")


def test_suite_path_outside_root_rejected_and_not_read(suite, tmp_path):
    (tmp_path / "passwd").write_text(SECRET + "\n")
    (suite / "instances.csv").write_text("a.onnx,../passwd,10\n")
    run = _suite(suite, "--out", suite / "results.csv")
    assert_clean_error(run, "outside the root")
    assert "SSSS" not in run.stderr and not (suite / "results.csv").exists()


def test_suite_wrong_root(suite, tmp_path):
    run = _suite(suite, "--out", suite / "r.csv", "--root", tmp_path / "nope")
    assert_clean_error(run, "does not exist")


def test_suite_bad_expected_file_fails_before_running(suite):
    (suite / "expected.csv").write_text("a.onnx,unsat.vnnlib,unsat\n")
    run = _suite(suite, "--out", suite / "r.csv")
    assert_clean_error(run, "expected.csv:1")
    assert not (suite / "r.csv").exists()


def test_run_echoes_only_a_short_excerpt_of_a_bad_file(suite, tmp_path):
    (tmp_path / "passwd").write_text(SECRET + "\n")
    out = tmp_path / "r.txt"
    run = run_nncert("vnncomp", "run", "--onnx", suite / "a.onnx", "--vnnlib",
                     tmp_path / "passwd", "--timeout", "300", "--out", out)
    assert_clean_error(run)
    assert SECRET[:60] not in run.stderr and out.read_text() == "error\n"


def test_light_entry_point_errors_are_one_line(suite):
    """``python -m nncert.cli.vnncomp`` (used by run_instance.sh) handles errors like ``nncert``."""
    run = run_nncert("vnncomp", "run", "--onnx", suite / "a.onnx", "--vnnlib", suite / "nope.vnnlib",
                     "--timeout", "300", "--out", suite / "r.txt")
    assert_clean_error(run, "nope.vnnlib")
    env = {"PYTHONPATH": str(Path(__file__).parents[2] / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "nncert.cli.vnncomp", "suite", "--instances",
                           suite / "instances.csv", "--out", suite / "a.onnx" / "r.csv"],
                          capture_output=True, text=True, env={**os.environ, **env}, timeout=600)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "is not a directory" in lines[0], proc.stderr
