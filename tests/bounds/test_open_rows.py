"""Open-row bounds (bounds/open_rows.py): sound on samples of every subdomain (shared set or
own boxes, float64 or a float32 search), never below a known bound, +inf on closed rows, and
never looser after more split constraints."""

from __future__ import annotations

import pytest
import torch
from test_subdomains import D, _phases_match, _problem, _random_splits

from nncert.bounds.alpha_crown import AlphaCrownConfig
from nncert.bounds.open_rows import bound_open_rows, relu_coefficients
from nncert.bounds.subdomains import EngineConfig, Subdomains, relu_inputs, root_subdomain
from nncert.specs import Box


def _open(B: int, R: int, seed: int) -> torch.Tensor:
    m = torch.rand(B, R, generator=torch.Generator().manual_seed(seed)) < 0.7
    m[:, 0] = True
    return m


@pytest.mark.parametrize("kind", ["dense", "conv", "residual"])
@pytest.mark.parametrize("search", [None, torch.float32])
@pytest.mark.parametrize("refine", [False, True])
def test_sound_on_sampled_subdomains(kind, search, refine):
    p = _problem(kind, 1)
    g, spec = p.graph, p.output_spec
    root = root_subdomain(g, p.input_set)
    doms = _random_splits(g, root, 6, 2, seed=2)
    open_rows = _open(6, spec.num_rows, 3)
    cfg = EngineConfig(AlphaCrownConfig(iterations=6), refine)
    sg = None if search is None else g.to(dtype=search)
    b = bound_open_rows(g, p.input_set, spec.C, spec.d, doms, open_rows, cfg, search_graph=sg)
    assert bool(torch.isinf(b.lower[~open_rows]).all())
    x = p.input_set.sample(4000, torch.Generator().manual_seed(3))[:, 0]
    match = _phases_match(g, x, doms.splits)
    vals = spec.expand(1).values(g.forward(x).unsqueeze(1))[:, 0]  # (N, R)
    assert int(match.sum()) > 0
    for k in range(6):
        v = vals[match[:, k]][:, open_rows[k]]  # (closed rows: +inf, not bounded)
        if v.numel():
            assert bool((v >= b.lower[k, open_rows[k]] - 1e-9).all())


def test_own_boxes_sound_and_never_below_known():
    p = _problem("dense", 4, eps=0.4)
    g, spec = p.graph, p.output_spec
    xs = p.input_set
    halves = Box(xs.lower, xs.upper).split(torch.tensor([0]))
    halves = halves.split(torch.tensor([1, 1]))  # 4 boxes covering the set
    B = halves.batch_size
    root = root_subdomain(g, xs)
    inter = {k: v[torch.zeros(B, dtype=torch.long)] for k, v in root.intermediate.items()}
    splits = {r: s.expand(B, *s.shape[1:]).clone() for r, s in root.splits.items()}
    known = torch.full((B, spec.num_rows), -5.0, dtype=D)
    doms = Subdomains(splits, inter, lower=known)
    cfg = EngineConfig(AlphaCrownConfig(iterations=4), True)
    b = bound_open_rows(g, halves, spec.C, spec.d, doms, torch.ones(B, spec.num_rows,
                                                                    dtype=torch.bool), cfg)
    assert bool((b.lower >= known).all())
    x = halves.sample(3000, torch.Generator().manual_seed(5))  # (N, B, n)
    vals = spec.expand(B).values(g.forward(x.reshape(-1, *g.input_shape)).reshape(3000, B, -1))
    assert bool((vals >= b.lower - 1e-9).all())
    assert b.input_coefficients is not None and b.input_coefficients.shape[0] == b.dom.numel()


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_more_splits_never_loosen(kind):
    p = _problem(kind, 6)
    g, spec = p.graph, p.output_spec
    cfg = EngineConfig(AlphaCrownConfig(iterations=3), True)
    root = root_subdomain(g, p.input_set)
    parent = _random_splits(g, root, 4, 1, seed=7)
    R = spec.num_rows
    everything = torch.ones(4, R, dtype=torch.bool)
    pb = bound_open_rows(g, p.input_set, spec.C, spec.d, parent, everything, cfg)
    more = _random_splits(g, root, 4, 2, seed=8).splits
    splits = {r: torch.where(parent.splits[r] != 0, parent.splits[r], more[r]) for r in more}
    child = Subdomains(splits, pb.intermediate, pb.slopes, pb.betas, pb.lower)
    cb = bound_open_rows(g, p.input_set, spec.C, spec.d, child, everything, cfg)
    assert bool((cb.lower >= pb.lower).all())
    for z in relu_inputs(g).values():
        assert bool((cb.intermediate[z].lower >= pb.intermediate[z].lower).all())
        assert bool((cb.intermediate[z].upper <= pb.intermediate[z].upper).all())


def test_relu_coefficients_cover_every_relu():
    p = _problem("residual", 2)
    g, spec = p.graph, p.output_spec
    root = root_subdomain(g, p.input_set)
    A = relu_coefficients(g, p.input_set, spec.C, spec.d, root.intermediate)
    assert set(A) == set(relu_inputs(g))
    assert all(a.shape[:2] == (1, spec.num_rows) for a in A.values())
