"""Reports: the Markdown tables match numbers recomputed from the JSONL rows; the HTML page is
self-contained (every plot embedded, nothing fetched); peers' VNN-COMP CSVs join the rows."""

from __future__ import annotations

import base64
import json
import random
import re
from collections import defaultdict
from pathlib import Path

import pytest

from nncert.benchmarks.report import load_rows, peer_rows, write_report
from nncert.errors import DataError


def _rows() -> list[dict]:
    """A robustness suite (2 models × 3 methods × 2 eps × 10 points) and a VNN-COMP one, with
    random but valid verdicts (a verified point is always correctly classified)."""
    rng = random.Random(0)
    rows = []
    for model in ("A", "B"):
        for method in ("crown", "interval", "pgd"):
            for eps in (0.01, 0.05):
                for i in range(10):
                    label, pred = i % 10, (i % 10 if rng.random() < 0.8 else (i + 1) % 10)
                    v = rng.choice(["verified", "unknown", "falsified", "timeout"])
                    if pred != label:
                        v = "falsified"
                    if method == "pgd" and v == "verified":
                        v = "unknown"
                    rows.append({"key": f"{model}/{method}/{eps}/{i}", "suite": "s",
                                 "kind": "robustness", "model": model, "method": method,
                                 "eps": eps, "p": "inf", "index": i, "label": label,
                                 "prediction": pred, "verdict": v,
                                 "time_s": round(rng.random(), 4)})
    for i in range(8):
        exp = "sat" if i % 3 == 0 else "unsat"
        res = rng.choice(["sat", "unsat", "timeout", "error"])
        v = {"sat": "falsified", "unsat": "verified"}.get(res, res)
        rows.append({"key": json.dumps([f"n{i}.onnx", "p.vnnlib"]), "suite": "vnn",
                     "kind": "vnncomp", "onnx": f"onnx/n{i}.onnx", "vnnlib": "vnnlib/p.vnnlib",
                     "timeout": 10, "expected": exp, "verdict": v, "result": res,
                     "time_s": round(rng.random() * 5, 3),
                     **({"peak_mb": round(300 + 100 * rng.random(), 1)} if i % 4 else {})})
    return rows


def _write(path: Path, rows: list[dict], suite: str) -> Path:
    path.write_text("\n".join([json.dumps({"nncert_results": 1, "suite": suite}),
                               *map(json.dumps, rows)]) + "\n")
    return path


def _md_tables(text: str) -> dict[str, list[dict[str, str]]]:
    """Every Markdown table under a ``## title``, as dicts of cell text."""
    out, title, head = {}, None, None
    for line in text.splitlines():
        if line.startswith("## "):
            title, head = line[3:], None
        elif line.startswith("|") and title:
            cells = [c.strip() for c in line.strip("|").split("|")]
            if head is None:
                head = cells
                out[title] = []
            elif not set(line) <= set("|-: "):
                out[title].append(dict(zip(head, cells)))
    return out


def test_markdown_tables_match_the_rows(tmp_path):
    rows = _rows()
    a = _write(tmp_path / "a.jsonl", [r for r in rows if r["suite"] == "s"], "s")
    b = _write(tmp_path / "b.jsonl", [r for r in rows if r["suite"] == "vnn"], "vnn")
    md, _page = write_report(load_rows([a, b]), tmp_path / "rep")
    t = _md_tables(md.read_text())
    groups = defaultdict(list)
    for r in rows:
        if r["kind"] == "robustness":
            groups[(r["model"], r["method"], f"{r['eps']:g}")].append(r)
    cert = {(c["model"], c["method"], c["eps"]): c for c in t["Certified accuracy"]}
    assert set(cert) == set(groups)
    for k, rs in groups.items():
        n = len(rs)
        ver = sum(r["verdict"] == "verified" for r in rs)
        fal = sum(r["verdict"] == "falsified" for r in rs)
        clean = sum(r["prediction"] == r["label"] for r in rs)
        c = cert[k]
        assert int(c["points"]) == n and int(c["verified"]) == ver and int(c["falsified"]) == fal
        assert c["certified accuracy"] == f"{100 * ver / n:.1f}%"
        assert c["clean accuracy"] == f"{100 * clean / n:.1f}%"
        assert c["upper bound"] == f"{100 * (n - fal) / n:.1f}%"
        assert float(c["mean time (s)"]) == pytest.approx(sum(r["time_s"] for r in rs) / n, abs=1e-3)
    (vnn,) = t["VNN-COMP"]
    vr = [r for r in rows if r["kind"] == "vnncomp"]
    solved = [r for r in vr if r["result"] in ("sat", "unsat")]
    assert int(vnn["instances"]) == 8 and int(vnn["solved"]) == len(solved)
    assert int(vnn["wrong"]) == sum(r["result"] != r["expected"] for r in solved)
    assert int(vnn["correct"]) == sum(r["result"] == r["expected"] for r in solved)
    assert int(vnn["errors"]) == sum(r["result"] == "error" for r in vr)
    assert float(vnn["time on solved (s)"]) == pytest.approx(sum(r["time_s"] for r in solved), abs=0.05)
    assert vnn["peak memory (MiB)"] == f"{max(r['peak_mb'] for r in vr if 'peak_mb' in r):.0f}"
    board = t["Leaderboard"]
    assert {b["method"] for b in board} == {"crown", "interval", "nncert"}  # pgd proves nothing
    for b_ in board:
        if b_["benchmark"].startswith("s/"):
            rs = [r for r in rows if r["kind"] == "robustness" and r["model"] == b_["benchmark"][2:]
                  and r["method"] == b_["method"]]
            assert int(b_["decided"]) == sum(r["verdict"] in ("verified", "falsified") for r in rs)


