"""BaB (input and ReLU splitting) and MILP: known answers and mutual agreement."""

from __future__ import annotations

import math

import pytest
import torch
from complete_fixtures import abs_net, grid_min, random_mlp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nncert.attacks import confirm
from nncert.clock import Deadline
from nncert.complete import bab, branching
from nncert.complete import relu_net as rn
from nncert.specs import Box, OutputSpec, VerificationProblem


def _setup(graph, lo, hi, C, d):
    lo = torch.tensor([lo], dtype=torch.float64)
    hi = torch.tensor([hi], dtype=torch.float64)
    spec = OutputSpec.conjunction(torch.tensor([C], dtype=torch.float64),
                                  torch.tensor(d, dtype=torch.float64))
    net = rn.extract_relu_net(graph).to(torch.float64)
    problem = VerificationProblem(graph.to(dtype=torch.float64), Box(lo, hi), spec)

    def check(x):
        return confirm(problem, x.reshape(1, *graph.input_shape), None, graph)

    return net, lo, hi, spec, check


def _engine_relu(p: VerificationProblem, cfg, end, check) -> str:
    """ReLU-split BaB on the bound engine (complete/relu_split.py) from CROWN's root."""
    from nncert.bounds.crown import intermediate_bounds
    from nncert.complete.relu_split import relu_bab, root_bounds

    root = root_bounds(p, intermediate_bounds(p.graph, p.input_set), cfg, end)
    return relu_bab(p, root, cfg, end, check).status


def _decide_all(graph, lo, hi, C, d, timeout=20.0):
    net, lo, hi, spec, check = _setup(graph, lo, hi, C, d)
    cfg = bab.BaBConfig(timeout_s=timeout, heuristic="babsr", attack_every=0)
    end = Deadline.after(timeout)
    a = bab.input_bab(net, lo, hi, spec, cfg, end, check).status
    p = VerificationProblem(graph.to(dtype=torch.float64), Box(lo, hi), spec)
    r = _engine_relu(p, cfg, end, check)
    f = _engine_relu(p, bab.BaBConfig(timeout_s=timeout, heuristic="fsb"), end, check)
    from nncert.bounds.crown import intermediate_bounds
    from nncert.complete.milp_graph import milp_decide

    m = milp_decide(p.graph, lo, hi, spec, intermediate_bounds(p.graph, p.input_set), end)
    ms = m.status
    if ms == "candidate":
        ms = "falsified" if check(m.x) is not None else "unknown"
    return a, r, f, ms, spec


def test_extract_matches_graph():
    g = random_mlp(3, (4, 6, 5, 3))
    net = rn.extract_relu_net(g)
    x = torch.rand(7, 4)
    assert torch.allclose(net.forward(x), g(x), atol=1e-6)


def test_extract_rejects_non_chains():
    from nncert.models.zoo import random_graph

    assert rn.extract_relu_net(random_graph("residual")) is None
    assert rn.extract_relu_net(random_graph("sigmoid")) is None


def test_known_answers_abs():
    g = abs_net()
    # |x| ≥ 0 on [-1, 1]: "|x| > -0.1" holds; "|x| > 0.5" fails at x = 0
    for d, want in ((0.1, "verified"), (-0.5, "falsified")):
        a, r, f, m, _ = _decide_all(g, [-1.0], [1.0], [[1.0]], [d])
        assert (a, r, f, m) == (want, want, want, want)


def test_bounds_are_sound_on_samples():
    g = random_mlp(1, (3, 10, 10, 2))
    net = rn.extract_relu_net(g).to(torch.float64)
    lo = torch.tensor([[-1.0, -0.5, 0.0]], dtype=torch.float64)
    hi = torch.tensor([[1.0, 0.5, 0.3]], dtype=torch.float64)
    x = lo + torch.rand(5000, 3, dtype=torch.float64) * (hi - lo)
    z = net.pre_activations(x)
    for inter in (rn.forward_bounds(net, lo, hi), rn.crown_intermediate(net, lo, hi)):
        for (zl, u), zk in zip(inter, z):
            assert bool((zk >= zl - 1e-9).all()) and bool((zk <= u + 1e-9).all())
    C = torch.tensor([[[1.0, -1.0]]], dtype=torch.float64)
    d = torch.zeros(1, 1, dtype=torch.float64)
    inter = rn.crown_intermediate(net, lo, hi)
    lb, *_ = rn.optimize_spec_bound(net, C, d, inter, lo, hi, iters=10)
    y = net.forward(x)
    assert float((y[:, 0] - y[:, 1]).min()) >= float(lb) - 1e-9


