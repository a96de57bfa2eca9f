"""Zonotope domain: hand-computed cases, per-neuron relaxation grids, and sampled + attacked
soundness over every zoo network × ReLU rule × input set."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nncert import Box, LpBall, OutputSpec, VerificationProblem, compute_bounds, robustness_problem
from nncert.bounds import certify
from nncert.bounds.zonotope import (
    RELU_RULES,
    ZonotopeConfig,
    relu_relaxation,
    s_curve_relaxation,
    zonotope_spec_bounds,
    zonotope_walk,
)
from nncert.errors import ConfigError, UnsupportedOpError
from nncert.models import ops, sequential, zoo
from nncert.models.graph import Graph, Node

CONFIGS = [ZonotopeConfig(r, b) for r in RELU_RULES for b in (False, True)]


def _unit_box(n: int, lo: float = 0.0) -> Box:
    return Box(torch.full((1, n), lo), torch.ones(1, n))


# -- hand-computed cases -------------------------------------------------------------------------


def test_affine_net_is_exact_where_interval_is_not():
    # h = (x1 + x2, x1 - x2), y = h1 + h2 = 2·x1 on [0, 1]^2: exactly [0, 2]; IBP gives [-1, 3]
    g = sequential([ops.Linear(torch.tensor([[1.0, 1.0], [1.0, -1.0]])),
                    ops.Linear(torch.tensor([[1.0, 1.0]]))], (2,))
    p = VerificationProblem(g, _unit_box(2), OutputSpec.identity(1))
    z, i = compute_bounds(p, "zonotope"), compute_bounds(p, "interval")
    assert (z.lower.item(), z.upper.item()) == pytest.approx((0.0, 2.0))
    assert (i.lower.item(), i.upper.item()) == pytest.approx((-1.0, 3.0))


@pytest.mark.parametrize(("rule", "expected"), [
    ("deepzono", (-0.5, 2.0)), ("zbox", (-1.0, 2.0)), ("zswitch", (-1.0, 2.0)),
    ("zsmooth", (-1.0, 2.0)), ("hybrid", (-1.0, 2.0)),
])
def test_two_neuron_relu_net_by_hand(rule, expected):
    # y = relu(x1 + x2) - relu(x1 - x2) on [0,1]^2 (true range [0, 2]). x1 - x2 ∈ [-1, 1]:
    # DeepZono relu ≈ x/2 + 1/4 ± 1/4, so y = x1/2 + 3·x2/2 - 1/4 ± 1/4 ∈ [-1/2, 2].
    g = sequential([ops.Linear(torch.tensor([[1.0, 1.0], [1.0, -1.0]])), ops.ReLU(),
                    ops.Linear(torch.tensor([[1.0, -1.0]]))], (2,))
    p = VerificationProblem(g, _unit_box(2), OutputSpec.identity(1))
    b = compute_bounds(p, "zonotope", ZonotopeConfig(rule))
    assert (b.lower.item(), b.upper.item()) == pytest.approx(expected)


def test_deepzono_relu_on_a_known_interval():
    slope, shift, err = relu_relaxation("deepzono", torch.tensor([-1.0]), torch.tensor([3.0]))
    # λ = u/(u-l) = 3/4; relu(x) - 3x/4 ∈ [0, 3/4]  →  shift = err = 3/8
    assert (slope.item(), shift.item(), err.item()) == pytest.approx((0.75, 0.375, 0.375))
    slope, shift, err = relu_relaxation("deepzono", torch.tensor([-2.0]), torch.tensor([2.0]), 0.5)
    # leaky slope 0.5: λ = (u - s·l)/(u - l) = 3/4; f(x) - 3x/4 ∈ [0, u(1-λ)] = [0, 1/2]
    assert (slope.item(), shift.item(), err.item()) == pytest.approx((0.75, 0.25, 0.25))


@pytest.mark.parametrize(("rule", "lo", "hi", "expected"), [
    ("zswitch", -3.0, 1.0, (0.0, 0.5, 0.5)),  # box area 4·1 < diag area 4·3: relu ∈ [0, 1]
    ("zswitch", -1.0, 3.0, (1.0, 0.5, 0.5)),  # diag: relu(x) - x ∈ [0, 1]
    ("zsmooth", -1.0, 3.0, (0.75, 0.75, 0.75)),  # w = 3/4: 3/4·diag + 1/4·box
    ("zbox", -1.0, 3.0, (0.0, 1.5, 1.5)),
])
def test_diffai_rules_on_known_intervals(rule, lo, hi, expected):
    out = relu_relaxation(rule, torch.tensor([lo]), torch.tensor([hi]))
    assert tuple(t.item() for t in out) == pytest.approx(expected)


def test_parallel_branches_get_distinct_noise_symbols():
    # x ∈ [-1,1]^2; A = relu(x1), B = relu(x2), y = A - B. Each branch adds its own symbol:
    # y = x1/2 - x2/2 + (ε_A - ε_B)/4 ∈ [-1.5, 1.5] (sharing one symbol would claim [-1, 1]).
    nodes = [
        Node("a", ops.Linear(torch.tensor([[1.0, 0.0]])), ("input",)), Node("ra", ops.ReLU(), ("a",)),
        Node("b", ops.Linear(torch.tensor([[0.0, 1.0]])), ("input",)), Node("rb", ops.ReLU(), ("b",)),
        Node("y", ops.Sub(), ("ra", "rb")),
    ]
    g = Graph(nodes, (2,))
    p = VerificationProblem(g, _unit_box(2, -1.0), OutputSpec.identity(1))
    values = zonotope_walk(g, p.input_set)
    assert values["y"].num_generators == 4
    b = compute_bounds(p, "zonotope")
    assert (b.lower.item(), b.upper.item()) == pytest.approx((-1.5, 1.5))


def test_maxpool_keeps_the_dominant_input_exactly():
    # pixel 0 ∈ [2, 3] dominates the others ∈ [0, 1]: max - x0 == 0 exactly (IBP: [-1, 1])
    nodes = [
        Node("pool", ops.MaxPool2d((2, 2), (2, 2)), ("input",)), Node("fp", ops.Flatten(), ("pool",)),
        Node("fx", ops.Flatten(), ("input",)), Node("cat", ops.Concat(0), ("fp", "fx")),
        Node("y", ops.Linear(torch.tensor([[1.0, -1.0, 0.0, 0.0, 0.0]])), ("cat",)),
    ]
    g = Graph(nodes, (1, 2, 2))
    lo = torch.tensor([[[[2.0, 0.0], [0.0, 0.0]]]])
    p = VerificationProblem(g, Box(lo, lo + 1), OutputSpec.identity(1))
    b = compute_bounds(p, "zonotope")
    assert (b.lower.item(), b.upper.item()) == pytest.approx((0.0, 0.0), abs=1e-6)
    assert b.intermediate["pool"].lower.item() == pytest.approx(2.0)
    i = compute_bounds(p, "interval")
    assert (i.lower.item(), i.upper.item()) == pytest.approx((-1.0, 1.0))


# -- per-neuron relaxations on grids -----------------------------------------------------------


def _grid_pairs():
    pts = torch.tensor([-30.0, -5.0, -2.0, -1.0, -0.3, 0.0, 1e-4, 0.5, 1.0, 3.0, 8.0, 40.0],
                       dtype=torch.float64)
    lo, hi = torch.meshgrid(pts, pts, indexing="ij")
    keep = lo <= hi
    return lo[keep], hi[keep]


def _check_relaxation(f, lo, hi, slope, shift, err):
    t = torch.linspace(0, 1, 401, dtype=torch.float64).unsqueeze(1)
    x = lo + t * (hi - lo)
    gap = f(x) - (slope * x + shift)
    assert bool((err >= 0).all())
    assert bool((gap.abs() <= err + 1e-9).all())


@pytest.mark.parametrize("act", [ops.Sigmoid(), ops.Tanh()])
def test_s_curve_transformer_is_sound_on_a_grid(act):
    lo, hi = _grid_pairs()
    _check_relaxation(act.fn, lo, hi, *s_curve_relaxation(act, lo, hi))


@pytest.mark.parametrize("rule", RELU_RULES)
@pytest.mark.parametrize("s", [0.0, 0.1, 0.5, 1.0])
def test_relu_rules_are_sound_on_a_grid(rule, s):
    lo, hi = _grid_pairs()
    slope, shift, err = relu_relaxation(rule, lo, hi, s)
    _check_relaxation(lambda x: torch.maximum(x, s * x), lo, hi, slope, shift, err)
    stable = (lo >= 0) | (hi <= 0)
    assert bool((err[stable] == 0).all())


# -- soundness: sampled and attacked points --------------------------------------------------------


def _input_set(kind: str, x: torch.Tensor, eps: float):
    if kind == "linf":
        return LpBall(x, eps)
    if kind == "linf-clip":
        return LpBall(x, eps, math.inf, 0.0, 1.0)
    if kind == "l2":
        return LpBall(x, eps, 2, 0.0, 1.0)
    return Box((x - eps).clamp_min(0.0), x + eps * torch.rand_like(x))


def _pgd(graph, prob, steps: int = 15) -> torch.Tensor:
    """Points of the set pushing each spec row up and down: (2R, B, *shape)."""
    s = prob.input_set
    R = prob.output_spec.num_rows
    sign = torch.cat([torch.ones(R), -torch.ones(R)]).to(s.center.dtype)
    x = s.sample(2 * R, torch.Generator().manual_seed(1)).clone()
    step = (s.upper - s.lower).clamp_min(1e-3) / 4
    rows = torch.arange(2 * R) % R
    for _ in range(steps):
        x.requires_grad_(True)
        v = prob.output_spec.values(graph(x.reshape(-1, *graph.input_shape)).reshape(*x.shape[:2], -1))
        obj = (v[torch.arange(2 * R), :, rows] * sign.unsqueeze(1)).sum()
        (grad,) = torch.autograd.grad(obj, x)
        x = s.project(x.detach() + step * grad.sign()).detach()
        step = step * 0.8
    return x


@settings(max_examples=40, deadline=None)
@given(kind=st.sampled_from(zoo.KINDS), cfg=st.sampled_from(CONFIGS), seed=st.integers(0, 10_000),
       eps=st.floats(0.0, 0.25), set_kind=st.sampled_from(["linf", "linf-clip", "l2", "box"]))
def test_sampled_and_attacked_points_inside_bounds(kind, cfg, seed, eps, set_kind):
    torch.manual_seed(seed)
    g = zoo.random_graph(kind, seed).to(dtype=torch.float64)
    x = zoo.sample_inputs(g, 2, seed)
    spec = OutputSpec.robustness(g(x).argmax(1), g.num_outputs, dtype=torch.float64)
    prob = VerificationProblem(g, _input_set(set_kind, x, eps), spec)
    b = compute_bounds(prob, "zonotope", cfg)
    pts = torch.cat([prob.input_set.sample(200, torch.Generator().manual_seed(seed)), _pgd(g, prob)])
    assert bool(prob.input_set.contains(pts, 1e-9).all())
    flat = pts.reshape(-1, *g.input_shape)
    values = g.forward_all(flat)
    v = spec.values(values[g.output_name].reshape(pts.shape[0], 2, -1))
    assert bool((v >= b.lower - 1e-8).all()) and bool((v <= b.upper + 1e-8).all())
    for name, iv in b.intermediate.items():  # every node's interval holds the concrete values
        val = values[name].reshape(pts.shape[0], *iv.lower.shape)
        assert bool((val >= iv.lower - 1e-8).all()) and bool((val <= iv.upper + 1e-8).all()), name


# -- precision order and structure -----------------------------------------------------------------


def test_deepzono_is_tighter_than_interval_on_average_on_relu_mlps():
    gaps = []
    for seed in range(6):
        g = zoo.random_graph("relu", seed)
        x = zoo.sample_inputs(g, 4, seed)
        prob = robustness_problem(g, x, g(x).argmax(1), 0.05)
        gaps.append(compute_bounds(prob, "zonotope").lower - compute_bounds(prob, "interval").lower)
    assert torch.cat(gaps).mean() > 0


def test_affine_only_net_is_exact():
    torch.manual_seed(3)
    W1, W2 = torch.randn(7, 5, dtype=torch.float64), torch.randn(4, 7, dtype=torch.float64)
    g = sequential([ops.Linear(W1, torch.randn(7, dtype=torch.float64)), ops.Linear(W2)], (5,))
    x = torch.rand(3, 5, dtype=torch.float64)
    prob = robustness_problem(g, x, [0, 1, 2], 0.1, clip=None)
    A = torch.einsum("bro,oi->bri", prob.output_spec.C, W2 @ W1)
    mid = prob.output_spec.values(g(x))
    exact = mid - 0.1 * A.abs().sum(-1)
    z, i = compute_bounds(prob, "zonotope"), compute_bounds(prob, "interval")
    assert torch.allclose(z.lower, exact) and bool((z.lower >= i.lower - 1e-12).all())


def test_batch_is_the_same_as_one_problem_at_a_time():
    g = zoo.random_graph("conv-max", 2).to(dtype=torch.float64)
    x = zoo.sample_inputs(g, 3, 2)
    prob = robustness_problem(g, x, g(x).argmax(1), 0.03)
    for cfg in (ZonotopeConfig(), ZonotopeConfig("zswitch")):
        whole = compute_bounds(prob, "zonotope", cfg)
        for b in range(3):
            one = compute_bounds(prob[b], "zonotope", cfg)
            assert torch.allclose(one.lower, whole.lower[b:b + 1])


def test_hybrid_adds_no_generators_and_intermediates_cover_every_node():
    g = zoo.random_graph("residual", 0)
    x = zoo.sample_inputs(g, 2)
    prob = robustness_problem(g, x, [0, 1], 0.05)
    b = compute_bounds(prob, "zonotope", ZonotopeConfig("hybrid"))
    assert b.stats["generators"] == 5  # one per input dim
    assert set(b.intermediate) == {"input", *(n.name for n in g)}


def test_lower_bound_is_differentiable_in_the_weights():
    g = zoo.random_graph("conv-max", 0)
    weights = [t.requires_grad_(True) for n in g for t in n.op.tensors()]
    x = zoo.sample_inputs(g, 2, 1)
    prob = robustness_problem(g, x, g(x).argmax(1), 0.05)
    for cfg in CONFIGS:
        lower, _, _ = zonotope_spec_bounds(g, prob.input_set, prob.output_spec, cfg)
        grads = torch.autograd.grad(lower.sum(), weights, allow_unused=True)
        assert all(gr is not None and bool(torch.isfinite(gr).all()) for gr in grads)
        assert sum(float(gr.abs().sum()) for gr in grads) > 0


def test_certify_with_zonotope_proves_at_least_as_much_as_interval_here():
    g = zoo.random_graph("relu", 0)
    x = zoo.sample_inputs(g, 16)
    prob = robustness_problem(g, x, g(x).argmax(1), 0.01)
    verified = {m: sum(r.verdict.name == "VERIFIED" for r in certify(prob, m))
                for m in ("interval", "zonotope")}
    assert verified["zonotope"] >= verified["interval"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_runs_on_the_tensors_device():
    g = zoo.random_graph("conv-max", 0).to("cuda")
    x = zoo.sample_inputs(g, 2).to("cuda")
    prob = robustness_problem(g, x, g(x).argmax(1), 0.02)
    b = compute_bounds(prob, "zonotope", ZonotopeConfig("zswitch"))
    c = compute_bounds(prob.to("cpu"), "zonotope", ZonotopeConfig("zswitch"))
    assert b.lower.device.type == "cuda" and torch.allclose(b.lower.cpu(), c.lower, atol=1e-4)


# -- errors -------------------------------------------------------------------------------------------


def test_unsupported_op_names_method_op_and_node():
    class Weird(ops.Activation):
        def fn(self, x):
            return x

    g = Graph([Node("w1", Weird(), ("input",))], (2,))
    p = VerificationProblem(g, LpBall(torch.zeros(1, 2), 0.1), OutputSpec.identity(2))
    with pytest.raises(UnsupportedOpError, match=r"'zonotope'.*'Weird'.*'w1'"):
        compute_bounds(p, "zonotope")


def test_unknown_relu_rule_is_a_config_error():
    with pytest.raises(ConfigError, match="zonotope relu rule"):
        ZonotopeConfig("crown")
