"""Training-time augmentation with the mutations semantic certification checks.

An augmenter is a callable ``augment(x, y, generator) -> (x', y')`` on a batch of images
``x`` (B, C, H, W) in [0, 1] with labels ``y``; :class:`nncert.training.losses.Augmented` puts
one in front of any training loss. Two families, matching the two routes of
``nncert semantic certify``:

* :func:`transform_augmenter`: each image moved by a geometric or photometric transform
  (:data:`~nncert.semantic.transforms.TRANSFORMS`) with parameters drawn uniformly from a range;
* :func:`generative_augmenter`: each image encoded, moved along one of a generator's latent
  directions by δ ~ U[0, δmax] and decoded, ``G(E(x) + δ·d)``: the points of the segments the
  generator route certifies; with ``residual=True`` the decoded change is added to x instead,
  ``clamp01(x + G(E(x) + δ·d) − G(E(x)))``, the points of ``semantic segment --residual``.

Both keep the label (the mutations are meant to preserve the class) and, by default, keep the
original batch too (the result has 2B images), so natural accuracy is trained on as before.
Randomness comes only from the generator passed in (the training loop's, seeded).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..errors import ConfigError, ShapeError
from .generative import Generator
from .transforms import TRANSFORMS, apply_transform

Augmenter = Callable[[torch.Tensor, torch.Tensor, "torch.Generator | None"],
                     tuple[torch.Tensor, torch.Tensor]]


def _uniform(n: int, k: int, lo: float, hi: float, like: torch.Tensor,
             gen: torch.Generator | None) -> torch.Tensor:
    u = torch.rand(n, k, generator=gen, device=like.device, dtype=like.dtype)
    return lo + (hi - lo) * u


def _with_original(x, y, moved, keep: bool):
    return (torch.cat([x, moved]), torch.cat([y, y])) if keep else (moved, y)


def transform_augmenter(transform: str, low: float, high: float,
                        keep_original: bool = True) -> Augmenter:
    """Images ``τ(x, p)`` with every parameter of ``transform`` drawn uniformly from
    [``low``, ``high``] (units of :func:`~nncert.semantic.transforms.apply_transform`: degrees
    for rotate and shear, pixels for translate, a factor for scale and contrast, an offset for
    brightness, …), clipped to [0, 1]."""
    if transform not in TRANSFORMS:
        raise ConfigError(f"unknown transform {transform!r}; choose from {', '.join(TRANSFORMS)}")
    if not low <= high:
        raise ConfigError(f"augmentation range must have low ≤ high, got [{low:g}, {high:g}]")
    k = TRANSFORMS[transform]

    def augment(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator | None = None):
        params = _uniform(x.shape[0], k, low, high, x, gen)
        moved = torch.cat([apply_transform(xi, transform, pi[None]) for xi, pi in zip(x, params)])
        return _with_original(x, y, moved.to(x.dtype), keep_original)

    return augment


def generative_augmenter(generator: Generator, delta: float,
                         directions: Sequence[str] | None = None,
                         keep_original: bool = True, residual: bool = False) -> Augmenter:
    """Images ``G(E(x) + δ·d)``, per image a direction d drawn uniformly from ``directions``
    (default: all of the generator's) and δ ~ U[0, ``delta``] (in units of the direction, as
    ``semantic segment --delta``); ``residual``: ``clamp01(x + G(E(x) + δ·d) − G(E(x)))``."""
    names = list(generator.directions) if directions is None else list(directions)
    missing = [n for n in names if n not in generator.directions]
    if missing or not names:
        raise ConfigError(f"augmentation directions {missing or names} are not among the "
                          f"generator's: {', '.join(generator.directions)}")
    if not delta >= 0:
        raise ConfigError(f"augmentation delta must be ≥ 0, got {delta!r}")
    dirs = torch.stack([generator.directions[n].reshape(-1) for n in names])
    placed: dict = {}

    def on(device: torch.device):
        if device not in placed:
            enc, dec = generator.encoder.to(device=device), generator.decoder.to(device=device)
            placed[device] = (enc, dec, dirs.to(device=device, dtype=enc.dtype))
        return placed[device]

    def augment(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator | None = None):
        enc, dec, d = on(x.device)
        if tuple(x.shape[1:]) != enc.input_shape:
            raise ShapeError("training images vs generator encoder input", enc.input_shape,
                             tuple(x.shape[1:]))
        with torch.no_grad():
            z = enc.forward(x.to(enc.dtype))
            k = torch.randint(len(names), (x.shape[0],), generator=gen, device=x.device)
            u = torch.rand(x.shape[0], 1, generator=gen, device=x.device, dtype=x.dtype)
            t = u.to(z.dtype) * float(delta)
            moved = dec.forward(z + t * d[k]).reshape(x.shape)
            if residual:
                moved = (x.to(moved.dtype) + moved - dec.forward(z).reshape(x.shape)).clamp(0, 1)
            moved = moved.to(x.dtype)
        return _with_original(x, y, moved, keep_original)

    return augment


__all__ = ["Augmenter", "generative_augmenter", "transform_augmenter"]
