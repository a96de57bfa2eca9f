"""The VNN-COMP interface for one instance (ONNX + VNN-LIB + timeout → result file). Whole
benchmark suites (instances.csv → results.csv) are run by :mod:`nncert.benchmarks.vnncomp`.

Result words are VNN-COMP's: ``sat`` (with the witness), ``unsat``, ``timeout``, ``unknown``,
and ``error`` when the instance could not be run (unreadable model, spec not matching it, a
crashed worker, ...).

Hard stop: :func:`run_instance_hard` runs the verifier in a worker process (:mod:`.supervise`)
and kills it when it is still busy at the instance's timeout plus a small grace, so the answer
(``timeout``) comes on time even when the library overruns its own deadline checks.
"""

from __future__ import annotations

import math
import os
import re
import signal
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..errors import ConfigError, NncertError
from ..result import Result
from .bab import BaBConfig
from .milp import MilpConfig
from .supervise import Outcome, Task, supervise
from .verify import VerifyConfig, verify_all

#: seconds past the timeout before ``vnncomp run`` kills its verifier process
RUN_GRACE_S = 0.5
#: test-only: "crash:NAME" or "hang:NAME" makes a worker whose ONNX path contains NAME die by
#: SIGKILL or hang (to test the hard stop and crash recovery); never set it otherwise
TEST_HOOK_ENV = "NNCERT_TEST_WORKER_HOOK"


def instance_config(timeout: float, base: VerifyConfig | None = None) -> VerifyConfig:
    """The default configuration for a VNN-COMP instance with ``timeout`` seconds."""
    if not timeout > 0:
        raise ConfigError(f"timeout must be > 0 seconds, got {timeout}")
    base = base or VerifyConfig(timeout_s=timeout)
    margin = min(1.0, 0.05 * timeout)  # leave time to write the answer
    t = max(timeout - margin, 0.05)
    return replace(base, timeout_s=t, bab=replace(base.bab, timeout_s=t),
                   milp=replace(base.milp, timeout_s=t))


def load_instance(onnx_path: str | os.PathLike, vnnlib_path: str | os.PathLike):
    """(model graph, [VerificationProblem in float64, one per input box])."""
    from ..models.load import load
    from ..specs.problem import VerificationProblem
    from ..specs.vnnlib import parse_vnnlib

    graph = load(str(onnx_path))
    pairs = parse_vnnlib(Path(vnnlib_path), graph.num_inputs, graph.num_outputs,
                         input_shape=graph.input_shape, dtype=torch.float64)
    name = Path(vnnlib_path).name
    return graph, [VerificationProblem(graph, box, spec, name) for box, spec in pairs]


def run_instance(onnx_path, vnnlib_path, timeout: float,
                 config: VerifyConfig | None = None) -> Result:
    """Decide one instance within ``timeout`` seconds (loading included)."""
    t0 = time.perf_counter()
    cfg = instance_config(timeout, config)
    graph, problems = load_instance(onnx_path, vnnlib_path)
    deadline = t0 + cfg.timeout_s
    return verify_all(problems, cfg, str(onnx_path), deadline=deadline)


def write_result(path, text: str) -> None:
    from ..utils import write_atomic

    write_atomic(path, text)


def one_line(message: str, limit: int = 300) -> str:
    """An error message safe to print: one line, printable ASCII, each quoted token (an excerpt
    of a file: ``'...'`` without blanks) cut to 40 characters, at most ``limit`` in all."""
    text = " ".join(str(message).split())
    text = re.sub(r"'([^'\s]{40})[^'\s]+'", r"'\1...'", text)
    text = "".join(c if c.isascii() and c.isprintable() else "?" for c in text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def worker_test_hook(onnx_path: str) -> None:
    """Test-only crash / hang of a worker (see TEST_HOOK_ENV); a no-op unless the variable is set."""
    hook = os.environ.get(TEST_HOOK_ENV, "")
    action, _, name = hook.partition(":")
    if not name or name not in str(onnx_path):
        return
    if action == "crash":
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "hang":
        while True:  # a library loop that never checks its deadline
            time.sleep(0.05)


# -- one instance, hard-stopped -----------------------------------------------------------------
@dataclass(frozen=True)
class RunOutcome:
    """What ``vnncomp run`` writes and says. ``text``: the result file's content; ``error``: a
    one-line message when the instance could not be run (``text`` is then ``error``);
    ``internal``: the error is a bug, not bad input (``trace`` holds its traceback);
    ``stopped``: the verifier overran and was killed at the hard stop (``text`` is ``timeout``)."""

    text: str
    method: str = ""
    error: str | None = None
    internal: bool = False
    trace: str = ""
    stopped: bool = False
    time_s: float = 0.0
    startup_s: float = 0.0  # of time_s: spent before the verifier started (the ``spent`` argument)

    @property
    def word(self) -> str:
        return self.text.split("\n", 1)[0]


def _solve(onnx_path: str, vnnlib_path: str, budget: float, threads: int) -> tuple:
    """Worker side of :func:`run_instance_hard`: (result text, method, error message or None)."""
    torch.set_num_threads(threads)
    worker_test_hook(onnx_path)
    try:
        res = run_instance(onnx_path, vnnlib_path, budget)
    except NncertError as e:
        return "error\n", "", str(e)
    except OSError as e:
        return "error\n", "", f"{e.strerror or e}: {e.filename}"
    return res.to_vnncomp(), res.method, None


def run_instance_hard(onnx_path, vnnlib_path, timeout: float, threads: int = 1,
                      spent: float = 0.0, grace: float = RUN_GRACE_S) -> RunOutcome:
    """Decide one instance in a child process that is killed if it is still running at
    ``timeout - spent + grace`` seconds from now (``spent``: time already used, e.g. the
    interpreter start-up); a killed child gives ``timeout``. A crashed child gives ``error``."""
    if not (timeout > 0 and math.isfinite(timeout)):
        raise ConfigError(f"timeout must be a positive number of seconds, got {timeout}")
    budget = timeout - spent
    if budget < 0.05:
        return RunOutcome("timeout\n", stopped=True, time_s=spent, startup_s=spent)
    outcomes: list[Outcome] = []
    task = Task("instance", (str(onnx_path), str(vnnlib_path), budget, threads), budget + grace)
    supervise(_solve, [task], 1, lambda _t, out: outcomes.append(out))
    out = outcomes[0]
    t = {"time_s": spent + out.elapsed, "startup_s": spent}
    if out.kind == "ok":
        text, method, err = out.value
        return RunOutcome(text, method, one_line(err) if err else None, **t)
    if out.kind == "killed":
        return RunOutcome("timeout\n", stopped=True, **t)
    if out.kind == "crashed":
        return RunOutcome("error\n", error=f"the verifier crashed: {out.detail}", **t)
    return RunOutcome("error\n", error=one_line(out.detail), internal=True, trace=out.trace, **t)


__all__ = ["BaBConfig", "MilpConfig", "RunOutcome", "instance_config", "load_instance",
           "run_instance", "run_instance_hard", "worker_test_hook"]
