"""CROWN / DeepPoly / Fast-Lin: hand-computed bounds, batching, chunking, reuse, errors."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

from nncert.bounds import compute_bounds
from nncert.bounds.crown import CrownConfig, backward_bounds, intermediate_bounds
from nncert.bounds.interval import interval_walk
from nncert.errors import ConfigError, UnsupportedOpError
from nncert.models import ops, zoo
from nncert.models.graph import Graph, Node, sequential
from nncert.specs import Box, LpBall, OutputSpec, VerificationProblem

D = torch.float64


def _abs_net() -> Graph:
    """y = relu(x1 + x2) + relu(x1 − x2)."""
    w1 = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=D)
    w2 = torch.tensor([[1.0, 1.0]], dtype=D)
    return sequential([ops.Linear(w1), ops.ReLU(), ops.Linear(w2)], (2,))


def _unit_box(B: int = 1) -> Box:
    return Box(-torch.ones(B, 2, dtype=D), torch.ones(B, 2, dtype=D))


@pytest.mark.parametrize("mode, lower", [("adaptive", -2.0), ("fastlin", -1.0), ("deeppoly", 0.0)])
def test_hand_computed_backward(mode, lower):
    # z ∈ [−2, 2]²: chord slope 1/2, intercept 1 → upper = x1 + 2 ≤ 3 for every mode.
    # lower slopes: adaptive 1 (u ≥ −l) → 2·x1 ≥ −2; fastlin 1/2 → x1 ≥ −1; deeppoly 0 → 0.
    g, xs = _abs_net(), _unit_box()
    values = intermediate_bounds(g, xs, CrownConfig(relaxation=mode))
    lo, hi = backward_bounds(g, xs, torch.ones(1, 1, 1, dtype=D), None, values, relaxation=mode)
    assert lo.item() == pytest.approx(lower) and hi.item() == pytest.approx(3.0)


def test_crown_intersects_with_ibp_and_is_exact_when_stable():
    g = _abs_net()
    prob = VerificationProblem(g, _unit_box(), OutputSpec.identity(1, dtype=D))
    b = compute_bounds(prob, "crown")
    assert b.lower.item() == pytest.approx(0.0) and b.upper.item() == pytest.approx(3.0)
    # on x ∈ [1, 2] × [−0.5, 0.5] both ReLUs are active: y = 2·x1 exactly
    box = Box(torch.tensor([[1.0, -0.5]], dtype=D), torch.tensor([[2.0, 0.5]], dtype=D))
    b = compute_bounds(VerificationProblem(g, box, OutputSpec.identity(1, dtype=D)), "crown")
    assert b.lower.item() == pytest.approx(2.0) and b.upper.item() == pytest.approx(4.0)


def test_l2_ball_uses_dual_norm():
    # y = 3·x1 + 4·x2 + 1 over the unit L2 ball around 0: exactly [−4, 6]
    g = sequential([ops.Linear(torch.tensor([[3.0, 4.0]], dtype=D), torch.ones(1, dtype=D))], (2,))
    ball = LpBall(torch.zeros(1, 2, dtype=D), 1.0, 2)
    b = compute_bounds(VerificationProblem(g, ball, OutputSpec.identity(1, dtype=D)), "crown")
    assert b.lower.item() == pytest.approx(-4.0) and b.upper.item() == pytest.approx(6.0)


def test_maxpool_exact_when_one_input_dominates():
    g = sequential([ops.MaxPool2d((2, 2), (2, 2)), ops.Flatten()], (1, 2, 2))
    lo = torch.tensor([[[[5.0, 0.0], [1.0, 2.0]]]], dtype=D)
    box = Box(lo, lo + torch.tensor([[[[1.0, 1.0], [1.0, 2.0]]]], dtype=D))
    b = compute_bounds(VerificationProblem(g, box, OutputSpec.identity(1, dtype=D)), "crown")
    assert b.lower.item() == pytest.approx(5.0) and b.upper.item() == pytest.approx(6.0)
    # no dominance: lower from the largest lower bound, upper = largest upper bound
    box = Box(lo, lo + torch.tensor([[[[1.0, 1.0], [1.0, 5.0]]]], dtype=D))
    b = compute_bounds(VerificationProblem(g, box, OutputSpec.identity(1, dtype=D)), "crown")
    assert b.lower.item() == pytest.approx(5.0) and b.upper.item() == pytest.approx(7.0)


def _problem(kind: str, B: int = 3, eps: float = 0.05, seed: int = 0, p=math.inf):
    g = zoo.random_graph(kind, seed).to(dtype=D)
    x = zoo.sample_inputs(g, B, seed)
    spec = OutputSpec.identity(g.num_outputs, B, dtype=D)
    return VerificationProblem(g, LpBall(x, eps, p, 0.0, 1.0), spec)


@pytest.mark.parametrize("kind", zoo.KINDS)
def test_crown_tighter_than_ibp_on_average(kind):
    prob = _problem(kind, eps=0.1)
    ibp, crown = compute_bounds(prob, "interval"), compute_bounds(prob, "crown")
    assert bool((crown.lower >= ibp.lower - 1e-9).all()) and bool((crown.upper <= ibp.upper + 1e-9).all())
    assert float((crown.upper - crown.lower).mean()) < float((ibp.upper - ibp.lower).mean())
    # the raw backward bound (no IBP intersection) is sound too and tighter on average
    raw_lo, raw_hi = backward_bounds(prob.graph, prob.input_set, prob.output_spec.C,
                                     prob.output_spec.d, crown.intermediate)
    assert float((raw_hi - raw_lo).mean()) < float((ibp.upper - ibp.lower).mean())


@pytest.mark.parametrize("kind", ["relu", "conv-max", "residual", "tanh"])
@pytest.mark.parametrize("method", ["crown", "deeppoly"])
def test_batched_equals_per_element(kind, method):
    prob = _problem(kind, B=3)
    whole = compute_bounds(prob, method)
    for b in range(3):
        one = compute_bounds(prob[b], method)
        assert torch.allclose(one.lower, whole.lower[b:b + 1], atol=1e-10)
        assert torch.allclose(one.upper, whole.upper[b:b + 1], atol=1e-10)


@pytest.mark.parametrize("kind", ["conv-avg", "residual", "sigmoid"])
def test_chunking_gives_identical_bounds(kind):
    prob = _problem(kind, B=2, eps=0.1)
    ref = compute_bounds(prob, "crown")
    for cfg in (CrownConfig(chunk_rows=7), CrownConfig(max_pass_elements=3000)):
        b = compute_bounds(prob, "crown", cfg)
        assert torch.allclose(b.lower, ref.lower, atol=1e-10)
        assert torch.allclose(b.upper, ref.upper, atol=1e-10)
    # all neurons instead of the unstable ones only: never looser
    full = compute_bounds(prob, "crown", CrownConfig(unstable_only=False))
    assert bool((full.lower >= ref.lower - 1e-10).all()) and bool((full.upper <= ref.upper + 1e-10).all())


def test_intermediate_bounds_are_kept_reused_and_given():
    prob = _problem("relu", eps=0.1)
    b = compute_bounds(prob, "crown")
    assert set(b.intermediate) >= {n.name for n in prob.graph} | {"input"}
    ibp = interval_walk(prob.graph, prob.input_set)
    for name, iv in b.intermediate.items():
        assert bool((iv.lower >= ibp[name].lower - 1e-12).all())
        assert bool((iv.upper <= ibp[name].upper + 1e-12).all())
    again = intermediate_bounds(prob.graph, prob.input_set, given=b.intermediate)
    for name in b.intermediate:
        assert torch.equal(again[name].lower, b.intermediate[name].lower)
    # given (tighter, made-up) bounds are used instead of recomputing
    z = b.intermediate["n0"]
    fake = {"n0": type(z)(z.lower.clamp(min=0), z.upper.clamp(min=0))}
    assert torch.equal(intermediate_bounds(prob.graph, prob.input_set, given=fake)["n0"].lower,
                       fake["n0"].lower)


def test_crown_ibp_mode():
    prob = _problem("relu", eps=0.1)
    b = compute_bounds(prob, "crown", CrownConfig(intermediate="ibp"))
    ibp = interval_walk(prob.graph, prob.input_set)
    assert torch.equal(b.intermediate["n2"].lower, ibp["n2"].lower)


def test_float32_and_device_follow_graph():
    g = zoo.random_graph("conv-max", 0)
    x = zoo.sample_inputs(g, 2)
    spec = OutputSpec.identity(g.num_outputs, 2)
    b = compute_bounds(VerificationProblem(g, LpBall(x, 0.05), spec), "crown")
    assert b.lower.dtype == torch.float32 and b.lower.device == g.device


@dataclass(frozen=True, eq=False)
class _Cube(ops.Activation):
    monotone = True

    def fn(self, x):
        return x**3


def test_unsupported_op_named_before_work():
    g = Graph([Node("fc", ops.Linear(torch.eye(2, dtype=D)), ("input",)),
               Node("cube", _Cube(), ("fc",))], (2,))
    prob = VerificationProblem(g, _unit_box(), OutputSpec.identity(2, dtype=D))
    for method in ("crown", "deeppoly", "alpha-crown"):
        with pytest.raises(UnsupportedOpError, match=f"{method}.*_Cube.*cube"):
            compute_bounds(prob, method)


def test_config_validation_and_missing_intermediate():
    with pytest.raises(ConfigError):
        CrownConfig(intermediate="milp")
    with pytest.raises(ConfigError):
        CrownConfig(relaxation="best")
    g, xs = _abs_net(), _unit_box()
    with pytest.raises(ConfigError, match="n0"):
        backward_bounds(g, xs, torch.ones(1, 1, 1, dtype=D), None, {})
