"""The graph MILP: every affine op's sparse map is exact, the encoding's minimum is attained by
its own minimiser on the concrete network and lies below every sampled value, and verdicts agree
with the dense ReLU-chain MILP."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nncert.clock import NEVER, Deadline
from nncert.complete.milp_graph import affine_map, encode, graph_bounds, milp_decide, minimize_rows
from nncert.errors import UnsupportedOpError
from nncert.models import ops, zoo
from nncert.models.graph import sequential
from nncert.specs import OutputSpec

D = torch.float64


def _far() -> Deadline:
    return NEVER


AFFINE = [
    (ops.Linear(torch.randn(5, 6, dtype=D), torch.randn(5, dtype=D)), (6,)),
    (ops.Linear(torch.randn(3, 4, dtype=D)), (2, 4)),
    (ops.Conv2d(torch.randn(4, 2, 3, 3, dtype=D), torch.randn(4, dtype=D), stride=(2, 1),
                padding=(1, 1), groups=2), (4, 7, 6)),
    (ops.Conv2d(torch.randn(3, 2, 2, 3, dtype=D), dilation=(2, 1)), (2, 6, 6)),
    (ops.AvgPool2d((3, 3), (2, 2), (1, 1), count_include_pad=True), (2, 6, 5)),
    (ops.AvgPool2d((3, 3), (2, 2), (1, 1), count_include_pad=False), (2, 6, 5)),
    (ops.ElementwiseAffine(torch.randn(2, 1, 1, dtype=D), torch.randn(2, 1, 1, dtype=D)), (2, 3, 3)),
    (ops.Flatten(), (2, 3, 3)),
    (ops.Reshape((3, 6)), (2, 3, 3)),
    (ops.Transpose((2, 0, 1)), (2, 3, 4)),
    (ops.Pad((1, 2, 0, 1), "constant", 0.5), (2, 3, 3)),
    (ops.Pad((1, 1, 1, 1), "reflect"), (2, 3, 3)),
]


@pytest.mark.parametrize("op,in_shape", AFFINE, ids=lambda v: getattr(v, "kind", str(v)))
def test_affine_maps_are_exact(op, in_shape):
    x = torch.randn(3, *in_shape, dtype=D)
    y = op.forward(x)
    S, b = affine_map(op, in_shape, y.shape[1:])
    ours = x.reshape(3, -1).numpy() @ S.T + b
    np.testing.assert_allclose(ours, y.reshape(3, -1).numpy(), atol=1e-10)


# box widths that leave a few dozen unstable ReLUs: exact but quick to solve
WIDTHS = {"relu": 0.6, "leaky": 0.6, "conv-max": 0.03, "conv-avg": 0.04, "residual": 0.8}


def _box(graph, seed: int, width: float = 0.3):
    g = torch.Generator().manual_seed(seed)
    c = torch.rand((1, *graph.input_shape), generator=g, dtype=D)
    return c - width / 2, c + width / 2


@pytest.mark.parametrize("kind", WIDTHS)
@pytest.mark.parametrize("seed", [0, 1])
def test_minimum_is_exact_and_below_samples(kind, seed):
    """The MILP minimum of one output row is attained by its minimiser on the concrete network
    (the encoding is exact) and is ≤ the row's value at every sampled point (sound)."""
    graph = zoo.random_graph(kind, seed).to(dtype=D)
    lo, hi = _box(graph, seed, WIDTHS[kind])
    bounds = graph_bounds(graph, lo, hi)
    n_out = graph.shapes[graph.output_name][0]
    C = np.eye(n_out)[:1] - np.eye(n_out)[1:2]
    status, value, x = minimize_rows(graph, lo, hi, bounds, C, np.zeros(1), [0], _far())
    assert value is not None and x is not None
    assert bool((x >= lo - 1e-7).all() and (x <= hi + 1e-7).all())
    y = graph(x)[0].numpy()
    assert C[0] @ y == pytest.approx(value, abs=1e-5)
    pts = lo + (hi - lo) * torch.rand(2000, *graph.input_shape, dtype=D)
    sampled = graph(pts).numpy() @ C[0]
    assert value <= sampled.min() + 1e-6


def test_splits_fix_phases_and_never_lower_the_minimum():
    graph = zoo.random_graph("conv-max", 3).to(dtype=D)
    lo, hi = _box(graph, 3, 0.02)
    bounds = graph_bounds(graph, lo, hi)
    relu = next(n for n in graph if isinstance(n.op, ops.ReLU))
    pre = bounds[relu.inputs[0]]
    unstable = ((pre.lower < 0) & (pre.upper > 0)).reshape(-1).nonzero().flatten()
    assert unstable.numel() >= 2
    n_out = graph.shapes[graph.output_name][0]
    C = np.eye(n_out)[:1]
    _, base, _ = minimize_rows(graph, lo, hi, bounds, C, np.zeros(1), [0], _far())
    for sign in (1, -1):
        split = torch.zeros(pre.lower.numel(), dtype=torch.int8)
        split[unstable[:2]] = sign
        _, value, x = minimize_rows(graph, lo, hi, bounds, C, np.zeros(1), [0], _far(),
                                    splits={relu.name: split})
        if value is None:  # this phase is infeasible on the box
            continue
        assert value >= base - 1e-6
        z = graph.forward_all(x)[relu.inputs[0]].reshape(-1)  # pre-activations at the minimiser
        assert bool((sign * z[unstable[:2]] >= -1e-6).all())


