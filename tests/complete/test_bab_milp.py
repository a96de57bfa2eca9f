"""BaB (input and ReLU splitting) and MILP: known answers and mutual agreement."""

from __future__ import annotations

import math

import pytest
import torch
from complete_fixtures import abs_net, grid_min, random_mlp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nncert.attacks import confirm
from nncert.bounds.boxes import BoxConfig, bound_boxes
from nncert.bounds.crown import intermediate_bounds
from nncert.bounds.subdomains import relu_inputs
from nncert.clock import Deadline, DeadlineExceededError
from nncert.complete import bab, branching
from nncert.specs import Box, OutputSpec, VerificationProblem


def _setup(graph, lo, hi, C, d):
    lo = torch.tensor([lo], dtype=torch.float64)
    hi = torch.tensor([hi], dtype=torch.float64)
    spec = OutputSpec.conjunction(torch.tensor([C], dtype=torch.float64),
                                  torch.tensor(d, dtype=torch.float64))
    problem = VerificationProblem(graph.to(dtype=torch.float64), Box(lo, hi), spec)

    def check(x):
        return confirm(problem, x.reshape(1, *graph.input_shape), None, graph)

    return problem.graph, lo, hi, spec, check


def _engine_relu(p: VerificationProblem, cfg, end, check) -> str:
    """ReLU-split BaB on the bound engine (complete/relu_split.py) from CROWN's root."""
    from nncert.bounds.crown import intermediate_bounds
    from nncert.complete.relu_split import relu_bab, root_bounds

    try:
        root = root_bounds(p, intermediate_bounds(p.graph, p.input_set), cfg, end)
    except DeadlineExceededError:
        return "timeout"
    return relu_bab(p, root, cfg, end, check).status


def _decide_all(graph, lo, hi, C, d, timeout=60.0):
    """Each search has its own deadline (far: the searches end by their domain caps, so the
    answers do not depend on the machine's load) and its own cap of domains."""
    net, lo, hi, spec, check = _setup(graph, lo, hi, C, d)
    cfg = bab.BaBConfig(timeout_s=timeout, heuristic="babsr", attack_every=0, max_domains=4000)
    a = bab.input_bab(net, Box(lo, hi), spec, cfg, Deadline.after(timeout), check).status
    p = VerificationProblem(graph.to(dtype=torch.float64), Box(lo, hi), spec)
    r = _engine_relu(p, cfg, Deadline.after(timeout), check)
    f = _engine_relu(p, bab.BaBConfig(timeout_s=timeout, heuristic="fsb", max_domains=4000),
                     Deadline.after(timeout), check)
    from nncert.bounds.crown import intermediate_bounds
    from nncert.complete.milp_graph import milp_decide

    m = milp_decide(p.graph, lo, hi, spec, intermediate_bounds(p.graph, p.input_set),
                    Deadline.after(timeout))
    ms = m.status
    if ms == "candidate":
        ms = "falsified" if check(m.x) is not None else "unknown"
    return a, r, f, ms, spec


def test_known_answers_abs():
    g = abs_net()
    # |x| ≥ 0 on [-1, 1]: "|x| > -0.1" holds; "|x| > 0.5" fails at x = 0
    for d, want in ((0.1, "verified"), (-0.5, "falsified")):
        a, r, f, m, _ = _decide_all(g, [-1.0], [1.0], [[1.0]], [d])
        assert (a, r, f, m) == (want, want, want, want)


def _sampled(g, lo, hi, n, gen=None):
    """``n`` points of each box (B, n_in) and every node's values there, (n, B, *shape)."""
    t = torch.rand(n, *lo.shape, generator=gen, dtype=torch.float64)
    x = lo + t * (hi - lo)
    vals = g.forward_all(x.reshape(-1, *g.input_shape))
    return x, {k: v.reshape(n, lo.shape[0], *v.shape[1:]) for k, v in vals.items()}


