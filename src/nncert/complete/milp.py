"""Settings of the exact MILP stage. The encoding itself is ``milp_graph.py``: an
``{op: encoder}`` table over the graph IR (big-M per unstable ReLU from sound intermediate
bounds), used for every graph, ReLU chains included, and for the MILP leaves of ReLU
splitting."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MilpConfig:
    """``timeout_s``: the MILP stage's own budget (the call's deadline also applies);
    ``threads``: HiGHS threads; ``bounds``: kept for configuration files (the big-M constants
    are the bounds the verify stage computed before the MILP)."""

    timeout_s: float = 60.0
    threads: int = 1
    bounds: str = "alpha"


__all__ = ["MilpConfig"]
