"""The subdomain engine (bounds/subdomains.py): sound on every subdomain, never looser than a
known bound, equal to CROWN without splits, and equal to the dense relu_net bounds on chains
(and so are input splitting's box bounds, bounds/boxes.py, on ACAS Xu)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import BENCHMARKS, requires_shared
from nncert.bounds import compute_bounds
from nncert.bounds.alpha_crown import AlphaCrownConfig
from nncert.bounds.subdomains import (
    EngineConfig,
    Subdomains,
    _spec_ibp,
    bound_subdomains,
    relu_inputs,
    root_subdomain,
)
from nncert.complete import relu_net as rn
from nncert.models.from_torch import from_torch
from nncert.specs import Box, LpBall, OutputSpec, VerificationProblem

D = torch.float64


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 3, 3, padding=1)
        self.c2 = nn.Conv2d(3, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 5 * 5, 3)

    def forward(self, x):
        h = torch.relu(self.c1(x))
        h = torch.relu(self.c2(h) + h)
        return self.fc(torch.flatten(h, 1))


def _module(kind: str) -> tuple[nn.Module, tuple[int, ...]]:
    if kind == "conv":
        return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(),
                             nn.Conv2d(3, 3, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                             nn.Linear(27, 3)), (1, 5, 5)
    if kind == "residual":
        return _Residual(), (1, 5, 5)
    if kind == "maxpool":
        return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3)), (1, 4, 4)
    return nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 8), nn.ReLU(),
                         nn.Linear(8, 3)), (6,)


def _problem(kind: str, seed: int, eps: float = 0.3, ball: str = "box"):
    torch.manual_seed(seed)
    m, shape = _module(kind)
    g = from_torch(m.double(), shape).to(dtype=D)
    x = torch.rand(1, *shape, dtype=D)
    C = torch.randn(1, 2, 3, dtype=D)
    spec = OutputSpec.conjunction(C, torch.randn(1, 2, dtype=D))
    xs = Box(x - eps, x + eps) if ball == "box" else LpBall(x, 3 * eps, 2)
    return VerificationProblem(g, xs, spec)


def _random_splits(g, root: Subdomains, B: int, per_domain: int, seed: int):
    """B subdomains, each with ``per_domain`` random ±1 splits on unstable root neurons."""
    gen = torch.Generator().manual_seed(seed)
    z_of = relu_inputs(g)
    cands = []
    for r, z in z_of.items():
        iv = root.intermediate[z]
        unst = ((iv.lower < 0) & (iv.upper > 0))[0].flatten().nonzero().flatten()
        cands += [(r, int(j)) for j in unst]
    splits = {r: torch.zeros(B, *root.splits[r].shape[1:], dtype=torch.int8) for r in z_of}
    for b in range(B):
        for i in torch.randperm(len(cands), generator=gen)[:per_domain].tolist():
            r, j = cands[i]
            splits[r][b].view(-1)[j] = 1 if torch.rand(1, generator=gen) < 0.5 else -1
    inter = {k: v[torch.zeros(B, dtype=torch.long)] for k, v in root.intermediate.items()}
    return Subdomains(splits, inter)


def _phases_match(g, x, splits: dict[str, torch.Tensor]) -> torch.Tensor:
    """(N, B) whether sample n satisfies subdomain b's split constraints."""
    vals = g.forward_all(x)
    ok = None
    for r, z in relu_inputs(g).items():
        v = vals[z].flatten(1).unsqueeze(1)  # (N, 1, n)
        s = splits[r].flatten(1).unsqueeze(0).to(D)  # (1, B, n)
        good = ((s == 0) | (s * v >= 0)).all(-1)
        ok = good if ok is None else ok & good
    return ok


@pytest.mark.parametrize("kind", ["conv", "residual", "maxpool", "dense"])
def test_no_splits_equals_crown(kind):
    p = _problem(kind, 0)
    root = root_subdomain(p.graph, p.input_set)
    cfg = EngineConfig(AlphaCrownConfig(iterations=0))
    b = bound_subdomains(p.graph, p.input_set, p.output_spec.C, p.output_spec.d, root, cfg)
    crown = compute_bounds(p, "crown")
    assert torch.allclose(b.lower, crown.lower, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind,ball", [("conv", "box"), ("residual", "box"),
                                       ("maxpool", "box"), ("dense", "box"), ("residual", "l2")])