def _split_candidate(seed: int, widths, layer: int):
    """A random net on the box [-1, 1]^n, its CROWN bounds, and an unstable neuron of
    ``layer``."""
    net = rn.extract_relu_net(random_mlp(seed, widths)).to(torch.float64)
    lo = -torch.ones(1, widths[0], dtype=torch.float64)
    hi = torch.ones(1, widths[0], dtype=torch.float64)
    inter = rn.crown_intermediate(net, lo, hi)
    zl, u = inter[layer]
    return net, lo, hi, inter, int(((zl < 0) & (u > 0)).float().argmax())


def test_beta_split_bounds_sound():
    """With a ReLU split, the optimised bound is sound on the sub-domain's samples."""
    net, lo, hi, inter, j = _split_candidate(5, (2, 8, 8, 1), 1)
    x = lo + torch.rand(20000, 2, dtype=torch.float64) * (hi - lo)
    z1 = net.pre_activations(x)[1][:, j]
    y = net.forward(x)[:, 0]
    C = torch.ones(1, 1, 1, dtype=torch.float64)
    d = torch.zeros(1, 1, dtype=torch.float64)
    for sign in (1, -1):
        splits = [torch.zeros(1, 8, dtype=torch.int8) for _ in range(2)]
        splits[1][0, j] = sign
        clipped = rn.clip_by_splits(inter, splits)
        lb, *_ = rn.optimize_spec_bound(net, C, d, clipped, lo, hi, splits, iters=30)
        inside = z1 >= 0 if sign > 0 else z1 <= 0
        if bool(inside.any()):
            assert float(y[inside].min()) >= float(lb) - 1e-9


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
    one big box (the dense pass) must both contain every sampled pre-activation; children's
    bounds given the parent's as prior are no looser than the parent's."""
    g = random_mlp(7, (3, 12, 12, 12, 2))
    net = rn.extract_relu_net(g).to(torch.float64)
    gen = torch.Generator().manual_seed(0)
    lo = torch.rand(64, 3, generator=gen, dtype=torch.float64) * 2 - 1
    hi = lo + torch.rand(64, 3, generator=gen, dtype=torch.float64) * 0.2
    for blo, bhi in ((lo, hi), (-torch.ones(1, 3, dtype=torch.float64),
                               torch.ones(1, 3, dtype=torch.float64))):
        inter = rn.crown_intermediate(net, blo, bhi, fwd=rn.forward_bounds(net, blo, bhi))
        t = torch.rand(200, *blo.shape, generator=gen, dtype=torch.float64)
        x = (blo + t * (bhi - blo)).reshape(-1, 3)
        z = net.pre_activations(x)
        for (zl, u), zk in zip(inter, z):
            zk = zk.reshape(200, blo.shape[0], -1)
            assert bool((zk >= zl - 1e-9).all()) and bool((zk <= u + 1e-9).all())
    parent = rn.crown_intermediate(net, lo, hi)
    mid = (lo + hi) / 2
    kid = rn.crown_intermediate(net, lo, mid, fwd=parent)
    for (pl, pu), (kl, ku) in zip(parent, kid):
        assert bool((kl >= pl - 1e-12).all()) and bool((ku <= pu + 1e-12).all())


def test_disjunction_lower_is_sound_and_beats_the_best_row():
    """max(x, −x) ≥ 0 on [−1, 1]: each row alone has lower bound −1; the λ = ½ combination
    proves the clause. On random nets the bound stays below the sampled clause values."""
    A = torch.tensor([[[1.0], [-1.0]]], dtype=torch.float64)
    lower = torch.tensor([[-1.0, -1.0]], dtype=torch.float64)
    lo, hi = -torch.ones(1, 1, dtype=torch.float64), torch.ones(1, 1, dtype=torch.float64)
    assert float(rn.disjunction_lower(A, lower, lo, hi, (0, 1))) >= -1e-9
    g = random_mlp(3, (2, 10, 10, 3))
    net = rn.extract_relu_net(g).to(torch.float64)
    lo = torch.tensor([[-1.0, -1.0], [0.0, 0.2]], dtype=torch.float64)
    hi = torch.tensor([[1.0, 1.0], [0.5, 0.4]], dtype=torch.float64)
    C = torch.tensor([[[1.0, -1.0, 0.0], [0.0, 1.0, -1.0], [-1.0, 0.0, 1.0]]],
                     dtype=torch.float64).expand(2, -1, -1)
    d = torch.full((2, 3), 0.1, dtype=torch.float64)
    inter = rn.crown_intermediate(net, lo, hi)
    lb, A_x, _ = rn.spec_bound(net, C, d, inter, lo, hi)
    dl = rn.disjunction_lower(A_x, lb, lo, hi, (0, 1, 2))
    assert bool((dl >= lb.amax(-1) - 1e-12).all())
    for b in range(2):
        x = lo[b] + torch.rand(20000, 2, dtype=torch.float64) * (hi[b] - lo[b])
        rows = net.forward(x) @ C[b].T + d[b]
        assert float(rows.amax(-1).min()) >= float(dl[b]) - 1e-9


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
    y = net.forward(x)
    t = float((y[:, 0] - y[:, 1]).min()) - gap
    return OutputSpec.conjunction(torch.tensor([[[1.0, -1.0]]], dtype=torch.float64),
                                  torch.tensor([-t], dtype=torch.float64))


def test_queue_cap_returns_unknown():
    g = random_mlp(2, (2, 16, 16, 2))
    net, lo, hi, spec, check = _setup(g, [-1.0, -1.0], [1.0, 1.0], [[1.0, -1.0]], [0.0])
    # a threshold right at the sampled minimum: hard; a tiny queue cap must stop the search
    spec = _threshold_below_samples(net, 1e-7)
    cfg = bab.BaBConfig(max_domains=2, batch_size=4)
    out = bab.input_bab(net, lo, hi, spec, cfg, Deadline.after(30), check)
    assert out.status in ("unknown", "verified", "falsified")
    if out.status == "falsified":
        assert out.counterexample is not None


def test_float32_search_returns_sound_float64_bounds():
    """The alpha/beta search may run on a float32 copy; the bounds returned are float64 and
    sound on samples of the split sub-domain."""
    net, lo, hi, inter, j = _split_candidate(11, (2, 16, 16, 1), 0)
    splits = [torch.zeros(1, 16, dtype=torch.int8) for _ in range(2)]
    splits[0][0, j] = 1
    clipped = rn.crown_intermediate(net, lo, hi, splits, fwd=rn.clip_by_splits(inter, splits))
    C = torch.ones(1, 1, 1, dtype=torch.float64)
    d = torch.zeros(1, 1, dtype=torch.float64)
    res = rn.optimize_spec_bound(net, C, d, clipped, lo, hi, splits, iters=20,
                                 search_net=net.to(torch.float32))
    assert res.lower.dtype == torch.float64
    x = lo + torch.rand(20000, 2, dtype=torch.float64) * (hi - lo)
    inside = net.pre_activations(x)[0][:, j] >= 0
    y = net.forward(x)[inside, 0]
    assert float(y.min()) >= float(res.lower) - 1e-9


def test_refined_child_bounds_are_sound_and_no_looser():
    """A ReLU-split child's intermediate bounds (parent's clipped, layers after the split
    back-substituted again) contain every sampled pre-activation of the child's region and are
    never looser than the parent's."""
    net, lo, hi, parent, j = _split_candidate(3, (3, 12, 12, 12, 2), 0)
    x = lo + torch.rand(20000, 3, dtype=torch.float64) * (hi - lo)
    pre = net.pre_activations(x)
    for sign in (1, -1):
        splits = [torch.zeros(1, 12, dtype=torch.int8) for _ in range(3)]
        splits[0][0, j] = sign
        kid = rn.crown_intermediate(net, lo.expand(1, -1), hi.expand(1, -1), splits,
                                    fwd=rn.clip_by_splits(parent, splits),
                                    after=torch.zeros(1, dtype=torch.long))
        inside = pre[0][:, j] >= 0 if sign > 0 else pre[0][:, j] <= 0
        for (kl, ku), (pl, pu), z in zip(kid, parent, pre):
            assert bool((kl >= pl - 1e-12).all() and (ku <= pu + 1e-12).all())
            zi = z[inside]
            assert bool((zi >= kl - 1e-9).all() and (zi <= ku + 1e-9).all())


