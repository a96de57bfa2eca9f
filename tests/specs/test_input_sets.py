"""Input sets: concretisation is sound (sampled points stay inside) and tight where it should be
(attained at a vertex of a box / the analytic minimiser of an unclipped ball); sample, project,
contains and split keep their promises."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nncert.errors import ConfigError, NumericalError, ShapeError
from nncert.specs import AffineBand, Box, LpBall

SHAPES = st.sampled_from([(3,), (2, 2), (1, 2, 3)])
TOL = 1e-9


@st.composite
def box_case(draw):
    shape = draw(SHAPES)
    B, R = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    lo = torch.randn((B, *shape), generator=g, dtype=torch.float64)
    scale = draw(st.sampled_from([0.0, 0.1, 2.0]))
    hi = lo + torch.rand((B, *shape), generator=g, dtype=torch.float64) * scale
    A = torch.randn((B, R, *shape), generator=g, dtype=torch.float64)
    return Box(lo, hi), A, g


@st.composite
def ball_case(draw, clip: bool):
    shape = draw(SHAPES)
    B, R = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    center = torch.rand((B, *shape), generator=g, dtype=torch.float64)
    eps = draw(st.floats(0.0, 0.8))
    p = draw(st.sampled_from([math.inf, 2]))
    A = torch.randn((B, R, *shape), generator=g, dtype=torch.float64)
    lo, hi = (0.0, 1.0) if clip else (None, None)
    return LpBall(center, eps, p, lo, hi), A, g


def dot(A: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B, R, *s) · (n, B, *s) → (n, B, R)."""
    B, R = A.shape[:2]
    return torch.einsum("brk,nbk->nbr", A.reshape(B, R, -1), x.reshape(x.shape[0], B, -1))


# ---- boxes -----------------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(box_case())
def test_box_concretize_is_sound_and_attained_at_vertices(case):
    box, A, g = case
    lo, hi = box.concretize(A)
    assert lo.shape == hi.shape == A.shape[:2]
    vals = dot(A, box.sample(300, g))
    assert bool((vals >= lo - TOL).all() and (vals <= hi + TOL).all())
    # the minimiser of a·x over a box is the vertex x_i = lo_i where a_i > 0, hi_i otherwise
    for r in range(A.shape[1]):
        a = A[:, r]
        x_min = torch.where(a > 0, box.lo, box.hi)
        x_max = torch.where(a > 0, box.hi, box.lo)
        assert bool(box.contains(x_min).all() and box.contains(x_max).all())
        torch.testing.assert_close(dot(A[:, r:r + 1], x_min[None])[0, :, 0], lo[:, r])
        torch.testing.assert_close(dot(A[:, r:r + 1], x_max[None])[0, :, 0], hi[:, r])


@settings(max_examples=40, deadline=None)
@given(box_case())
def test_box_sample_project_contains(case):
    box, _, g = case
    pts = box.sample(50, g)
    assert pts.shape == (50, *box.lo.shape)
    assert bool(box.contains(pts).all())
    far = box.center + 10 * torch.randn(box.lo.shape, generator=g, dtype=box.lo.dtype)
    proj = box.project(far)
    assert bool(box.contains(proj).all())
    torch.testing.assert_close(proj, far.clamp(box.lo, box.hi))
    torch.testing.assert_close(box.project(pts), pts)  # points inside stay put
    outside = box.hi + 1.0
    assert not bool(box.contains(outside).any())
    assert bool(box.contains(box.hi + 0.5, atol=0.6).all())


@settings(max_examples=40, deadline=None)
@given(box_case(), st.data())
def test_box_split_halves_cover_the_box(case, data):
    box, _, g = case
    B, n = box.batch_size, box.lo[0].numel()
    dim = torch.tensor(data.draw(st.lists(st.integers(0, n - 1), min_size=B, max_size=B)))
    halves = box.split(dim)
    assert halves.batch_size == 2 * B and halves.shape == box.shape
    left, right = halves[:B], halves[B:]
    rows = torch.arange(B)
    mid = ((box.lo.reshape(B, -1) + box.hi.reshape(B, -1)) / 2)[rows, dim]
    assert torch.equal(left.hi.reshape(B, -1)[rows, dim], mid)
    assert torch.equal(right.lo.reshape(B, -1)[rows, dim], mid)
    assert torch.equal(left.lo, box.lo) and torch.equal(right.hi, box.hi)
    pts = box.sample(100, g)
    assert bool((left.contains(pts) | right.contains(pts)).all())
    assert bool(box.contains(left.sample(20, g)).all() and box.contains(right.sample(20, g)).all())