def test_bounds_are_sound_on_samples():
    """Input-split box bounds (CROWN intermediate bounds, alpha on the rows) contain every
    sampled value."""
    g = random_mlp(1, (3, 10, 10, 2)).to(dtype=torch.float64)
    lo = torch.tensor([[-1.0, -0.5, 0.0]], dtype=torch.float64)
    hi = torch.tensor([[1.0, 0.5, 0.3]], dtype=torch.float64)
    spec = OutputSpec.conjunction(torch.tensor([[[1.0, -1.0]]], dtype=torch.float64))
    b = bound_boxes(g, Box(lo, hi), spec, BoxConfig(alpha_iters=10))
    _, vals = _sampled(g, lo, hi, 5000)
    for k, iv in b.intermediate.items():
        assert bool((vals[k] >= iv.lower - 1e-9).all()) and bool((vals[k] <= iv.upper + 1e-9).all())
    y = vals[g.output_name]
    assert float((y[..., 0] - y[..., 1]).min()) >= float(b.lower) - 1e-9
    assert bool(b.optimized.all())


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), q=st.floats(0.02, 0.98))
def test_bab_and_milp_agree(seed, q):
    """Random 2-input nets; the threshold is a quantile of sampled margins, so both answers
    occur. Input BaB, ReLU BaB (BaBSR and FSB) and MILP must not contradict each other, nor
    a dense grid."""
    g = random_mlp(seed)
    x = torch.rand(4000, 2, dtype=torch.float64) * 2 - 1
    with torch.no_grad():
        v = g.to(dtype=torch.float64)(x)
    diff = v[:, 0] - v[:, 1]
    t = float(torch.quantile(diff, q))
    a, r, f, m, spec = _decide_all(g, [-1.0, -1.0], [1.0, 1.0], [[1.0, -1.0]], [-t])
    _assert_consistent({a, r, f, m}, g, spec)


def _assert_consistent(answers: set[str], g, spec) -> None:
    """Decisive answers agree with each other and with a dense grid on [-1, 1]²."""
    answers = answers - {"timeout", "unknown"}
    assert len(answers) <= 1, answers
    gmin = grid_min(g, [-1.0, -1.0], [1.0, 1.0], spec)
    if "verified" in answers:
        assert gmin > -1e-9
    if gmin < -1e-6:
        assert "verified" not in answers


