"""Branch-and-bound on general activations (complete/graph_bab.py with Subdomains.limits):
verdicts agree with dense sampling + PGD on Sigmoid, Tanh, LeakyReLU, conv+Sigmoid and
ReLU+Tanh nets,
instances plain (alpha-)CROWN cannot verify are verified, and verify() routes such graphs
to the search ("bab-activation"), not to input splitting."""

from __future__ import annotations

import pytest
import torch
from test_graph_bab import _pgd_min as _signed_descent_min
from torch import nn

from nncert.attacks import confirm
from nncert.bounds import compute_bounds
from nncert.clock import NEVER
from nncert.complete.bab import BaBConfig
from nncert.complete.graph_bab import GraphBaBConfig, graph_relu_bab
from nncert.complete.verify import VerifyConfig, verify
from nncert.models.from_torch import from_torch
from nncert.specs import Box, OutputSpec, VerificationProblem

D = torch.float64
BUDGET = GraphBaBConfig(batch_size=8, alpha_iters=5, root_alpha_iters=10, max_steps=60)


def _module(kind: str, n_in: int) -> tuple[nn.Module, tuple[int, ...]]:
    if kind == "conv_sigmoid":
        return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Sigmoid(),
                             nn.Conv2d(2, 2, 3, stride=2, padding=1), nn.Sigmoid(), nn.Flatten(),
                             nn.Linear(8, 2)), (1, 4, 4)
    if kind == "mixed":  # ReLU sign splits and Tanh point splits in one tree
        return nn.Sequential(nn.Linear(n_in, 10), nn.ReLU(), nn.Linear(10, 10), nn.Tanh(),
                             nn.Linear(10, 2)), (n_in,)
    act = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "leaky": lambda: nn.LeakyReLU(0.1)}[kind]
    return nn.Sequential(nn.Linear(n_in, 10), act(), nn.Linear(10, 10), act(),
                         nn.Linear(10, 2)), (n_in,)


def _graph(kind: str, seed: int, n_in: int = 6):
    torch.manual_seed(seed)
    m, shape = _module(kind, n_in)
    return from_torch(m.double(), shape).to(dtype=D)


def _margins(g, xs: Box, n: int = 20000) -> torch.Tensor:
    x = xs.sample(n, torch.Generator().manual_seed(1))[:, 0]
    with torch.no_grad():
        y = g.forward(x)
    return y[:, 0] - y[:, 1]


def _pgd_min(g, xs: Box, restarts: int = 32, steps: int = 60) -> float:
    """Smallest ``y0 − y1`` found by signed-gradient descent from random starts."""
    return _signed_descent_min(g, xs, 0.0, restarts, steps, decay=0.93)


def _true_min(g, xs: Box) -> float:
    return min(_pgd_min(g, xs), float(_margins(g, xs).min()))


def _problem(g, seed: int, eps: float, delta: float) -> VerificationProblem:
    """``y0 − y1 > t`` on a box around a random point, t = (smallest margin found by sampling
    and PGD) − delta: near the true minimum, so both answers occur."""
    x = torch.rand(1, *g.input_shape, dtype=D, generator=torch.Generator().manual_seed(seed))
    xs = Box(x - eps, x + eps)
    spec = OutputSpec.conjunction(torch.tensor([[[1.0, -1.0]]], dtype=D),
                                  torch.tensor([[delta - _true_min(g, xs)]], dtype=D))
    return VerificationProblem(g, xs, spec)


def _check(p: VerificationProblem):
    def check(x):
        return confirm(p, x.reshape(1, *p.graph.input_shape), None, p.graph)
    return check


def _bab(p: VerificationProblem, config: GraphBaBConfig = BUDGET):
    out = graph_relu_bab(p, config, NEVER, _check(p))
    if out.status == "falsified":  # the counterexample holds on the concrete graph
        x = out.counterexample.x.reshape(1, *p.graph.input_shape).to(p.input_set.lower.dtype)
        assert bool(p.input_set.contains(x, atol=1e-9).all())
        assert not bool(p.output_spec.holds(p.graph.forward(x).flatten(1)).all())
    return out


