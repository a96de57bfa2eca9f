"""The standard image augmentation of CIFAR-10 training (random crops of the zero-padded
image, random horizontal flips), applied to each training batch in place of the batch.

Every published certified-training recipe on CIFAR-10 (Gowal et al., Zhang et al., Shi et
al.) trains on such batches; without them a small CNN trained with IBP for hundreds of epochs
fits its training set and its test accuracy stops rising. Not for digits: a flipped or shifted
digit can be another digit, so the flags are off by default.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def crop_flip(x: torch.Tensor, pad: int, flip: bool, gen: torch.Generator) -> torch.Tensor:
    """``x`` (B, C, H, W) with each image shifted by a random crop of its zero-padded copy
    (offsets uniform in [−pad, pad] per axis) and, with ``flip``, mirrored left–right with
    probability 1/2. Randomness from ``gen`` (a CPU generator), so a seeded run repeats.
    The values stay in the range of ``x`` and 0 (the padding)."""
    if x.dim() != 4:
        raise ValueError(f"crop_flip needs images (B, C, H, W), got shape {tuple(x.shape)}")
    B, _, H, W = x.shape
    if pad > 0:
        off = torch.randint(0, 2 * pad + 1, (B, 2), generator=gen).to(x.device)
        padded = F.pad(x, (pad, pad, pad, pad))
        rows = (off[:, :1] + torch.arange(H, device=x.device))[:, :, None]   # (B, H, 1)
        cols = (off[:, 1:] + torch.arange(W, device=x.device))[:, None, :]   # (B, 1, W)
        b = torch.arange(B, device=x.device)[:, None, None]
        x = padded.permute(0, 2, 3, 1)[b, rows, cols].permute(0, 3, 1, 2)
    if flip:
        mirror = (torch.rand(B, generator=gen) < 0.5).to(x.device)
        x = torch.where(mirror[:, None, None, None], x.flip(-1), x)
    return x.contiguous()
