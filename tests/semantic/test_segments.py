"""Composed graphs, the Segment input set, bounds on segments and ExactLine."""

from __future__ import annotations

import importlib

import pytest
import torch

from nncert.bounds import METHODS, compute_bounds
from nncert.bounds.alpha_crown import AlphaCrownConfig
from nncert.errors import ShapeError, UnsupportedOpError
from nncert.models import ops, zoo
from nncert.models.graph import compose, sequential
from nncert.result import Verdict
from nncert.semantic.segments import (
    certify_segment_exact,
    certify_segments_exact,
    exact_line,
    exact_lines,
    segment_graph,
    segment_problem,
    union_length,
)
from nncert.specs import OutputSpec, Segment, VerificationProblem

D = torch.float64
CONFIGS = {"alpha-crown": AlphaCrownConfig(iterations=3, early_stop=False)}


def _available(method: str) -> bool:
    try:
        importlib.import_module(METHODS[method].split(":")[0])
    except ImportError:
        return False
    return True


SOUND_METHODS = [m for m in ("interval", "zonotope", "deeppoly", "crown", "alpha-crown")
                 if _available(m)]


def _generator(seed: int, out: int = 6):
    """A small ReLU 'decoder' from a 3-dim latent space."""
    return zoo.mlp(seed, "relu", widths=(3, 10, out)).to(dtype=D)


def _f_of_g(seed: int):
    return compose(_generator(seed), zoo.mlp(seed + 1).to(dtype=D))


def _ends(graph, seed: int):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(graph.input_shape, generator=g, dtype=D)
    return a, a + torch.randn(graph.input_shape, generator=g, dtype=D)


def _label_spec(graph, x) -> OutputSpec:
    label = int(graph.forward(x.unsqueeze(0)).argmax())
    return OutputSpec.robustness([label], graph.num_outputs, dtype=D)


# -- compose ------------------------------------------------------------------------------------
def test_compose_equals_running_both():
    G, f = _generator(0), zoo.mlp(1).to(dtype=D)
    fg = compose(G, f)
    z = torch.randn(7, 3, dtype=D)
    torch.testing.assert_close(fg(z), f(G(z)), rtol=0, atol=0)
    assert len(fg) == len(G) + len(f)


def test_compose_inserts_reshape_and_renames_clashes():
    conv = zoo.random_graph("conv-max", 0).to(dtype=D)  # input (2, 7, 7)
    G = sequential([ops.Linear(torch.randn(98, 4, dtype=D), torch.zeros(98, dtype=D))], (4,))
    fg = compose(G, conv, prefix="")  # conv's names n0, n1, ... clash with G's n0
    z = torch.randn(5, 4, dtype=D)
    torch.testing.assert_close(fg(z), conv(G(z).reshape(5, 2, 7, 7)))
    assert len({n.name for n in fg.nodes}) == len(fg.nodes)


def test_compose_rejects_size_mismatch():
    with pytest.raises(ShapeError, match="inner output vs outer input"):
        compose(_generator(0, out=5), zoo.mlp(1).to(dtype=D))


# -- the Segment input set ----------------------------------------------------------------------
def test_segment_set_concretize_is_exact_and_samples_inside():
    a, b = torch.randn(3, 4, dtype=D), torch.randn(3, 4, dtype=D)
    seg = Segment(a, b, torch.tensor([0.0, 0.2, 0.5], dtype=D), torch.tensor([1.0, 0.3, 0.5], dtype=D))
    A = torch.randn(3, 2, 4, dtype=D)
    lo, hi = seg.concretize(A)
    pts = seg.sample(500)  # (500, 3, 4)
    vals = torch.einsum("brn,sbn->sbr", A, pts)
    assert bool((vals >= lo - 1e-12).all() and (vals <= hi + 1e-12).all())
    ends = torch.stack(seg.endpoints())
    ends_vals = torch.einsum("brn,sbn->sbr", A, ends)
    torch.testing.assert_close(torch.minimum(*ends_vals), lo)
    assert bool(seg.contains(pts, 1e-9).all())
    assert not bool(seg.contains(pts + 0.1, 1e-9).all())
    assert seg[1].batch_size == 1 and bool((seg.lower <= seg.upper).all())


@pytest.mark.parametrize("method", SOUND_METHODS)
def test_every_method_on_the_segment_set_is_sound(method):
    f = zoo.mlp(2).to(dtype=D)
    a, b = _ends(f, 2)
    seg = Segment(a.unsqueeze(0), b.unsqueeze(0))
    spec = OutputSpec.identity(f.num_outputs, dtype=D)
    bounds = compute_bounds(VerificationProblem(f, seg, spec), method, CONFIGS.get(method))
    y = f(seg.sample(2000)[:, 0])
    assert bool((y >= bounds.lower - 1e-9).all() and (y <= bounds.upper + 1e-9).all())


