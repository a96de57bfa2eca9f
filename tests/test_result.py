import json

import pytest
import torch

from nncert.result import Counterexample, Result, Verdict


def test_vnncomp_words():
    assert [v.vnncomp() for v in Verdict] == ["unsat", "sat", "unknown", "timeout"]


def test_falsified_needs_counterexample():
    with pytest.raises(ValueError):
        Result(Verdict.FALSIFIED, "x")
    with pytest.raises(ValueError):
        Result(Verdict.VERIFIED, "x", counterexample=Counterexample(torch.zeros(1), torch.zeros(1)))


def test_vnncomp_witness_is_exact():
    x = torch.tensor([0.1, -2.5], dtype=torch.float32)
    cex = Counterexample(x, torch.tensor([1.0, 3.0]))
    text = Result(Verdict.FALSIFIED, "pgd", counterexample=cex).to_vnncomp()
    lines = text.splitlines()
    assert lines[0] == "sat"
    assert lines[1] == f"((X_0 {float(x[0])!r})"
    assert float(lines[1].split()[1].rstrip(")")) == float(x[0])  # lossless float32
    assert lines[-1] == "(Y_1 3.0))"


def test_json_round_trip():
    r = Result(Verdict.VERIFIED, "crown", 0.5, torch.tensor([1.0, float("inf")]), None,
               stats={"domains": 3})
    d = json.loads(r.to_json())
    assert d["verdict"] == "verified" and d["lower"] == [1.0, "inf"] and d["stats"]["domains"] == 3
    assert Result(Verdict.TIMEOUT, "bab").to_vnncomp() == "timeout\n"


def test_repr_of_a_counterexample_is_one_short_line():
    """Printing a FALSIFIED result of an MNIST network shows a summary, not 784 values."""
    x = torch.linspace(0, 1, 784).reshape(1, 28, 28)
    cex = Counterexample(x, torch.arange(10.0))
    r = Result(Verdict.FALSIFIED, "attack", 0.5, counterexample=cex, stats={"s": "v" * 500})
    for text in (repr(cex), repr(r), str(r)):
        assert "\n" not in text and len(text) < 600
    assert "1x28x28 tensor" in repr(cex) and "max 1" in repr(cex)
    assert repr(Counterexample(torch.tensor([0.5]), torch.tensor([1.0, -2.0]))) == \
        "Counterexample(x=[0.5], y=[1, -2])"
    assert repr(r).startswith("Result(FALSIFIED, method='attack'")
