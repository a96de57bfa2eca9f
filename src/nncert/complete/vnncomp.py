"""The VNN-COMP interface: one instance (ONNX + VNN-LIB + timeout → result file) and whole
benchmark suites (instances.csv → results.csv, resumable, with a summary against expected.csv).

Result words are VNN-COMP's: ``sat`` (with the witness), ``unsat``, ``timeout``, ``unknown``,
and ``error`` when the instance could not be run (unreadable model, spec not matching it, ...).
"""

from __future__ import annotations

import csv
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..errors import ConfigError, NncertError
from ..result import Result
from .bab import BaBConfig
from .milp import MilpConfig
from .verify import VerifyConfig, verify_all

RESULT_COLUMNS = ("onnx", "vnnlib", "result", "time_s")


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


# -- suites -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Instance:
    onnx: str
    vnnlib: str
    timeout: float


def read_instances(path, timeout_override: float | None = None) -> list[Instance]:
    rows = []
    with open(path, newline="") as f:
        for i, row in enumerate(csv.reader(f), 1):
            if not row or not row[0].strip() or row[0].strip().startswith("#"):
                continue
            if len(row) < 2:
                raise ConfigError(f"{path}:{i}: expected onnx,vnnlib[,timeout], got {row}")
            if row[0].strip() == "onnx":
                continue  # header
            t = float(row[2]) if len(row) > 2 and row[2].strip() else 60.0
            if timeout_override is not None:
                t = timeout_override
            rows.append(Instance(row[0].strip(), row[1].strip(), t))
    return rows


def read_results(path) -> dict[tuple[str, str], tuple[str, float]]:
    done: dict[tuple[str, str], tuple[str, float]] = {}
    if not Path(path).exists():
        return done
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                done[(row["onnx"], row["vnnlib"])] = (row["result"], float(row["time_s"]))
            except (KeyError, TypeError, ValueError):
                continue  # a torn last line: rerun that instance
    return done


def read_expected(path) -> dict[tuple[str, str], str]:
    out = {}
    if not Path(path).exists():
        return out
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            out[(row["onnx"].strip(), row["vnnlib"].strip())] = row["expected"].strip()
    return out


def _worker(root: str, inst: Instance, threads: int, cex_dir: str | None):
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    try:
        res = run_instance(Path(root) / inst.onnx, Path(root) / inst.vnnlib, inst.timeout)
        word = res.verdict.vnncomp()
        if cex_dir and res.counterexample is not None:
            name = f"{Path(inst.onnx).stem}__{Path(inst.vnnlib).stem}.txt"
            write_result(Path(cex_dir) / name, res.to_vnncomp())
        return word, time.perf_counter() - t0, None
    except NncertError as e:
        return "error", time.perf_counter() - t0, str(e)
    except Exception as e:  # noqa: BLE001 - a crash in one instance must not stop the suite
        return "error", time.perf_counter() - t0, f"{type(e).__name__}: {e}"


def _append_row(path: Path, row: tuple) -> None:
    new = not path.exists() or path.stat().st_size == 0
    with open(path, "a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(RESULT_COLUMNS)
        w.writerow(row)
        f.flush()
        os.fsync(f.fileno())


@dataclass
class SuiteSummary:
    total: int = 0
    solved: int = 0
    correct: int = 0
    wrong: int = 0
    unsolved: int = 0
    errors: int = 0
    time_s: float = 0.0
    wrong_rows: list | None = None
    with_expected: int = 0

    def text(self) -> str:
        s = (f"instances {self.total}: solved {self.solved}, correct {self.correct}, "
             f"wrong {self.wrong}, unsolved {self.unsolved}, errors {self.errors}; "
             f"total time {self.time_s:.1f} s")
        if self.with_expected:
            s += f" ({self.with_expected} with a known answer)"
        return s


def summarize(instances: list[Instance], results: dict, expected: dict) -> SuiteSummary:
    s = SuiteSummary(wrong_rows=[])
    for inst in instances:
        key = (inst.onnx, inst.vnnlib)
        if key not in results:
            continue
        word, t = results[key]
        s.total += 1
        s.time_s += t
        solved = word in ("sat", "unsat")
        s.solved += solved
        s.errors += word == "error"
        exp = expected.get(key)
        if exp in ("sat", "unsat"):
            s.with_expected += 1
            if not solved:
                s.unsolved += 1
            elif word == exp:
                s.correct += 1
            else:
                s.wrong += 1
                s.wrong_rows.append((inst.onnx, inst.vnnlib, word, exp))
        elif not solved:
            s.unsolved += 1
    return s


def run_suite(instances_csv, root, out_csv, jobs: int = 1, timeout: float | None = None,
              progress: bool = True, cex_dir: str | None = None, log=None,
              threads: int = 1) -> SuiteSummary:
    """Run every instance not yet in ``out_csv``; rows are appended (and fsynced) as they
    finish, so an interrupted run loses nothing and a restart resumes."""
    from ..utils import progress as bar

    if jobs < 1:
        raise ConfigError(f"--jobs must be ≥ 1, got {jobs}")
    log = log if log is not None else sys.stderr
    root = Path(root)
    instances = read_instances(instances_csv, timeout)
    for inst in instances:
        if not inst.timeout > 0:
            raise ConfigError(f"timeout must be > 0 seconds, got {inst.timeout} for {inst.vnnlib}")
    out = Path(out_csv)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = read_results(out)
    if out.exists() and done:
        # rewrite without torn lines before appending
        text = ",".join(RESULT_COLUMNS) + "\n" + "".join(
            f"{o},{v},{r},{t:.3f}\n" for (o, v), (r, t) in done.items())
        from ..utils import write_atomic

        write_atomic(out, text)
    todo = [i for i in instances if (i.onnx, i.vnnlib) not in done]
    threads = threads if threads > 0 else max(1, (os.cpu_count() or 1) // jobs)
    it = bar(range(len(todo)), total=len(todo), desc="vnncomp", enabled=progress)
    pool = ProcessPoolExecutor(max_workers=jobs)
    all_done = False
    try:
        pending = {}
        queue = list(todo)
        while queue or pending:
            while queue and len(pending) < jobs:
                inst = queue.pop(0)
                pending[pool.submit(_worker, str(root), inst, threads, cex_dir)] = inst
            finished, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            for fut in finished:
                inst = pending.pop(fut)
                try:
                    word, t, err = fut.result()
                except Exception as e:  # noqa: BLE001 - worker died (e.g. out of memory)
                    word, t, err = "error", 0.0, f"worker crashed: {e}"
                if err:
                    print(f"nncert: {inst.onnx} {inst.vnnlib}: error: {err}", file=log)
                _append_row(out, (inst.onnx, inst.vnnlib, word, f"{t:.3f}"))
                done[(inst.onnx, inst.vnnlib)] = (word, t)
                next(it, None)
        all_done = True
    finally:
        # after a complete run the workers are idle: wait for them (without waiting, the
        # interpreter's exit hook can race the pool's closing pipes: "Bad file descriptor");
        # after Ctrl-C or an error, do not wait for the instances still running
        pool.shutdown(wait=all_done, cancel_futures=True)
    expected = read_expected(root / "expected.csv")
    return summarize(instances, done, expected)


__all__ = ["BaBConfig", "MilpConfig", "instance_config", "load_instance", "read_instances",
           "run_instance", "run_suite", "summarize"]
