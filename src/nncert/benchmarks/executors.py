"""Where instances run: the local process pool, or a Ray cluster (the optional ``[ray]`` extra).

Both executors keep the promises of :mod:`nncert.complete.supervise`, so the runner gives the
same rows on either:

* each task runs as ``fn(*args)`` in a worker process of its own (one at a time per worker);
* a task still running ``limit_s`` seconds after it was handed to a ready worker is stopped by
  killing that worker (``killed``); a worker that dies (``crashed``) fails only its own task;
  either way a fresh worker takes the next task;
* ``on_done(task, outcome)`` is called in the driver as each task ends, in completion order;
* on return or on an exception (Ctrl-C included) no worker of the run is left running.

On Ray each worker is an actor holding one CPU; a stopped or dead actor is replaced, and a new
actor takes tasks only once it has started (its start-up does not count against a deadline).
Paths in the tasks' arguments must be readable on every node (a shared file system).
"""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..complete.supervise import Outcome, Task, supervise
from ..errors import ConfigError

OnDone = Callable[[Task, Outcome], None]


@dataclass(frozen=True)
class LocalPool:
    """``jobs`` worker processes on this machine (:func:`nncert.complete.supervise.supervise`)."""

    jobs: int = 1

    def __post_init__(self) -> None:
        if self.jobs < 1:
            raise ConfigError(f"--jobs must be ≥ 1, got {self.jobs}")

    @property
    def workers(self) -> int:
        return self.jobs

    def run(self, fn: Callable, tasks: Iterable[Task], on_done: OnDone) -> None:
        supervise(fn, tasks, self.jobs, on_done)

    def describe(self) -> str:
        return f"local pool, {self.jobs} worker{'s' * (self.jobs != 1)}"


def ray_module():
    """The ``ray`` module, or a ConfigError saying how to install the extra."""
    try:
        import ray
    except ImportError:
        raise ConfigError("Ray is not installed: pip install 'nncert[ray]' (or pip install ray) "
                          "to run suites on a Ray cluster") from None
    return ray


class RayWorker:
    """The actor body (``ray.remote(RayWorker)``): runs one task at a time in its own process."""

    def ready(self, fn: Callable | None = None) -> int:
        """The process id, once ``fn``'s module is imported and its ``warm_up()`` (if any) has
        run: imports done here do not count against the first instance's deadline."""
        warm = getattr(sys.modules.get(getattr(fn, "__module__", ""), None), "warm_up", None)
        if callable(warm):
            warm()
        return os.getpid()

    def call(self, fn: Callable, args: tuple) -> tuple[str, Any, str, str]:
        try:
            return "ok", fn(*args), "", ""
        except BaseException as e:  # noqa: BLE001 - reported to the driver, never lost
            return "raised", None, f"{type(e).__name__}: {e}", traceback.format_exc()


@dataclass(frozen=True)
class RayPool:
    """Ray actors, one CPU each. ``address``: ``auto`` (a running cluster), ``local`` (start
    one on this machine with ``jobs`` CPUs), a cluster address (``ray://host:10001``,
    ``host:6379``), or None to use the Ray instance this process already started.
    ``jobs``: actors (default: the cluster's CPUs)."""

    address: str | None = "auto"
    jobs: int | None = None

    def __post_init__(self) -> None:
        if self.jobs is not None and self.jobs < 1:
            raise ConfigError(f"--jobs must be ≥ 1, got {self.jobs}")

    def connect(self):
        """The ray module, connected (ConfigError naming the address when it cannot be)."""
        ray = ray_module()
        if ray.is_initialized():
            return ray
        kw: dict[str, Any] = {"log_to_driver": False, "include_dashboard": False,
                              "logging_level": logging.ERROR}
        try:
            if self.address in (None, "local"):
                ray.init(num_cpus=self.jobs or os.cpu_count() or 1, **kw)
            else:
                ray.init(address=self.address, **kw)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise ConfigError(f"cannot connect to the Ray cluster at {self.address!r}: "
                              f"{' '.join(str(e).split())[:200]}") from None
        return ray

    @property
    def workers(self) -> int:
        ray = self.connect()
        return self.jobs or max(1, int(ray.cluster_resources().get("CPU", 1)))

    def run(self, fn: Callable, tasks: Iterable[Task], on_done: OnDone) -> None:
        ray = self.connect()
        _RayRun(ray, fn, self.workers, on_done).run(deque(tasks))

    def describe(self) -> str:
        return f"Ray ({self.address or 'this process'}), {self.workers} workers"


