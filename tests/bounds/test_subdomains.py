"""The subdomain engine (bounds/subdomains.py): sound on every subdomain, never looser than a
known bound, equal to CROWN without splits."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nncert.bounds import compute_bounds
from nncert.bounds.alpha_crown import AlphaCrownConfig
from nncert.bounds.subdomains import (
    EngineConfig,
    Subdomains,
    bound_subdomains,
    relu_inputs,
    root_subdomain,
)
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
@pytest.mark.parametrize("refine,search", [(False, None), (True, None), (True, "float32")])
def test_sound_on_sampled_subdomains(kind, ball, refine, search):
    p = _problem(kind, 1, ball=ball)
    g, spec = p.graph, p.output_spec
    root = root_subdomain(g, p.input_set)
    doms = _random_splits(g, root, 6, 2, seed=2)
    cfg = EngineConfig(AlphaCrownConfig(iterations=5, early_stop=False, search_dtype=search),
                       refine)
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
