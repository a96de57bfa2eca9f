"""Bad input to ``nncert train`` / ``nncert evaluate``: one line ``nncert: error: ...``, exit 2,
no traceback, nothing written."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from badinput import assert_clean_error, files_under, run_nncert  # noqa: E402


def _error(argv, capsys) -> str:
    """Run the CLI in this process: exit status 2 and one ``nncert: error:`` line; returns it."""
    from nncert.cli.main import main

    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse usage errors
        code = e.code
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(err) == 1 and err[0].startswith("nncert: error:"), err
    return err[0]


BASE = ["train", "--data", "digits", "--arch", "fc", "--method", "ibp", "--eps", "0.1",
        "--epochs", "1", "--count", "50", "--eval-count", "10"]


@pytest.mark.parametrize("argv,needle", [
    (["--arch", "resnet999"], "invalid choice"),
    (["--arch", "convsmall"], "does not fit inputs of shape (1, 8, 8)"),
    (["--eps", "-1"], "--eps"),
    (["--epochs", "0"], "--epochs"),
    (["--crop-pad", "-1"], "--crop-pad"),
    (["--crop-pad", "two"], "--crop-pad"),
    (["--method", "noise"], "--sigma"),
    (["--method", "magic"], "invalid choice"),
    (["--kappa", "1.5"], "--kappa must lie in [0, 1]"),
    (["--method", "sabr", "--sabr-lambda", "2"], "λ must lie in (0, 1]"),
    (["--device", "cuda:7"] if not torch.cuda.is_available() else ["--device", "nonsense"],
     "device"),
    (["--augment", "rotate"], "--augment-range"),
    (["--augment", "spin"], "invalid choice"),
    (["--augment", "generative"], "--generator"),
    (["--augment", "rotate", "--augment-range", "30", "-30"], "low ≤ high"),
    (["--augment-range", "1", "2"], "needs --augment"),
    (["--augment-residual"], "--augment-residual needs --augment"),
    (["--augment", "rotate", "--augment-range", "0", "9", "--augment-residual"],
     "--augment-range LO HI"),
    (["--augment", "generative", "--generator", "nowhere"], "directory written by"),
])
def test_bad_train_arguments(tmp_path, argv, needle, capsys):
    assert needle.lower() in _error([*BASE, "--out", tmp_path / "m.onnx", *argv], capsys).lower()
    assert files_under(tmp_path) == set()


def test_bad_architecture_in_a_subprocess(tmp_path):
    run = run_nncert(*BASE, "--arch", "convsmall", "--out", tmp_path / "m.onnx", cwd=tmp_path,
                     isolated=True)
    assert_clean_error(run, "does not fit")
    assert files_under(tmp_path) == set()


def test_missing_data_dir(tmp_path):
    run = run_nncert("train", "--data", "mnist", "--arch", "fc", "--method", "ibp", "--eps", "0.1",
                     "--epochs", "1", "--out", tmp_path / "m.onnx", "--data-dir", tmp_path / "none",
                     cwd=tmp_path)
    assert_clean_error(run, "--data-dir")
    assert files_under(tmp_path) == set()


def test_bad_resume_files(tmp_path, capsys):
    bad = tmp_path / "in"
    bad.mkdir()
    (bad / "text.pt").write_text("not a checkpoint")
    torch.save({"a": torch.zeros(1)}, bad / "weights.pt")
    torch.save(torch.nn.Linear(2, 2), bad / "pickled.pt")
    out = tmp_path / "out"
    out.mkdir()
    for name, needle in (("missing.pt", "no such checkpoint"), ("text.pt", "not"),
                         ("weights.pt", "not an nncert training checkpoint")):
        line = _error([*BASE, "--out", out / "m.onnx", "--resume", bad / name], capsys)
        assert needle in line
    run = run_nncert(*BASE, "--out", out / "m.onnx", "--resume", bad / "pickled.pt", cwd=tmp_path)
    assert_clean_error(run, "pickled")
    assert files_under(out) == set()


def test_resume_with_another_architecture_and_evaluate_on_the_wrong_data(tmp_path, capsys):
    from nncert.cli.main import main

    assert main([str(a) for a in (*BASE, "--out", tmp_path / "a.onnx")]) == 0
    out = tmp_path / "out"
    out.mkdir()
    line = _error([*[a if a != "fc" else "mlp" for a in BASE], "--out", out / "b.onnx",
                   "--resume", tmp_path / "a.ckpt.pt"], capsys)
    assert "does not fit" in line
    assert files_under(out) == set()
    digits_dir = tmp_path / "d"
    (digits_dir / "cifar10").mkdir(parents=True)
    line = _error(["evaluate", tmp_path / "a.onnx", "--data", "cifar10", "--data-dir",
                   digits_dir, "--eps", "0.1"], capsys)
    assert "CIFAR-10 not found" in line


def test_unwritable_out(tmp_path, capsys):
    (tmp_path / "dir.onnx").mkdir()
    assert "directory" in _error([*BASE, "--out", tmp_path / "dir.onnx"], capsys)


def test_evaluate_bad_inputs(tmp_path, capsys):
    run = run_nncert("evaluate", tmp_path / "none.onnx", "--data", "digits", "--eps", "0.1",
                     cwd=tmp_path)
    assert_clean_error(run, "not found")
    line = _error(["evaluate", tmp_path / "none.onnx", "--data", "digits", "--eps", "0.1",
                   "--methods", "interval,foo"], capsys)
    assert "foo" in line


def test_evaluate_bad_indices(tmp_path, capsys):
    from nncert.cli.main import main

    assert main([str(a) for a in (*BASE, "--out", tmp_path / "a.onnx")]) == 0
    capsys.readouterr()
    base = ["evaluate", tmp_path / "a.onnx", "--data", "digits", "--eps", "0.1"]
    assert "comma-separated integers" in _error([*base, "--indices", "1,x"], capsys)
    assert "≥ 0" in _error([*base, "--indices", "-1"], capsys)
    line = _error([*base, "--indices", "3,99999", "--per-image", tmp_path / "p.csv"], capsys)
    assert "no image 99999" in line
    assert not (tmp_path / "p.csv").exists()