def test_refining_only_some_neurons_is_sound_and_keeps_the_others():
    """Re-bounding only a subset of a child's neurons (``only``) keeps every other neuron's
    parent bounds, and the refined ones contain every sampled pre-activation."""
    net, lo, hi, parent, j = _split_candidate(3, (3, 12, 12, 12, 2), 0)
    x = lo + torch.rand(20000, 3, dtype=torch.float64) * (hi - lo)
    pre = net.pre_activations(x)
    splits = [torch.zeros(1, 12, dtype=torch.int8) for _ in range(3)]
    splits[0][0, j] = 1
    clipped = rn.clip_by_splits(parent, splits)
    only = [torch.arange(12).reshape(1, -1) % 3 == 0 for _ in range(3)]
    kid = rn.crown_intermediate(net, lo.expand(1, -1), hi.expand(1, -1), splits, fwd=clipped,
                                after=torch.zeros(1, dtype=torch.long), only=only)
    full = rn.crown_intermediate(net, lo.expand(1, -1), hi.expand(1, -1), splits, fwd=clipped,
                                 after=torch.zeros(1, dtype=torch.long))
    inside = pre[0][:, j] >= 0
    for (kl, ku), (pl, pu), z in zip(kid, clipped, pre):
        zi = z[inside]
        assert bool((zi >= kl - 1e-9).all() and (zi <= ku + 1e-9).all())
        assert bool((kl >= pl - 1e-12).all() and (ku <= pu + 1e-12).all())
    # layer 1 (its inputs' bounds are the same in both): the chosen neurons as in the full
    # refinement, the others no tighter, and some of them looser
    (kl, ku), (fl, fu), sel = kid[1], full[1], only[1]
    assert torch.allclose(kl[sel], fl[sel]) and torch.allclose(ku[sel], fu[sel])
    assert bool((kl[~sel] <= fl[~sel] + 1e-12).all() and (ku[~sel] >= fu[~sel] - 1e-12).all())
    assert bool(((kl < fl - 1e-9) | (ku > fu + 1e-9)).any())


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
    """Input BaB starts a child's alpha search from its parent's slopes (stored in float16):
    the child's bound stays below every sampled output of the child box."""
    g = random_mlp(11, (3, 16, 16, 2))
    net = rn.extract_relu_net(g).to(torch.float64)
    lo = torch.full((1, 3), -1.0, dtype=torch.float64)
    hi = torch.full((1, 3), 1.0, dtype=torch.float64)
    C = torch.tensor([[[1.0, -1.0]]], dtype=torch.float64)
    d = torch.zeros(1, 1, dtype=torch.float64)
    inter = rn.crown_intermediate(net, lo, hi, fwd=rn.forward_bounds(net, lo, hi))
    parent = rn.optimize_spec_bound(net, C, d, inter, lo, hi, iters=30, lr_alpha=0.3)
    warm = [a.to(torch.float16).to(torch.float64) for a in parent.alphas]
    kid = Box(lo, hi).split(torch.tensor([0]))
    klo, khi = kid.lo[:1], kid.hi[:1]
    kinter = rn.crown_intermediate(net, klo, khi, fwd=inter)
    lb, *_ = rn.optimize_spec_bound(net, C, d, kinter, klo, khi, iters=3, lr_alpha=0.3,
                                    alphas=warm)
    x = klo + torch.rand(20000, 3, dtype=torch.float64) * (khi - klo)
    y = net.forward(x)
    assert float((y[:, 0] - y[:, 1]).min()) >= float(lb) - 1e-9


