"""Bad input to ``nncert bench`` and ``nncert report``: one line, exit 2, nothing written."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from badinput import assert_clean_error, files_under, run_nncert  # noqa: E402

SUITE = """\
name = "t"
timeout = 5
eps = [0.01]
methods = ["interval"]

[data]
source = "digits:test"
count = 2

[[models]]
name = "m"
train = "mlp"
hidden = [4]
epochs = 1
"""


@pytest.mark.parametrize("edit,needle", [
    (lambda t: t.replace("count = 2", "count = = 2"), "s.toml: malformed TOML: invalid value (at line 8"),
    (lambda t: t.replace('["interval"]', '["interval", "deepzono"]'), "s.toml:4: unknown method 'deepzono'"),
    (lambda t: t.replace('train = "mlp"', 'path = "nets/m.onnx"'), "model 'm': "),
    (lambda t: t.replace('source = "digits:test"', 'source = "data/none.csv"'), "data/none.csv not found"),
    (lambda t: t + "colour = 1\n", "s.toml:15: unknown key 'colour'"),
])
def test_bad_suite_files(tmp_path, edit, needle):
    (tmp_path / "s.toml").write_text(edit(SUITE))
    before = files_under(tmp_path)
    run = run_nncert("bench", "run", tmp_path / "s.toml", "--out", tmp_path / "r.jsonl",
                     "--models", tmp_path / "models")
    assert_clean_error(run, needle)
    assert files_under(tmp_path) == before


def test_unknown_suite_name(tmp_path):
    assert_clean_error(run_nncert("bench", "run", "no-such-suite", "--out", tmp_path / "r.jsonl"),
                       "no suite named 'no-such-suite'")


def test_out_must_be_jsonl_and_is_never_overwritten(tmp_path):
    (tmp_path / "s.toml").write_text(SUITE)
    assert_clean_error(run_nncert("bench", "run", tmp_path / "s.toml", "--out", tmp_path / "r.csv"),
                       "give a .jsonl file name")
    notes = tmp_path / "notes.jsonl"
    notes.write_text("my notes\n")
    run = run_nncert("bench", "run", tmp_path / "s.toml", "--out", notes, "--models", tmp_path / "m")
    assert_clean_error(run, "notes.jsonl:1: not an nncert results file")
    assert notes.read_text() == "my notes\n"


def test_vnncomp_suite_without_the_shared_folder(tmp_path):
    run = run_nncert("bench", "run", "vnncomp2021-acasxu", "--root", tmp_path, "--out",
                     tmp_path / "r.jsonl")
    assert_clean_error(run, "benchmarks/acasxu/instances.csv not found")
    assert_clean_error(run_nncert("bench", "run", "vnncomp2021-acasxu", "--root", tmp_path / "nope",
                                  "--out", tmp_path / "r.jsonl"), "does not exist")


def test_bad_jobs_is_a_usage_line(tmp_path):
    assert_clean_error(run_nncert("bench", "run", "digits-tiny", "--jobs", "0", "--out",
                                  tmp_path / "r.jsonl"), "--jobs")


def test_report_bad_inputs(tmp_path):
    out = tmp_path / "rep"
    assert_clean_error(run_nncert("report", tmp_path / "none.jsonl", "--out", out),
                       "none.jsonl not found")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"nncert_results": 1, "suite": "t"}\n{"key": 1, "verdict": "verified"}\nnot json\n')
    assert_clean_error(run_nncert("report", bad, "--out", out), "bad.jsonl:3: not a JSON row")
    bad.write_text("\x00\x01binary\n")
    assert_clean_error(run_nncert("report", bad, "--out", out), "bad.jsonl")
    good = tmp_path / "good.jsonl"
    good.write_text('{"nncert_results": 1, "suite": "t"}\n')
    assert_clean_error(run_nncert("report", good, "--out", out, "--peer", "x"), "expected NAME=results.csv")
    assert_clean_error(run_nncert("report", good, "--out", out), "no rows")
    assert not out.exists()
