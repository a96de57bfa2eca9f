"""Random crops and mirror images of training batches (``--crop-pad`` / ``--flip``)."""

from __future__ import annotations

import pytest
import torch

from nncert.errors import ConfigError
from nncert.training import IBP, Constant, TrainConfig, build, fit
from nncert.training.crop_flip import crop_flip


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_each_image_is_a_shifted_window_of_its_padded_copy_or_its_mirror():
    x = torch.rand(40, 3, 6, 5)
    out = crop_flip(x, 2, True, _gen())
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(len(x)):
        windows = [padded[i, :, dy:dy + 6, dx:dx + 5] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(-1)) for w in windows)
    # without flips, every offset occurs over a large batch
    many = crop_flip(torch.ones(2000, 1, 4, 4), 1, False, _gen())
    assert {int(m.sum()) for m in many} == {9, 12, 16}  # corner, edge and central windows


def test_off_is_the_identity_and_flip_alone_mirrors_about_half():
    x = torch.rand(400, 1, 3, 3)
    assert torch.equal(crop_flip(x, 0, False, _gen()), x)
    out = crop_flip(x, 0, True, _gen())
    same = [torch.equal(a, b) for a, b in zip(out, x)]
    mirrored = [torch.equal(a, b.flip(-1)) for a, b in zip(out, x)]
    assert all(s or m for s, m in zip(same, mirrored))
    assert 150 < sum(mirrored) < 250


def test_same_generator_same_batch_and_bad_shape_is_named():
    x = torch.rand(8, 3, 5, 5)
    assert torch.equal(crop_flip(x, 2, True, _gen(3)), crop_flip(x, 2, True, _gen(3)))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\).*\(8, 75\)"):
        crop_flip(x.reshape(8, 75), 2, True, _gen())


def test_training_on_crops_is_seeded_and_changes_the_weights():
    x, y = torch.rand(200, 1, 8, 8), torch.randint(0, 10, (200,))
    cfg = dict(epochs=1, batch_size=50, lr=3e-3, progress=False, seed=2)

    def weights(**kw):
        m = build("fc", (1, 8, 8), seed=1)
        fit(m, IBP(Constant(0.01)), x, y, TrainConfig(**cfg, **kw))
        return torch.cat([p.detach().flatten() for p in m.parameters()])
    a, b = weights(crop_pad=1, flip=True), weights(crop_pad=1, flip=True)
    assert torch.equal(a, b)
    assert not torch.equal(a, weights())
    with pytest.raises(ConfigError, match="crop_pad"):
        TrainConfig(crop_pad=-1)
