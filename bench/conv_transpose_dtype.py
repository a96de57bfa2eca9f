"""The CROWN backward pass's convolution transposes in float64 against float32, on the shapes
of cifar10_resnet's resnet_2b (1,000 rows each, one thread): what the graph search gains by
running its alpha/beta steps on a float32 copy (``AlphaCrownConfig.search_dtype``).

    python bench/conv_transpose_dtype.py
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

# (rows' channels, height, width), (C_out, C_in, kernel), stride, padding: resnet_2b's layers
SHAPES = [((16, 8, 8), (16, 16, 3), 1, 1), ((8, 16, 16), (8, 3, 3), 2, 1),
          ((16, 8, 8), (16, 8, 3), 2, 1), ((16, 8, 8), (16, 8, 1), 2, 0)]


def _time(y, w, stride: int, padding: int, repeat: int = 10) -> float:
    """Seconds per transposed convolution of the rows ``y`` with ``w``."""
    def run():
        return F.conv_transpose2d(y, w, None, stride, padding, stride - 1)
    run()
    t = time.perf_counter()
    for _ in range(repeat):
        run()
    return (time.perf_counter() - t) / repeat


def main() -> None:
    torch.set_num_threads(1)
    print("| rows (C, H, W) | weight | stride | float64 (ms) | float32 (ms) | ratio |")
    print("|---|---|---:|---:|---:|---:|")
    for (c, h, w), (co, ci, k), s, p in SHAPES:
        ms = {}
        for dt in (torch.float64, torch.float32):
            y = torch.randn(1000, c, h, w, dtype=dt)
            wt = torch.randn(co, ci, k, k, dtype=dt)
            ms[dt] = 1e3 * _time(y, wt, s, p)
        print(f"| {(c, h, w)} | {(co, ci, k, k)} | {s} | {ms[torch.float64]:.1f} | "
              f"{ms[torch.float32]:.1f} | {ms[torch.float64] / ms[torch.float32]:.1f} |")


if __name__ == "__main__":
    main()
