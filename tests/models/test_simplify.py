"""simplify: every rewrite fires where it should, not where it must not, and is exact."""

from __future__ import annotations

import pytest
import torch

from nncert.models import Graph, Node, ops, sequential, zoo
from nncert.models.simplify import simplify

G = torch.Generator().manual_seed(0)


def _r(*shape):
    return torch.randn(*shape, generator=G)


def _same(g: Graph, s: Graph, n=200):
    x = torch.rand((n, *g.input_shape), generator=G) * 4 - 2
    ref = g(x)
    err = float((s(x) - ref).abs().max() / ref.abs().max().clamp(min=1.0))
    assert err <= 1e-6, err  # max |diff| relative to max |output| (float32 rounding only)
    assert s.input_shape == g.input_shape and s.output_shape == g.output_shape


def test_linear_then_bias_folds():
    g = sequential([ops.Linear(_r(4, 3)), ops.ElementwiseAffine(None, _r(4)), ops.ReLU()], (3,))
    s = simplify(g)
    _same(g, s)
    assert [n.op.kind for n in s] == ["Linear", "ReLU"] and s.nodes[0].op.bias_ is not None


def test_conv_then_batchnorm_folds():
    bn = ops.ElementwiseAffine(_r(4, 1, 1), _r(4, 1, 1))
    g = sequential([ops.Conv2d(_r(4, 2, 3, 3), _r(4), padding=(1, 1)), bn, ops.ReLU()], (2, 5, 5))
    s = simplify(g)
    _same(g, s)
    assert [n.op.kind for n in s] == ["Conv2d", "ReLU"]


def test_per_pixel_affine_after_conv_not_folded():
    ea = ops.ElementwiseAffine(_r(4, 5, 5), None)
    g = sequential([ops.Conv2d(_r(4, 2, 3, 3), padding=(1, 1)), ea], (2, 5, 5))
    s = simplify(g)
    _same(g, s)
    assert len(s) == 2


def test_layer_with_two_readers_not_folded():
    nodes = [Node("fc", ops.Linear(_r(4, 3)), ("input",)),
             Node("ea", ops.ElementwiseAffine(_r(4), _r(4)), ("fc",)),
             Node("add", ops.Add(), ("ea", "fc"))]
    g = Graph(nodes, (3,))
    s = simplify(g)
    _same(g, s)
    assert len(s) == 3


def test_affine_at_output_folds_into_layer():
    g = sequential([ops.Linear(_r(4, 3), _r(4)), ops.ElementwiseAffine(_r(4), _r(1))], (3,))
    s = simplify(g)
    _same(g, s)
    assert len(s) == 1 and s.output_name == "n0"


def test_front_normalisation_kept():
    norm = ops.normalize([0.1, 0.2, 0.3], [0.2, 0.3, 0.4], ndim=1)
    g = sequential([norm, ops.ElementwiseAffine(_r(3), None), ops.Linear(_r(4, 3), _r(4)), ops.ReLU()],
                   (3,))
    s = simplify(g)
    _same(g, s)
    assert [n.op.kind for n in s] == ["ElementwiseAffine", "Linear", "ReLU"]  # two merged, not folded


def test_consecutive_affines_merge():
    g = sequential([ops.ReLU(), ops.ElementwiseAffine(_r(3), _r(3)), ops.ElementwiseAffine(None, _r(1)),
                    ops.ElementwiseAffine(_r(1), None)], (3,))
    s = simplify(g)
    _same(g, s)
    assert len(s) == 2


def test_linear_linear_merges_only_without_other_readers():
    g = sequential([ops.Linear(_r(4, 3), _r(4)), ops.Linear(_r(2, 4), _r(2))], (3,))
    s = simplify(g)
    _same(g, s)
    assert len(s) == 1
    nodes = [Node("a", ops.Linear(_r(4, 3), _r(4)), ("input",)),
             Node("b", ops.Linear(_r(4, 4), _r(4)), ("a",)), Node("c", ops.Add(), ("a", "b"))]
    g2 = Graph(nodes, (3,))
    assert len(simplify(g2)) == 3


def test_linear_merge_skipped_when_it_grows():
    g = sequential([ops.Linear(_r(1, 20)), ops.Linear(_r(20, 1))], (20,))  # rank-1 bottleneck
    assert len(simplify(g)) == 2


def test_identity_nodes_dropped():
    g = sequential([ops.Reshape((2, 3)), ops.Reshape((2, 3)), ops.Transpose((0, 1)), ops.Pad((0, 0)),
                    ops.Flatten(), ops.Flatten(), ops.ElementwiseAffine(torch.ones(6), torch.zeros(6)),
                    ops.ReLU()], (6,))
    s = simplify(g)
    _same(g, s)
    assert [n.op.kind for n in s] == ["ReLU"]


def test_reshape_chain_merges():
    g = sequential([ops.ReLU(), ops.Reshape((2, 6)), ops.Reshape((3, 4)), ops.Flatten(), ops.Reshape((4, 3))],
                   (12,))
    s = simplify(g)
    _same(g, s)
    assert [n.op.kind for n in s] == ["ReLU", "Reshape"]


def test_lone_identity_output_kept():
    g = sequential([ops.Reshape((4,))], (4,))
    assert len(simplify(g)) == 1


@pytest.mark.parametrize("kind", zoo.KINDS)
@pytest.mark.parametrize("seed", [0, 1])
def test_zoo_graphs_unchanged_in_function(kind, seed):
    g = zoo.random_graph(kind, seed)
    _same(g, simplify(g))


def test_float64_preserved():
    g = sequential([ops.Linear(_r(4, 3).double()), ops.ElementwiseAffine(None, _r(4).double())], (3,))
    s = simplify(g)
    assert s.dtype == torch.float64
    _ = s(torch.rand(2, 3, dtype=torch.float64))
