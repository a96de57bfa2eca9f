"""The falsifier: PGD / random search, projection into the set, and the concrete re-check."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "complete"))
from complete_fixtures import abs_net, random_mlp, write_mlp_onnx  # noqa: E402

from nncert.attacks import AttackConfig, attack, confirm, into_set, pgd  # noqa: E402
from nncert.specs import Box, LpBall, OutputSpec, VerificationProblem  # noqa: E402


def _abs_problem(d: float):
    box = Box(torch.tensor([[-1.0]]), torch.tensor([[1.0]]))
    spec = OutputSpec.conjunction(torch.tensor([[[1.0]]]), torch.tensor([d]))
    return VerificationProblem(abs_net(), box, spec)


def test_attack_finds_violation_and_confirms():
    cex, m = attack(_abs_problem(-0.5), AttackConfig(timeout_s=120))  # a cap, never reached
    assert cex is not None and m <= 0
    assert abs(float(cex.x)) <= 0.5 + 1e-6


def test_attack_respects_property_that_holds():
    cex, m = attack(_abs_problem(0.1), AttackConfig(timeout_s=2))
    assert cex is None and m > 0


def test_confirm_rejects_outside_and_non_violations():
    p = _abs_problem(-0.5)
    assert confirm(p, torch.tensor([[0.9]])) is None  # |0.9| - 0.5 > 0: no violation
    c = confirm(p, torch.tensor([[5.0]]))  # projected back into the box: x = 1, no violation
    assert c is None
    c = confirm(p, torch.tensor([[0.1]]))
    assert c is not None and float(c.y) <= 0.5


def test_into_set_rounds_inside_in_float32():
    lo = torch.tensor([[0.1]], dtype=torch.float64)  # 0.1 is not a float32
    box = Box(lo, lo + 1e-7)  # float32 spacing near 0.1 is 7.5e-9
    x = into_set(box, torch.tensor([[0.1]], dtype=torch.float64), torch.float32)
    assert x.dtype == torch.float32
    assert bool(box.contains(x.double()).all())


def test_pgd_disjunctive_spec_targets_each_clause():
    g = random_mlp(0, (2, 16, 3))
    lo, hi = -torch.ones(1, 2, dtype=torch.float64), torch.ones(1, 2, dtype=torch.float64)
    # property: y0 > y1 AND y0 > y2 (two clauses); PGD must reach the min of both
    C = torch.tensor([[[1.0, -1.0, 0.0], [1.0, 0.0, -1.0]]], dtype=torch.float64)
    spec = OutputSpec.conjunction(C)
    x, m = pgd(g.to(dtype=torch.float64), lo, hi, spec, 8, 50)
    xs = lo + torch.rand(20000, 2, dtype=torch.float64) * (hi - lo)
    ms = spec.expand(1).margin(g.to(dtype=torch.float64)(xs).unsqueeze(1))
    assert float(m) <= float(ms.min()) + 0.05
    assert bool(((x >= lo) & (x <= hi)).all())


def test_attack_l2_ball():
    g = abs_net()
    ball = LpBall(torch.tensor([[0.3]]), 0.5, p=2)
    spec = OutputSpec.conjunction(torch.tensor([[[1.0]]]), torch.tensor([-0.1]))
    cex, _ = attack(VerificationProblem(g, ball, spec), AttackConfig(timeout_s=120))
    assert cex is not None and abs(float(cex.x) - 0.3) <= 0.5 + 1e-6


def test_confirm_on_onnxruntime(tmp_path):
    g = abs_net()
    path = write_mlp_onnx(g, tmp_path / "abs.onnx")
    p = _abs_problem(-0.5)
    c = confirm(p, torch.tensor([[0.25]]), onnx_path=str(path))
    assert c is not None and math.isclose(float(c.y), 0.25, rel_tol=1e-6)