@pytest.mark.parametrize("refine", [False, True])
def test_sound_on_sampled_subdomains(kind, ball, refine):
    p = _problem(kind, 1, ball=ball)
    g, spec = p.graph, p.output_spec
    root = root_subdomain(g, p.input_set)
    doms = _random_splits(g, root, 6, 2, seed=2)
    cfg = EngineConfig(AlphaCrownConfig(iterations=5, early_stop=False), refine)
    b = bound_subdomains(g, p.input_set, spec.C, spec.d, doms, cfg)
    x = p.input_set.sample(4000, torch.Generator().manual_seed(3))[:, 0]
    match = _phases_match(g, x, doms.splits)  # (N, B)
    vals = spec.expand(1).values(g.forward(x).unsqueeze(1))  # (N, 1, R)
    assert int(match.sum()) > 0  # not vacuous
    for k in range(6):
        v = vals[match[:, k], 0]
        if v.numel():
            assert bool((v >= b.lower[k] - 1e-9).all())
        if bool(b.empty[k]):
            assert not bool(match[:, k].any())
    for z in relu_inputs(g).values():  # intermediate bounds hold on the subdomains too
        pre = g.forward_all(x)[z]
        for k in range(6):
            iv = b.intermediate[z][k]
            inside = pre[match[:, k]]
            assert bool((inside >= iv.lower - 1e-9).all() & (inside <= iv.upper + 1e-9).all())


@pytest.mark.parametrize("kind", ["conv", "residual", "maxpool"])
def test_child_never_looser_than_parent(kind):
    p = _problem(kind, 4)
    g, spec = p.graph, p.output_spec
    cfg = EngineConfig(AlphaCrownConfig(iterations=3))
    root = root_subdomain(g, p.input_set)
    parent = _random_splits(g, root, 4, 1, seed=5)
    pb = bound_subdomains(g, p.input_set, spec.C, spec.d, parent, cfg)
    more = _random_splits(g, root, 4, 2, seed=6).splits
    splits = {r: torch.where(parent.splits[r] != 0, parent.splits[r], more[r]) for r in more}
    child = Subdomains(splits, pb.intermediate, pb.slopes, pb.betas, pb.lower)
    cb = bound_subdomains(g, p.input_set, spec.C, spec.d, child, cfg)
    assert bool((cb.lower >= pb.lower).all())
    for z in relu_inputs(g).values():  # intermediate bounds only shrink
        assert bool((cb.intermediate[z].lower >= pb.intermediate[z].lower).all())
        assert bool((cb.intermediate[z].upper <= pb.intermediate[z].upper).all())


def _relu_net_agrees(g, xs: Box, spec: OutputSpec, seed: int):
    """Root intermediates equal relu_net.crown_intermediate; with the same splits and clipped
    bounds the spec bound equals relu_net.spec_bound (max'd with the interval bound, which
    the engine intersects); re-bounded children are inside their clipped bounds."""
    net = rn.extract_relu_net(g)
    lo, hi = xs.lower.reshape(1, -1), xs.upper.reshape(1, -1)
    root = root_subdomain(g, xs)
    inter = rn.crown_intermediate(net, lo, hi)
    for (zl, u), name in zip(inter, net.pre_names):
        assert torch.allclose(root.intermediate[name].lower.reshape(zl.shape), zl, atol=1e-6)
        assert torch.allclose(root.intermediate[name].upper.reshape(u.shape), u, atol=1e-6)
    B = 5
    doms = _random_splits(g, root, B, 3, seed)
    z_of = relu_inputs(g)
    relus = {z: r for r, z in z_of.items()}
    split_list = [doms.splits[relus[n]].reshape(B, -1) for n in net.pre_names]
    cfg = EngineConfig(AlphaCrownConfig(iterations=0))
    b = bound_subdomains(g, xs, spec.C, spec.d, doms, cfg)
    clipped = rn.clip_by_splits([(zl.expand(B, -1), u.expand(B, -1)) for zl, u in inter],
                                split_list)
    ref, *_ = rn.spec_bound(net, spec.C.expand(B, -1, -1), spec.d.expand(B, -1), clipped,
                            lo.expand(B, -1), hi.expand(B, -1))
    ibp = _spec_ibp(g, spec.C, spec.d, b.intermediate)
    assert torch.allclose(b.lower, torch.maximum(ref, ibp), atol=1e-6)
    refined = bound_subdomains(g, xs, spec.C, spec.d, doms, EngineConfig(cfg.alpha, True))
    for name in net.pre_names:  # re-bounding after the splits only tightens
        iv, base = refined.intermediate[name], b.intermediate[name]
        assert bool((iv.lower >= base.lower).all() & (iv.upper <= base.upper).all())


