"""What a training run writes besides the model: the per-epoch CSV log and the accuracy plot.
Both are rewritten whole after every epoch (atomically), so an interrupted run keeps them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ..utils import save_png, write_atomic

CURVES = (("clean", "clean"), ("pgd", "PGD"), ("certified", "certified"))


def log_csv(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as CSV: every column any row has, in first-seen order; empty cells if absent."""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    lines = [",".join(cols)]
    for r in rows:
        lines.append(",".join(_cell(r.get(c, "")) for c in cols))
    return "\n".join(lines) + "\n"


def _cell(v: Any) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def write_log(path: str | os.PathLike, rows: Sequence[dict[str, Any]]) -> None:
    write_atomic(path, log_csv(rows))


def plot_history(path: str | os.PathLike, rows: Sequence[dict[str, Any]], title: str) -> None:
    """Clean / PGD / certified accuracy per epoch as a PNG (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    for key, label in CURVES:
        pts = [(r["epoch"], r[key]) for r in rows if key in r]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    save_png(fig, path)
