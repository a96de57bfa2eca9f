"""Generators on digits: the decoder graph, continuity, directions, and f∘G segments."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from semantic_fixtures import cached_digits_mlp, digits_test_data

from nncert.data import load_dataset, to_unit
from nncert.errors import ConfigError, DataError
from nncert.models import load
from nncert.result import Verdict
from nncert.semantic.generative import (
    COLOUR_MUTATIONS,
    GREY_MUTATIONS,
    MUTATIONS,
    VAEConfig,
    build_generator,
    decoder_graph,
    default_mutations,
    encoder_graph,
    load_directions,
    local_mask,
    local_projection,
    measure_continuity,
    mutate,
    orthogonalise,
    outside_leakage,
    save_generator,
    train_vae,
)
from nncert.semantic.latent import certify_latent_segment, latent_segment
from nncert.semantic.quantitative import QuantConfig
from nncert.semantic.segments import exact_line


@pytest.fixture(scope="module")
def digits_mlp():
    return cached_digits_mlp()


@pytest.fixture(scope="module")
def digits_test():
    return digits_test_data()

FAST = VAEConfig(latent=6, hidden=48, steps=150, seed=0)


@pytest.fixture(scope="module")
def digits():
    return to_unit(load_dataset("digits:train")).float(), to_unit(load_dataset("digits:test")).float()


@pytest.fixture(scope="module")
def generator(digits):
    train, test = digits
    return build_generator(train, test, FAST, pairs=300)


def test_decoder_and_encoder_graphs_equal_the_vae(digits):
    train, _ = digits
    vae = train_vae(train, FAST)
    z = torch.randn(20, FAST.latent) * 3
    torch.testing.assert_close(decoder_graph(vae)(z), vae.decode(z).detach(), atol=1e-6, rtol=0)
    torch.testing.assert_close(encoder_graph(vae)(train[:5]), vae.encode(train[:5])[0].detach(),
                               atol=1e-5, rtol=1e-5)
    out = decoder_graph(vae)(z)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_continuity_regulariser_lowers_measured_lipschitz(digits):
    train, test = digits
    plain = measure_continuity(train_vae(train, FAST), test)
    reg = measure_continuity(train_vae(train, VAEConfig(**{**FAST.__dict__,
                                                           "jacobian_weight": 0.5})), test)
    assert reg["upper"] < plain["upper"] and reg["median"] < plain["median"]
    assert plain["C"] >= max(plain["upper"], 1 / plain["lower"]) - 1e-12


def test_orthogonalise_keeps_norms_and_order():
    d = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 2.0, 2.0]])
    o = orthogonalise(d)
    torch.testing.assert_close(o[0], d[0])
    torch.testing.assert_close(o.norm(dim=1), d.norm(dim=1))
    g = o @ o.T
    assert float((g - torch.diag(torch.diag(g))).abs().max()) < 1e-5


def test_local_projection_moves_the_outside_less(digits):
    train, _ = digits
    vae = train_vae(train, FAST)
    z = vae.encode(train[:8])[0].detach()
    mask = local_mask((8, 8))
    for seed in range(3):
        d = torch.randn(FAST.latent, generator=torch.Generator().manual_seed(seed))
        p = local_projection(vae, z, d, mask)
        assert float(p.norm()) > 1e-3 * float(d.norm())
        assert outside_leakage(vae, z, p, mask) < outside_leakage(vae, z, d, mask)
    with pytest.raises(ConfigError):
        local_projection(vae, z, d, mask, keep=0.0)


def test_mutations_change_the_images(digits):
    train, _ = digits
    for m in GREY_MUTATIONS:
        assert float((mutate(train[:10], m) - train[:10]).abs().max()) > 0.05, m
    rgb = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    for m in COLOUR_MUTATIONS:
        y = mutate(rgb, m)
        assert y.shape == rgb.shape and float((y - rgb).abs().max()) > 0.05, m
        assert float(y.min()) >= 0 and float(y.max()) <= 1, m
    assert set(GREY_MUTATIONS) | set(COLOUR_MUTATIONS) == set(MUTATIONS)
    assert default_mutations(1) == GREY_MUTATIONS and default_mutations(3) == COLOUR_MUTATIONS
    with pytest.raises(ConfigError, match="3-channel"):
        mutate(train[:2], "colour")


def test_generator_report_and_files(generator, tmp_path):
    rep = generator.report
    assert set(rep["independence"]) == set(GREY_MUTATIONS)
    assert rep["continuity"]["C"] >= 1.0
    leak = rep["local_outside_leakage"]
    assert leak["after_orthogonalisation"] == pytest.approx(leak["after"]) and leak["after"] < leak["before"]
    dirs = torch.stack(list(generator.directions.values()))
    g = dirs @ dirs.T
    assert float((g - torch.diag(torch.diag(g))).abs().max()) < 1e-4 * float(g.diag().max())
    paths = save_generator(generator, tmp_path / "gen")
    assert all(p.is_file() for p in paths)
    dec = load(tmp_path / "gen" / "decoder.onnx")
    z = torch.randn(4, FAST.latent)
    torch.testing.assert_close(dec(z), generator.decoder(z), atol=1e-5, rtol=0)
    loaded = load_directions(tmp_path / "gen" / "directions.npz")
    assert list(loaded) == list(generator.directions)


def test_directions_file_is_checked(tmp_path):
    bad = tmp_path / "d.npz"
    np.savez(bad, names=np.array(["a"]), vectors=np.array([[np.nan]]))
    with pytest.raises(DataError, match="finite"):
        load_directions(bad)
    with pytest.raises(DataError, match="not found"):
        load_directions(tmp_path / "none.npz")
    (tmp_path / "x.npz").write_text("junk")
    with pytest.raises(DataError):
        load_directions(tmp_path / "x.npz")


@pytest.mark.parametrize("direction", ["rotate", "thickness", "local"])
def test_latent_segments_exact_quantitative_and_bounds_agree(generator, digits_mlp, digits_test,
                                                            direction):
    x, y = digits_test
    seen = set()
    for i in range(5):
        args = (digits_mlp, generator.decoder, generator.encoder, x[i], int(y[i]),
                generator.directions[direction], 3.0)
        exact = certify_latent_segment(*args, method="exact")
        quant = certify_latent_segment(*args, method="quantitative",
                                       config=QuantConfig(max_pieces=64))
        crown = certify_latent_segment(*args, method="crown")
        assert quant.fraction_lower - 1e-9 <= exact.fraction_lower <= quant.fraction_upper + 1e-9
        if crown.result.verdict is Verdict.VERIFIED:
            assert exact.result.verdict is Verdict.VERIFIED
        v = exact.result.verdict
        seen.add(v)
        if v is Verdict.FALSIFIED:
            img = generator.decoder(exact.result.counterexample.x.float().unsqueeze(0))
            assert int(digits_mlp(img).argmax()) != int(y[i])
        z0, z1 = latent_segment(generator.encoder, x[i], generator.directions[direction], 3.0)
        t = torch.linspace(0, 1, 2001).reshape(-1, 1)
        pred = digits_mlp(generator.decoder(z0 + t * (z1 - z0))).argmax(1)
        sampled = float((pred == int(y[i])).double().mean())
        assert abs(sampled - exact.fraction_lower) <= 5e-3 + 1e-3 * exact.stats["violation_intervals"]
    assert seen - {Verdict.UNKNOWN}


def test_exact_pieces_of_f_of_g_reconstruct(generator, digits_mlp, digits_test):
    from nncert.models.graph import compose

    x, _ = digits_test
    fg = compose(generator.decoder.to(dtype=torch.float64), digits_mlp.to(dtype=torch.float64))
    z0, z1 = latent_segment(generator.encoder, x[0], generator.directions["rotate"], 3.0)
    pieces = exact_line(fg, z0.double(), z1.double())
    t = torch.rand(10_000, dtype=torch.float64)
    y = fg(z0.double() + t[:, None] * (z1 - z0).double())
    assert float((pieces.evaluate(t) - y).abs().max()) <= 1e-5 * (1 + float(y.abs().max()))


def test_residual_decoder_starts_at_the_image_and_adds_the_change(generator, digits):
    from nncert.errors import ShapeError
    from nncert.semantic.latent import residual_decoder

    x = digits[1][:3].double()
    dec = generator.decoder.to(dtype=torch.float64)
    for xi in x:
        z0, z1 = latent_segment(generator.encoder, xi.float(), generator.directions["rotate"], 3.0)
        rg = residual_decoder(dec, xi, z0.double())
        assert rg.output_shape == dec.output_shape
        torch.testing.assert_close(rg(z0.double()[None])[0], xi, rtol=0, atol=1e-12)
        z = z0.double() + torch.linspace(0, 1, 7, dtype=torch.float64)[:, None] * (z1 - z0).double()
        want = (xi + dec(z) - dec(z0.double()[None])).clamp(0, 1)
        torch.testing.assert_close(rg(z), want)
    with pytest.raises(ShapeError, match="image vs generator decoder output"):
        residual_decoder(dec, x[0].flatten(), z0.double())


def test_residual_segments_exact_verdict_agrees_with_sampling(generator, digits_mlp, digits_test):
    from nncert.semantic.latent import residual_decoder

    x, y = digits_test
    seen = set()
    for i in range(6):
        args = (digits_mlp, generator.decoder, generator.encoder, x[i], int(y[i]),
                generator.directions["thickness"], 6.0)
        exact = certify_latent_segment(*args, method="exact", residual=True)
        quant = certify_latent_segment(*args, method="quantitative", residual=True,
                                       config=QuantConfig(max_pieces=64))
        assert quant.fraction_lower - 1e-9 <= exact.fraction_lower <= quant.fraction_upper + 1e-9
        z0, z1 = latent_segment(generator.encoder, x[i], generator.directions["thickness"], 6.0)
        rg = residual_decoder(generator.decoder.to(dtype=torch.float64), x[i].double(), z0.double())
        t = torch.linspace(0, 1, 2001, dtype=torch.float64).reshape(-1, 1)
        images = rg(z0.double() + t * (z1 - z0).double())
        pred = digits_mlp.to(dtype=torch.float64)(images).argmax(1)
        sampled = float((pred == int(y[i])).double().mean())
        v = exact.result.verdict
        seen.add(v)
        if v is Verdict.VERIFIED:
            assert sampled == 1.0
        if v is Verdict.FALSIFIED:  # the counterexample is a latent point; its image fails
            img = rg(exact.result.counterexample.x.double().unsqueeze(0))
            assert int(digits_mlp.to(dtype=torch.float64)(img).argmax()) != int(y[i])
        assert abs(sampled - exact.fraction_lower) <= 5e-3 + 1e-3 * exact.stats["violation_intervals"]
    assert seen - {Verdict.UNKNOWN}
