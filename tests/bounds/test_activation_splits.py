"""Splits of general activations (bounds/activation_splits.py, Subdomains.limits): every bound
holds on sampled points of its subdomain, a split never loosens a bound, the Lagrangian of a
limit is exact on a hand case, and split points cut intervals strictly inside."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from nncert.bounds.activation_splits import (
    activation_inputs,
    clip_interval,
    split_candidates,
    split_limits,
    split_points,
    unsplit_limits,
)
from nncert.bounds.alpha_crown import AlphaCrownConfig
from nncert.bounds.core import Interval
from nncert.bounds.subdomains import (
    EngineConfig,
    Subdomains,
    bound_subdomains,
    kept_bounds,
    root_subdomain,
)
from nncert.complete.activation_branching import relaxation_gap, split_gain
from nncert.models import ops
from nncert.models.from_torch import from_torch
from nncert.specs import Box, OutputSpec, VerificationProblem

D = torch.float64
KINDS = ["sigmoid", "tanh", "leaky", "conv_sigmoid", "mixed"]


def _module(kind: str) -> tuple[nn.Module, tuple[int, ...]]:
    if kind == "conv_sigmoid":
        return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Sigmoid(),
                             nn.Conv2d(2, 2, 3, stride=2, padding=1), nn.Sigmoid(), nn.Flatten(),
                             nn.Linear(8, 3)), (1, 4, 4)
    if kind == "mixed":
        return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 8), nn.Tanh(),
                             nn.Linear(8, 3)), (5,)
    act = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "leaky": lambda: nn.LeakyReLU(0.1)}[kind]
    return nn.Sequential(nn.Linear(5, 8), act(), nn.Linear(8, 8), act(), nn.Linear(8, 3)), (5,)


def _problem(kind: str, seed: int, eps: float = 0.4) -> VerificationProblem:
    torch.manual_seed(seed)
    m, shape = _module(kind)
    g = from_torch(m.double(), shape).to(dtype=D)
    x = torch.rand(1, *shape, dtype=D)
    spec = OutputSpec.conjunction(torch.randn(1, 2, 3, dtype=D), torch.randn(1, 2, dtype=D))
    return VerificationProblem(g, Box(x - eps, x + eps), spec)


def _random_limits(g, root: Subdomains, vals: dict, B: int, per_domain: int, seed: int):
    """B subdomains, each with ``per_domain`` splits of random neurons at the median of
    their sampled pre-activation values (so both sides hold samples), random side."""
    gen = torch.Generator().manual_seed(seed)
    lim = {a: v.expand(B, *v.shape[1:]).clone()
           for a, v in unsplit_limits(g, root.intermediate).items()}
    names = list(activation_inputs(g))
    for b in range(B):
        for _ in range(per_domain):
            a = names[int(torch.randint(len(names), (1,), generator=gen))]
            z = vals[activation_inputs(g)[a]].flatten(1)
            j = int(torch.randint(z.shape[1], (1,), generator=gen))
            p = z[:, j].median().reshape(1)
            up, down = split_limits(lim[a][b:b + 1], torch.tensor([0]), torch.tensor([j]), p)
            lim[a][b] = (up if bool(torch.rand(1, generator=gen) < 0.5) else down)[0]
    inter = {k: v[torch.zeros(B, dtype=torch.long)] for k, v in root.intermediate.items()}
    splits = {r: s.expand(B, *s.shape[1:]).clone() for r, s in root.splits.items()}
    for s in splits.values():  # (mixed nets) one random ReLU sign split per subdomain too
        for b in range(B):
            j = int(torch.randint(s[b].numel(), (1,), generator=gen))
            s[b].view(-1)[j] = 1 if bool(torch.rand(1, generator=gen) < 0.5) else -1
    return Subdomains(splits, inter, limits=lim)


def _inside(g, vals: dict, limits: dict, splits: dict) -> torch.Tensor:
    """(N, B) whether sample n satisfies subdomain b's limits and ReLU sign splits."""
    ok = None
    for r, s in splits.items():
        v = vals[g.node(r).inputs[0]].flatten(1).unsqueeze(1)  # (N, 1, n)
        s = s.flatten(1).unsqueeze(0).to(v.dtype)
        good = ((s == 0) | (s * v >= 0)).all(-1)
        ok = good if ok is None else ok & good
    for a, lim in limits.items():
        v = vals[activation_inputs(g)[a]].flatten(1).unsqueeze(1)  # (N, 1, n)
        lo, hi = lim[:, 0].flatten(1).unsqueeze(0), lim[:, 1].flatten(1).unsqueeze(0)
        good = ((v >= lo) & (v <= hi)).all(-1)
        ok = good if ok is None else ok & good
    return ok


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("refine", [True, False])
def test_sound_on_sampled_subdomains(kind, refine):
    p = _problem(kind, 1)
    g, spec = p.graph, p.output_spec
    x = p.input_set.sample(6000, torch.Generator().manual_seed(3))[:, 0]
    vals = g.forward_all(x)
    root = root_subdomain(g, p.input_set)
    doms = _random_limits(g, root, vals, 6, 3, seed=2)
    cfg = EngineConfig(AlphaCrownConfig(iterations=8, early_stop=False, lr_beta=0.5),
                       refine_activation_splits=refine)
    b = bound_subdomains(g, p.input_set, spec.C, spec.d, doms, cfg)
    inside = _inside(g, vals, doms.limits, doms.splits)
    y = spec.expand(1).values(vals[g.output_name].unsqueeze(1))[:, 0]  # (N, R)
    assert int(inside.sum()) > 0  # not vacuous
    for k in range(6):
        pts = inside[:, k]
        if bool(b.empty[k]):
            assert not bool(pts.any())  # only truly empty subdomains are called empty
            continue
        if not bool(pts.any()):
            continue
        assert bool((y[pts] >= b.lower[k] - 1e-8).all())
        for name, iv in b.intermediate.items():
            v = vals[name][pts]
            assert bool((v >= iv.lower[k] - 1e-8).all()) and bool((v <= iv.upper[k] + 1e-8).all())


