"""The one runner: a tiny digits suite end to end on the local pool and on Ray, resumed after a
kill, a dying worker costing only its instance."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nncert.benchmarks.executors import LocalPool, RayPool
from nncert.benchmarks.plan import plan, run_plan
from nncert.benchmarks.report import load_rows, write_report
from nncert.benchmarks.runner import JsonlStore, Work, comparable, read_results
from nncert.benchmarks.suites import load_suite
from nncert.complete.vnncomp import TEST_HOOK_ENV
from nncert.errors import DataError

ROOT = Path(__file__).resolve().parents[2]

TINY = """\
name = "tiny"
timeout = {timeout}
eps = [0.01, 0.1]
methods = ["interval", "crown", "pgd"]

[data]
source = "digits:test"
count = 3
sample = "uniform"

[[models]]
name = "net"
train = "mlp"
hidden = [8]
epochs = 3
"""

SECOND = """
[[models]]
name = "{name}"
train = "mlp"
hidden = [6]
epochs = 2
"""


def _suite(tmp_path: Path, second: str | None = None, timeout: float = 120) -> Path:
    text = TINY.format(timeout=timeout) + (SECOND.format(name=second) if second else "")
    p = tmp_path / "tiny.toml"
    p.write_text(text)
    return p


def _run(suite: Path, out: Path, executor=None, **kw):
    p = plan(load_suite(suite), models_dir=suite.parent / "models", **kw)
    return p, run_plan(p, out, executor or LocalPool(1), progress=False, **{"grace": 0.5})


def test_tiny_suite_end_to_end(tmp_path):
    out = tmp_path / "r.jsonl"
    p, counts = _run(_suite(tmp_path), out, LocalPool(2))
    rows = read_results(out)
    assert counts.ran == len(p.works) == 2 * 3 * 3 == len(rows) and counts.errors == 0
    assert len({r["key"] for r in rows}) == len(rows)
    for r in rows:
        assert r["verdict"] in ("verified", "falsified", "unknown")
        # a certificate is only ever given to a correctly classified point; pgd never certifies
        assert r["verdict"] != "verified" or (r["prediction"] == r["label"] and r["method"] != "pgd")
    by = {(r["method"], r["eps"], r["index"]): r["verdict"] for r in rows}
    for (_m, e, i), v in by.items():  # a counterexample found by one method refutes all
        if v == "falsified":
            assert all(by[(m2, e, i)] != "verified" for m2 in ("interval", "crown", "pgd"))
    # a second run has nothing to do and leaves the file as it was
    before = out.read_bytes()
    _, counts = _run(_suite(tmp_path), out)
    assert counts.ran == 0 and counts.kept == len(rows) and out.read_bytes() == before
    # its report: the certified counts of the Markdown are those of the rows
    md, _page = write_report(load_rows([out]), tmp_path / "rep")
    text = md.read_text()
    for (m, e), n in _verified_counts(rows).items():
        assert re.search(rf"\| net \| {m} \| {e:g} \| 3 \| [^|]+ \| {n} \|", text), (m, e, n)


def _verified_counts(rows: list[dict]) -> dict:
    out: dict = {}
    for r in rows:
        k = (r["method"], r["eps"])
        out[k] = out.get(k, 0) + (r["verdict"] == "verified")
    return out


def test_resume_keeps_rows_drops_torn_and_error_rows(tmp_path):
    suite = _suite(tmp_path)
    out = tmp_path / "r.jsonl"
    _run(suite, out, limit=5)
    lines = out.read_text().splitlines()
    assert len(lines) == 6
    bad = json.loads(lines[2])
    bad.update(verdict="error", error="x")
    text = "\n".join([*lines[:2], json.dumps(bad), *lines[3:]]) + "\n" + lines[4][:20]
    out.write_text(text)  # an error row (run again) and a torn last line (dropped)
    p, counts = _run(suite, out)
    rows = read_results(out)
    assert counts.kept == 4 and counts.ran == len(p.works) - 4
    assert sorted(r["key"] for r in rows) == sorted(w.key for w in p.works)
    assert out.read_text().splitlines()[:2] == [lines[0], lines[1]]


def test_refuses_other_files_and_other_suites(tmp_path):
    other = tmp_path / "notes.jsonl"
    other.write_text('{"a": 1}\n')
    with pytest.raises(DataError, match="not an nncert results file"):
        JsonlStore(other, "tiny")
    assert other.read_text() == '{"a": 1}\n'
    mine = tmp_path / "r.jsonl"
    JsonlStore(mine, "tiny").append(Work("k", {}, (), 1.0), {"verdict": "unknown", "time_s": 0})
    with pytest.raises(DataError, match="results of suite 'tiny', not 'other'"):
        JsonlStore(mine, "other")


def test_dead_worker_costs_only_its_instance(tmp_path, monkeypatch):
    suite = _suite(tmp_path, second="crashnet")
    monkeypatch.setenv(TEST_HOOK_ENV, "crash:crashnet")
    out = tmp_path / "r.jsonl"
    p, counts = _run(suite, out, LocalPool(2))
    rows = read_results(out)
    assert len(rows) == len(p.works) and counts.crashed == 18
    assert all((r["verdict"] == "error") == (r["model"] == "crashnet") for r in rows)
    assert {r["error"] for r in rows if r["verdict"] == "error"} == {"the worker process died"}
    monkeypatch.delenv(TEST_HOOK_ENV)
    _, counts = _run(suite, out)  # the error rows run again
    assert counts.ran == 18 and all(r["verdict"] != "error" for r in read_results(out)[-18:])


def test_hanging_worker_is_stopped_as_timeout(tmp_path, monkeypatch):
    suite = _suite(tmp_path, second="hangnet", timeout=0.5)
    monkeypatch.setenv(TEST_HOOK_ENV, "hang:hangnet")
    out = tmp_path / "r.jsonl"
    p, counts = _run(suite, out, LocalPool(2), limit=20)  # 18 of net, 2 of hangnet
    rows = {r["key"]: r for r in read_results(out)}
    hung = [r for r in rows.values() if r["model"] == "hangnet"]
    assert len(hung) == 2 and all(r["verdict"] == "timeout" and r["stopped"] for r in hung)
    assert counts.stopped == 2


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_cli_run_killed_then_resumed(tmp_path):
    """SIGKILL of ``nncert bench run`` in the middle (instances of the hanging model running),
    then the same command again: every instance has exactly one row."""
    suite = _suite(tmp_path, second="hangnet", timeout=30)
    out = tmp_path / "r.jsonl"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "nncert.cli.main", "bench", "run", str(suite), "--out", str(out),
           "--no-progress"]
    proc = subprocess.Popen(cmd, env={**env, TEST_HOOK_ENV: "hang:hangnet"},
                            stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        for _ in range(3000):  # a polling budget, not a timing assertion
            if out.exists() and len(read_results(out)) >= 18:
                break
            assert proc.poll() is None, "the run ended before it was killed"
            time.sleep(0.1)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert {r["model"] for r in read_results(out)} == {"net"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    rows = read_results(out)
    assert len(rows) == 36 and len({r["key"] for r in rows}) == 36
    assert "18 kept from before" in done.stdout


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'nncert[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {TEST_HOOK_ENV: "crash:crashnet",
                                       "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}})
    yield ray
    ray.shutdown()


def test_ray_gives_the_rows_of_the_local_pool(tmp_path, monkeypatch, ray_local):
    """Same suite, same models: 2 Ray workers and the local pool write the same rows (times
    aside), a crashing worker costing only its instance on both."""
    suite = _suite(tmp_path, second="crashnet")
    monkeypatch.setenv(TEST_HOOK_ENV, "crash:crashnet")
    local, on_ray = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    _run(suite, local, LocalPool(2), limit=24)
    _, counts = _run(suite, on_ray, RayPool(None, 2), limit=24)
    a, b = comparable(read_results(local)), comparable(read_results(on_ray))
    assert a == b and len(a) == 24
    assert counts.crashed == 6 and sum(r["verdict"] == "error" for r in b.values()) == 6


def test_cli_vnncomp_suite_flags_wrong_answers_and_reports(tmp_path, capsys):
    """A vnncomp-kind suite through ``nncert bench run`` (exit 1 on a wrong answer, printed
    loudly), then ``nncert report`` on its rows."""
    sys.path.insert(0, str(ROOT / "tests" / "complete"))
    from complete_fixtures import abs_net, vnnlib_text, write_mlp_onnx

    from nncert.cli.main import main

    bench = tmp_path / "bench"
    bench.mkdir()
    write_mlp_onnx(abs_net(), bench / "a.onnx")
    (bench / "unsat.vnnlib").write_text(vnnlib_text([-1.0], [1.0], "(<= Y_0 -0.1)", 1))
    (bench / "sat.vnnlib").write_text(vnnlib_text([-1.0], [1.0], "(<= Y_0 0.5)", 1))
    (bench / "instances.csv").write_text("a.onnx,unsat.vnnlib,10\na.onnx,sat.vnnlib,10\n")
    (bench / "expected.csv").write_text("onnx,vnnlib,expected\na.onnx,unsat.vnnlib,unsat\n"
                                        "a.onnx,sat.vnnlib,unsat\n")  # the second is wrong
    suite = tmp_path / "v.toml"
    suite.write_text('kind = "vnncomp"\ninstances = "bench/instances.csv"\n')
    out = tmp_path / "r.jsonl"
    rc = main(["bench", "run", str(suite), "--out", str(out), "--jobs", "2", "--no-progress"])
    io = capsys.readouterr()
    assert rc == 1 and "WRONG ANSWERS: 1" in io.err and "a.onnx sat.vnnlib" in io.err
    rows = {r["vnnlib"]: r for r in read_results(out)}
    assert rows["unsat.vnnlib"]["result"] == "unsat" and rows["sat.vnnlib"]["result"] == "sat"
    assert main(["report", str(out), "--out", str(tmp_path / "rep")]) == 0
    assert "| v | nncert | 2 | 2 | 1 | 1 | 1 | 1 |" in (tmp_path / "rep" / "report.md").read_text()
