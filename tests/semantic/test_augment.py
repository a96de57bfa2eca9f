"""Augmentation with semantic mutations (``nncert.semantic.augment``), the ``Augmented`` loss,
``load_generator`` and ``nncert train --augment``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nncert.data import load_dataset, to_unit
from nncert.errors import ConfigError, ModelError, ShapeError
from nncert.semantic.augment import generative_augmenter, transform_augmenter
from nncert.semantic.generative import (
    VAE,
    Generator,
    VAEConfig,
    build_generator,
    decoder_graph,
    encoder_graph,
    load_generator,
    save_generator,
)
from nncert.semantic.transforms import apply_transform
from nncert.training.losses import Augmented, Natural, Step

sys.path.insert(0, str(Path(__file__).parents[1] / "cli"))
from badinput import assert_clean_error, run_nncert  # noqa: E402

FAST = VAEConfig(latent=4, hidden=32, steps=40, seed=0)


@pytest.fixture(scope="module")
def digits():
    return to_unit(load_dataset("digits:train", count=300)).float(), load_dataset(
        "digits:train", count=300).labels


@pytest.fixture(scope="module")
def generator(digits):
    x, _ = digits
    return build_generator(x, x[:100], FAST, mutations=("rotate", "brightness"), pairs=100)


def test_transform_augmenter_at_one_parameter_is_that_transform(digits):
    x, y = digits[0][:6], digits[1][:6]
    xa, ya = transform_augmenter("rotate", 12.0, 12.0)(x, y, torch.Generator().manual_seed(0))
    assert xa.shape == (12, *x.shape[1:]) and xa.dtype == x.dtype
    assert torch.equal(xa[:6], x) and torch.equal(ya, torch.cat([y, y]))
    want = torch.cat([apply_transform(xi, "rotate", torch.tensor([[12.0]])) for xi in x])
    torch.testing.assert_close(xa[6:], want.float())


def test_transform_augmenter_draws_parameters_in_the_range():
    x = torch.full((50, 1, 4, 4), 0.5)
    y = torch.zeros(50, dtype=torch.long)
    xa, ya = transform_augmenter("brightness", -0.2, 0.3, keep_original=False)(
        x, y, torch.Generator().manual_seed(1))
    assert xa.shape == x.shape and torch.equal(ya, y)
    shift = (xa - x).flatten(1)
    assert torch.allclose(shift, shift[:, :1].expand_as(shift))  # one offset per image
    assert float(shift.min()) >= -0.2 - 1e-6 and float(shift.max()) <= 0.3 + 1e-6
    assert float(shift.std()) > 0.05  # drawn, not one value


def _one_direction_draws(generator, x, direction: str, delta: float, seed: int):
    """(z, t, G(z + t·d)) as the augmenter draws them from a generator seeded ``seed`` when
    ``direction`` is its only direction (the index draw, then δ)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        z = generator.encoder(x)
        torch.randint(1, (x.shape[0],), generator=g)
        t = torch.rand(x.shape[0], 1, generator=g).to(z.dtype) * delta
        d = generator.directions[direction].reshape(1, -1).to(z.dtype)
        return z, t, generator.decoder(z + t * d).reshape(x.shape)


def test_generative_augmenter_decodes_the_moved_latents(generator, digits):
    x, y = digits[0][:8], digits[1][:8]
    xa, ya = generative_augmenter(generator, 0.0)(x, y, torch.Generator().manual_seed(0))
    with torch.no_grad():
        rec = generator.decoder(generator.encoder(x)).reshape(x.shape)
    torch.testing.assert_close(xa[8:], rec)  # δ = 0: the reconstruction
    assert torch.equal(ya, torch.cat([y, y]))
    # δ ~ U[0, 2] along the one chosen direction: G(E(x) + t·d) with the generator's draws
    aug = generative_augmenter(generator, 2.0, ["rotate"], keep_original=False)
    xa, _ = aug(x, y, torch.Generator().manual_seed(3))
    z, t, moved = _one_direction_draws(generator, x, "rotate", 2.0, 3)
    torch.testing.assert_close(xa, moved)
    assert float(t.min()) >= 0 and float(t.max()) <= 2.0
    assert float((xa - rec).abs().max()) > 1e-3