@pytest.mark.parametrize("search32", [False, True])
def test_proved_problems_leave_the_search_without_changing_the_others(search32):
    """Problems proved during the alpha search stop being searched: the bounds of the others
    are those of searching them alone, and every bound is sound on samples of its box."""
    net = rn.extract_relu_net(random_mlp(21, (2, 16, 16, 1))).to(torch.float64)
    g = torch.Generator().manual_seed(0)
    B = 12
    centre = torch.rand(B, 2, generator=g, dtype=torch.float64) * 1.6 - 0.8
    lo, hi = centre - 0.2, centre + 0.2
    inter = rn.crown_intermediate(net, lo, hi)
    C = torch.ones(B, 1, 1, dtype=torch.float64)
    x = lo.unsqueeze(1) + torch.rand(B, 4000, 2, generator=g, dtype=torch.float64) * 0.4
    y_min = net.forward(x.reshape(-1, 2)).reshape(B, -1).amin(-1)
    crown, *_ = rn.spec_bound(net, C, torch.zeros(B, 1, dtype=torch.float64), inter, lo, hi)
    # problems 0, 3, 6, ... are proved by CROWN's slopes, 2, 5, ... by 15 alpha steps (their
    # offsets lie 10% above the gap between CROWN's bound and alpha-CROWN's), 1, 4, ... never
    kw = dict(iters=15, search_net=net.to(torch.float32) if search32 else None)
    zero = torch.zeros(B, 1, dtype=torch.float64)
    tight = rn.optimize_spec_bound(net, C, zero, inter, lo, hi, **kw).lower[:, 0]
    group = torch.arange(B) % 3
    d = torch.where(group == 0, -crown[:, 0] + 1e-3,
                    torch.where(group == 1, -y_min - 0.05, -(0.1 * crown[:, 0] + 0.9 * tight)))
    res = rn.optimize_spec_bound(net, C, d.unsqueeze(-1), inter, lo, hi, **kw)
    assert bool((res.lower[group != 1] > 0).all())
    assert bool((res.lower[:, 0] <= y_min + d + 1e-9).all())  # sound on the samples
    one = (group == 1).nonzero()[:, 0]
    alone = rn.optimize_spec_bound(net, C[one], d[one].unsqueeze(-1),
                                   [(zl[one], u[one]) for zl, u in inter], lo[one], hi[one],
                                   **kw)
    assert torch.allclose(res.lower[one], alone.lower, atol=1e-6)
    assert all(torch.allclose(a[one], b, atol=1e-5) for a, b in zip(res.alphas, alone.alphas))
