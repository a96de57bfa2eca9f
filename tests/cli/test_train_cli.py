"""``nncert train`` and ``nncert evaluate`` end to end on the embedded digits."""

from __future__ import annotations

import csv

import pytest
import torch

from nncert.cli.main import main
from nncert.data import load_dataset
from nncert.models import load
from nncert.training import load_checkpoint

ARGS = ["--data", "digits", "--arch", "fc", "--eps", "0.03", "--batch-size", "100",
        "--lr", "3e-3", "--count", "400", "--eval-count", "40"]


def test_train_writes_model_checkpoint_log_and_plot_and_resumes(tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(["train", *ARGS, "--method", "ibp", "--epochs", "2", "--out", str(out)]) == 0
    names = {p.name for p in tmp_path.iterdir()}
    assert {"m.onnx", "m.ckpt.pt", "m.log.csv", "m.png"} <= names
    rows = list(csv.DictReader((tmp_path / "m.log.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert {"loss", "rob", "eps", "kappa", "clean", "pgd", "certified"} <= set(rows[0])
    ck = load_checkpoint(tmp_path / "m.ckpt.pt")
    assert ck["epoch"] == 2
    # the ONNX file is the trained model
    from nncert.training import build

    m = build("fc", (1, 8, 8))
    m.load_state_dict(ck["model"])
    x = load_dataset("digits:test", count=20).images / 16
    with torch.no_grad():
        assert torch.allclose(load(str(out))(x), m(x), atol=1e-5)
    assert main(["train", *ARGS, "--method", "ibp", "--epochs", "3", "--out", str(out),
                 "--resume", str(tmp_path / "m.ckpt.pt")]) == 0
    rows = list(csv.DictReader((tmp_path / "m.log.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert "epoch 3:" in capsys.readouterr().out


def test_every_method_runs_one_epoch(tmp_path):
    for method, extra in (("natural", []), ("pgd", ["--pgd-steps", "2"]), ("crown-ibp", []),
                          ("diffai", ["--domain", "zbox"]), ("sabr", ["--pgd-steps", "2"]),
                          ("noise", ["--sigma", "0.1"])):
        out = tmp_path / f"{method}.onnx"
        assert main(["train", *ARGS, "--method", method, "--epochs", "1", "--out", str(out),
                     *extra]) == 0, method
        assert out.is_file()


def test_crop_and_flip_reach_the_loop(tmp_path, monkeypatch):
    from nncert.training import loop

    seen = []
    real = loop.crop_flip
    monkeypatch.setattr(loop, "crop_flip", lambda x, p, f, g: seen.append((p, f)) or real(x, p, f, g))
    out = tmp_path / "c.onnx"
    assert main(["train", *ARGS, "--method", "ibp", "--epochs", "1", "--out", str(out),
                 "--crop-pad", "2", "--flip"]) == 0
    assert seen and set(seen) == {(2, True)}
    seen.clear()
    assert main(["train", *ARGS, "--method", "ibp", "--epochs", "1", "--out", str(out)]) == 0
    assert not seen


def test_per_epoch_certified_counts_each_method_and_the_zonotope_for_diffai(tmp_path):
    from nncert.cli.train import _evaluator
    from nncert.training import build
    from nncert.training.data import load_split
    from nncert.training.evaluate import certified

    test = load_split("digits", False).head(60)
    model = build("fc", test.images.shape[1:], seed=0)
    x, y = test.images, test.labels
    got = _evaluator(test, 0.02, "cpu", ("interval", "zonotope"))(1, model)["certified"]
    g = load(model, x.shape[1:])
    union = certified(g, x, y, 0.02, "interval") | certified(g, x, y, 0.02, "zonotope")
    assert got == float(union.float().mean())


def test_evaluate_table(tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(["train", *ARGS, "--method", "ibp", "--epochs", "1", "--out", str(out)]) == 0
    capsys.readouterr()
    md, table = tmp_path / "t.md", tmp_path / "t.csv"
    assert main(["evaluate", str(out), "--data", "digits", "--eps", "0", "0.03", "--count", "30",
                 "--methods", "interval,crown", "--timeout", "5", "--out", str(md),
                 "--csv", str(table)]) == 0
    rows = list(csv.DictReader(table.open()))
    got = {(r["eps"], r["method"]): float(r["accuracy"]) for r in rows}
    assert set(m for _, m in got) == {"clean", "pgd", "interval", "crown", "complete",
                                      "unfalsified"}
    # ordering that must hold: certified ≤ complete ≤ unfalsified ≤ PGD ≤ clean
    for e in ("0", "0.03"):
        assert got[e, "interval"] <= got[e, "crown"]  # CROWN intersects with IBP
        assert max(got[e, "interval"], got[e, "crown"]) <= got[e, "complete"]
        assert got[e, "complete"] <= got[e, "unfalsified"] <= got[e, "pgd"] <= got[e, "clean"]
    assert got["0", "interval"] == got["0", "clean"]  # ε = 0: every correct image is proved
    assert got["0", "unfalsified"] == got["0", "clean"]
    assert "| eps | clean | pgd | interval | crown | complete | unfalsified |" in md.read_text()
    # per image: the table's accuracies are the columns' means, and --indices reruns a subset
    per, per2 = tmp_path / "p.csv", tmp_path / "p2.csv"
    assert main(["evaluate", str(out), "--data", "digits", "--eps", "0.03", "--count", "30",
                 "--methods", "interval,crown", "--timeout", "5", "--per-image", str(per)]) == 0
    lines = list(csv.DictReader(per.open()))
    assert [int(r["index"]) for r in lines] == list(range(30))
    for m in ("clean", "pgd", "interval", "crown", "complete", "unfalsified"):
        assert sum(int(r[m]) for r in lines) / 30 == pytest.approx(got["0.03", m])
    pick = [r["index"] for r in lines if r["pgd"] == "1"][:3] + ["29"]
    assert main(["evaluate", str(out), "--data", "digits", "--eps", "0.03", "--indices",
                 ",".join(pick), "--methods", "interval", "--per-image", str(per2)]) == 0
    again = {r["index"]: r for r in csv.DictReader(per2.open())}
    assert list(again) == pick
    assert all(again[i]["clean"] == lines[int(i)]["clean"] for i in pick)
    assert all(again[i]["interval"] == lines[int(i)]["interval"] for i in pick)


def test_batchnorm_flag_trains_and_exports_the_eval_network(tmp_path):
    out = tmp_path / "bn.onnx"
    assert main(["train", *ARGS, "--method", "ibp", "--epochs", "1", "--out", str(out),
                 "--batchnorm", "--init", "ibp", "--warmup-reg", "0.5"]) == 0
    from nncert.training import build

    m = build("fc", (1, 8, 8), batchnorm=True)
    m.load_state_dict(load_checkpoint(tmp_path / "bn.ckpt.pt")["model"])
    m.eval()
    x = load_dataset("digits:test", count=20).images / 16
    with torch.no_grad():
        assert torch.allclose(load(str(out))(x), m(x), atol=1e-5)


@pytest.mark.parametrize("native", [False, True])
def test_bfloat16_notes_a_device_that_would_emulate_it(tmp_path, capsys, monkeypatch, native):
    """Emulated bfloat16 is several times slower than float32: the run says so on stderr, and
    stays silent where the device computes bfloat16 natively."""
    import nncert.training.loop as loop

    monkeypatch.setattr(loop, "native_bfloat16", lambda device: native)
    out = tmp_path / "m.onnx"
    assert main(["train", *ARGS, "--method", "natural", "--epochs", "1", "--out", str(out),
                 "--precision", "bfloat16"]) == 0
    assert ("no native bfloat16" in capsys.readouterr().err) is not native


def test_native_bfloat16_probes_the_cpu():
    from nncert.training.loop import native_bfloat16

    cpu = torch.cpu
    assert native_bfloat16("cpu") == (cpu._is_avx512_bf16_supported()
                                      or cpu._is_amx_tile_supported())