# -- every bound method on the graph over t -------------------------------------------------------
@pytest.mark.parametrize("method", SOUND_METHODS)
@pytest.mark.parametrize("seed", [0, 1])
def test_every_method_sound_along_segment_of_f_of_g(method, seed):
    fg = _f_of_g(seed)
    z0, z1 = _ends(fg, seed)
    spec = OutputSpec.conjunction(torch.randn(1, 4, fg.num_outputs, dtype=D))
    edges = torch.linspace(0, 1, 5, dtype=D)
    problem = segment_problem(fg, z0, z1, spec, edges[:-1], edges[1:])
    bounds = compute_bounds(problem, method, CONFIGS.get(method))
    t = edges[:-1] + torch.rand(300, 4, dtype=D) * (edges[1:] - edges[:-1])  # (300, 4)
    y = fg(z0 + t.reshape(-1, 1) * (z1 - z0)).reshape(300, 4, -1)
    rows = torch.einsum("rn,spn->spr", spec.C[0], y)
    assert bool((rows >= bounds.lower - 1e-8).all()), method
    assert bool((rows <= bounds.upper + 1e-8).all()), method


def test_segment_graph_matches_points():
    fg = _f_of_g(3)
    z0, z1 = _ends(fg, 3)
    g = segment_graph(fg, z0, z1)
    t = torch.rand(50, 1, dtype=D)
    torch.testing.assert_close(g(t), fg(z0 + t * (z1 - z0)))


# -- ExactLine ----------------------------------------------------------------------------------
KINDS = ["relu", "leaky", "conv-max", "conv-avg", "residual", "f-of-g"]


def _net(kind: str, seed: int):
    return _f_of_g(seed) if kind == "f-of-g" else zoo.random_graph(kind, seed).to(dtype=D)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_pieces_reconstruct_outputs(kind, seed):
    net = _net(kind, seed)
    a, b = _ends(net, seed)
    pieces = exact_line(net, a, b)
    assert pieces.ts[0] == 0 and pieces.ts[-1] == 1 and bool((pieces.ts.diff() > 0).all())
    t = torch.rand(10_000, dtype=D)
    y = net(a + t.reshape(-1, *([1] * a.dim())) * (b - a)).flatten(1)
    scale = 1 + y.abs().max()
    assert float((pieces.evaluate(t) - y).abs().max()) <= 1e-5 * scale
    assert pieces.num_pieces >= 1


@pytest.mark.parametrize("kind", KINDS)
def test_batched_lines_equal_one_at_a_time_and_reconstruct(kind):
    net = _net(kind, 5)
    g = torch.Generator().manual_seed(5)
    a = torch.rand((7, *net.input_shape), generator=g, dtype=D)
    b = a + 2 * torch.randn(a.shape, generator=g, dtype=D)
    b[3] = a[3]  # a zero-length segment: one piece
    batched = exact_lines(net, a, b, chunk=3)  # chunks of 3, 3, 1
    assert len(batched) == 7 and batched[3].num_pieces == 1
    for s, pieces in enumerate(batched):
        alone = exact_line(net, a[s], b[s])
        torch.testing.assert_close(pieces.ts, alone.ts, rtol=0, atol=1e-12)
        t = torch.rand(10_000, generator=g, dtype=D)
        y = net(a[s] + t.reshape(-1, *([1] * (a.dim() - 1))) * (b[s] - a[s])).flatten(1)
        assert float((pieces.evaluate(t) - y).abs().max()) <= 1e-5 * (1 + y.abs().max())


@pytest.mark.parametrize("kind", ["relu", "conv-max", "f-of-g"])
def test_batched_verdicts_equal_one_at_a_time(kind):
    net = _net(kind, 6)
    g = torch.Generator().manual_seed(6)
    a = torch.rand((8, *net.input_shape), generator=g, dtype=D)
    b = a + torch.linspace(0.2, 6, 8, dtype=D).reshape(-1, *([1] * (a.dim() - 1))) * \
        torch.randn(a.shape, generator=g, dtype=D)
    labels = net(a).argmax(1)
    spec = OutputSpec.robustness(labels, net.num_outputs, dtype=D)
    reports = certify_segments_exact(net, a, b, spec, chunk=5)
    for s, rep in enumerate(reports):
        one = certify_segment_exact(net, a[s], b[s], spec[s])
        assert rep.result.verdict is one.result.verdict
        assert rep.fraction_lower == pytest.approx(one.fraction_lower, abs=1e-12)
        assert rep.stats["pieces"] == one.stats["pieces"]
        torch.testing.assert_close(rep.violations, one.violations)
        if rep.result.verdict is Verdict.FALSIFIED:
            x = rep.result.counterexample.x.unsqueeze(0)
            assert not bool(spec[s].holds(net(x).flatten(1))[0])
            torch.testing.assert_close(x[0], a[s] + rep.t_star * (b[s] - a[s]))
    assert {r.result.verdict for r in reports} >= {Verdict.VERIFIED, Verdict.FALSIFIED}


