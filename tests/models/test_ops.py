"""Op vocabulary: transpose is the adjoint of linear, abs_linear has |coefficients|, forward is
linear + bias, multi-input adjoints."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from nncert.models import ops

D = torch.float64


def _r(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=D)


def _jacobian(op: ops.AffineOp, in_shape) -> torch.Tensor:
    """The matrix of ``op.linear`` (out, in), column by column."""
    n = torch.Size(in_shape).numel()
    eye = torch.eye(n, dtype=D).reshape(n, *in_shape)
    return op.linear(eye).reshape(n, -1).T


AFFINE_CASES = [
    (ops.Linear(_r(4, 6), _r(4)), (6,)),
    (ops.Linear(_r(3, 5)), (5,)),
    (ops.Conv2d(_r(4, 2, 3, 3), _r(4), (1, 1), (1, 1)), (2, 5, 5)),
    (ops.Conv2d(_r(3, 2, 3, 2), None, (2, 1), (0, 1)), (2, 7, 6)),
    (ops.Conv2d(_r(4, 1, 3, 3), _r(4), (2, 2), (1, 1), (2, 2), 2), (2, 9, 8)),
    (ops.Conv2d(_r(6, 1, 2, 2), None, (3, 3), (0, 0), (1, 1), 3), (3, 7, 8)),
    (ops.ElementwiseAffine(_r(2, 1, 1), _r(2, 1, 1)), (2, 3, 3)),
    (ops.ElementwiseAffine(None, _r(4)), (4,)),
    (ops.ElementwiseAffine(_r(4), None), (4,)),
    (ops.Flatten(), (2, 3, 2)),
    (ops.Reshape((3, 4)), (12,)),
    (ops.Transpose((2, 0, 1)), (2, 3, 4)),
    (ops.Pad((1, 0, 2, 1)), (2, 3, 3)),
    (ops.Pad((1, 2), value=0.5), (3, 4)),
    (ops.Pad((1, 1, 1, 1), mode="reflect"), (2, 4, 4)),
    (ops.Pad((2, 0, 0, 1), mode="replicate"), (2, 3, 3)),
    (ops.AvgPool2d((2, 2), (2, 2)), (2, 5, 5)),
    (ops.AvgPool2d((3, 3), (2, 1), (1, 1), count_include_pad=False), (2, 6, 5)),
]
IDS = [f"{op.kind}-{i}" for i, (op, _) in enumerate(AFFINE_CASES)]


@pytest.mark.parametrize("op,in_shape", AFFINE_CASES, ids=IDS)
def test_transpose_is_adjoint(op, in_shape):
    x = _r(3, *in_shape, seed=1)
    lin = op.linear(x)
    y = _r(*lin.shape, seed=2)
    lhs = (lin * y).flatten(1).sum(1)
    rhs = (x * op.transpose(y, in_shape)).flatten(1).sum(1)
    torch.testing.assert_close(lhs, rhs, rtol=1e-10, atol=1e-10)
    assert op.transpose(y, in_shape).shape == x.shape


@pytest.mark.parametrize("op,in_shape", AFFINE_CASES, ids=IDS)
def test_abs_linear_uses_absolute_coefficients(op, in_shape):
    J = _jacobian(op, in_shape)
    x = _r(2, *in_shape, seed=3)
    expected = (x.flatten(1) @ J.abs().T).reshape(op.linear(x).shape)
    torch.testing.assert_close(op.abs_linear(x), expected)
    if op.nonnegative:
        assert bool((J >= 0).all())


@pytest.mark.parametrize("op,in_shape", AFFINE_CASES, ids=IDS)
def test_forward_is_linear_plus_bias(op, in_shape):
    x = _r(2, *in_shape, seed=4)
    b = op.bias(in_shape, x)
    expected = op.linear(x) if b is None else op.linear(x) + b
    torch.testing.assert_close(op.forward(x), expected)


@given(
    c_in=st.sampled_from([1, 2, 4]), groups=st.sampled_from([1, 2]), k=st.integers(1, 4),
    s=st.integers(1, 3), p=st.integers(0, 2), d=st.integers(1, 2), h=st.integers(5, 11),
    w=st.integers(5, 11),
)
@settings(max_examples=40, deadline=None)
def test_conv_transpose_adjoint_random(c_in, groups, k, s, p, d, h, w):
    if c_in % groups or d * (k - 1) + 1 > min(h, w) + 2 * p:
        return
    op = ops.Conv2d(_r(2 * groups, c_in // groups, k, k, seed=k), None, (s, s), (p, p), (d, d), groups)
    x = _r(2, c_in, h, w, seed=5)
    lin = op.linear(x)
    y = _r(*lin.shape, seed=6)
    torch.testing.assert_close((lin * y).sum(), (x * op.transpose(y, (c_in, h, w))).sum())


def test_transpose_keeps_autograd_graph():
    op = ops.AvgPool2d((3, 3), (2, 2), (1, 1))
    y = _r(1, 1, 3, 3).requires_grad_(True)
    op.transpose(y, (1, 5, 5)).sum().backward()
    assert y.grad is not None


MULTI = [
    (ops.Add(), [(3, 2), (3, 2)]),
    (ops.Sub(), [(4,), (4,)]),
    (ops.Concat(0), [(2, 3), (4, 3), (1, 3)]),
    (ops.Concat(1), [(2, 3), (2, 1)]),
]


@pytest.mark.parametrize("op,shapes", MULTI, ids=[f"{o.kind}-{i}" for i, (o, _) in enumerate(MULTI)])
def test_multi_input_transpose_is_adjoint(op, shapes):
    xs = [_r(2, *s, seed=i) for i, s in enumerate(shapes)]
    out = op.forward(*xs)
    y = _r(*out.shape, seed=9)
    ts = op.transpose_multi(y, shapes)
    lhs = (out * y).flatten(1).sum(1)
    rhs = sum((x * t).flatten(1).sum(1) for x, t in zip(xs, ts))
    torch.testing.assert_close(lhs, rhs)
    # abs_forward: the same map with |coefficients|
    abs_out = op.abs_forward(*[x.abs() for x in xs])
    assert bool((abs_out >= op.forward(*xs).abs() - 1e-12).all())


def test_sub_abs_forward_adds():
    a, b = _r(2, 3), _r(2, 3, seed=1)
    torch.testing.assert_close(ops.Sub().abs_forward(a, b), a + b)


def test_activations():
    x = torch.linspace(-3, 3, 13, dtype=D).unsqueeze(0)
    torch.testing.assert_close(ops.ReLU().forward(x), x.clamp(min=0))
    torch.testing.assert_close(ops.LeakyReLU(0.2).forward(x), F.leaky_relu(x, 0.2))
    torch.testing.assert_close(ops.Sigmoid().forward(x), torch.sigmoid(x))
    torch.testing.assert_close(ops.Tanh().forward(x), torch.tanh(x))
    assert ops.ReLU.piecewise_linear and not ops.Sigmoid.piecewise_linear
    with pytest.raises(ValueError):
        ops.LeakyReLU(-0.1)


def test_maxpool_matches_torch():
    x = _r(2, 3, 7, 7)
    op = ops.MaxPool2d((3, 3), (2, 2), (1, 1), (1, 1))
    torch.testing.assert_close(op.forward(x), F.max_pool2d(x, 3, 2, 1, 1))


def test_normalize():
    op = ops.normalize([0.5, 0.25], [0.5, 2.0])
    x = _r(2, 2, 3, 3)
    mean = torch.tensor([0.5, 0.25], dtype=D).view(2, 1, 1)
    std = torch.tensor([0.5, 2.0], dtype=D).view(2, 1, 1)
    torch.testing.assert_close(op.forward(x.float()), ((x - mean) / std).float())
    with pytest.raises(ValueError):
        ops.normalize([0.0], [0.0])


def test_to_changes_dtype_of_tensors_only():
    op = ops.Conv2d(_r(2, 1, 3, 3), _r(2), (2, 2))
    op32 = op.to(dtype=torch.float32)
    assert op32.weight.dtype == torch.float32 and op32.stride == (2, 2)
    assert ops.ReLU().to(dtype=torch.float32).kind == "ReLU"


def test_all_ops_listed():
    assert set(ops.AFFINE_OPS) <= set(ops.ALL_OPS)
    assert len(set(ops.ALL_OPS)) == len(ops.ALL_OPS) == 16