def test_box_hand_computed():
    box = Box(torch.tensor([[0.0, -1.0]]), torch.tensor([[2.0, 1.0]]))
    lo, hi = box.concretize(torch.tensor([[[1.0, -3.0], [0.5, 0.0]]]))
    assert lo.tolist() == [[-3.0, 0.0]] and hi.tolist() == [[5.0, 1.0]]
    assert box.center.tolist() == [[1.0, 0.0]]


def test_box_indexing_and_to():
    box = Box(torch.zeros(3, 2), torch.ones(3, 2))
    assert box[1].lo.shape == (1, 2) and box[0:2].batch_size == 2
    assert box.to(dtype=torch.float64).lo.dtype == torch.float64
    box.check_shape((2,))
    with pytest.raises(ShapeError):
        box.check_shape((3,))


def test_box_rejects_bad_bounds():
    with pytest.raises(ConfigError):
        Box(torch.ones(1, 2), torch.zeros(1, 2))
    with pytest.raises(NumericalError):
        Box(torch.tensor([[float("nan")]]), torch.ones(1, 1))
    with pytest.raises(NumericalError):
        Box(torch.zeros(1, 1), torch.tensor([[math.inf]]))
    with pytest.raises(ShapeError):
        Box(torch.zeros(1, 2), torch.ones(1, 3))


# ---- balls -----------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(ball_case(clip=False))
def test_unclipped_ball_concretize_is_sound_and_tight(case):
    ball, A, g = case
    lo, hi = ball.concretize(A)
    vals = dot(A, ball.sample(300, g))
    assert bool((vals >= lo - TOL).all() and (vals <= hi + TOL).all())
    B, R = A.shape[:2]
    flat = A.reshape(B, R, -1)
    mid = torch.einsum("brk,bk->br", flat, ball.center_.reshape(B, -1))
    dual = flat.abs().sum(-1) if ball.p == math.inf else flat.norm(dim=-1)  # dual norm of A
    torch.testing.assert_close(lo, mid - ball.eps * dual)
    torch.testing.assert_close(hi, mid + ball.eps * dual)
    # the analytic minimiser lies in the ball and attains the lower bound
    for r in range(R):
        a = A[:, r]
        if ball.p == math.inf:
            x = ball.center_ - ball.eps * a.sign()
        else:
            norm = a.reshape(B, -1).norm(dim=-1).reshape(B, *([1] * (a.dim() - 1)))
            x = ball.center_ - ball.eps * a / norm
        assert bool(ball.contains(x, atol=1e-9).all())
        torch.testing.assert_close(dot(A[:, r:r + 1], x[None])[0, :, 0], lo[:, r])


@settings(max_examples=60, deadline=None)
@given(ball_case(clip=True))
def test_clipped_ball_concretize_is_sound_and_no_looser_than_its_parts(case):
    ball, A, g = case
    lo, hi = ball.concretize(A)
    pts = ball.sample(300, g)
    assert bool(ball.contains(pts, atol=1e-12).all())
    vals = dot(A, pts)
    assert bool((vals >= lo - TOL).all() and (vals <= hi + TOL).all())
    hull_lo, hull_hi = ball.box_hull().concretize(A)
    free_lo, free_hi = LpBall(ball.center_, ball.eps, ball.p).concretize(A)
    assert bool((lo >= torch.maximum(hull_lo, free_lo) - TOL).all())
    assert bool((hi <= torch.minimum(hull_hi, free_hi) + TOL).all())


@settings(max_examples=40, deadline=None)
@given(ball_case(clip=False) | ball_case(clip=True))
def test_ball_sample_project_contains(case):
    ball, _, g = case
    pts = ball.sample(50, g)
    assert pts.shape == (50, *ball.center_.shape)
    assert bool(ball.contains(pts, atol=1e-12).all())
    far = ball.center_ + 5 * torch.randn(ball.center_.shape, generator=g, dtype=torch.float64)
    proj = ball.project(far)
    assert bool(ball.contains(proj, atol=1e-12).all())
    torch.testing.assert_close(ball.project(pts), pts)
    assert bool(ball.contains(ball.center).all())
    if ball.clip_lower is None and ball.eps > 0:
        delta, moved = far - ball.center_, proj - ball.center_
        if ball.p == 2:  # exact projection: same direction, radius eps
            B = delta.shape[0]
            unit = delta.reshape(B, -1) / delta.reshape(B, -1).norm(dim=-1, keepdim=True)
            torch.testing.assert_close(moved.reshape(B, -1), ball.eps * unit)
        else:
            torch.testing.assert_close(moved, delta.clamp(-ball.eps, ball.eps))


