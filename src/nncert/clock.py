"""The one clock of the library and the ``Deadline`` every long loop checks.

All library code reads the time through :func:`now` (a monotonic clock, seconds), so a test can
replace it (``monkeypatch.setattr(nncert.clock, "now", fake)``) and drive time without the
wall clock. A :class:`Deadline` is an absolute time on that clock; long loops call
:meth:`Deadline.check`, which raises :class:`DeadlineExceededError` once the time has come. That
exception is internal: the complete stage's entry points (``verify``, the BaB loops, the MILP)
turn it into a TIMEOUT, and the attack into "no counterexample found". Aborting never yields a
bound, so a half-finished computation can never prove anything (a TIMEOUT is always a legal
answer).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass


def now() -> float:
    """Seconds on a monotonic clock (``time.perf_counter``); tests may replace it."""
    return time.perf_counter()


def since_process_start() -> float:
    """Seconds since this process started (interpreter start-up and imports included), read
    from /proc on Linux; 0.0 where unknown. For deadlines counted from a process's launch, as
    VNN-COMP counts them: ``Deadline.after(timeout - since_process_start())``."""
    try:
        with open("/proc/self/stat") as f:
            stat = f.read()
        start_ticks = int(stat[stat.rindex(")") + 2:].split()[19])  # field 22: starttime
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


class DeadlineExceededError(Exception):
    """The deadline passed in the middle of some work (internal: caught by the entry points)."""


@dataclass(frozen=True)
class Deadline:
    """An absolute time ``at`` on :func:`now`'s clock (``math.inf``: never)."""

    at: float = math.inf

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        """The deadline ``seconds`` from now."""
        return cls(now() + seconds)

    def within(self, seconds: float) -> Deadline:
        """The earlier of this deadline and ``seconds`` from now (a sub-budget)."""
        return Deadline(min(self.at, now() + seconds))

    def remaining(self) -> float:
        """Seconds left (≤ 0 once expired)."""
        return self.at - now()

    def expired(self) -> bool:
        return now() >= self.at

    def check(self) -> None:
        """Raise :class:`DeadlineExceededError` once the deadline has come."""
        if self.at != math.inf and now() >= self.at:
            raise DeadlineExceededError


NEVER = Deadline()


__all__ = ["NEVER", "Deadline", "DeadlineExceededError", "now", "since_process_start"]
