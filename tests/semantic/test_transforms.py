"""Transform sets: sound pixel bounds over parameter boxes, and the split-and-bound decision."""

from __future__ import annotations

import pytest
import torch
from semantic_fixtures import cached_digits_mlp, digits_test_data

from nncert.errors import ConfigError, ShapeError
from nncert.result import Verdict
from nncert.semantic.filters import fog_pattern
from nncert.semantic.transforms import (
    TRANSFORMS,
    TransformConfig,
    TransformSet,
    apply_transform,
    bilinear,
    certify_transform,
    uniform_pieces,
)


@pytest.fixture(scope="module")
def digits_mlp():
    return cached_digits_mlp()


@pytest.fixture(scope="module")
def digits_test():
    return digits_test_data()

D = torch.float64
RANGES = {"rotate": ([-30.0], [30.0]), "translate": ([-2.0, -1.5], [1.0, 2.5]),
          "scale": ([0.8], [1.25]), "shear": ([-0.3], [0.3]), "brightness": ([-0.3], [0.3]),
          "contrast": ([0.5], [1.5]), "blur": ([0.0], [1.5]), "fog": ([0.1], [0.7])}


def _image(C=1, H=8, W=8, seed=0):
    return torch.rand((C, H, W), generator=torch.Generator().manual_seed(seed), dtype=D)


@pytest.mark.parametrize("name", list(TRANSFORMS))
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 11, 9)])
@pytest.mark.parametrize("pieces", [1, 3])
def test_pixel_bounds_contain_sampled_images(name, shape, pieces):
    tset = uniform_pieces(_image(*shape), name, *RANGES[name], pieces)
    box = tset.box()
    n = 10_000 // tset.batch_size
    params = tset.sample_params(n, torch.Generator().manual_seed(1))  # (n, B, k)
    imgs = tset.images(params.reshape(-1, params.shape[-1])).reshape(n, tset.batch_size, *shape)
    assert bool((imgs >= box.lo).all() and (imgs <= box.hi).all()), name
    ends = tset.images(torch.cat([tset.lo, tset.hi])).reshape(2, tset.batch_size, *shape)
    assert bool((ends >= box.lo).all() and (ends <= box.hi).all())


@pytest.mark.parametrize("name", list(TRANSFORMS))
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 11, 9)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_linear_pixel_bounds_contain_sampled_images(name, shape, dtype):
    """The band (pixels linear in the parameters plus an error interval) holds every image at
    10,000 sampled parameters, in the image's dtype; its error is narrower than the box."""
    tset = uniform_pieces(_image(*shape).to(dtype), name, *RANGES[name], 3)
    band = tset.band(sub=4)
    n = 10_000 // tset.batch_size
    params = tset.sample_params(n, torch.Generator().manual_seed(1)).to(D)  # (n, B, k)
    params = torch.cat([params, tset.lo[None].to(D), tset.hi[None].to(D)])
    imgs = TransformSet(tset.image.double(), name, tset.lo.double(), tset.hi.double()).images(
        params.reshape(-1, params.shape[-1])).reshape(-1, tset.batch_size, *shape)
    u = (params - tset.lo.double()) / (tset.hi - tset.lo).double()
    res = imgs - band.to(dtype=D).point(u, torch.zeros(band.e_lo.shape, dtype=D))
    assert bool((res >= band.e_lo.double()).all() and (res <= band.e_hi.double()).all()), name
    assert band.offset.dtype == dtype
    box = tset.box()
    assert float((band.e_hi - band.e_lo).mean()) < float((box.hi - box.lo).mean())