class _RayRun:
    """The driver loop of one :meth:`RayPool.run`: slots of actors, like ``supervise``'s."""

    def __init__(self, ray, fn: Callable, n: int, on_done: OnDone):
        self.ray, self.fn, self.on_done = ray, fn, on_done
        self.actor_class = ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(RayWorker)
        self.actors: list[Any] = [None] * n
        self.starting: dict[Any, int] = {}  # ready() ref -> slot
        self.running: dict[Any, tuple[int, Task, float]] = {}  # call ref -> (slot, task, start)
        self.idle: deque[int] = deque()

    def _start(self, slot: int) -> None:
        actor = self.actor_class.remote()
        self.actors[slot] = actor
        self.starting[actor.ready.remote(self.fn)] = slot

    def _kill(self, slot: int) -> None:
        actor, self.actors[slot] = self.actors[slot], None
        if actor is not None:
            self.ray.kill(actor, no_restart=True)

    def run(self, queue: deque[Task]) -> None:
        try:
            for slot in range(len(self.actors)):
                self._start(slot)
            while queue or self.running:
                self._dispatch(queue)
                self._collect(self._wait())
                self._stop_overdue()
        finally:
            for slot in range(len(self.actors)):
                self._kill(slot)

    def _dispatch(self, queue: deque[Task]) -> None:
        while self.idle and queue:
            slot, task = self.idle.popleft(), queue.popleft()
            ref = self.actors[slot].call.remote(self.fn, task.args)
            self.running[ref] = (slot, task, time.monotonic())

    def _wait(self) -> list:
        refs = list(self.running) + list(self.starting)
        deadlines = [t0 + task.limit_s for _s, task, t0 in self.running.values()
                     if task.limit_s is not None]
        timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
        ready, _ = self.ray.wait(refs, num_returns=1, timeout=timeout)
        return ready

    def _collect(self, ready: list) -> None:
        for ref in ready:
            if ref in self.starting:
                slot = self.starting.pop(ref)
                try:
                    self.ray.get(ref)
                    self.idle.append(slot)
                except self.ray.exceptions.RayError as e:
                    raise ConfigError(f"a Ray worker could not start: {_first_line(e)}") from None
                continue
            slot, task, t0 = self.running.pop(ref)
            elapsed = time.monotonic() - t0
            try:
                kind, value, detail, trace = self.ray.get(ref)
                out = Outcome(kind, value, detail, trace, elapsed)
                self.idle.append(slot)
            except self.ray.exceptions.RayError as e:
                out = Outcome("crashed", detail=f"the Ray worker died: {_first_line(e)}",
                              elapsed=elapsed)
                self._kill(slot)
                self._start(slot)
            self.on_done(task, out)

    def _stop_overdue(self) -> None:
        now = time.monotonic()
        for ref, (slot, task, t0) in list(self.running.items()):
            if task.limit_s is not None and now >= t0 + task.limit_s:
                del self.running[ref]
                self._kill(slot)
                self._start(slot)
                self.on_done(task, Outcome("killed", detail="stopped at the deadline",
                                           elapsed=now - t0))


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[0][:200] if lines else type(e).__name__


def executor_for(jobs: int | None, ray: str | None):
    """The executor the CLI options name: Ray when ``ray`` is given, else the local pool."""
    if ray:
        return RayPool(ray, jobs)
    return LocalPool(jobs or 1)


__all__ = ["LocalPool", "RayPool", "RayWorker", "executor_for", "ray_module"]