def test_html_is_self_contained(tmp_path):
    rows = _rows()
    a = _write(tmp_path / "a.jsonl", rows, "s")
    _md, page = write_report(load_rows([a]), tmp_path / "rep")
    text = page.read_text()
    imgs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    # certified accuracy for 2 models; cactus + times for s/A, s/B and vnn
    assert len(imgs) == 2 + 2 * 3
    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in imgs)
    prose = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", text)
    assert not re.search(r'(src|href)="(?!data:)', text) and "http" not in prose
    assert "<table>" in text and "Leaderboard" in text


def test_peer_rows_join_shared_instances(tmp_path):
    rows = _rows()
    b = _write(tmp_path / "b.jsonl", [r for r in rows if r["suite"] == "vnn"], "vnn")
    ours = load_rows([b])
    peer = tmp_path / "peer.csv"
    peer.write_text("acasxu,./benchmarks/x/n0.onnx,./benchmarks/x/p.vnnlib,0.1,violated,1.5\n"
                    "acasxu,./benchmarks/x/n1.onnx,./benchmarks/x/p.vnnlib,0.1,holds,2.5\n"
                    "acasxu,./benchmarks/x/zz.onnx,./benchmarks/x/p.vnnlib,0.1,holds,2.5\n"
                    "acasxu,./benchmarks/x/n2.onnx,./benchmarks/x/p.vnnlib,0.1,timeout,10\n")
    pr = peer_rows("other", peer, ours)
    assert [(r["onnx"], r["result"], r["verdict"]) for r in pr] == [
        ("onnx/n0.onnx", "sat", "falsified"), ("onnx/n1.onnx", "unsat", "verified"),
        ("onnx/n2.onnx", "timeout", "timeout")]
    md, _ = write_report(ours + pr, tmp_path / "rep")
    vnn = {r["method"]: r for r in _md_tables(md.read_text())["VNN-COMP"]}
    assert vnn["other"]["instances"] == "3" and vnn["other"]["solved"] == "2"
    assert vnn["other"]["correct"] == "2" and vnn["other"]["wrong"] == "0"
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n")
    with pytest.raises(DataError, match="bad.csv:1: expected 6 fields"):
        peer_rows("x", bad, ours)


def test_rows_missing_fields_are_refused(tmp_path):
    p = _write(tmp_path / "a.jsonl", [{"key": "k", "verdict": "verified", "kind": "robustness",
                                      "suite": "s", "time_s": 1}], "s")
    with pytest.raises(DataError, match="row 'k' lacks model, method, eps, label"):
        load_rows([p])


def test_the_committed_vnncomp_results_give_a_self_contained_page(tmp_path):
    """The report of the real ACAS Xu and mnistfc runs (bench/results) embeds every plot."""
    from nncert.benchmarks.report import plots

    root = Path(__file__).resolve().parents[2] / "bench" / "results"
    files = sorted(root.glob("vnncomp2021-*.jsonl"))
    assert len(files) >= 2, "bench/results should hold the ACAS Xu and mnistfc results"
    rows = load_rows(files)
    assert {r["suite"] for r in rows} >= {"vnncomp2021-acasxu", "vnncomp2021-mnistfc"}
    _md, page = write_report(rows, tmp_path / "rep")
    text = page.read_text()
    imgs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(imgs) == len(plots(rows)) >= 4  # cactus + times per benchmark
    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in imgs)
    assert not re.search(r'(src|href)="(?!data:)', text)
    wrong = sum(r["result"] in ("sat", "unsat") and r.get("expected") in ("sat", "unsat")
                and r["result"] != r["expected"] for r in rows)
    assert wrong == 0  # (no wrong answer in the committed runs)