def test_linear_bounds_are_exact_up_to_the_error_for_affine_pixels():
    """Brightness without clipping is affine in β: the fitted plane is the transform itself,
    and a finer sub-box grid shrinks the error towards zero."""
    x = 0.25 + 0.5 * _image()
    tset = uniform_pieces(x, "brightness", [-0.1], [0.1], 1)
    coarse, fine = tset.band(sub=4), tset.band(sub=64)
    torch.testing.assert_close(fine.offset[0], x - 0.1)
    torch.testing.assert_close(fine.gens[0, 0], torch.full_like(x, 0.2))
    assert float((fine.e_hi - fine.e_lo).max()) < float((coarse.e_hi - coarse.e_lo).max()) / 8


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_bounds_tighten_when_split_and_shrink_to_the_image(name):
    tset = uniform_pieces(_image(), name, *RANGES[name], 1)
    parent, kids = tset.box(), tset.split().box()
    assert bool((kids.lo >= parent.lo - 1e-12).all() and (kids.hi <= parent.hi + 1e-12).all())
    assert float((kids.hi - kids.lo).mean()) <= float((parent.hi - parent.lo).mean()) + 1e-12
    p = (tset.lo + tset.hi) / 2
    tiny = TransformSet(tset.image, name, p - 1e-7, p + 1e-7).box()
    img = tset.images(p)
    assert float((tiny.hi - img).abs().max()) < 1e-4 and float((tiny.lo - img).abs().max()) < 1e-4


def test_identity_parameters_give_the_image():
    x = _image()
    for name, p in [("rotate", [0.0]), ("translate", [0.0, 0.0]), ("scale", [1.0]),
                    ("shear", [0.0]), ("brightness", [0.0]), ("contrast", [1.0]),
                    ("blur", [0.0]), ("fog", [0.0])]:
        torch.testing.assert_close(apply_transform(x, name, torch.tensor([p], dtype=D))[0], x)


def test_integer_translation_shifts_and_rotation_by_90_turns():
    x = _image(H=7, W=7)
    moved = apply_transform(x, "translate", torch.tensor([[2.0, 1.0]], dtype=D))[0]
    torch.testing.assert_close(moved[:, 1:, 2:], x[:, :-1, :-2])
    assert float(moved[:, 0].abs().max()) == 0.0
    turned = apply_transform(x, "rotate", torch.tensor([[90.0]], dtype=D))[0]
    assert torch.allclose(turned, torch.rot90(x, 1, (1, 2)), atol=1e-12) or \
        torch.allclose(turned, torch.rot90(x, -1, (1, 2)), atol=1e-12)


def test_bilinear_is_zero_outside_and_exact_on_grid():
    x = _image()
    r, c = torch.tensor([0.0, 3.0, -1.5, 9.0], dtype=D), torch.tensor([0.0, 5.0, 2.0, 1.0], dtype=D)
    v = bilinear(x, r, c)[0]
    assert v[0] == x[0, 0, 0] and v[1] == x[0, 3, 5] and v[2] == 0 and v[3] == 0


def test_bad_transform_inputs():
    with pytest.raises(ConfigError, match="unknown transform"):
        uniform_pieces(_image(), "warp", [0], [1], 1)
    with pytest.raises(ConfigError, match="lower end above"):
        TransformSet(_image(), "rotate", torch.ones(1, 1), torch.zeros(1, 1))
    with pytest.raises(ShapeError):
        TransformSet(_image(), "translate", torch.zeros(1, 1), torch.ones(1, 1))
    with pytest.raises(ConfigError, match="scale"):
        TransformSet(_image(), "scale", torch.zeros(1, 1), torch.ones(1, 1))
    with pytest.raises(ConfigError, match="blur"):
        TransformSet(_image(), "blur", -torch.ones(1, 1), torch.ones(1, 1))
    with pytest.raises(ConfigError, match="fog"):
        TransformSet(_image(), "fog", torch.zeros(1, 1), 2 * torch.ones(1, 1))


def test_blur_is_a_normalised_gaussian_and_fog_a_blend():
    x = _image(H=9, W=9)
    flat = torch.full((1, 9, 9), 0.3, dtype=D)
    torch.testing.assert_close(apply_transform(flat, "blur", torch.tensor([[1.3]], dtype=D))[0], flat)
    dot = torch.zeros(1, 9, 9, dtype=D)
    dot[0, 4, 4] = 1.0
    out = apply_transform(dot, "blur", torch.tensor([[1.0]], dtype=D))[0, 0]
    g = torch.exp(-torch.arange(-2.0, 3.0, dtype=D) ** 2 / 2)
    g = g / g.sum()
    torch.testing.assert_close(out[2:7, 2:7], torch.outer(g, g))
    assert float(out.sum()) == pytest.approx(1.0)
    full = apply_transform(x, "fog", torch.tensor([[1.0]], dtype=D))[0]
    torch.testing.assert_close(full[0], fog_pattern(9, 9))  # α = 1: the pattern itself
    assert float(full.min()) >= 0.55 - 1e-12 and float(full.max()) <= 0.95 + 1e-12


