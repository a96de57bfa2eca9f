"""PNG strips: images along a segment or a transform's parameter range, with what was proved.

One row per input: K images at equally spaced positions s ∈ [0, 1] along the segment (t = s)
or along the parameter range (p = lo + s·(hi − lo), the diagonal of the box when there are
several parameters), each framed

* green when s lies in a part proved robust (a piece proved by the method, or for ExactLine
  the complement of the exact violation intervals),
* red when the spec fails there: the shown image, run on the concrete graph, is
  misclassified, or s lies in a part where the spec provably fails (ExactLine's violation
  intervals, pieces proved violated everywhere),
* grey otherwise (nothing decided there),

and under the images a bar over s ∈ [0, 1] with the proved parts green, the violating parts
red and the rest grey, plus a caption (verdict, robust fraction or proved share).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..utils import save_png

COLORS = {"robust": "#2ca02c", "violated": "#d62728", "unknown": "#9a9a9a"}
CELL_IN, BAR_IN, CAPTION_IN, DPI = 0.9, 0.28, 0.32, 100
_GRID = 512  # bar resolution when proved parts are found by membership tests


@dataclass(frozen=True, eq=False)
class StripRow:
    """One row: images (K, C, H, W) in [0, 1] at positions ``s`` (K,) in [0, 1], their labels
    (the parameter shown under each), states ("robust", "violated", "unknown"), the bar's
    proved and violating s-intervals (M, 2) and the caption."""

    images: torch.Tensor
    s: torch.Tensor
    labels: list[str]
    states: list[str]
    proved: torch.Tensor
    violated: torch.Tensor
    caption: str


def strip_size(rows: int, k: int) -> tuple[int, int]:
    """(width, height) in pixels of the PNG of ``rows`` rows of ``k`` images."""
    return round(k * CELL_IN * DPI), round(rows * (CELL_IN + BAR_IN + CAPTION_IN) * DPI)


def _inside(s: torch.Tensor, intervals: torch.Tensor) -> torch.Tensor:
    """Which s (K,) lie in some closed interval of (M, 2)."""
    iv = intervals.to(torch.float64).reshape(-1, 2)
    s = s.to(torch.float64)[:, None]
    return ((s >= iv[:, 0]) & (s <= iv[:, 1])).any(1)


def _states(s: torch.Tensor, proved: torch.Tensor, violated: torch.Tensor,
            fails: torch.Tensor) -> list[str]:
    ok, bad = _inside(s, proved), _inside(s, violated) | fails
    return ["robust" if o else "violated" if b else "unknown" for o, b in zip(ok.tolist(), bad.tolist())]


def segment_row(report, image_at: Callable[[torch.Tensor], torch.Tensor],
                fails: Callable[[torch.Tensor], torch.Tensor], k: int, caption: str) -> StripRow:
    """The row of a :class:`~.segments.SegmentReport`: ``image_at(t)`` (K,) → images to show,
    ``fails(t)`` (K,) → bool, the concrete graph misclassifies the point at t."""
    s = torch.linspace(0, 1, k, dtype=torch.float64)
    with torch.no_grad():
        images, bad = image_at(s), fails(s)
    return StripRow(images, s, [f"t={v:.2f}" for v in s.tolist()],
                    _states(s, report.proved, report.violations, bad),
                    report.proved, report.violations, caption)


def _runs(mask: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """The s-intervals (M, 2) spanned by runs of consecutive True grid points."""
    edge = torch.cat([mask.new_zeros(1), mask, mask.new_zeros(1)]).int().diff()
    first, last = (edge == 1).nonzero().flatten(), (edge == -1).nonzero().flatten() - 1
    return torch.stack([grid[first], grid[last]], -1).reshape(-1, 2)


def transform_row(report, lo: Sequence[float], hi: Sequence[float],
                  image_at: Callable[[torch.Tensor], torch.Tensor],
                  fails: Callable[[torch.Tensor], torch.Tensor], k: int, caption: str) -> StripRow:
    """The row of a :class:`~.transforms.TransformReport` over the box [lo, hi]: ``image_at(p)``
    (K, n) → images, ``fails(p)`` (K, n) → bool misclassified. The bar is green where the
    diagonal p(s) lies in a proved box (sampled at 512 points: a picture, not a proof)."""
    lo_t, hi_t = torch.tensor(lo, dtype=torch.float64), torch.tensor(hi, dtype=torch.float64)
    s = torch.linspace(0, 1, k, dtype=torch.float64)
    params = lo_t + s[:, None] * (hi_t - lo_t)
    grid = torch.linspace(0, 1, _GRID, dtype=torch.float64)
    proved = torch.zeros(0, 2, dtype=torch.float64)
    in_box = torch.zeros(k, dtype=torch.bool)
    if report.proved_lo is not None and report.proved_lo.numel():
        plo, phi = report.proved_lo.double(), report.proved_hi.double()

        def member(p: torch.Tensor) -> torch.Tensor:
            return ((p[:, None] >= plo) & (p[:, None] <= phi)).all(-1).any(1)

        proved = _runs(member(lo_t + grid[:, None] * (hi_t - lo_t)), grid)
        in_box = member(params)
    with torch.no_grad():
        images, bad = image_at(params), fails(params)
    violated = s[bad].repeat(2, 1).T if bool(bad.any()) else torch.zeros(0, 2, dtype=torch.float64)
    if report.param is not None and lo_t.numel() == 1 and float(hi_t - lo_t) > 0:
        at = float((report.param.double().flatten()[0] - lo_t[0]) / (hi_t[0] - lo_t[0]))
        violated = torch.cat([violated, torch.tensor([[at, at]], dtype=torch.float64)])
    states = ["robust" if o else "violated" if b else "unknown"
              for o, b in zip(in_box.tolist(), bad.tolist())]
    labels = [",".join(f"{v:.3g}" for v in p) for p in params.tolist()]
    return StripRow(images, s, labels, states, proved, violated, caption)


def _show(image: torch.Tensor):
    x = image.detach().double().clamp(0, 1).cpu()
    if x.dim() == 3 and x.shape[0] == 1:
        return x[0].numpy(), "gray"
    if x.dim() == 3 and x.shape[0] == 3:
        return x.permute(1, 2, 0).numpy(), None
    return x.reshape(x.shape[-2] if x.dim() > 1 else 1, -1).numpy(), "gray"


def save_strip(path: str | os.PathLike, rows: Sequence[StripRow]) -> None:
    """Write the rows as one PNG of :func:`strip_size` pixels (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    k = max(r.images.shape[0] for r in rows)
    w, h = strip_size(len(rows), k)
    fig = plt.figure(figsize=(w / DPI, h / DPI), dpi=DPI)
    row_h = (CELL_IN + BAR_IN + CAPTION_IN) / (h / DPI)
    for ri, row in enumerate(rows):
        top = 1 - ri * row_h
        fig.text(0.005, top - 0.02 * row_h, row.caption, fontsize=7, va="top")
        cap, cell, bar = (CAPTION_IN / (h / DPI), CELL_IN / (h / DPI), BAR_IN / (h / DPI))
        for j in range(row.images.shape[0]):
            ax = fig.add_axes((j / k + 0.06 / k, top - cap - cell * 0.88, 0.88 / k, cell * 0.84))
            img, cmap = _show(row.images[j])
            ax.imshow(img, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_edgecolor(COLORS[row.states[j]])
                side.set_linewidth(3)
            ax.set_title(row.labels[j], fontsize=6, pad=1)
        ax = fig.add_axes((0.06 / k, top - cap - cell - bar * 0.75, 1 - 0.12 / k, bar * 0.45))
        ax.add_patch(Rectangle((0, 0), 1, 1, color=COLORS["unknown"]))
        for key, iv in (("robust", row.proved), ("violated", row.violated)):
            for a, b in iv.reshape(-1, 2).tolist():
                ax.add_patch(Rectangle((a, 0), max(b - a, 0.004), 1, color=COLORS[key]))
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_yticks([])
        ax.set_xticks(row.s.tolist())
        ax.tick_params(axis="x", labelbottom=False, length=3)
    save_png(fig, path)
