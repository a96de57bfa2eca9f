"""ReLU BaB over the graph (complete/graph_bab.py): verdicts agree with MILP on chain-shaped
conv graphs and with dense sampling + PGD on residual and MaxPool graphs; verify() routes
non-chain ReLU graphs with high-dimensional inputs to it; budgets end the search."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nncert.attacks import confirm
from nncert.clock import NEVER, Deadline
from nncert.complete.bab import BaBConfig
from nncert.complete.graph_bab import GraphBaBConfig, graph_relu_bab
from nncert.complete.verify import VerifyConfig, verify
from nncert.models.from_torch import from_torch
from nncert.specs import Box, OutputSpec, VerificationProblem

D = torch.float64
BUDGET = GraphBaBConfig(batch_size=8, alpha_iters=5, root_alpha_iters=10, max_steps=60)


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 2, 3, padding=1)
        self.c2 = nn.Conv2d(2, 2, 3, padding=1)
        self.fc = nn.Linear(2 * 4 * 4, 2)

    def forward(self, x):
        h = torch.relu(self.c1(x))
        h = torch.relu(self.c2(h) + h)
        return self.fc(torch.flatten(h, 1))


def _module(kind: str) -> nn.Module:
    if kind == "conv":  # a ReLU chain written with Conv2d / Flatten
        return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(),
                             nn.Conv2d(2, 2, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                             nn.Linear(8, 2))
    if kind == "residual":
        return _Residual()
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 2))


def _graph(kind: str, seed: int):
    torch.manual_seed(seed)
    return from_torch(_module(kind).double(), (1, 4, 4)).to(dtype=D)


def _margins(g, xs: Box, n: int = 20000) -> torch.Tensor:
    x = xs.sample(n, torch.Generator().manual_seed(1))[:, 0]
    with torch.no_grad():
        y = g.forward(x)
    return y[:, 0] - y[:, 1]


def _pgd_min(g, xs: Box, t: float, restarts: int = 8, steps: int = 40, decay: float = 0.9) -> float:
    """Smallest ``y0 − y1 − t`` found by signed-gradient descent from random starts."""
    x = xs.sample(restarts, torch.Generator().manual_seed(2))[:, 0]
    size = float((xs.upper - xs.lower).max()) / 4
    for _ in range(steps):
        x = x.detach().requires_grad_(True)
        y = g(x)
        (grad,) = torch.autograd.grad((y[:, 0] - y[:, 1]).sum(), x)
        x = xs.project(x - size * grad.sign())
        size *= decay
    with torch.no_grad():
        y = g.forward(x)
    return float((y[:, 0] - y[:, 1]).min()) - t


def _problem(g, seed: int, eps: float, delta: float) -> VerificationProblem:
    """``y0 − y1 > t`` on a box around a random point, with t = (smallest margin found by
    sampling and PGD) − delta: near the true minimum, so both answers occur and the root
    bounds usually do not decide."""
    x = torch.rand(1, 1, 4, 4, dtype=D, generator=torch.Generator().manual_seed(seed))
    xs = Box(x - eps, x + eps)
    m = min(_pgd_min(g, xs, 0.0, restarts=32, steps=60), float(_margins(g, xs).min()))
    spec = OutputSpec.conjunction(torch.tensor([[[1.0, -1.0]]], dtype=D),
                                  torch.tensor([[delta - m]], dtype=D))
    return VerificationProblem(g, xs, spec)


def _check(p: VerificationProblem):
    def check(x):
        return confirm(p, x.reshape(1, *p.graph.input_shape), None, p.graph)
    return check


def _bab(p: VerificationProblem):
    out = graph_relu_bab(p, BUDGET, NEVER, _check(p))
    if out.status == "falsified":  # the counterexample holds on the concrete graph
        x = out.counterexample.x.reshape(1, *p.graph.input_shape).to(D)
        assert bool(p.input_set.contains(x, atol=1e-9).all())
        assert not bool(p.output_spec.holds(p.graph.forward(x).flatten(1)).all())
    return out


def _milp(p: VerificationProblem) -> str:
    from nncert.bounds.crown import intermediate_bounds
    from nncert.complete.milp_graph import milp_decide

    inter = intermediate_bounds(p.graph, p.input_set)
    m = milp_decide(p.graph, p.input_set.lower, p.input_set.upper, p.output_spec, inter, NEVER)
    if m.status == "candidate":
        return "falsified" if _check(p)(torch.as_tensor(m.x).reshape(1, -1)) is not None \
            else "unknown"
    return m.status


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("delta", [0.005, 0.02])
def test_agrees_with_milp_on_conv_chains(seed, delta):
    p = _problem(_graph("conv", seed), seed, 0.6, delta)
    b, m = _bab(p).status, _milp(p)
    assert m in ("verified", "falsified")
    if b in ("verified", "falsified"):
        assert b == m


@pytest.mark.parametrize("kind,seed,eps,delta", [
    ("residual", 2, 0.6, 0.02), ("residual", 1, 0.3, 0.02), ("residual", 0, 0.3, 0.005),
    ("residual", 0, 0.6, 0.005), ("maxpool", 0, 0.6, 0.02), ("maxpool", 3, 0.3, 0.005),
    ("maxpool", 1, 0.3, 0.02)])
def test_agrees_with_sampling_and_pgd(kind, seed, eps, delta):
    """VERIFIED: no sampled or attacked point below the threshold; FALSIFIED: the
    counterexample is re-checked on the graph (in ``_bab``)."""
    g = _graph(kind, seed)
    p = _problem(g, seed, eps, delta)
    out = _bab(p)
    if out.status == "verified":
        t = -float(p.output_spec.d)
        assert float(_margins(g, p.input_set, 50000).min()) - t > 0
        assert _pgd_min(g, p.input_set, t, restarts=64, steps=100) > 0


@pytest.mark.parametrize("kind,seed,eps", [("residual", 2, 0.6), ("maxpool", 0, 0.6)])
def test_verifies_instances_that_need_splits(kind, seed, eps):
    """Not vacuous: instances the root bound leaves open are verified within the budget."""
    out = _bab(_problem(_graph(kind, seed), seed, eps, 0.02))
    assert out.stats["root_lower"] < 0 and out.stats["steps"] > 0
    assert out.status == "verified"


def test_deadline_in_the_past_stops_before_any_step():
    g = _graph("residual", 1)
    p = _problem(g, 1, 0.6, 0.02)
    out = graph_relu_bab(p, BUDGET, Deadline(float("-inf")), _check(p))
    assert out.status in ("timeout", "falsified")
    assert out.stats["steps"] == 0


def test_step_budget_gives_unknown():
    p = _problem(_graph("maxpool", 2), 2, 0.6, 0.005)
    cfg = GraphBaBConfig(batch_size=2, alpha_iters=1, root_alpha_iters=1, max_steps=2)
    out = graph_relu_bab(p, cfg, NEVER, _check(p))
    assert out.status in ("unknown", "verified", "falsified")
    assert out.stats["steps"] <= 2


def test_verify_routes_non_chain_relu_graphs_to_graph_bab():
    g = _graph("residual", 2)  # 16 inputs: lower the input-split limit below that
    p = _problem(g, 2, 0.6, 0.02)
    cfg = VerifyConfig(timeout_s=600, attack=None, bab=BaBConfig(input_split_max_dim=8))
    r = verify(p, cfg)
    assert r.method == "bab-relu-graph"
    assert r.stats["stages"][-1] == "bab-relu-graph"
    assert r.verdict.name == "VERIFIED"


def test_verify_keeps_relu_chains_on_the_dense_path():
    p = _problem(_graph("conv", 2), 2, 0.6, 0.005)
    cfg = VerifyConfig(timeout_s=600, attack=None, bab=BaBConfig(input_split_max_dim=8))
    r = verify(p, cfg)
    assert "bab-relu-graph" not in r.stats["stages"]
    assert r.method != "bab-relu-graph"


@pytest.mark.parametrize("after_s", [0.0, 1e-9])
def test_graph_search_restarts_from_alpha_optimised_intermediate_bounds(monkeypatch, after_s):
    """verify hands the graph search CROWN's root bounds intersected with alpha-CROWN's (never
    looser than CROWN's, tighter on some neuron of this residual net): from the start with
    ``root_intermediate_after_s = 0``, else after a first search from CROWN's that did not
    decide within that time."""
    import importlib

    from nncert.bounds.crown import intermediate_bounds

    verify_mod = importlib.import_module("nncert.complete.verify")

    roots = []

    def spy(p, config, deadline, check, root_intermediate=None):
        roots.append(dict(root_intermediate))
        return graph_relu_bab(p, config, deadline, check, root_intermediate)

    monkeypatch.setattr(verify_mod, "graph_relu_bab", spy)
    p = _problem(_graph("residual", 2), 2, 0.6, 0.02)
    bab = BaBConfig(input_split_max_dim=8, root_intermediate_after_s=after_s)
    r = verify(p, VerifyConfig(timeout_s=600, attack=None, bab=bab))
    assert r.verdict.name == "VERIFIED"
    crown = intermediate_bounds(p.graph, p.input_set)
    if after_s:  # the first search (no time at all) started from CROWN's bounds
        assert len(roots) == 2 and "bab_crown_root" in r.stats
        for k, iv in roots[0].items():
            torch.testing.assert_close(iv.lower, crown[k].lower)
    seen = roots[-1]
    tighter = False
    for k, iv in seen.items():
        assert bool((iv.lower >= crown[k].lower - 1e-12).all())
        assert bool((iv.upper <= crown[k].upper + 1e-12).all())
        tighter |= bool((iv.lower > crown[k].lower + 1e-6).any()
                        | (iv.upper < crown[k].upper - 1e-6).any())
    assert seen and tighter


@pytest.mark.parametrize("kind,seed,eps,delta", [
    ("residual", 2, 0.6, 0.02), ("maxpool", 0, 0.6, 0.02), ("residual", 0, 0.3, 0.005),
    ("maxpool", 3, 0.3, 0.005), ("residual", 1, 0.3, -0.005), ("maxpool", 1, 0.3, -0.005)])
def test_verify_from_optimised_root_bounds_agrees_with_sampling_and_pgd(kind, seed, eps, delta):
    """Soundness of the search from the intersected root bounds, through verify (first search
    given no time, so the restart decides): VERIFIED only when no sampled or attacked point
    falls below the threshold; with the threshold above a point found (delta < 0), never
    VERIFIED, and a FALSIFIED answer's point violates the spec on the graph."""
    g = _graph(kind, seed)
    p = _problem(g, seed, eps, delta)
    bab = BaBConfig(input_split_max_dim=8, root_intermediate_after_s=1e-9)
    r = verify(p, VerifyConfig(timeout_s=600, attack=None, bab=bab))
    assert r.method == "bab-relu-graph" and "bab_crown_root" in r.stats  # (the restart ran)
    t = -float(p.output_spec.d)
    if r.verdict.name == "VERIFIED":
        assert delta > 0
        assert float(_margins(g, p.input_set, 50000).min()) - t > 0
        assert _pgd_min(g, p.input_set, t, restarts=64, steps=100) > 0
    if r.verdict.name == "FALSIFIED":
        x = r.counterexample.x.reshape(1, *g.input_shape).to(D)
        assert bool(p.input_set.contains(x, atol=1e-9).all())
        assert not bool(p.output_spec.holds(g.forward(x).flatten(1)).all())