def test_matches_relu_net_on_a_random_chain():
    p = _problem("dense", 7, eps=0.5)
    _relu_net_agrees(p.graph, p.input_set, p.output_spec, seed=8)


def test_matches_relu_net_on_a_conv_chain():
    p = _problem("conv", 9)
    _relu_net_agrees(p.graph, p.input_set, p.output_spec, seed=10)


@requires_shared
def test_matches_relu_net_on_mnistfc_256x2():
    from nncert.complete.vnncomp import load_instance

    root = BENCHMARKS / "mnistfc"
    graph, problems = load_instance(root / "onnx/mnist-net_256x2.onnx",
                                    root / "vnnlib/prop_0_0.03.vnnlib")
    p = problems[0]
    g = p.graph.to(dtype=D)
    xs, spec = p.input_set.to(dtype=D), p.output_spec.to(dtype=D)
    assert isinstance(xs, Box)
    _relu_net_agrees(g, xs, spec, seed=11)


@requires_shared
def test_box_bounds_match_relu_net_on_acas_boxes():
    """Input splitting's bounds on the engine (``bounds/boxes.py``) equal the dense relu_net
    ones on ACAS Xu boxes: CROWN intermediate bounds of the halves of 256 sub-boxes of the
    root with the parents' bounds as prior, the rows with their input coefficients and the
    disjunction's clause bound. (Without a prior the two differ where relu_net back-substitutes
    every neuron of a mostly unstable layer, the stable ones too, and the engine only the
    unstable ones: both sound.)"""
    from nncert.bounds.boxes import BoxConfig, bound_boxes, input_reach
    from nncert.bounds.clauses import clause_lowers, linear_constant
    from nncert.bounds.core import Interval
    from nncert.complete import branching
    from nncert.complete.vnncomp import load_instance

    root = BENCHMARKS / "acasxu"
    graph, problems = load_instance(root / "onnx/ACASXU_run2a_1_8_batch_2000.onnx",
                                    root / "vnnlib/prop_2.vnnlib")
    g = graph.to(dtype=D)
    spec = problems[0].output_spec.to(dtype=D)
    net = rn.extract_relu_net(g)
    box = Box(problems[0].input_set.lower.reshape(1, -1).to(D),
              problems[0].input_set.upper.reshape(1, -1).to(D))
    reach = input_reach(g)
    assert torch.allclose(reach, net.Ws[0].abs().sum(0))
    for _ in range(8):
        box = box.split(branching.widest_input_dims(box.lo, box.hi, reach))
    kids = box.split(branching.widest_input_dims(box.lo, box.hi, reach))
    shape, cfg = g.input_shape, BoxConfig(alpha_iters=0)
    parent = bound_boxes(g, Box(box.lo.reshape(-1, *shape), box.hi.reshape(-1, *shape)), spec,
                         cfg)
    ref_parent = [(parent.intermediate[n].lower, parent.intermediate[n].upper)
                  for n in net.pre_names]
    prior = {k: Interval(v.lower.repeat(2, 1), v.upper.repeat(2, 1))
             for k, v in parent.intermediate.items()}
    b = bound_boxes(g, Box(kids.lo.reshape(-1, *shape), kids.hi.reshape(-1, *shape)), spec, cfg,
                    prior=prior)
    ref = rn.crown_intermediate(net, kids.lo, kids.hi,
                                fwd=[(zl.repeat(2, 1), u.repeat(2, 1)) for zl, u in ref_parent])
    for (zl, u), name in zip(ref, net.pre_names):
        assert torch.allclose(b.intermediate[name].lower, zl, atol=1e-9)
        assert torch.allclose(b.intermediate[name].upper, u, atol=1e-9)
    B = kids.lo.shape[0]
    lb, A_x, _ = rn.spec_bound(net, spec.C.expand(B, -1, -1), spec.d.expand(B, -1), ref,
                               kids.lo, kids.hi)
    assert torch.allclose(b.lower, lb, atol=1e-9) and torch.allclose(b.coefficients, A_x,
                                                                      atol=1e-9)
    flat = Box(kids.lo, kids.hi)
    cl = clause_lowers(spec, flat, A_x, linear_constant(flat, A_x, lb), lower=lb)
    assert torch.allclose(b.clauses, cl, atol=1e-9)
