"""Bad input through the CLI (in this process, see badinput.run_nncert; the entry point itself
in a subprocess): exit 2, one line on stderr, no traceback, no file written. The vnncomp and
verify/smooth cases live in test_bad_input_vnncomp.py and test_bad_input_cli.py; these are the
loaders' and the argument parser's."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import onnx
import pytest
import torch
from onnx import TensorProto, helper

sys.path.insert(0, str(Path(__file__).parent))
from badinput import assert_clean_error, files_under, run_nncert  # noqa: E402


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "empty.onnx").write_bytes(b"")
    (d / "garbage.onnx").write_bytes(b"\x00\x01not a model")
    node = helper.make_node("LeakyRelu", ["x"], ["y"], alpha=1.5, name="lrelu")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(d / "leaky.onnx"))
    net = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 2),), str(d / "net.onnx"), dynamo=False)
    decl = "(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n" \
           "(declare-const Y_1 Real)\n"
    (d / "inverted.vnnlib").write_text(decl + "(assert (>= X_0 0.6))\n(assert (<= X_0 0.4))\n"
                                       "(assert (>= X_1 0))\n(assert (<= X_1 1))\n(assert (>= Y_0 Y_1))\n")
    (d / "unclosed.vnnlib").write_text(decl + "(assert (>= X_0 0)\n")
    return d


CASES = {
    "empty onnx": (["info", "{d}/empty.onnx"], "empty (0 bytes)"),
    "garbage onnx": (["info", "{d}/garbage.onnx"], "not a valid ONNX model"),
    "leaky slope 1.5": (["info", "{d}/leaky.onnx"], "'lrelu' (LeakyRelu)"),
    "missing model": (["info", "{d}/nope.onnx"], "not found"),
    "unknown subcommand": (["bogus"], "invalid choice"),
    "bad float": (["verify", "--model", "{d}/net.onnx", "--data", "digits", "--eps", "abc"],
                  "--eps: expected a number"),
    "inverted box": (["vnncomp", "run", "--onnx", "{d}/net.onnx", "--vnnlib", "{d}/inverted.vnnlib",
                      "--timeout", "600", "--out", "{d}/out/r.txt"], "inverted input box"),
    "unclosed paren": (["vnncomp", "run", "--onnx", "{d}/net.onnx", "--vnnlib", "{d}/unclosed.vnnlib",
                        "--timeout", "600", "--out", "{d}/out/r.txt"], "unclosed.vnnlib:5"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_clean_line(files, case):
    argv, needle = CASES[case]
    before = files_under(files)
    run = run_nncert(*(a.format(d=files) for a in argv), cwd=files)
    assert_clean_error(run, needle)
    written = files_under(files) - before
    # vnncomp run writes "error" into the result file by the competition's convention
    assert written <= {"out", "out/r.txt"}, written


@pytest.mark.parametrize("case", ["unknown subcommand", "missing model", "bad float"])
def test_the_entry_point_itself(files, case):
    """``python -m nncert.cli.main`` in a process of its own: the same status and one line (a
    usage error, a loader's error, a type check), nothing from interpreter start or exit."""
    argv, needle = CASES[case]
    assert_clean_error(run_nncert(*(a.format(d=files) for a in argv), cwd=files, isolated=True),
                       needle)
