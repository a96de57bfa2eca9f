"""`nncert smooth ...` and `nncert pixeldp ...` end to end on the embedded digits (small runs)."""

from __future__ import annotations

import warnings

import pytest
import torch

from nncert.cli.main import main


def run_cli(capsys, *argv):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse usage errors
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("smooth") / "m.onnx"
    assert main(["smooth", "train", "--data", "digits:train", "--count", "400", "--sigma", "0.25",
                 "--epochs", "3", "--arch", "mlp", "--out", str(path)]) == 0
    return path


def read_tsv(path):
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# nncert ")  # the settings line
    lines = lines[1:]
    header = lines[0].split("\t")
    return header, [dict(zip(header, line.split("\t"))) for line in lines[1:]]


def test_smooth_certify_writes_rows_plot_and_table(capsys, digits_model, tmp_path):
    out = tmp_path / "r.tsv"
    code, stdout, _ = run_cli(capsys, "smooth", "certify", "--model", digits_model, "--data",
                              "digits:test", "--sigma", "0.25", "--n0", "20", "--n", "200",
                              "--alpha", "0.01", "--count", "6", "--batch", "64", "--out", out)
    assert code == 0
    header, rows = read_tsv(out)
    assert header[:6] == ["idx", "label", "predict", "radius", "correct", "time"]
    assert len(rows) == 6 and [int(r["idx"]) for r in rows] == list(range(6))
    for r in rows:
        assert (int(r["predict"]) == -1) == (float(r["radius"]) == 0.0)
        assert int(r["correct"]) == int(int(r["predict"]) == int(r["label"]))
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    for radius in ("0 ", "0.25 ", "0.5 ", "0.75 ", "1 "):
        assert any(line.startswith(radius) for line in stdout.splitlines()), stdout
    # same seed and batch size → same rows (time aside)
    out2 = tmp_path / "r2.tsv"
    run_cli(capsys, "smooth", "certify", "--model", digits_model, "--sigma", "0.25", "--n0", "20",
            "--n", "200", "--alpha", "0.01", "--count", "6", "--batch", "64", "--out", out2,
            "--plot", tmp_path / "p.png")
    strip = [{k: v for k, v in r.items() if k != "time"} for r in read_tsv(out2)[1]]
    assert strip == [{k: v for k, v in r.items() if k != "time"} for r in rows]


def test_smooth_predict(capsys, digits_model, tmp_path):
    out = tmp_path / "p.tsv"
    code, stdout, _ = run_cli(capsys, "smooth", "predict", "--model", digits_model, "--sigma", "0.25",
                              "--n", "100", "--alpha", "0.01", "--count", "4", "--out", out)
    assert code == 0 and "accuracy" in stdout
    assert len(read_tsv(out)[1]) == 4


@pytest.mark.parametrize("flag,value,needle", [
    ("--sigma", "0", "sigma"), ("--sigma", "-0.5", "sigma"), ("--alpha", "1.5", "alpha"),
    ("--alpha", "0", "alpha"), ("--n0", "0", "n0"), ("--n", "0", "n"), ("--batch", "0", "batch"),
])
def test_bad_options_fail_before_sampling(capsys, digits_model, tmp_path, flag, value, needle):
    out = tmp_path / "r.tsv"
    args = {"--sigma": "0.25", "--alpha": "0.01", "--n0": "10", "--n": "50", "--batch": "10"}
    args[flag] = value
    argv = ["smooth", "certify", "--model", digits_model, "--count", "2", "--out", out]
    for k, v in args.items():
        argv += [k, v]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert err.startswith("nncert: error:") and needle in err and err.count("\n") == 1
    assert not out.exists()  # nothing sampled, nothing written


def test_model_without_class_scores_is_a_shape_error(capsys, tmp_path):
    class Bad(torch.nn.Module):
        def forward(self, x):
            return x.reshape(x.shape[0], 4, 16)

    path = tmp_path / "bad.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Bad(), (torch.zeros(1, 1, 8, 8),), str(path), dynamo=False,
                          input_names=["input"], dynamic_axes={"input": {0: "N"}})
    code, _, err = run_cli(capsys, "smooth", "certify", "--model", path, "--sigma", "0.25",
                           "--n", "50", "--count", "1", "--out", tmp_path / "r.tsv")
    assert code == 2 and "class scores" in err