@pytest.mark.parametrize("kind", ["sigmoid", "tanh", "leaky", "conv_sigmoid", "mixed"])
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("delta", [0.01, -0.01])
def test_agrees_with_sampling_and_pgd(kind, seed, delta):
    """VERIFIED: no sampled or attacked point violates; with delta < 0 an attacked point
    violates, so the answer must not be VERIFIED; FALSIFIED: re-checked (in ``_bab``)."""
    g = _graph(kind, seed)
    p = _problem(g, seed, 0.4, delta)
    out = _bab(p)
    t = -float(p.output_spec.d)
    assert out.status == ("verified" if delta > 0 else "falsified")  # decided, not vacuous
    if out.status == "verified":
        assert delta > 0
        assert float(_margins(g, p.input_set, 50000).min()) - t > 0
        assert _pgd_min(g, p.input_set, restarts=64, steps=100) - t > 0


@pytest.mark.parametrize("kind,seed,eps,delta", [
    ("tanh", 2, 0.4, 0.01), ("sigmoid", 0, 2.0, 0.01), ("leaky", 0, 0.4, 0.01),
    ("conv_sigmoid", 0, 2.0, 0.005), ("conv_sigmoid", 4, 1.0, 0.002)])
def test_verifies_what_alpha_crown_cannot(kind, seed, eps, delta):
    """Not vacuous: alpha-CROWN leaves these open, the search proves them (and sampling/PGD
    find nothing below the threshold)."""
    g = _graph(kind, seed)
    p = _problem(g, seed, eps, delta)
    assert float(compute_bounds(p, "alpha-crown").lower.min()) < 0
    out = _bab(p, GraphBaBConfig(batch_size=8, alpha_iters=10, root_alpha_iters=10,
                                 max_steps=100))
    assert out.status == "verified"
    assert out.stats["steps"] > 0
    t = -float(p.output_spec.d)
    assert _pgd_min(g, p.input_set, restarts=64, steps=100) - t > 0


def test_step_budget_gives_unknown_or_an_answer():
    g = _graph("tanh", 0)
    p = _problem(g, 0, 0.4, 0.001)
    cfg = GraphBaBConfig(batch_size=2, alpha_iters=1, root_alpha_iters=1, max_steps=2)
    out = _bab(p, cfg)
    assert out.status in ("unknown", "verified", "falsified")
    assert out.stats["steps"] <= 2


@pytest.mark.parametrize("kind,seed,eps", [("sigmoid", 4, 2.0), ("leaky", 0, 0.3)])
def test_verify_routes_to_activation_bab(kind, seed, eps):
    """20 inputs (above the input-split limit): alpha-CROWN, then the activation search,
    named in the Result; never input splitting."""
    g = _graph(kind, seed, n_in=20)
    p = _problem(g, seed, eps, 0.01)
    assert float(compute_bounds(p, "alpha-crown").lower.min()) < 0
    r = verify(p, VerifyConfig(timeout_s=600, attack=None))
    assert r.method == "bab-activation"
    assert r.stats["stages"][-1] == "bab-activation"
    assert "bab-input" not in r.stats["stages"]
    assert r.verdict.name == "VERIFIED"


def test_verify_passes_its_graph_bab_config_on():
    g = _graph("sigmoid", 4, n_in=20)  # the default search needs about ten steps here
    p = _problem(g, 4, 2.0, 0.01)
    r = verify(p, VerifyConfig(timeout_s=600, attack=None, graph_bab=GraphBaBConfig(max_steps=2)))
    assert r.verdict.name == "UNKNOWN" and r.stats["bab"]["steps"] == 2


def test_verify_keeps_input_splits_for_small_inputs():
    g = _graph("sigmoid", 0)  # 6 inputs: input splitting decides such boxes well
    p = _problem(g, 0, 0.4, 0.01)
    r = verify(p, VerifyConfig(timeout_s=600, attack=None, bab=BaBConfig(max_domains=10**6)))
    assert "bab-activation" not in r.stats["stages"]


@pytest.mark.parametrize("kind,delta", [("tanh", 0.01), ("sigmoid", -0.01)])
def test_float32_search_stays_sound(kind, delta):
    """The same search on a float32 copy (``VerifyConfig.dtype``): a VERIFIED answer still
    survives sampling and PGD on the float64 network; a violated one is not VERIFIED."""
    g = _graph(kind, 1)
    p = _problem(g, 1, 0.4, delta)
    out = _bab(p.to(dtype=torch.float32))
    t = -float(p.output_spec.d)
    if out.status == "verified":
        assert delta > 0
        assert _pgd_min(g, p.input_set, restarts=64, steps=100) - t > 0
    else:
        assert out.status in ("falsified", "unknown")