def test_exact_line_counts_relu_pieces_of_one_neuron():
    net = sequential([ops.Linear(torch.tensor([[1.0]], dtype=D), torch.tensor([-0.25], dtype=D)),
                      ops.ReLU()], (1,))
    pieces = exact_line(net, torch.zeros(1, dtype=D), torch.ones(1, dtype=D))
    torch.testing.assert_close(pieces.ts, torch.tensor([0.0, 0.25, 1.0], dtype=D))


def test_exact_line_rejects_smooth_activations():
    with pytest.raises(UnsupportedOpError, match="ExactLine"):
        exact_line(zoo.random_graph("tanh", 0), torch.zeros(6), torch.ones(6))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", range(4))
def test_exact_verdict_agrees_with_dense_sampling(kind, seed):
    net = _net(kind, seed)
    a, b = _ends(net, seed + 10)
    b = a + (0.3, 1.0, 3.0, 10.0)[seed] * (b - a)  # short and long: both verdicts occur
    spec = _label_spec(net, a)
    report = certify_segment_exact(net, a, b, spec)
    t = torch.linspace(0, 1, 10_001, dtype=D)
    y = net(a + t.reshape(-1, *([1] * a.dim())) * (b - a)).flatten(1)
    holds = spec.holds(y[:, None, :])[:, 0]
    if report.result.verdict is Verdict.VERIFIED:
        assert bool(holds.all())
    elif report.result.verdict is Verdict.FALSIFIED:
        cex = report.result.counterexample
        assert not bool(spec.holds(net(cex.x.unsqueeze(0)).flatten(1))[0])
        assert 0.0 <= report.t_star <= 1.0
    sampled = float(holds.double().mean())
    slack = 2e-4 * (1 + report.violations.shape[0])
    assert abs(report.fraction_lower - sampled) <= slack


def test_exact_verdict_both_ways_on_a_crafted_line():
    # y = (t − 0.6, 0): the label-0 margin y0 − y1 is negative on [0, 0.6), positive after.
    net = sequential([ops.Linear(torch.tensor([[1.0], [0.0]], dtype=D),
                                 torch.tensor([-0.6, 0.0], dtype=D))], (1,))
    spec = OutputSpec.robustness([0], 2, dtype=D)
    bad = certify_segment_exact(net, torch.zeros(1, dtype=D), torch.ones(1, dtype=D), spec)
    assert bad.result.verdict is Verdict.FALSIFIED and bad.t_star < 0.6
    assert abs(bad.fraction_lower - 0.4) < 1e-12
    good = certify_segment_exact(net, torch.full((1,), 0.7, dtype=D), torch.ones(1, dtype=D), spec)
    assert good.result.verdict is Verdict.VERIFIED and good.fraction_lower == 1.0


def test_union_length():
    iv = torch.tensor([[0.0, 0.2], [0.1, 0.3], [0.5, 0.5], [0.6, 1.0]], dtype=D)
    assert abs(union_length(iv) - 0.7) < 1e-12


@pytest.mark.parametrize("kind", ["relu", "leaky", "residual", "f-of-g", "sigmoid", "tanh"])
@pytest.mark.parametrize("seed", range(4))
def test_segment_search_agrees_with_exact_and_sampling(kind, seed):
    """``search_segment`` (complete search on the segment graph): a verified segment has no
    sampled violation; a falsified one carries a re-checked t*; on ReLU nets it never
    contradicts ExactLine."""
    from nncert.semantic.latent import search_segment

    net = _net(kind, seed) if kind in KINDS else zoo.random_graph(kind, seed).to(dtype=D)
    a, b = _ends(net, seed + 10)
    b = a + (0.3, 1.0, 3.0, 10.0)[seed] * (b - a)
    spec = _label_spec(net, a)
    rep = search_segment(net, a, b, spec, timeout_s=20.0)
    t = torch.linspace(0, 1, 10_001, dtype=D)
    y = net(a + t.reshape(-1, *([1] * a.dim())) * (b - a)).flatten(1)
    holds = spec.holds(y[:, None, :])[:, 0]
    v = rep.result.verdict
    if v is Verdict.VERIFIED:
        assert bool(holds.all()) and rep.fraction_lower == 1.0
    elif v is Verdict.FALSIFIED:
        cex = rep.result.counterexample
        assert not bool(spec.holds(net(cex.x.unsqueeze(0)).flatten(1))[0])
        assert 0.0 <= rep.t_star <= 1.0 and rep.fraction_lower == 0.0
    else:
        assert rep.fraction_lower == 0.0 and rep.fraction_upper == 1.0
    if not bool(holds.all()):
        assert v is not Verdict.VERIFIED
    if kind in KINDS and v in (Verdict.VERIFIED, Verdict.FALSIFIED):
        assert certify_segment_exact(net, a, b, spec).result.verdict is v