def test_intermediate_bounds_on_many_small_boxes_are_sound_and_match_parents():
    """Many small boxes (few unstable neurons each: the gathered per-(box, neuron) pass) and
    one big box (every neuron) must both contain every sampled pre-activation; children's
    bounds given the parent's as prior are no looser than the parent's."""
    g = random_mlp(7, (3, 12, 12, 12, 2)).to(dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    lo = torch.rand(64, 3, generator=gen, dtype=torch.float64) * 2 - 1
    hi = lo + torch.rand(64, 3, generator=gen, dtype=torch.float64) * 0.2
    for blo, bhi in ((lo, hi), (-torch.ones(1, 3, dtype=torch.float64),
                               torch.ones(1, 3, dtype=torch.float64))):
        inter = intermediate_bounds(g, Box(blo, bhi))
        _, vals = _sampled(g, blo, bhi, 200, gen)
        for z in relu_inputs(g).values():
            assert bool((vals[z] >= inter[z].lower - 1e-9).all())
            assert bool((vals[z] <= inter[z].upper + 1e-9).all())
    parent = intermediate_bounds(g, Box(lo, hi))
    kid = intermediate_bounds(g, Box(lo, (lo + hi) / 2), prior=parent)
    for z in relu_inputs(g).values():
        assert bool((kid[z].lower >= parent[z].lower).all())
        assert bool((kid[z].upper <= parent[z].upper).all())


def test_clause_bounds_of_boxes_are_sound_and_beat_the_best_row():
    """max(x, −x) ≥ 0 on [−1, 1]: each row alone has lower bound −1; the λ = ½ combination
    proves the clause. On random nets the clause bound of ``bound_boxes`` stays below the
    sampled clause values and above the best row's bound."""
    from nncert.bounds.clauses import disjunction_lower

    A = torch.tensor([[[1.0], [-1.0]]], dtype=torch.float64)
    one = Box(-torch.ones(1, 1, dtype=torch.float64), torch.ones(1, 1, dtype=torch.float64))
    zero = torch.zeros(1, 2, dtype=torch.float64)
    assert float(disjunction_lower(one, A, zero, (0, 1))) >= -1e-9
    g = random_mlp(3, (2, 10, 10, 3)).to(dtype=torch.float64)
    lo = torch.tensor([[-1.0, -1.0], [0.0, 0.2]], dtype=torch.float64)
    hi = torch.tensor([[1.0, 1.0], [0.5, 0.4]], dtype=torch.float64)
    C = torch.tensor([[[1.0, -1.0, 0.0], [0.0, 1.0, -1.0], [-1.0, 0.0, 1.0]]],
                     dtype=torch.float64)
    spec = OutputSpec(C, torch.full((1, 3), 0.1, dtype=torch.float64), ((0, 1, 2),))
    _, vals = _sampled(g, lo, hi, 20000)
    rows = vals[g.output_name] @ C[0].T + 0.1
    for iters in (0, 5):  # with alpha steps: per row the coefficients of its best pass
        b = bound_boxes(g, Box(lo, hi), spec, BoxConfig(alpha_iters=iters))
        assert bool((b.clauses[:, 0] >= b.lower.amax(-1) - 1e-12).all())
        assert bool((rows.amax(-1).amin(0) >= b.clauses[:, 0] - 1e-9).all())
        assert bool((rows.amin(0) >= b.lower - 1e-9).all())


def test_widest_input_dims_uses_first_layer_reach():
    lo, hi = torch.zeros(1, 3), torch.tensor([[1.0, 0.5, 2.0]])
    assert int(branching.widest_input_dims(lo, hi, torch.tensor([1.0, 10.0, 1.0]))[0]) == 1
    assert int(branching.widest_input_dims(lo, hi, torch.zeros(3))[0]) == 2


def test_root_alpha_intermediate_bounds_are_sound_and_tighter():
    """The chain path's root (verify._root): when CROWN does not prove the property, every
    ReLU input's bounds are alpha-optimised too; they stay sound and get tighter."""
    from nncert.bounds.crown import intermediate_bounds
    from nncert.bounds.subdomains import relu_inputs
    from nncert.complete.verify import VerifyConfig, _root

    g = random_mlp(11, (4, 16, 16, 16, 3)).to(dtype=torch.float64)
    lo, hi = -torch.ones(1, 4, dtype=torch.float64), torch.ones(1, 4, dtype=torch.float64)
    spec = OutputSpec.conjunction(torch.tensor([[[1.0, -1.0, 0.0]]], dtype=torch.float64),
                                  torch.tensor([[-100.0]], dtype=torch.float64))
    p = VerificationProblem(g, Box(lo, hi), spec)
    crown = intermediate_bounds(g, p.input_set)
    root = _root(p, VerifyConfig(), Deadline.after(60))
    x = lo + torch.rand(20000, 4, dtype=torch.float64) * (hi - lo)
    vals = g.forward_all(x)
    tighter = 0.0
    for z in relu_inputs(g).values():
        c, o = crown[z], root.intermediate[z]
        assert bool((o.lower >= c.lower).all()) and bool((o.upper <= c.upper).all())
        assert bool((vals[z] >= o.lower - 1e-9).all()) and bool((vals[z] <= o.upper + 1e-9).all())
        tighter += float((c.upper - c.lower).sum() - (o.upper - o.lower).sum())
    assert tighter > 0


def test_bab_config_rejects_unknown_choices():
    from nncert.errors import ConfigError

    for kw in ({"input_heuristic": "widest"}, {"heuristic": "x"}, {"branching": "both"},
               {"refine_share": 1.5}, {"refine_share": -0.1}):
        with pytest.raises(ConfigError, match="BaBConfig"):
            bab.BaBConfig(**kw)


def test_input_split_dims_prefers_influential_dim():
    spec = OutputSpec.conjunction(torch.tensor([[[1.0]]]))
    lb = torch.tensor([[-1.0]])
    A = torch.tensor([[[0.1, 5.0, 0.0]]])
    lo, hi = torch.zeros(1, 3), torch.ones(1, 3)
    assert int(branching.input_split_dims(spec, lb, A, lo, hi)[0]) == 1


def _threshold_below_samples(net, gap: float) -> OutputSpec:
    """``y0 − y1 > t`` with t ``gap`` below the minimum over 20,000 samples of [−1, 1]²: hard."""
    x = torch.rand(20000, 2, dtype=torch.float64) * 2 - 1
    y = net(x)
    t = float((y[:, 0] - y[:, 1]).min()) - gap
    return OutputSpec.conjunction(torch.tensor([[[1.0, -1.0]]], dtype=torch.float64),
                                  torch.tensor([-t], dtype=torch.float64))


def test_queue_cap_returns_unknown():
    g = random_mlp(2, (2, 16, 16, 2))
    net, lo, hi, spec, check = _setup(g, [-1.0, -1.0], [1.0, 1.0], [[1.0, -1.0]], [0.0])
    # a threshold right at the sampled minimum: hard; a tiny queue cap must stop the search
    spec = _threshold_below_samples(net, 1e-7)
    cfg = bab.BaBConfig(max_domains=2, batch_size=4)
    out = bab.input_bab(net, Box(lo, hi), spec, cfg, Deadline.after(30), check)
    assert out.status in ("unknown", "verified", "falsified")
    if out.status == "falsified":
        assert out.counterexample is not None


def test_top_share_marks_the_highest_positive_scores():
    score = torch.tensor([[0.0, 3.0, 1.0, 2.0, 0.5], [0.0, 0.0, 0.0, 0.0, 0.1]])
    assert branching.top_share(score, 0.5).tolist() == [
        [False, True, False, True, False], [False, False, False, False, True]]
    assert not branching.top_share(torch.zeros(1, 4), 1.0).any()


def test_queue_pops_lowest_first_and_returns_every_row_once():
    q = bab._Queue()
    g = torch.Generator().manual_seed(0)
    seen, pushed = [], 0
    for step in range(30):
        s = torch.rand(int(torch.randint(0, 200, (1,), generator=g)), generator=g,
                       dtype=torch.float64)
        q.push(score=s, tag=torch.arange(step * 1000, step * 1000 + len(s)),
               vec=s.unsqueeze(-1).repeat(1, 3))
        pushed += len(s)
        if step % 3 == 0 and q.n:
            lowest = q.min_score()
            d = q.pop(50)
            assert float(d["score"].min()) == lowest
            assert torch.equal(d["vec"][:, 0], d["score"])
            seen += d["tag"].tolist()
    rest = q.pop(q.n + 5)
    seen += rest["tag"].tolist()
    assert q.n == 0 and q.min_score() == math.inf
    assert len(seen) == len(set(seen)) == pushed


def test_input_split_children_warm_started_from_parent_slopes_are_sound():
    """Input BaB starts a child's alpha search from its parent's slopes (stored in float16),
    its parent's bounds as prior: the child's bounds stay below every sampled value of the
    child box and are no looser than the parent's."""
    g = random_mlp(11, (3, 16, 16, 2)).to(dtype=torch.float64)
    lo = torch.full((1, 3), -1.0, dtype=torch.float64)
    hi = torch.full((1, 3), 1.0, dtype=torch.float64)
    spec = OutputSpec.conjunction(torch.tensor([[[1.0, -1.0]]], dtype=torch.float64))
    parent = bound_boxes(g, Box(lo, hi), spec, BoxConfig(alpha_iters=30))
    assert bool(parent.optimized.all())
    warm = {k: v.to(torch.float16) for k, v in parent.slopes.items()}
    kid = Box(lo, hi).split(torch.tensor([0]))
    klo, khi = kid.lo[:1], kid.hi[:1]
    b = bound_boxes(g, Box(klo, khi), spec, BoxConfig(alpha_iters=3), prior=parent.intermediate,
                    warm=warm, warm_has=parent.optimized)
    _, vals = _sampled(g, klo, khi, 20000)
    y = vals[g.output_name]
    assert float((y[..., 0] - y[..., 1]).min()) >= float(b.lower) - 1e-9
    for k, iv in b.intermediate.items():
        assert bool((iv.lower >= parent.intermediate[k].lower).all())
        assert bool((iv.upper <= parent.intermediate[k].upper).all())
        assert bool((vals[k] >= iv.lower - 1e-9).all()) and bool((vals[k] <= iv.upper + 1e-9).all())
