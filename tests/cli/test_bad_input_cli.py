"""Bad input to verify / info / smooth / pixeldp: one clean line, exit 2, no traceback, no file
written, no code run from a model file (issue 12, findings 1, 2, 3, 7, 10). The CLI runs in this
process (badinput.run_nncert, which also captures file descriptors 1 and 2: ``--out /dev/stdout``),
except for pickled model files: were one ever unpickled, not in the test process."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from badinput import assert_clean_error, files_under, run_nncert  # noqa: E402


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """An 8x8 ONNX classifier (digits), a PixelDP model file, a whole pickled module and a
    pickle that would create a marker file if it were ever unpickled."""
    d = tmp_path_factory.mktemp("assets")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 1, 8, 8),), str(d / "net.onnx"), dynamo=False,
                          input_names=["input"], dynamic_axes={"input": {0: "N"}})
    torch.save(net, d / "whole.pt")
    torch.save(net.state_dict(), d / "sd.pt")
    from nncert.smoothing.pixeldp import PixelDPConfig, build_pixeldp, save_pixeldp

    save_pixeldp(build_pixeldp("mlp", (1, 8, 8), 10, PixelDPConfig()), d / "pdp.pt")
    payload = torch.load(d / "pdp.pt", weights_only=True)
    payload["input_shape"] = [1, 4, 4]  # weights no longer fit: a damaged file
    torch.save(payload, d / "pdp_bad.pt")
    (d / "evil.pt").write_bytes(_evil_pickle(d / "pwned"))
    return d


def _evil_pickle(marker: Path) -> bytes:
    import pickle

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    return pickle.dumps(Evil())


@pytest.fixture
def work(tmp_path):
    (tmp_path / "afile").write_text("x")
    return tmp_path


def _verify(assets, *extra):
    return ("verify", "--model", assets / "net.onnx", "--data", "digits:test", "--eps", "0.01",
            "--count", "3", *extra)


@pytest.mark.parametrize("extra,needle", [
    (("--count", "0"), "--count"), (("--count", "-2"), "--count"), (("--std", "0"), "--std"),
    (("--std", "-1"), "--std"), (("--std", "nan"), "--std"), (("--eps", "nan"), "--eps"),
    (("--eps", "inf"), "--eps"), (("--scale", "0"), "--scale"), (("--scale", "-255"), "--scale"),
    (("--batch", "0"), "--batch"), (("--mean", "0.1,nan"), "--mean"),
    (("--mean", "0.1,0.2,0.3"), "3 values"),  # 3 channel values, the model has 1 channel
    (("--scale", "1"), "outside [0, 1]"),  # digits pixels are 0-16: outside the domain
    (("--out", "afile/r.json"), "not a directory"), (("--out", "."), "is a directory"),
])
def test_verify_bad_options(assets, work, extra, needle):
    before = files_under(work)
    run = run_nncert(*_verify(assets), *extra, cwd=work)
    assert_clean_error(run, needle)
    assert files_under(work) == before


@pytest.mark.parametrize("argv", [
    ("smooth", "certify", "--model", "{a}/net.onnx", "--sigma", "0.25", "--n", "20", "--count", "1"),
    ("smooth", "predict", "--model", "{a}/net.onnx", "--sigma", "0.25", "--n", "20", "--count", "1"),
    ("smooth", "train", "--sigma", "0.25", "--epochs", "1", "--count", "20"),
    ("pixeldp", "train", "--epochs", "1", "--count", "20"),
    ("pixeldp", "certify", "--model", "{a}/pdp.pt", "--n", "10", "--count", "1"),
    ("verify", "--model", "{a}/net.onnx", "--data", "digits:test", "--eps", "0.01", "--count", "1"),
])
def test_out_under_a_file_fails_before_computing(assets, work, argv):
    argv = [str(a).replace("{a}", str(assets)) for a in argv]
    before = files_under(work)
    run = run_nncert(*argv, "--out", "afile/out.tsv", cwd=work)
    assert_clean_error(run, "not a directory")
    assert files_under(work) == before


def test_smooth_plot_under_a_file_fails_before_computing(assets, work):
    run = run_nncert("smooth", "certify", "--model", assets / "net.onnx", "--sigma", "0.25",
                     "--n", "20", "--count", "1", "--out", "r.tsv", "--plot", "afile/p.png",
                     cwd=work)
    assert_clean_error(run, "--plot")
    assert files_under(work) == {"afile"}


@pytest.mark.parametrize("argv,needle", [
    (("info", "{a}/whole.pt"), "does not unpickle"),
    (("info", "{a}/sd.pt"), "state_dict"),
    (("smooth", "certify", "--model", "{a}/net.onnx", "--input-shape", "1,0", "--sigma", "0.25",
      "--out", "r.tsv"), "--input-shape"),
    (("verify", "--model", "{a}/whole.pt", "--data", "digits:test", "--eps", "0.01"),
     "does not unpickle"),
    (("smooth", "certify", "--model", "{a}/whole.pt", "--sigma", "0.25", "--out", "r.tsv"),
     "does not unpickle"),
    (("smooth", "certify", "--model", "{a}/sd.pt", "--arch", "cnn", "--sigma", "0.25",
      "--out", "r.tsv"), "do not fit"),
    (("smooth", "certify", "--model", "{a}/net.onnx", "--arch", "mlp", "--sigma", "0.25",
      "--out", "r.tsv"), "--arch"),
    (("pixeldp", "certify", "--model", "{a}/whole.pt", "--out", "r.tsv"), "PixelDP"),
    (("pixeldp", "certify", "--model", "{a}/pdp_bad.pt", "--out", "r.tsv"), "damaged"),
    (("pixeldp", "certify", "--model", "{a}/net.onnx", "--out", "r.tsv"), "not a torch"),
])
def test_model_files_one_line_no_ansi(assets, work, argv, needle):
    argv = [str(a).replace("{a}", str(assets)) for a in argv]
    run = run_nncert(*argv, cwd=work)
    assert_clean_error(run, needle)  # also: no terminal colour codes
    assert files_under(work) == {"afile"}


@pytest.mark.parametrize("argv", [
    ("info", "{a}/evil.pt"),
    ("verify", "--model", "{a}/evil.pt", "--data", "digits:test", "--eps", "0.01"),
    ("smooth", "certify", "--model", "{a}/evil.pt", "--sigma", "0.25", "--out", "r.tsv"),
    ("smooth", "predict", "--model", "{a}/evil.pt", "--arch", "mlp", "--sigma", "0.25",
     "--out", "r.tsv"),
    ("pixeldp", "certify", "--model", "{a}/evil.pt", "--out", "r.tsv"),
])
def test_a_pickle_in_a_model_file_never_runs(assets, work, argv):
    argv = [str(a).replace("{a}", str(assets)) for a in argv]
    run = run_nncert(*argv, cwd=work, isolated=True)  # were it unpickled, not in this process
    assert_clean_error(run)
    assert not (assets / "pwned").exists()


def test_out_to_dev_stdout_is_written_through(assets, work):
    run = run_nncert(*_verify(assets), "--out", "/dev/stdout", cwd=work)  # fd 1, captured
    assert run.code == 0, run.stderr
    assert '"summary"' in run.stdout and "verified" in run.stdout
    assert Path("/dev/stdout").is_symlink() or Path("/dev/stdout").exists()
    assert files_under(work) == {"afile"}