def _chain(seed: int):
    g = torch.Generator().manual_seed(seed)
    layers = [ops.Linear(torch.randn(8, 4, generator=g, dtype=D), torch.randn(8, generator=g, dtype=D)),
              ops.ReLU(),
              ops.Linear(torch.randn(8, 8, generator=g, dtype=D) / 2, torch.randn(8, generator=g, dtype=D)),
              ops.ReLU(), ops.Linear(torch.randn(3, 8, generator=g, dtype=D), None)]
    return sequential(layers, (4,))


@pytest.mark.parametrize("seed", range(6))
def test_verdicts_agree_with_samples_on_chains(seed):
    """On ReLU chains (where the dense chain MILP used to run) a 'verified' holds on 20,000
    samples and a candidate violates the spec."""
    graph = _chain(seed)
    lo, hi = -torch.ones(1, 4, dtype=D) * 0.5, torch.ones(1, 4, dtype=D) * 0.5
    y0 = graph(torch.zeros(1, 4, dtype=D))[0]
    label = int(y0.argmax())
    others = [j for j in range(3) if j != label]
    C = torch.zeros(1, 2, 3, dtype=D)
    for r, j in enumerate(others):
        C[0, r, label], C[0, r, j] = 1.0, -1.0
    spec = OutputSpec.conjunction(C, torch.zeros(1, 2, dtype=D))
    new = milp_decide(graph, lo, hi, spec, graph_bounds(graph, lo, hi), _far())
    assert new.status in ("verified", "candidate")
    if new.status == "verified":
        x = lo + torch.rand(20000, 4, dtype=D, generator=torch.Generator().manual_seed(seed)) * (
            hi - lo)
        assert float(spec.expand(1).margin(graph(x).unsqueeze(1)).min()) > -1e-9
    if new.status == "candidate":
        assert float(spec.values(graph(new.x).unsqueeze(0)).min()) <= 1e-6


def test_sigmoid_is_rejected_by_name():
    graph = zoo.random_graph("sigmoid", 0).to(dtype=D)
    lo, hi = _box(graph, 0)
    with pytest.raises(UnsupportedOpError, match="MILP.*Sigmoid"):
        encode(graph, lo, hi, {})


def test_expired_deadline_is_a_timeout_before_any_solve(monkeypatch):
    """With a fake clock already past the deadline nothing is solved: 'timeout'."""
    import nncert.clock as clock

    graph = _chain(0)
    lo, hi = -torch.ones(1, 4, dtype=D), torch.ones(1, 4, dtype=D)
    spec = OutputSpec.conjunction(torch.tensor([[[1.0, -1.0, 0.0]]], dtype=D), torch.zeros(1, 1, dtype=D))
    bounds = graph_bounds(graph, lo, hi)
    monkeypatch.setattr(clock, "now", lambda: 100.0)
    out = milp_decide(graph, lo, hi, spec, bounds, Deadline(50.0))
    assert out.status == "timeout" and out.stats["clauses"] == 0


@pytest.mark.parametrize("kind", ["conv-max", "residual"])
def test_verify_with_complete_milp_on_any_graph(kind):
    """VerifyConfig(complete='milp') decides non-chain graphs with the graph MILP: just below
    the exact minimum of y0 − y1 the threshold is VERIFIED, just above it FALSIFIED with a
    counterexample confirmed on the concrete graph."""
    from nncert.complete.verify import VerifyConfig, verify
    from nncert.specs import Box, VerificationProblem

    graph = zoo.random_graph(kind, 2).to(dtype=D)
    lo, hi = _box(graph, 2, WIDTHS[kind])
    n_out = graph.shapes[graph.output_name][0]
    row = np.zeros((1, n_out))
    row[0, 0], row[0, 1] = 1.0, -1.0
    _, exact, _ = minimize_rows(graph, lo, hi, graph_bounds(graph, lo, hi), row, np.zeros(1), [0])
    for t, expect in ((exact - 0.01, "verified"), (exact + 0.01, "falsified")):
        C = torch.tensor(row, dtype=D).reshape(1, 1, n_out)
        spec = OutputSpec.conjunction(C, torch.tensor([[-t]], dtype=D))
        r = verify(VerificationProblem(graph, Box(lo, hi), spec),
                   VerifyConfig(timeout_s=120, attack=None, complete="milp"))
        assert r.verdict.value == expect, r
        if expect == "falsified":
            assert r.method == "milp"
            y = graph(r.counterexample.x.reshape(1, *graph.input_shape))[0]
            assert float(y[0] - y[1]) <= t + 1e-6
