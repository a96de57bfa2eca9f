"""Interval bound propagation: hand-computed bounds and sampled soundness on every op."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nncert import Box, LpBall, OutputSpec, VerificationProblem, compute_bounds, robustness_problem
from nncert.errors import UnsupportedOpError
from nncert.models import ops, sequential, zoo
from nncert.models.graph import Graph, Node


def test_hand_computed_two_neurons():
    # y = relu(x1 + x2) - relu(x1 - x2), x in [0,1]^2
    g = sequential([
        ops.Linear(torch.tensor([[1.0, 1.0], [1.0, -1.0]])), ops.ReLU(),
        ops.Linear(torch.tensor([[1.0, -1.0]])),
    ], (2,))
    p = VerificationProblem(g, Box(torch.zeros(1, 2), torch.ones(1, 2)), OutputSpec.identity(1))
    b = compute_bounds(p, "interval")
    # relu(x1+x2) in [0,2], relu(x1-x2) in [0,1] -> y in [-1, 2]
    assert b.lower.item() == pytest.approx(-1.0) and b.upper.item() == pytest.approx(2.0)


def test_spec_folded_into_last_linear_is_tighter():
    g = sequential([ops.Linear(torch.tensor([[1.0], [1.0]]))], (1,))
    C = torch.tensor([[[1.0, -1.0]]])
    p = VerificationProblem(g, Box(-torch.ones(1, 1), torch.ones(1, 1)), OutputSpec.conjunction(C))
    b = compute_bounds(p, "interval")
    assert b.lower.item() == 0.0 and b.upper.item() == 0.0  # y1 - y2 == 0 exactly


@settings(max_examples=12, deadline=None)
@given(kind=st.sampled_from(zoo.KINDS), seed=st.integers(0, 1000),
       eps=st.floats(0.0, 0.3), p=st.sampled_from([math.inf, 2.0]))
def test_sampled_outputs_inside_bounds(kind, seed, eps, p):
    g = zoo.random_graph(kind, seed).to(dtype=torch.float64)
    x = zoo.sample_inputs(g, 3, seed)
    prob = robustness_problem(g, x, g(x).argmax(1), eps, p)
    b = compute_bounds(prob, "interval")
    s = prob.input_set.sample(300, torch.Generator().manual_seed(seed))
    ys = g(s.reshape(-1, *g.input_shape)).reshape(300, 3, -1)
    v = prob.output_spec.values(ys)
    assert bool((v >= b.lower - 1e-9).all()) and bool((v <= b.upper + 1e-9).all())


def test_bounds_shrink_with_the_set():
    g = zoo.random_graph("conv-max", 3)
    x = zoo.sample_inputs(g, 2)
    lab = g(x).argmax(1)
    wide = compute_bounds(robustness_problem(g, x, lab, 0.1), "interval")
    narrow = compute_bounds(robustness_problem(g, x, lab, 0.05), "interval")
    assert bool((narrow.lower >= wide.lower - 1e-6).all())
    assert bool((narrow.upper <= wide.upper + 1e-6).all())


def test_every_node_has_an_interval():
    g = zoo.random_graph("residual", 0)
    x = zoo.sample_inputs(g, 2)
    b = compute_bounds(robustness_problem(g, x, [0, 1], 0.01), "interval")
    assert set(b.intermediate) == {"input", *(n.name for n in g)}


def test_unsupported_op_names_method_op_and_node():
    class Weird(ops.Activation):
        def fn(self, x):
            return x

    g = Graph([Node("w1", Weird(), ("input",))], (2,))
    p = VerificationProblem(g, LpBall(torch.zeros(1, 2), 0.1), OutputSpec.identity(2))
    with pytest.raises(UnsupportedOpError, match=r"'interval'.*'Weird'.*'w1'"):
        compute_bounds(p, "interval")
