"""ReLU-split BaB on the bound engine (complete/relu_split.py): its verdicts agree with the
graph MILP and a dense grid on random small ReLU chains, under every search option."""

from __future__ import annotations

import pytest
import torch
from complete_fixtures import grid_min, random_mlp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nncert.attacks import confirm
from nncert.bounds.crown import intermediate_bounds
from nncert.clock import Deadline
from nncert.complete import relu_split
from nncert.complete.bab import BaBConfig
from nncert.complete.milp_graph import milp_decide
from nncert.complete.relu_split import relu_bab, root_bounds
from nncert.complete.verify import VerifyConfig, verify
from nncert.result import Verdict
from nncert.specs import Box, OutputSpec, VerificationProblem

D = torch.float64


def _problem(seed: int, q: float):
    """A single-row clause and a two-row disjunction on a 3-output net over [-1, 1]², the
    thresholds at quantile ``q`` of sampled row values (some sat, some unsat)."""
    g = random_mlp(seed, (2, 8, 8, 3)).to(dtype=D)
    x = torch.rand(4000, 2, dtype=D, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    with torch.no_grad():
        v = g(x)
    C = torch.tensor([[[1.0, -1.0, 0.0], [0.0, -1.0, 1.0], [1.0, 0.0, -1.0]]], dtype=D)
    t = torch.quantile(torch.einsum("rn,bn->br", C[0], v), q, dim=0)
    spec = OutputSpec(C, -t.unsqueeze(0), ((0,), (1, 2)))
    return VerificationProblem(g, Box(-torch.ones(1, 2, dtype=D), torch.ones(1, 2, dtype=D)),
                               spec)


def _milp(p: VerificationProblem, check) -> str:
    inter = intermediate_bounds(p.graph, p.input_set)
    m = milp_decide(p.graph, p.input_set.lower, p.input_set.upper, p.output_spec, inter,
                    Deadline.after(20.0))
    if m.status == "candidate":
        return "falsified" if check(torch.as_tensor(m.x).reshape(1, -1)) is not None else "unknown"
    return m.status


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), q=st.floats(0.05, 0.6))
def test_agrees_with_milp_and_a_grid(seed, q):
    p = _problem(seed, q)

    def check(x):
        return confirm(p, x.reshape(1, 2), None, p.graph)

    answers, worst = set(), []
    for refine, trees, share, heur, dt in ((True, True, 1.0, "fsb", "float32"),
                                           (False, False, 1.0, "babsr", "float64"),
                                           (True, True, 0.3, "fsb", "float64")):
        cfg = BaBConfig(timeout_s=20.0, attack_every=0, refine_intermediate=refine,
                        clause_trees=trees, milp_leaf_unstable=0, refine_share=share,
                        heuristic=heur, search_dtype=dt, root_alpha_iters=5)
        root = root_bounds(p, intermediate_bounds(p.graph, p.input_set), cfg, Deadline.after(20))
        out = relu_bab(p, root, cfg, Deadline.after(20.0), check)
        if out.status == "falsified":
            assert check(out.counterexample.x.reshape(1, -1)) is not None
        answers.add(out.status)
        worst.append(out.stats["open_lower"])
    answers.add(_milp(p, check))
    answers -= {"timeout", "unknown"}
    assert len(answers) <= 1, answers
    gmin = grid_min(p.graph, [-1.0, -1.0], [1.0, 1.0], p.output_spec)
    if "verified" in answers:
        assert gmin > -1e-9
    if gmin < -1e-6:
        assert "verified" not in answers
    # the lowest open bound the search reports is a lower bound of the margin
    assert all(w <= gmin + 1e-9 for w in worst), (worst, gmin)


def test_milp_leaves_decide_small_subdomains():
    """With MILP leaves on, every verdict still agrees with the grid."""
    for seed in (1, 2, 3):
        p = _problem(seed, 0.02)
        cfg = VerifyConfig(timeout_s=20.0, attack=None, complete="bab",
                           bab=BaBConfig(timeout_s=20.0, branching="relu", milp_leaf_unstable=4))
        r = verify(p, cfg)
        gmin = grid_min(p.graph, [-1.0, -1.0], [1.0, 1.0], p.output_spec)
        if r.verdict == Verdict.VERIFIED:
            assert gmin > -1e-9
        if gmin < -1e-6:
            assert r.verdict != Verdict.VERIFIED


@pytest.mark.parametrize("share, pause_s", [(-1.0, 1e-9), (1.0, 1e-9), (1.0, 0.02)])
def test_fsb_pause_restart_or_go_on_agrees_with_the_grid(monkeypatch, share, pause_s):
    """FSB paused after ``fsb_restart_s``: restarted from the root with BaBSR (the last-layer
    share exceeded: ``share`` -1) or searching on from its paused queue (``share`` 1: never
    exceeded; paused before the first step or, at 0.02 s, possibly between steps). Either way
    the verdicts agree with the grid and counterexamples are re-checked."""
    monkeypatch.setattr(relu_split, "LAST_LAYER_SHARE", share)
    decided = set()
    for seed, q, slack in ((1, 0.0, 0.05), (2, 0.3, 0.0), (3, 0.0, 0.05), (4, 0.5, 0.0)):
        p = _problem(seed, q)
        spec = p.output_spec
        p = VerificationProblem(p.graph, p.input_set,
                                OutputSpec(spec.C, spec.d + slack, spec.clauses))

        def check(x, p=p):
            return confirm(p, x.reshape(1, 2), None, p.graph)

        cfg = BaBConfig(timeout_s=20.0, attack_every=0, fsb_restart_s=pause_s, root_alpha_iters=5)
        root = root_bounds(p, intermediate_bounds(p.graph, p.input_set), cfg, Deadline.after(20))
        out = relu_bab(p, root, cfg, Deadline.after(20.0), check)
        if out.stats.get("open_clauses") is None:  # proved at the root: no search
            continue
        if share < 0:
            assert out.stats["fsb_phase"]["domains"] == 1  # nothing bounded before the restart
        else:  # (a search left with stuck subdomains before the pause restarts too)
            assert "fsb_phase" not in out.stats or out.stats["fsb_phase"]["stuck"] > 0
        gmin = grid_min(p.graph, [-1.0, -1.0], [1.0, 1.0], p.output_spec)
        if out.status == "verified":
            assert gmin > -1e-9
        if out.status == "falsified":
            assert check(out.counterexample.x.reshape(1, -1)) is not None
        decided.add(out.status)
    assert decided == {"verified", "falsified"}


def test_last_layer_bias_reads_the_split_counts():
    assert relu_split._last_layer_bias({"split_layers": [10, 20, 31]})  # 31 of 61
    assert not relu_split._last_layer_bias({"split_layers": [10, 20, 30]})
    assert not relu_split._last_layer_bias({})  # no split yet