@pytest.mark.parametrize("kind", KINDS)
def test_a_split_never_loosens_a_bound(kind):
    """Children of the root, split on the widest activation neuron at its split point, with
    the parent's bounds as their start: spec bounds ≥ the parent's, intermediate bounds inside
    the parent's, the split neuron inside its side's limit."""
    p = _problem(kind, 4)
    g, spec = p.graph, p.output_spec
    root = root_subdomain(g, p.input_set)
    root = replace(root, limits=unsplit_limits(g, root.intermediate))
    cfg = EngineConfig(AlphaCrownConfig(iterations=5))
    parent = bound_subdomains(g, p.input_set, spec.C, spec.d, root, cfg)
    a, z = next(iter(activation_inputs(g).items()))
    iv = parent.intermediate[z]
    j = int((iv.upper - iv.lower).flatten(1).argmax(1))
    lo, hi = iv.lower.flatten(1)[:, j], iv.upper.flatten(1)[:, j]
    pt = split_points(g.node(a).op, lo, hi)
    up, down = split_limits(root.limits[a], torch.tensor([0]), torch.tensor([j]), pt)
    two = torch.zeros(2, dtype=torch.long)
    kids = Subdomains({r: s[two] for r, s in root.splits.items()},
                      {k: v[two] for k, v in parent.intermediate.items()},
                      lower=parent.lower[two], limits={**{k: v[two] for k, v in root.limits.items()},
                                                       a: torch.cat([up, down])})
    b = bound_subdomains(g, p.input_set, spec.C, spec.d, kids, cfg)
    assert bool((b.lower >= parent.lower).all())
    for name in kept_bounds(g):
        if name not in b.intermediate:
            continue
        assert bool((b.intermediate[name].lower >= parent.intermediate[name].lower - 1e-12).all())
        assert bool((b.intermediate[name].upper <= parent.intermediate[name].upper + 1e-12).all())
    zz = b.intermediate[z]
    assert float(zz.lower.flatten(1)[0, j]) >= float(pt) - 1e-12
    assert float(zz.upper.flatten(1)[1, j]) <= float(pt) + 1e-12


def _line_graph(width: int = 1):
    """y = LeakyReLU_0.1(x) on one input (``width`` 1), or y = a1 − a2/2 with a1 = a2 =
    LeakyReLU_0.1(x) (``width`` 2)."""
    m = nn.Sequential(nn.Linear(1, width), nn.LeakyReLU(0.1), nn.Linear(width, 1)).double()
    with torch.no_grad():
        m[0].weight.fill_(1.0)
        m[2].weight.copy_(torch.tensor([[1.0, -0.5][:width]]))
        m[0].bias.zero_()
        m[2].bias.zero_()
    return from_torch(m, (1,)).to(dtype=D)


def test_limit_lagrangian_on_a_hand_case():
    """On {x ∈ [−1, 1] : z1 = x ≥ 0.5}, y = a1 − a2/2 = x/2 ≥ 0.25. z1 is clipped to [0.5, 1]
    (a1 = x exactly), a2 keeps its chord a2 ≤ 0.55x + 0.45 on [−1, 1], so CROWN gives
    y ≥ 0.725x − 0.225, −0.95 over the whole box (the interval bound: 0). With the limit's
    multiplier, y ≥ 0.725x − 0.225 − β(x − 0.5), best at β = 0.725: 0.1375 (≤ 0.25, sound)."""
    g = _line_graph(2)
    xs = Box(torch.full((1, 1), -1.0, dtype=D), torch.ones(1, 1, dtype=D))
    C, d = torch.ones(1, 1, 1, dtype=D), torch.zeros(1, 1, dtype=D)
    root = root_subdomain(g, xs)
    lim = torch.tensor([[[0.5, -torch.inf], [torch.inf, torch.inf]]], dtype=D)
    doms = Subdomains({}, root.intermediate, limits={"leakyrelu1": lim})
    plain = bound_subdomains(g, xs, C, d, doms, EngineConfig(AlphaCrownConfig(iterations=0)))
    assert float(plain.lower) == pytest.approx(0.0, abs=1e-12)
    opt = EngineConfig(AlphaCrownConfig(iterations=200, lr_beta=0.1, early_stop=False))
    best = bound_subdomains(g, xs, C, d, doms, opt)
    assert 0.13 <= float(best.lower) <= 0.1375 + 1e-9
    assert any(k.endswith(":limits") for k in best.betas)  # warm start for children


