"""Forward-mode linear bounds (``bounds/forward.py``) and the layer-by-layer refinement of
``crown._refine``: sound on samples of every box, never looser than the prior or interval
arithmetic, and the dense refinement equal to the pair-by-pair one."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nncert.bounds import crown, forward
from nncert.bounds.crown import CrownConfig, intermediate_bounds
from nncert.bounds.interval import interval_walk
from nncert.models import zoo
from nncert.specs import Box

D = torch.float64
#: the zoo kinds whose every op has a forward rule (MaxPool has none)
KINDS = [k for k in zoo.KINDS if forward.supports(zoo.random_graph(k, 0))]


def _boxes(g, B: int, seed: int, eps: float) -> Box:
    x = zoo.sample_inputs(g, B, seed).to(D)
    gen = torch.Generator().manual_seed(seed)
    lo = x - eps * torch.rand(x.shape, generator=gen, dtype=D)
    return Box(lo, x + eps * torch.rand(x.shape, generator=gen, dtype=D))


def _inside(g, boxes: Box, values, n: int = 300) -> None:
    pts = boxes.sample(n)  # (n, B, *shape)
    acts = g.forward_all(pts.reshape(-1, *boxes.shape))
    B = boxes.batch_size
    for name, iv in values.items():
        v = (pts if name == g.input_name else acts[name]).reshape(n, B, *iv.shape)
        tol = 1e-9 * (1 + float(iv.upper.abs().max()))
        assert bool((v >= iv.lower - tol).all() & (v <= iv.upper + tol).all()), name


def test_kinds_cover_the_forward_rules():
    assert {"relu", "leaky", "sigmoid", "tanh", "residual", "reshape"} <= set(KINDS)
    assert not forward.supports(zoo.random_graph("conv-max", 0))


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=3, deadline=None)
@given(seed=st.integers(0, 1000), eps=st.sampled_from([0.01, 0.1, 0.5]))
def test_forward_bounds_hold_on_samples_and_beat_intervals(kind, seed, eps):
    g = zoo.random_graph(kind, seed).to(dtype=D)
    boxes = _boxes(g, 3, seed, eps)
    values = forward.forward_bounds(g, boxes)
    _inside(g, boxes, values)
    ibp = interval_walk(g, boxes)
    for name, iv in values.items():
        assert bool((iv.lower >= ibp[name].lower - 1e-12).all())
        assert bool((iv.upper <= ibp[name].upper + 1e-12).all())


@pytest.mark.parametrize("kind", ["relu", "sigmoid", "residual"])
@settings(max_examples=3, deadline=None)
@given(seed=st.integers(0, 1000))
def test_forward_bounds_on_sub_boxes_with_the_parents_prior(kind, seed):
    """Bounds of a box are a sound prior for its halves; the halves' bounds stay inside it."""
    g = zoo.random_graph(kind, seed).to(dtype=D)
    parent = _boxes(g, 2, seed, 0.3)
    prior = forward.forward_bounds(g, parent)
    mid = (parent.lower + parent.upper) / 2
    halves = Box(torch.cat([parent.lower, mid]), torch.cat([mid, parent.upper]))
    rep = {k: type(v)(v.lower.repeat(2, *[1] * (v.lower.dim() - 1)),
                      v.upper.repeat(2, *[1] * (v.upper.dim() - 1))) for k, v in prior.items()}
    values = forward.forward_bounds(g, halves, rep)
    _inside(g, halves, values)
    for name, iv in values.items():
        assert bool((iv.lower >= rep[name].lower).all() & (iv.upper <= rep[name].upper).all())


def test_forward_bounds_are_exact_on_a_point_box():
    g = zoo.random_graph("relu", 3).to(dtype=D)
    x = zoo.sample_inputs(g, 2, 3).to(D)
    values = forward.forward_bounds(g, Box(x, x))
    y = g(x)
    assert torch.allclose(values[g.output_name].lower, y, atol=1e-9)
    assert torch.allclose(values[g.output_name].upper, y, atol=1e-9)


@pytest.mark.parametrize("kind", ["relu", "leaky", "residual"])
def test_layerwise_refinement_equals_the_pairwise_one(monkeypatch, kind):
    """Every neuron refined (unstable_only off): the dense mode (one problem per box of n rows)
    and the pair-by-pair mode compute the same bounds."""
    g = zoo.random_graph(kind, 5).to(dtype=D)
    boxes = _boxes(g, 4, 5, 0.2)
    cfg = CrownConfig(unstable_only=False)
    dense = intermediate_bounds(g, boxes, cfg)
    monkeypatch.setattr(crown, "DENSE_MAX_WIDTH", 0)
    pairs = intermediate_bounds(g, boxes, cfg)
    for name, iv in dense.items():
        assert torch.allclose(iv.lower, pairs[name].lower, atol=1e-10), name
        assert torch.allclose(iv.upper, pairs[name].upper, atol=1e-10), name
    _inside(g, boxes, dense)