def test_residual_generative_augmenter_adds_the_decoded_change(generator, digits):
    x, y = digits[0][:8], digits[1][:8]
    xa, _ = generative_augmenter(generator, 0.0, residual=True)(x, y, torch.Generator().manual_seed(0))
    torch.testing.assert_close(xa[8:], x)  # δ = 0: the image itself, not its reconstruction
    aug = generative_augmenter(generator, 2.0, ["brightness"], keep_original=False, residual=True)
    xa, _ = aug(x, y, torch.Generator().manual_seed(5))
    z, _, moved = _one_direction_draws(generator, x, "brightness", 2.0, 5)
    with torch.no_grad():
        change = moved - generator.decoder(z).reshape(x.shape)
    torch.testing.assert_close(xa, (x + change).clamp(0, 1))
    assert float(xa.min()) >= 0 and float(xa.max()) <= 1


def test_augmenters_refuse_bad_settings(generator):
    with pytest.raises(ConfigError, match="unknown transform"):
        transform_augmenter("spin", 0, 1)
    with pytest.raises(ConfigError, match="low"):
        transform_augmenter("rotate", 5, -5)
    with pytest.raises(ConfigError, match="nose"):
        generative_augmenter(generator, 1.0, ["nose"])
    with pytest.raises(ConfigError, match="delta"):
        generative_augmenter(generator, -1.0)
    with pytest.raises(ShapeError, match=r"\(1, 8, 8\)"):
        generative_augmenter(generator, 1.0)(torch.zeros(2, 1, 4, 4), torch.zeros(2).long(), None)


def test_augmented_loss_is_the_base_loss_on_the_augmented_batch(digits):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    x, y = digits[0][:10], digits[1][:10]
    step = Step(model, None, 0.0, torch.Generator().manual_seed(0))
    same = Augmented(Natural(), lambda a, b, g: (a, b))
    assert same.name == "natural+aug" and not same.needs_graph
    torch.testing.assert_close(same(step, x, y)[0], Natural()(step, x, y)[0])
    aug = transform_augmenter("rotate", 20.0, 20.0)
    loss, _ = Augmented(Natural(), aug, "rot")(step, x, y)
    xa, ya = aug(x, y, None)
    torch.testing.assert_close(loss, F.cross_entropy(model(xa), ya))


def test_load_generator_round_trip_and_errors(generator, tmp_path):
    save_generator(generator, tmp_path / "g")
    back = load_generator(tmp_path / "g")
    assert list(back.directions) == list(generator.directions)
    assert back.report["continuity"]["C"] == pytest.approx(generator.report["continuity"]["C"])
    z = torch.randn(3, FAST.latent)
    torch.testing.assert_close(back.decoder(z), generator.decoder(z), atol=1e-5, rtol=0)
    with pytest.raises(ModelError, match="directory"):
        load_generator(tmp_path / "none")
    (tmp_path / "g" / "encoder.onnx").unlink()
    with pytest.raises(ModelError, match="encoder.onnx"):
        load_generator(tmp_path / "g")


def _other_shape_generator(path):
    vae = VAE((1, 4, 4), 3, 8)
    gen = Generator(decoder_graph(vae), encoder_graph(vae), {"a": torch.ones(3)}, {})
    save_generator(gen, path)


def test_train_cli_with_generative_and_rotation_augmentation(generator, tmp_path, capsys):
    from nncert.cli.main import main

    save_generator(generator, tmp_path / "g")
    base = ["train", "--data", "digits", "--arch", "fc", "--eps", "0.03", "--epochs", "1",
            "--count", "200", "--eval-count", "20", "--method", "natural"]
    assert main([*base, "--out", str(tmp_path / "a.onnx"), "--augment", "generative",
                 "--generator", str(tmp_path / "g"), "--augment-delta", "2"]) == 0
    assert "natural+gen-aug(2)" in capsys.readouterr().out
    assert main([*base, "--out", str(tmp_path / "r.onnx"), "--augment", "generative",
                 "--generator", str(tmp_path / "g"), "--augment-residual"]) == 0
    assert "natural+gen-res-aug(1)" in capsys.readouterr().out
    assert main([*base, "--out", str(tmp_path / "b.onnx"), "--augment", "rotate",
                 "--augment-range", "-20", "20"]) == 0
    assert (tmp_path / "b.onnx").is_file()
    _other_shape_generator(tmp_path / "small")
    assert_clean_error(run_nncert(*base, "--out", tmp_path / "c.onnx", "--augment", "generative",
                                  "--generator", tmp_path / "small"), "(1, 4, 4)")
    assert not (tmp_path / "c.onnx").exists() and not (tmp_path / "c.ckpt.pt").exists()