def test_ball_per_element_eps_and_errors():
    c = torch.zeros(2, 3)
    ball = LpBall(c, torch.tensor([0.1, 0.5]), 2)
    lo, hi = ball.concretize(torch.ones(2, 1, 3))
    torch.testing.assert_close(hi[:, 0], torch.tensor([0.1, 0.5]) * math.sqrt(3))
    assert ball[1].batch_size == 1 and float(ball[1].eps) == 0.5
    assert ball.upper[1].tolist() == [0.5, 0.5, 0.5]
    with pytest.raises(ConfigError):
        LpBall(c, 0.1, 1)
    with pytest.raises(ConfigError):
        LpBall(c, -0.1)
    with pytest.raises(NumericalError):
        LpBall(torch.full((1, 2), float("nan")), 0.1)


def test_ball_l2_is_tighter_than_its_box_hull():
    ball = LpBall(torch.zeros(1, 4), 1.0, 2)
    lo, _ = ball.concretize(torch.ones(1, 1, 4))
    hull_lo, _ = ball.box_hull().concretize(torch.ones(1, 1, 4))
    assert lo.item() == pytest.approx(-2.0) and hull_lo.item() == pytest.approx(-4.0)


# ---- affine bands (pixels linear in a few parameters, plus an error box) ---------------------------
@st.composite
def band_case(draw):
    shape = draw(SHAPES)
    B, R, K = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 2))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    offset = torch.randn((B, *shape), generator=g, dtype=torch.float64)
    gens = torch.randn((B, K, *shape), generator=g, dtype=torch.float64)
    gens[..., 0] *= draw(st.sampled_from([0.0, 1.0]))  # a coordinate with no linear part
    e = torch.rand((B, *shape), generator=g, dtype=torch.float64) * draw(st.sampled_from([0.0, 0.3]))
    A = torch.randn((B, R, *shape), generator=g, dtype=torch.float64)
    return AffineBand(offset, gens, -e, e), A, g


@settings(max_examples=30, deadline=None)
@given(band_case())
def test_band_concretize_is_sound_and_attained(case):
    band, A, g = case
    lo, hi = band.concretize(A)
    vals = dot(A, band.sample(300, g))
    assert bool((vals >= lo - TOL).all() and (vals <= hi + TOL).all())
    # the minimiser: u_k = 0 or 1 by the sign of A·gens_k, e at the end opposite A's sign
    for r in range(A.shape[1]):
        a = A[:, r]
        ag = torch.einsum("bn,bkn->bk", a.reshape(a.shape[0], -1), band.gens.flatten(2))
        x_min = band.point((ag < 0).to(A.dtype), torch.where(a > 0, band.e_lo, band.e_hi))
        x_max = band.point((ag > 0).to(A.dtype), torch.where(a > 0, band.e_hi, band.e_lo))
        torch.testing.assert_close(dot(A[:, r:r + 1], x_min[None])[0, :, 0], lo[:, r])
        torch.testing.assert_close(dot(A[:, r:r + 1], x_max[None])[0, :, 0], hi[:, r])
        assert bool(band.contains(x_min, atol=1e-9).all() and band.contains(x_max, 1e-9).all())


@settings(max_examples=30, deadline=None)
@given(band_case())
def test_band_sample_project_contains_hull(case):
    band, _, g = case
    pts = band.sample(40, g)
    assert bool(band.contains(pts, atol=1e-9).all())
    assert bool((pts >= band.lower - TOL).all() and (pts <= band.upper + TOL).all())
    assert bool(band.contains(band.center[None], atol=1e-9).all())
    far = band.center + 10 * torch.randn(band.offset.shape, generator=g, dtype=torch.float64)
    assert bool(band.contains(band.project(far), atol=1e-9).all())
    assert not bool(band.contains(band.upper + 1.0).any())
    sub = band[band.batch_size - 1]
    assert sub.batch_size == 1 and sub.to(dtype=torch.float32).offset.dtype == torch.float32


def test_band_rejects_bad_shapes_and_values():
    o = torch.zeros(2, 3)
    with pytest.raises(ShapeError):
        AffineBand(o, torch.zeros(2, 3), o, o)  # generators without the K dim
    with pytest.raises(ShapeError):
        AffineBand(o, torch.zeros(2, 1, 3), o, torch.zeros(2, 4))
    with pytest.raises(ConfigError):
        AffineBand(o, torch.zeros(2, 1, 3), o + 1, o)
    with pytest.raises(NumericalError):
        AffineBand(o, torch.full((2, 1, 3), math.nan), o, o)