def test_empty_only_beyond_rounding():
    g = _line_graph()
    xs = Box(torch.full((1, 1), -1.0, dtype=D), torch.ones(1, 1, dtype=D))
    root = root_subdomain(g, xs)
    C, d = torch.ones(1, 1, 1, dtype=D), torch.zeros(1, 1, dtype=D)
    lims = torch.tensor([[[1.5], [torch.inf]], [[1.0 + 1e-13], [torch.inf]]], dtype=D)
    doms = Subdomains({}, {k: v[torch.zeros(2, dtype=torch.long)]
                           for k, v in root.intermediate.items()}, limits={"leakyrelu1": lims})
    b = bound_subdomains(g, xs, C, d, doms, EngineConfig(AlphaCrownConfig(iterations=0)))
    assert b.empty.tolist() == [True, False]
    assert float(b.lower[0]) == torch.inf and float(b.lower[1]) < torch.inf
    iv, e = clip_interval(Interval(torch.zeros(1, 1, dtype=D), torch.ones(1, 1, dtype=D)),
                          torch.tensor([[[1.0 + 1e-13], [2.0]]], dtype=D))
    assert not bool(e) and float(iv.lower) <= 1.0 <= float(iv.upper)


@pytest.mark.parametrize("op", [ops.Sigmoid(), ops.Tanh(), ops.LeakyReLU(0.2)])
def test_split_points_cut_strictly_inside(op):
    gen = torch.Generator().manual_seed(0)
    lo = torch.randn(2000, generator=gen, dtype=D) * 4 - 0.5
    hi = lo + torch.rand(2000, generator=gen, dtype=D) * 6 + 1e-3
    cand = split_candidates(op, lo, hi, 1e-5)
    p = split_points(op, lo, hi)[cand]
    lo, hi = lo[cand], hi[cand]
    assert bool(((p > lo) & (p < hi)).all())
    if not isinstance(op, ops.LeakyReLU):  # each side at most 3/4 of the parent
        assert bool(((p - lo) <= 0.75 * (hi - lo) + 1e-12).all())
        assert bool(((hi - p) <= 0.75 * (hi - lo) + 1e-12).all())
    gain = split_gain(op, lo, hi)
    assert bool((gain >= 0).all()) and bool((gain <= relaxation_gap(op, lo, hi) + 1e-12).all())


def test_split_limits_cover_and_narrow():
    lim = torch.tensor([[[-1.0, -2.0], [3.0, torch.inf]]], dtype=D)  # (1, 2, 2)
    up, down = split_limits(lim, torch.tensor([0]), torch.tensor([1]), torch.tensor([0.5]))
    assert up[0, :, 1].tolist() == [0.5, torch.inf] and down[0, :, 1].tolist() == [-2.0, 0.5]
    assert torch.equal(up[:, :, 0], lim[:, :, 0]) and torch.equal(down[:, :, 0], lim[:, :, 0])


class _TwoOnOne(nn.Module):
    """Sigmoid and Tanh of the same pre-activation node, added."""

    def __init__(self):
        super().__init__()
        self.lin, self.out = nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x):
        h = self.lin(x)
        return self.out(torch.sigmoid(h) + torch.tanh(h))


def test_limits_of_two_activations_on_one_node_intersect():
    torch.manual_seed(0)
    g = from_torch(_TwoOnOne().double(), (3,)).to(dtype=D)
    acts = activation_inputs(g)
    assert len(acts) == 2 and len(set(acts.values())) == 1
    x0 = torch.rand(1, 3, dtype=D)
    xs = Box(x0 - 0.5, x0 + 0.5)
    x = xs.sample(4000, torch.Generator().manual_seed(1))[:, 0]
    vals = g.forward_all(x)
    z = next(iter(acts.values()))
    med = vals[z].median(0).values
    root = root_subdomain(g, xs)
    lim = unsplit_limits(g, root.intermediate)
    a1, a2 = acts
    lim[a1][0, 0, 0] = med[0]  # z0 ≥ median (on the Sigmoid)
    lim[a2][0, 1, 1] = med[1]  # z1 ≤ median (on the Tanh)
    C, d = torch.tensor([[[1.0, -1.0]]], dtype=D), torch.zeros(1, 1, dtype=D)
    b = bound_subdomains(g, xs, C, d, Subdomains({}, root.intermediate, limits=lim),
                         EngineConfig(AlphaCrownConfig(iterations=10, early_stop=False)))
    iv = b.intermediate[z]
    assert float(iv.lower[0, 0]) >= float(med[0]) and float(iv.upper[0, 1]) <= float(med[1])
    pts = (vals[z][:, 0] >= med[0]) & (vals[z][:, 1] <= med[1])
    y = vals[g.output_name][pts]
    assert int(pts.sum()) > 0 and bool((y[:, 0] - y[:, 1] >= b.lower[0, 0] - 1e-8).all())
