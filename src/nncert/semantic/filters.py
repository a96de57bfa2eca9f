"""Image filters as transforms: Gaussian blur and fog, with sound pixel bounds over parameters.

* ``blur`` [σ ≥ 0, pixels]: each pixel becomes ``Σ_k w_k(σ)·x_k`` over the 5×5 window around
  it (edge pixels replicated), ``w_k(σ) = g_a(σ)·g_b(σ)`` for the window offset k = (a, b)
  with the normalised 1-D Gaussian ``g_a(σ) = exp(−a²/2σ²) / Σ_{|c|≤2} exp(−c²/2σ²)``
  (σ = 0: the identity). Over σ ∈ [lo, hi] the unnormalised ``exp(−a²/2σ²)`` is increasing in
  σ, so each g_a lies in [num_a(lo) / den(hi), num_a(hi) / den(lo)] (numerator and
  denominator bounded apart), and w_k in the products of those intervals. The pixel is a
  convex combination (Σ w_k = 1) of its window with weights in that box: its exact minimum
  (maximum) over the box ∩ simplex is the fractional-knapsack solution, every weight at its
  lower bound and the remaining mass 1 − Σ w_lo given to the smallest (largest) values first.
  That range contains every blurred value for σ in the interval (widened by 1e-12 relative
  against float64 rounding).
* ``fog`` [α ∈ [0, 1], intensity]: ``(1 − α)·x + α·F`` for the fixed fog pattern F of
  :func:`fog_pattern` (a smooth field of values in [0.55, 0.95]); each pixel is affine in α,
  so the values at the ends of the interval bound it exactly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

RADIUS = 2  # the blur window is (2·RADIUS + 1)² pixels
SLACK = 1e-12  # blur bounds are widened by SLACK·(1 + |bound|) against float64 rounding


def _gauss_terms(sigma: torch.Tensor) -> torch.Tensor:
    """exp(−a²/2σ²) for a = −R..R, per σ (B,) → (B, 2R + 1); σ = 0 gives the indicator of 0."""
    a = torch.arange(-RADIUS, RADIUS + 1, dtype=sigma.dtype, device=sigma.device)
    expo = -(a * a) / (2 * sigma[:, None] ** 2)
    return torch.where(a == 0, torch.ones_like(expo), torch.exp(expo))


def _windows(image: torch.Tensor) -> torch.Tensor:
    """Every pixel's (2R + 1)² window of ``image`` (C, H, W), edges replicated:
    (C, H, W, (2R + 1)²), the offset (a, b) at index (a + R)·(2R + 1) + (b + R)."""
    C, H, W = image.shape
    k = 2 * RADIUS + 1
    padded = F.pad(image.unsqueeze(0), (RADIUS,) * 4, mode="replicate")
    cols = F.unfold(padded, k)  # (1, C·k², H·W)
    return cols.reshape(C, k * k, H, W).permute(0, 2, 3, 1)


def blur(image: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Gaussian blur of ``image`` (C, H, W) for each σ (B,): (B, C, H, W)."""
    g = _gauss_terms(sigma)
    g = g / g.sum(1, keepdim=True)
    w = (g[:, :, None] * g[:, None, :]).flatten(1)  # (B, k²), rows a, columns b
    return torch.einsum("chwk,bk->bchw", _windows(image), w)


def _blur_weight_box(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sound per-offset weight intervals (B, k²) over σ ∈ [lo, hi] (B,), lo ≤ hi."""
    n_lo, n_hi = _gauss_terms(lo), _gauss_terms(hi)  # the terms increase with σ
    g_lo = n_lo / n_hi.sum(1, keepdim=True)
    g_hi = (n_hi / n_lo.sum(1, keepdim=True)).clamp(max=1.0)
    w_lo = (g_lo[:, :, None] * g_lo[:, None, :]).flatten(1)
    w_hi = (g_hi[:, :, None] * g_hi[:, None, :]).flatten(1)
    return w_lo, w_hi


def blur_bounds(image: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Sound (low, high) pixel bounds (B, C, H, W) of blur(image, σ) over σ ∈ [lo[b], hi[b]]."""
    w_lo, w_hi = _blur_weight_box(lo.reshape(-1), hi.reshape(-1))
    win = _windows(image).unsqueeze(0)  # (1, C, H, W, K)
    vals, order = win.sort(-1)
    B = w_lo.shape[0]
    idx = order.expand(B, *order.shape[1:])
    wl = w_lo[:, None, None, None, :].expand_as(idx).gather(-1, idx)
    wh = w_hi[:, None, None, None, :].expand_as(idx).gather(-1, idx)
    vals = vals.expand(B, *vals.shape[1:])
    low = _knapsack(vals, wl, wh)
    high = -_knapsack(-vals.flip(-1), wl.flip(-1), wh.flip(-1))
    slack = SLACK * (1 + torch.maximum(low.abs(), high.abs()))  # float rounding of the sums
    return low - slack, high + slack


def _knapsack(values: torch.Tensor, w_lo: torch.Tensor, w_hi: torch.Tensor
                          ) -> torch.Tensor:
    """min Σ_k w_k·v_k over w_lo ≤ w ≤ w_hi, Σ_k w_k = 1 (needs Σ w_lo ≤ 1 ≤ Σ w_hi), along
    the last dim, for values sorted ascending there and their weight boxes in the same order."""
    room = (1 - w_lo.sum(-1, keepdim=True)).clamp(min=0)
    cap = w_hi - w_lo
    before = torch.cumsum(cap, -1) - cap
    extra = torch.minimum(cap, (room - before).clamp(min=0))
    return ((w_lo + extra) * values).sum(-1)


def fog_pattern(H: int, W: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """The fixed fog F (H, W): ``0.75 + 0.2·cos(2π(0.7·r/H + 0.1))·cos(2π(0.9·c/W + 0.3))``,
    a smooth field in [0.55, 0.95] (the same for every channel)."""
    r = torch.arange(H, dtype=dtype, device=device)[:, None] / H
    c = torch.arange(W, dtype=dtype, device=device)[None, :] / W
    return 0.75 + 0.2 * torch.cos(2 * math.pi * (0.7 * r + 0.1)) * torch.cos(2 * math.pi * (0.9 * c + 0.3))


def fog(image: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """``(1 − α)·image + α·F`` for each α (B,): (B, C, H, W)."""
    f = fog_pattern(image.shape[-2], image.shape[-1], image.dtype, image.device)
    a = alpha.reshape(-1, 1, 1, 1).to(image.dtype)
    return (1 - a) * image.unsqueeze(0) + a * f