def test_interrupt_keeps_finished_rows(capsys, digits_model, tmp_path, monkeypatch):
    from nncert.smoothing.smooth import Smooth

    real = Smooth.certify
    calls = {"n": 0}

    def flaky(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(Smooth, "certify", flaky)
    out = tmp_path / "r.tsv"
    code, stdout, err = run_cli(capsys, "smooth", "certify", "--model", digits_model, "--sigma",
                                "0.25", "--n0", "10", "--n", "50", "--count", "5", "--out", out)
    assert code == 130 and "INTERRUPTED" in stdout and "interrupted" in err
    assert len(read_tsv(out)[1]) == 2
    # the rerun resumes: the 2 finished points are kept, the 3 others certified
    monkeypatch.setattr(Smooth, "certify", real)
    with open(out, "a") as f:
        f.write("2\t7\t")  # a row cut short by a kill is dropped
    code, stdout, err = run_cli(capsys, "smooth", "certify", "--model", digits_model, "--sigma",
                                "0.25", "--n0", "10", "--n", "50", "--count", "5", "--out", out)
    assert code == 0 and "2 rows kept, 3 points to go" in err and stdout.startswith("5 points")
    assert [int(r["idx"]) for r in read_tsv(out)[1]] == [0, 1, 2, 3, 4]
    # other settings: a clear error, the file untouched
    before = out.read_text()
    code, _, err = run_cli(capsys, "smooth", "certify", "--model", digits_model, "--sigma",
                           "0.5", "--n0", "10", "--n", "50", "--count", "5", "--out", out)
    assert code == 2 and "other settings" in err and "sigma=0.25" in err and "sigma=0.5" in err
    assert out.read_text() == before


def test_foreign_out_file_is_never_overwritten(capsys, digits_model, tmp_path):
    out = tmp_path / "r.tsv"
    out.write_text("precious\n")
    code, _, err = run_cli(capsys, "smooth", "certify", "--model", digits_model, "--sigma",
                           "0.25", "--n0", "10", "--n", "50", "--count", "1", "--out", out)
    assert code == 2 and "not written by" in err and out.read_text() == "precious\n"


def test_pt_models_state_dict_with_arch_never_a_pickle(capsys, tmp_path):
    """.pt base classifiers: a state_dict with --arch (weights_only, nothing unpickled); a
    whole pickled module is refused, and nothing is written."""
    sd = tmp_path / "m.pt"
    assert main(["smooth", "train", "--data", "digits:train", "--count", "100", "--sigma", "0.25",
                 "--epochs", "1", "--arch", "mlp", "--out", str(sd)]) == 0
    capsys.readouterr()
    common = ["--sigma", "0.25", "--n0", "10", "--n", "50", "--count", "2"]
    code, _, err = run_cli(capsys, "smooth", "certify", "--model", sd, *common,
                           "--out", tmp_path / "a.tsv")
    assert code == 2 and "--arch" in err
    code, _, err = run_cli(capsys, "smooth", "certify", "--model", sd, "--arch", "cnn", *common,
                           "--out", tmp_path / "a.tsv")
    assert code == 2 and "do not fit architecture 'cnn'" in err and err.count("\n") == 1
    code, _, _ = run_cli(capsys, "smooth", "certify", "--model", sd, "--arch", "mlp", *common,
                         "--out", tmp_path / "a.tsv")
    assert code == 0 and len(read_tsv(tmp_path / "a.tsv")[1]) == 2
    from nncert.smoothing.train import small_mlp

    whole = tmp_path / "whole.pt"
    torch.save(small_mlp((1, 8, 8), 10), whole)
    code, _, err = run_cli(capsys, "smooth", "predict", "--model", whole, *common[:2], "--n", "50",
                           "--count", "2", "--out", tmp_path / "p.tsv")
    assert code == 2 and "does not unpickle" in err and not (tmp_path / "p.tsv").exists()


def test_pixeldp_train_and_certify(capsys, tmp_path):
    model = tmp_path / "pdp.pt"
    code, stdout, _ = run_cli(capsys, "pixeldp", "train", "--data", "digits:train", "--count", "300",
                              "--epochs", "2", "--arch", "mlp", "--epsilon", "1", "--delta", "0.05",
                              "--L", "0.1", "--out", model)
    assert code == 0 and "sigma=0.2537" in stdout
    out = tmp_path / "c.tsv"
    code, stdout, _ = run_cli(capsys, "pixeldp", "certify", "--model", model, "--count", "4",
                              "--n", "100", "--out", out)
    assert code == 0 and "size" in stdout
    header, rows = read_tsv(out)
    assert header[:6] == ["idx", "label", "predict", "size", "correct", "time"] and len(rows) == 4
    assert all(0.0 <= float(r["size"]) <= 0.1 + 1e-6 for r in rows)
    assert (tmp_path / "c.png").exists()


def test_pixeldp_bad_config_is_one_line(capsys, tmp_path):
    code, _, err = run_cli(capsys, "pixeldp", "train", "--norm", "l2", "--mechanism", "laplace",
                           "--out", tmp_path / "m.pt")
    assert code == 2 and "Gaussian" in err and err.count("\n") == 1
    code, _, err = run_cli(capsys, "pixeldp", "certify", "--model", tmp_path / "none.pt",
                           "--out", tmp_path / "c.tsv")
    assert code == 2 and "not found" in err