@pytest.mark.parametrize("method,pixels", [("interval", "box"), ("crown", "box"),
                                           ("crown", "linear"), ("deeppoly", "both")])
@pytest.mark.parametrize("name,lo,hi", [("rotate", [-10.0], [10.0]),
                                        ("brightness", [-0.1], [0.1]),
                                        ("translate", [-0.5, -0.5], [0.5, 0.5]),
                                        ("scale", [0.9], [1.1]),
                                        ("blur", [0.0], [0.8]),
                                        ("fog", [0.0], [0.4])])
def test_certify_transform_agrees_with_dense_sampling(digits_mlp, digits_test, method, pixels, name,
                                                      lo, hi):
    x, y = digits_test
    verdicts = []
    for i in range(4):
        label = int(y[i])
        rep = certify_transform(digits_mlp, x[i], label, name, lo, hi,
                                TransformConfig(method=method, initial_pieces=4, max_pieces=256,
                                                pixels=pixels))
        v = rep.result.verdict
        verdicts.append(v)
        tset = uniform_pieces(x[i].double(), name, lo, hi, 1)
        params = tset.sample_params(2000, torch.Generator().manual_seed(i))[:, 0]
        pred = digits_mlp(tset.images(params).float()).argmax(1)
        if v is Verdict.VERIFIED:
            assert bool((pred == label).all())
            assert rep.proved_fraction == pytest.approx(1.0)
        if v is Verdict.FALSIFIED:
            img = rep.result.counterexample.x.unsqueeze(0)
            assert int(digits_mlp(img).argmax()) != label
            torch.testing.assert_close(img.double(), tset.images(rep.param.reshape(1, -1)),
                                       atol=1e-6, rtol=0)
    assert Verdict.VERIFIED in verdicts


@pytest.mark.parametrize("name,lo,hi", [("rotate", [-10.0], [10.0]),
                                        ("translate", [-0.5, -0.5], [0.5, 0.5])])
def test_reported_proved_boxes_are_sound(digits_mlp, digits_test, name, lo, hi):
    x, y = digits_test
    seen = 0
    for i in range(6):
        label = int(y[i])
        rep = certify_transform(digits_mlp, x[i], label, name, lo, hi,
                                TransformConfig(method="crown", initial_pieces=4, max_pieces=64))
        if rep.proved_lo is None or rep.proved_lo.shape[0] == 0:
            continue
        seen += 1
        tset = TransformSet(x[i].double(), name, rep.proved_lo, rep.proved_hi)
        vol = float(torch.prod(rep.proved_hi - rep.proved_lo, 1).sum())
        total = float(torch.prod(torch.tensor(hi) - torch.tensor(lo)))
        assert vol / total == pytest.approx(rep.proved_fraction)
        params = tset.sample_params(200, torch.Generator().manual_seed(i)).reshape(-1, len(lo))
        pred = digits_mlp(tset.images(params).float()).argmax(1)
        assert bool((pred == label).all())
    assert seen


def test_linear_pixels_need_fewer_pieces(digits_mlp, digits_test):
    """Every piece proved with boxes is proved with "both" (the better of two sound bounds), so
    its search bounds no more pieces; on rotations the linear pixels alone save pieces too."""
    x, y = digits_test
    count = {}
    for pixels in ("box", "linear", "both"):
        cfg = TransformConfig(method="crown", initial_pieces=4, max_pieces=256, pixels=pixels)
        count[pixels] = [certify_transform(digits_mlp, x[i], int(y[i]), "rotate", [-20.0],
                                           [20.0], cfg).result.stats["pieces_bounded"]
                         for i in range(8)]
    assert all(b <= a for a, b in zip(count["box"], count["both"]))
    assert sum(count["linear"]) < sum(count["box"])


def test_bad_pixel_settings():
    with pytest.raises(ConfigError):
        TransformConfig(pixels="bands")
    with pytest.raises(ConfigError):
        TransformConfig(band_sub=0)
    with pytest.raises(ConfigError):
        uniform_pieces(_image(), "rotate", [-1.0], [1.0], 1).band(sub=0)
