"""Bad input to ``nncert semantic`` in a real subprocess: one clean line, exit 2, no traceback,
nothing written."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from badinput import assert_clean_error, files_under, run_nncert  # noqa: E402

from nncert.models import ops  # noqa: E402
from nncert.models.graph import sequential  # noqa: E402
from nncert.models.to_onnx import to_onnx  # noqa: E402
from nncert.semantic.generative import VAEConfig, build_generator, save_generator  # noqa: E402


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """An 8×8 digits classifier, a 4×4-input classifier, and a small generator directory."""
    d = tmp_path_factory.mktemp("semantic_assets")
    torch.manual_seed(0)
    net = sequential([ops.Flatten(), ops.Linear(torch.randn(10, 64) * 0.1, torch.zeros(10))],
                     (1, 8, 8))
    to_onnx(net, d / "net.onnx")
    small = sequential([ops.Flatten(), ops.Linear(torch.randn(10, 16), torch.zeros(10))], (1, 4, 4))
    to_onnx(small, d / "small.onnx")
    x = torch.rand(64, 1, 8, 8)
    gen = build_generator(x, x, VAEConfig(latent=3, hidden=16, steps=5), ("rotate", "thickness"),
                          pairs=16)
    save_generator(gen, d / "gen")
    bad = d / "gen_bad"
    bad.mkdir()
    for name in ("decoder.onnx", "encoder.onnx"):
        (bad / name).write_bytes((d / "gen" / name).read_bytes())
    (bad / "directions.npz").write_text("not an npz")
    return d


@pytest.fixture
def work(tmp_path):
    return tmp_path


def _transform(assets, *extra):
    return ("semantic", "transform", "--model", assets / "net.onnx", "--data", "digits:test",
            "--count", "2", *extra)


def _segment(assets, *extra, gen="gen"):
    return ("semantic", "segment", "--model", assets / "net.onnx", "--data", "digits:test",
            "--count", "2", "--generator", assets / gen, *extra)


@pytest.mark.parametrize("extra,needle", [
    (("--transform", "rotate", "--range", "1", "2", "3"), "takes 2 numbers"),
    (("--transform", "translate", "--range", "1", "2"), "takes 4 numbers"),
    (("--transform", "rotate", "--range", "5", "-5"), "lower end is above"),
    (("--transform", "scale", "--range", "0", "1.2"), "must be > 0"),
    (("--transform", "warp", "--range", "0", "1"), "invalid choice"),
    (("--transform", "blur", "--range", "-1", "1"), "σ must be ≥ 0"),
    (("--transform", "fog", "--range", "0", "1.5"), "[0, 1]"),
    (("--transform", "rotate", "--range", "0", "nan"), None),
    (("--transform", "rotate", "--range", "0", "1", "--pieces", "0"), "pieces"),
    (("--transform", "rotate", "--range", "0", "1", "--method", "magic"), "invalid choice"),
    (("--transform", "rotate", "--range", "0", "1", "--pixels", "bands"), "invalid choice"),
    (("--transform", "rotate", "--range", "0", "1", "--band-sub", "0"), "band-sub"),
])
def test_transform_bad_arguments(assets, work, extra, needle):
    run = run_nncert(*_transform(assets, *extra, "--out", work / "r.json"), cwd=work)
    assert_clean_error(run, needle)
    assert files_under(work) == set()


def test_transform_bad_model_and_data(assets, work):
    rng = ("--transform", "rotate", "--range", "0", "1")
    run = run_nncert("semantic", "transform", "--model", work / "none.onnx", "--data",
                     "digits:test", *rng, cwd=work)
    assert_clean_error(run, "none.onnx")
    run = run_nncert("semantic", "transform", "--model", assets / "small.onnx", "--data",
                     "digits:test", *rng, cwd=work)
    assert_clean_error(run, "shape")
    run = run_nncert("semantic", "transform", "--model", assets / "net.onnx", "--data",
                     work / "nodata.csv", *rng, cwd=work)
    assert_clean_error(run, "nodata")
    run = run_nncert(*_transform(assets, *rng, "--out", work), cwd=work)  # a directory
    assert_clean_error(run, "--out")
    assert files_under(work) == set()


def test_segment_bad_generator(assets, work):
    assert_clean_error(run_nncert(*_segment(assets, "--direction", "rotate", gen="nope"),
                                  cwd=work), "directory")
    assert_clean_error(run_nncert(*_segment(assets, "--direction", "spin"), cwd=work),
                       "not in")
    assert_clean_error(run_nncert(*_segment(assets, "--direction", "rotate", gen="gen_bad"),
                                  cwd=work), "directions file")
    run = run_nncert("semantic", "segment", "--model", assets / "small.onnx", "--data",
                     "digits:test", "--generator", assets / "gen", "--direction", "rotate", cwd=work)
    assert_clean_error(run, "shape")
    run = run_nncert(*_segment(assets, "--direction", "rotate", "--delta", "-1"), cwd=work)
    assert_clean_error(run, "delta")
    assert files_under(work) == set()


def test_segment_and_transform_write_json(assets, work):
    run = run_nncert(*_segment(assets, "--direction", "rotate", "--out", work / "s.json"),
                     cwd=work)
    assert run.code == 0, run.stderr
    rows = json.loads((work / "s.json").read_text())
    assert rows["summary"]["count"] == 2 and len(rows["results"]) == 2
    for name, lo, hi in (("brightness", "-0.1", "0.1"), ("blur", "0", "0.7"), ("fog", "0", "0.3")):
        run = run_nncert(*_transform(assets, "--transform", name, "--range", lo, hi,
                                     "--out", work / "t.json"), cwd=work)
        assert run.code == 0, run.stderr
        assert json.loads((work / "t.json").read_text())["summary"]["count"] == 2


def test_transform_with_linear_pixels(assets, work):
    """--pixels linear / both: the same verdicts as boxes where both decide, never more
    pieces with both; the summary names the pixel bounds."""
    out = {}
    for pixels in ("box", "linear", "both"):
        run = run_nncert(*_transform(assets, "--transform", "rotate", "--range", "-10", "10",
                                     "--pixels", pixels, "--out", work / f"{pixels}.json"),
                         cwd=work)
        assert run.code == 0, run.stderr
        out[pixels] = json.loads((work / f"{pixels}.json").read_text())
        assert out[pixels]["summary"]["pixels"] == pixels
    decided = ("verified", "falsified")
    for a, b in zip(out["box"]["results"], out["both"]["results"]):
        assert b["pieces_bounded"] <= a["pieces_bounded"]
        if a["verdict"] in decided and b["verdict"] in decided:
            assert a["verdict"] == b["verdict"]
    for a, b in zip(out["box"]["results"], out["linear"]["results"]):
        if a["verdict"] in decided and b["verdict"] in decided:
            assert a["verdict"] == b["verdict"]


def test_csv_output_one_line_per_input(assets, work):
    import csv

    run = run_nncert(*_segment(assets, "--direction", "rotate", "--out", work / "s.csv"),
                     cwd=work)
    assert run.code == 0, run.stderr
    rows = list(csv.DictReader((work / "s.csv").open()))
    assert [r["index"] for r in rows] == ["0", "1"]
    assert {"verdict", "fraction_lower", "fraction_upper", "time_s"} <= set(rows[0])
    assert files_under(work) == {"s.csv"}  # (the partial rows file is gone)


@pytest.mark.parametrize("stop", [MemoryError, KeyboardInterrupt])
def test_transform_rows_stay_on_disk_when_a_run_stops(assets, work, monkeypatch, stop):
    """Rows are written as they are decided: a run that dies at the second image leaves the
    first in OUT.partial.jsonl; Ctrl-C there writes OUT with that row, marked interrupted, and
    keeps the journal; --resume then decides only the other images."""
    import nncert.semantic.transforms as tr

    real, calls = tr.certify_transform, {"n": 0}

    def stopping(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise stop()
        return real(*a, **k)

    monkeypatch.setattr(tr, "certify_transform", stopping)
    run = run_nncert(*_transform(assets, "--transform", "rotate", "--range", "-5", "5"),
                     "--out", work / "t.json", cwd=work)
    assert run.code != 0
    if stop is MemoryError:
        head, *rows = [json.loads(line)
                       for line in (work / "t.json.partial.jsonl").read_text().splitlines()]
        assert head["command"] == "semantic transform"
    else:
        out = json.loads((work / "t.json").read_text())
        assert out["summary"]["interrupted"] is True and out["summary"]["count"] == 1
        assert files_under(work) == {"t.json", "t.json.partial.jsonl"}
        rows = out["results"]
    assert [r["index"] for r in rows] == [0]
    monkeypatch.setattr(tr, "certify_transform", real)
    run = run_nncert(*_transform(assets, "--transform", "rotate", "--range", "-5", "5"),
                     "--out", work / "t.json", "--resume", cwd=work)
    assert run.code == 0, run.stderr
    assert "1 of 2 inputs already decided" in run.stderr
    out = json.loads((work / "t.json").read_text())
    assert [r["index"] for r in out["results"]] == [0, 1] and out["summary"]["count"] == 2
    assert files_under(work) == {"t.json"}


def test_train_generator_bad_input(work):
    (work / "afile").write_text("x")
    assert_clean_error(run_nncert("semantic", "train-generator", "--out", work / "afile",
                                  "--steps", "1", cwd=work), "directory")
    assert_clean_error(run_nncert("semantic", "train-generator", "--out", work / "g",
                                  "--data", work / "none", "--steps", "1", cwd=work), "none")
    assert_clean_error(run_nncert("semantic", "train-generator", "--out", work / "g",
                                  "--steps", "0", cwd=work), "steps")
    assert files_under(work) == {"afile"}


def test_directions_npz_with_pickled_objects_is_refused(work):
    from nncert.errors import DataError
    from nncert.semantic.generative import load_directions

    np.savez(work / "d.npz", names=np.array([None], dtype=object), vectors=np.zeros((1, 2)))
    with pytest.raises(DataError):
        load_directions(work / "d.npz")


@pytest.mark.parametrize("toward,needle", [
    (("rotate", "x"), "must be numbers"),
    (("rotate", "1", "2"), "takes 1"),
    (("warp", "1"), "unknown transform"),
    (("scale", "-1"), "> 0"),
    (("brightness", "inf"), "finite"),
    (("blur", "-0.5"), "≥ 0"),
    (("fog", "2"), "[0, 1]"),
])
def test_line_bad_toward(assets, work, toward, needle):
    run = run_nncert("semantic", "line", "--model", assets / "net.onnx", "--data", "digits:test",
                     "--count", "2", "--toward", *toward, "--out", work / "l.json", cwd=work)
    assert_clean_error(run, needle)
    assert files_under(work) == set()


def test_line_writes_json(assets, work):
    run = run_nncert("semantic", "line", "--model", assets / "net.onnx", "--data", "digits:test",
                     "--count", "3", "--toward", "brightness", "0.3", "--method", "quantitative",
                     "--out", work / "l.json", cwd=work)
    assert run.code == 0, run.stderr
    out = json.loads((work / "l.json").read_text())
    assert out["summary"]["count"] == 3
    assert all(r["fraction_lower"] <= r["fraction_upper"] for r in out["results"])


def _png_size(path) -> tuple[int, int]:
    import struct

    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_strip_png_for_segment_line_and_transform(assets, work):
    from nncert.semantic.strip import strip_size

    runs = {"s.png": _segment(assets, "--direction", "rotate", "--delta", "2"),
            "l.png": ("semantic", "line", "--model", assets / "net.onnx", "--data", "digits:test",
                      "--count", "2", "--toward", "rotate", "30"),
            "t.png": _transform(assets, "--transform", "rotate", "--range", "-10", "10")}
    for name, argv in runs.items():
        run = run_nncert(*argv, "--strip", work / name, "--strip-images", "6", cwd=work)
        assert run.code == 0, run.stderr
        assert _png_size(work / name) == strip_size(2, 6), name


def test_strip_bad_arguments(assets, work):
    (work / "d").mkdir()
    run = run_nncert(*_transform(assets, "--transform", "rotate", "--range", "0", "1",
                                 "--strip", work / "d"), cwd=work)
    assert_clean_error(run, "--strip")
    run = run_nncert(*_segment(assets, "--direction", "rotate", "--strip", work / "s.png",
                               "--strip-images", "1"), cwd=work)
    assert_clean_error(run, "strip-images")
    assert files_under(work) == {"d"}


def _certify(assets, *extra):
    return ("semantic", "certify", "--model", assets / "net.onnx", "--data", "digits:test",
            "--count", "2", *extra)


@pytest.mark.parametrize("extra,needle", [
    ((), "either --transform"),
    (("--transform", "rotate", "--range", "0", "1", "--generator", "g"), "either --transform"),
    (("--transform", "rotate"), "needs --range"),
    (("--transform", "rotate", "--range", "0", "1", "--method", "exact"), "generator segments"),
    (("--generator", "g"), "needs --direction"),
    (("--transform", "rotate", "--range", "5", "-5"), "lower end is above"),
    (("--generator", "g", "--direction", "rotate", "--pixels", "linear"), "--pixels is for"),
    (("--transform", "rotate", "--range", "0", "1", "--residual"), "--residual is for"),
])
def test_certify_bad_routes(assets, work, extra, needle):
    run = run_nncert(*_certify(assets, *extra, "--out", work / "c.json"), cwd=work)
    assert_clean_error(run, needle)
    assert files_under(work) == set()


def test_certify_is_transform_and_segment(assets, work):
    """`semantic certify` answers as the dedicated subcommands do, route by route."""
    routes = {
        "t": (("--transform", "rotate", "--range", "-10", "10"),
              _transform(assets, "--transform", "rotate", "--range", "-10", "10")),
        "s": (("--generator", assets / "gen", "--direction", "rotate"),
              _segment(assets, "--direction", "rotate")),
    }
    for key, (flags, direct) in routes.items():
        a = run_nncert(*_certify(assets, *flags, "--out", work / f"{key}1.json"), cwd=work)
        b = run_nncert(*direct, "--out", work / f"{key}2.json", cwd=work)
        assert a.code == 0 and b.code == 0, (a.stderr, b.stderr)
        ra = json.loads((work / f"{key}1.json").read_text())["results"]
        rb = json.loads((work / f"{key}2.json").read_text())["results"]
        strip = ("seconds", "time_s", "time")
        assert [{k: v for k, v in r.items() if k not in strip} for r in ra] == \
               [{k: v for k, v in r.items() if k not in strip} for r in rb], key


def test_residual_segments_answer_as_the_library(assets, work):
    """--residual: each image's own graph f(clamp01(x + G(z) − G(E(x)))), the verdicts and
    fractions of ``certify_latent_segment(residual=True)``; the strip is drawn."""
    from nncert.data import load_dataset, to_unit
    from nncert.models import load
    from nncert.semantic.generative import load_generator
    from nncert.semantic.latent import certify_latent_segment

    run = run_nncert(*_segment(assets, "--direction", "thickness", "--delta", "3", "--residual",
                               "--out", work / "r.json", "--strip", work / "r.png"), cwd=work)
    assert run.code == 0, run.stderr
    out = json.loads((work / "r.json").read_text())
    assert out["summary"]["residual"] is True and (work / "r.png").is_file()
    gen, net = load_generator(assets / "gen"), load(assets / "net.onnx")
    data = load_dataset("digits:test", count=2)
    x = to_unit(data).float()
    for i, row in enumerate(out["results"]):
        rep = certify_latent_segment(net, gen.decoder, gen.encoder, x[i], int(data.labels[i]),
                                     gen.directions["thickness"], 3.0, residual=True)
        assert row["verdict"] == rep.result.verdict.value
        assert row["fraction_lower"] == pytest.approx(rep.fraction_lower, abs=1e-9)


def test_segment_complete_search_writes_verdicts(assets, work):
    """--method bab: the complete search on each segment (a verdict, no fraction)."""
    run = run_nncert(*_certify(assets, "--generator", assets / "gen", "--direction", "rotate",
                               "--method", "bab", "--timeout", "10", "--out", work / "b.json"),
                     cwd=work)
    assert run.code == 0, run.stderr
    rows = json.loads((work / "b.json").read_text())["results"]
    assert len(rows) == 2
    assert all(r["verdict"] in ("verified", "falsified", "unknown", "timeout") for r in rows)
    assert all(r["fraction_lower"] in (0.0, 1.0) for r in rows)
    run = run_nncert(*_certify(assets, "--transform", "rotate", "--range", "0", "1",
                               "--method", "bab"), cwd=work)
    assert_clean_error(run, "generator segments")


@pytest.mark.parametrize("route", ["segment", "line"])
def test_segment_and_line_resume_decide_only_the_missing_inputs(assets, work, monkeypatch, route):
    """A .jsonl journal cut after its first row (as a kill leaves it) is continued by
    --resume: only the second segment is certified, and the file ends with both rows once and
    one summary."""
    import nncert.semantic.latent as latent

    argv = (_segment(assets, "--direction", "rotate") if route == "segment" else
            ("semantic", "line", "--model", assets / "net.onnx", "--data", "digits:test",
             "--count", "2", "--toward", "rotate", "10"))
    out = work / "s.jsonl"
    assert run_nncert(*argv, "--out", out, cwd=work).code == 0
    head, first, second, summary = out.read_text().splitlines()
    out.write_text(head + "\n" + first + "\n")
    real, seen = latent.certify_lines, []

    def counting(graph, x, *a, **k):
        seen.append(x.shape[0])
        return real(graph, x, *a, **k)

    monkeypatch.setattr(latent, "certify_lines", counting)
    run = run_nncert(*argv, "--out", out, "--resume", cwd=work)
    assert run.code == 0, run.stderr
    assert seen == [1]
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines[1] == json.loads(first) and lines[2]["index"] == 1
    assert lines[3]["summary"]["count"] == 2 and lines[3]["summary"]["resumed_rows"] == 1
    assert len(lines) == 4
