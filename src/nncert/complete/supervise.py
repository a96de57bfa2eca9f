"""Worker processes with a hard stop: run ``fn(*args)`` for each task in a pool of child
processes, each task with its own deadline.

Promises (what ``vnncomp run`` and ``vnncomp suite`` rely on):

* a task whose worker is still busy at its hard deadline is stopped by SIGKILL, whatever the
  library code is doing (a loop without deadline checks, a C call holding the GIL);
  :func:`supervise` reports it as ``killed`` within a few tens of milliseconds of the deadline;
* a worker that dies (SIGKILL, out of memory, segfault, ``os._exit``) fails only the task it was
  running (``crashed``); its slot gets a fresh process and the other tasks go on;
* on return or on an exception (Ctrl-C included) no worker process is left running: the
  workers are killed as soon as the last answer is in (nothing of theirs is pending then).

Workers ignore SIGINT: Ctrl-C reaches the parent, which stops them. On Linux a worker is also
killed by the kernel when its parent dies (PR_SET_PDEATHSIG), so none outlives a killed parent.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from multiprocessing.connection import wait as wait_ready
from typing import Any

#: seconds to wait for a worker to exit after it is told to stop or killed
_JOIN_S = 5.0


@dataclass(frozen=True)
class Task:
    """``fn(*args)`` for ``key``, to be stopped ``limit_s`` seconds after it is handed to a
    worker (None: no hard stop)."""

    key: Hashable
    args: tuple
    limit_s: float | None


@dataclass(frozen=True)
class Outcome:
    """How a task ended. ``kind``: ``ok`` (``value`` is fn's return value), ``raised`` (fn raised;
    ``detail`` is ``Type: message``, ``trace`` the traceback text), ``crashed`` (the worker died;
    ``detail`` says how) or ``killed`` (stopped at its deadline). ``elapsed``: seconds from
    dispatch to the end, measured by the parent."""

    kind: str
    value: Any = None
    detail: str = ""
    trace: str = ""
    elapsed: float = 0.0


def mp_context() -> mp.context.BaseContext:
    """fork where it is safe and fast (Linux: the parent has not computed anything), else spawn."""
    return mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")


def _die_with_parent(parent: int) -> None:
    """Linux: have the kernel SIGKILL this worker when its parent dies (killed by the VNN-COMP
    harness, by SIGTERM, ...), so that no orphan keeps computing."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before prctl
        os._exit(1)


def _serve(conn, fn: Callable, parent: int) -> None:
    """Worker main loop: receive argument tuples, send back ("ok", value) or ("raised", ...)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent)
    while True:
        try:
            args = conn.recv()
        except (EOFError, OSError):
            return
        if args is None:
            return
        try:
            msg = ("ok", fn(*args), "", "")
        except BaseException as e:  # noqa: BLE001 - reported to the parent, never lost
            msg = ("raised", None, f"{type(e).__name__}: {e}", traceback.format_exc())
        conn.send(msg)


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"the worker process was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"the worker process was killed by signal {-exitcode}"
    return f"the worker process exited unexpectedly (status {exitcode})"


class _Slot:
    """One worker process and the task it runs."""

    def __init__(self, ctx, fn: Callable):
        self.ctx, self.fn = ctx, fn
        self.proc = None
        self.conn = None
        self.task: Task | None = None
        self.started = 0.0
        self.deadline: float | None = None

    def start(self, task: Task) -> None:
        if self.proc is None or not self.proc.is_alive():
            self._spawn()
        self.task, self.started = task, time.monotonic()
        self.deadline = None if task.limit_s is None else self.started + task.limit_s
        with contextlib.suppress(OSError):  # the worker died meanwhile: poll() reports it
            self.conn.send(task.args)

    def _spawn(self) -> None:
        self.close()
        parent, child = self.ctx.Pipe()
        self.proc = self.ctx.Process(target=_serve, args=(child, self.fn, os.getpid()),
                                     daemon=True)
        self.proc.start()
        child.close()
        self.conn = parent

    def poll(self, now: float) -> Outcome | None:
        """The outcome of the running task, or None while it runs within its deadline."""
        elapsed = now - self.started
        if self.conn.poll():
            try:
                kind, value, detail, trace = self.conn.recv()
                return Outcome(kind, value, detail, trace, elapsed)
            except (EOFError, OSError, ValueError):
                self.proc.join(_JOIN_S / 5)
                code = self.proc.exitcode
                self.kill()
                return Outcome("crashed", detail=_death(code), elapsed=elapsed)
        if not self.proc.is_alive():
            code = self.proc.exitcode
            self.close()
            return Outcome("crashed", detail=_death(code), elapsed=elapsed)
        if self.deadline is not None and now >= self.deadline:
            self.kill()
            return Outcome("killed", detail="stopped at the deadline", elapsed=elapsed)
        return None

    def kill(self) -> None:
        if self.proc is not None and self.proc.is_alive():
            self.proc.kill()
        self.close()

    def close(self) -> None:
        if self.proc is not None:
            self.proc.join(_JOIN_S / 5)
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join(_JOIN_S)
        if self.conn is not None:
            self.conn.close()
        self.proc = self.conn = None


def supervise(fn: Callable, tasks: Iterable[Task], jobs: int,
              on_done: Callable[[Task, Outcome], None], ctx=None) -> None:
    """Run every task on ``jobs`` worker processes; call ``on_done(task, outcome)`` in the parent
    as each one ends (in completion order). See the module docstring for the promises."""
    ctx = ctx or mp_context()
    slots = [_Slot(ctx, fn) for _ in range(max(1, jobs))]
    queue = deque(tasks)
    try:
        while queue or any(s.task is not None for s in slots):
            for s in slots:
                if s.task is None and queue:
                    s.start(queue.popleft())
            _wait_any(slots)
            now = time.monotonic()
            for s in slots:
                out = s.poll(now) if s.task is not None else None
                if out is not None:
                    task, s.task = s.task, None
                    on_done(task, out)
    finally:
        for s in slots:  # idle or abandoned: nothing of theirs is pending, so no polite exit
            s.kill()


def _wait_any(slots: list[_Slot]) -> None:
    """Sleep until a busy worker answers or dies, or until the nearest deadline."""
    busy = [s for s in slots if s.task is not None]
    deadlines = [s.deadline for s in busy if s.deadline is not None]
    timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
    handles = [s.conn for s in busy] + [s.proc.sentinel for s in busy]
    wait_ready(handles, timeout)


__all__ = ["Outcome", "Task", "mp_context", "supervise"]
