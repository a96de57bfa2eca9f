"""Graph IR: structure checks, shapes, evaluation, prepend, dtype changes."""

from __future__ import annotations

import pytest
import torch

from nncert.errors import ModelError, NumericalError, ShapeError
from nncert.models import Graph, Node, ops, sequential, zoo
from nncert.models.graph import prepend


def _lin(n_out, n_in, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ops.Linear(torch.randn(n_out, n_in, generator=g), torch.randn(n_out, generator=g))


def test_sequential_shapes_and_forward():
    g = sequential([_lin(4, 3), ops.ReLU(), _lin(2, 4, 1)], (3,))
    assert g.shapes == {"input": (3,), "n0": (4,), "n1": (4,), "n2": (2,)}
    assert g.output_shape == (2,) and g.num_inputs == 3 and g.num_outputs == 2
    x = torch.randn(5, 3)
    expected = torch.relu(x @ g.node("n0").op.weight.T + g.node("n0").op.bias_)
    expected = expected @ g.node("n2").op.weight.T + g.node("n2").op.bias_
    torch.testing.assert_close(g(x), expected)
    assert g.num_parameters() == 4 * 3 + 4 + 2 * 4 + 2
    assert g.op_kinds() == ["Linear", "ReLU"]


def test_forward_all_and_consumers():
    g = zoo.random_graph("residual")
    vals = g.forward_all(torch.randn(2, 5))
    assert set(vals) == {"input"} | {n.name for n in g}
    assert {n.name for n in g.consumers("r1")} == {"fc2", "add"}
    assert all(tuple(vals[k].shape[1:]) == g.shapes[k] for k in vals)


def test_empty_graph():
    with pytest.raises(ModelError, match="at least one node"):
        Graph([], (3,))


def test_duplicate_name():
    with pytest.raises(ModelError, match="duplicate"):
        Graph([Node("a", ops.ReLU(), ("input",)), Node("a", ops.ReLU(), ("input",))], (3,))


def test_reads_later_or_unknown_node():
    with pytest.raises(ModelError, match="not an earlier node"):
        Graph([Node("a", ops.ReLU(), ("b",)), Node("b", ops.ReLU(), ("input",))], (3,))


def test_arity():
    with pytest.raises(ModelError, match="takes 2 inputs"):
        Graph([Node("a", ops.Add(), ("input",))], (3,))


def test_output_must_be_node():
    with pytest.raises(ModelError, match="output"):
        Graph([Node("a", ops.ReLU(), ("input",))], (3,), output_name="zzz")


def test_nan_weights():
    w = torch.ones(2, 3)
    w[0, 0] = float("nan")
    with pytest.raises(NumericalError, match="NaN"):
        sequential([ops.Linear(w)], (3,))


def test_shape_mismatch_inside_graph():
    with pytest.raises(ModelError, match="does not run"):
        sequential([_lin(4, 3), _lin(2, 5)], (3,))


def test_check_input():
    g = sequential([_lin(4, 3)], (3,))
    with pytest.raises(ShapeError, match=r"expected shape \(3,\), got \(4,\)"):
        g(torch.zeros(1, 4))


def test_prepend_normalisation():
    g = zoo.random_graph("conv-max")
    norm = ops.normalize([0.1, 0.2], [0.5, 0.5])
    g2 = prepend(g, norm)
    x = zoo.sample_inputs(g, 4)
    torch.testing.assert_close(g2(x), g(norm.forward(x)))
    assert g2.nodes[0].name == "prep" and g2.input_shape == g.input_shape
    g3 = prepend(g2, norm)
    assert g3.nodes[0].name == "prep_"
    with pytest.raises(ShapeError):
        prepend(g, ops.Flatten())


def test_to_dtype_keeps_function():
    g = zoo.random_graph("conv-avg")
    g64 = g.to(dtype=torch.float64)
    assert g64.dtype == torch.float64 and g.dtype == torch.float32
    x = zoo.sample_inputs(g, 3)
    torch.testing.assert_close(g64(x.double()).float(), g(x), rtol=1e-5, atol=1e-6)
    assert g64.shapes == g.shapes


def test_summary_and_repr():
    g = zoo.random_graph("relu")
    s = g.summary()
    assert s.splitlines()[0].startswith("input") and "Linear" in s and len(s.splitlines()) == len(g) + 1
    assert repr(g) == "Graph(5 nodes, input (6,), output (3,))"


@pytest.mark.parametrize("kind", zoo.KINDS)
def test_zoo_graphs_build(kind):
    g = zoo.random_graph(kind, seed=3)
    assert g(zoo.sample_inputs(g, 2)).shape == (2, *g.output_shape)


def test_zoo_covers_every_op():
    kinds = {type(n.op) for k in zoo.KINDS for n in zoo.random_graph(k)}
    assert kinds == set(ops.ALL_OPS)


def test_with_ops_replaces_named_nodes_only():
    g = sequential([_lin(4, 3), ops.ReLU(), _lin(2, 4, 1)], (3,))
    h = g.with_ops({"n0": ops.Linear(torch.zeros(4, 3), torch.ones(4))})
    x = torch.randn(5, 3)
    n2 = g.node("n2").op
    torch.testing.assert_close(h(x), (torch.ones(5, 4) @ n2.weight.T + n2.bias_))
    assert h.shapes == g.shapes and h.node("n2") is g.node("n2")
    assert not torch.equal(g(x), h(x))  # the original is unchanged
    with pytest.raises(ModelError, match="no node named nX"):
        g.with_ops({"nX": ops.ReLU()})
