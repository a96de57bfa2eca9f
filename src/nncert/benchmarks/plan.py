"""A suite → the runner's work items → a results file (``nncert bench run``).

Everything that can be wrong with a suite (a missing model or dataset, a bad instances.csv, a
path outside the root) fails in :func:`plan` before any instance runs.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from ..errors import ConfigError, DataError
from .executors import LocalPool
from .instances import certify_instance
from .models import data_source, prepare_model, resolve
from .runner import JsonlStore, RunCounts, Work, run_work
from .suites import PACKAGED, Suite
from .vnncomp import SUITE_GRACE_S, prepare_suite, solve_instance, vnncomp_works

#: environment variable naming the shared folder (data and VNN-COMP benchmarks) for the
#: packaged suites, when neither --root nor --shared is given
SHARED_ENV = "NNCERT_SHARED"


@dataclass(frozen=True)
class Plan:
    """What a run does: ``fn`` applied to each of ``works``."""

    suite: Suite
    fn: Callable
    works: tuple[Work, ...]


def root_of(suite: Suite, root: str | os.PathLike | None) -> Path:
    """The folder the suite's relative paths resolve against: ``root`` (--root / --shared), else
    for a packaged suite ``$NNCERT_SHARED`` or the first ``shared`` folder found in or above the
    working directory, else the suite file's own folder; then the suite's own ``root`` below it."""
    if root is None and suite.source.resolve().parent == PACKAGED.resolve():
        root = os.environ.get(SHARED_ENV) or _find_shared()
    base = Path(root) if root is not None else suite.source.parent
    if not base.is_dir():
        raise ConfigError(f"root folder {base} does not exist or is not a folder")
    return base / suite.root


def _find_shared() -> str | None:
    here = Path.cwd().resolve()
    for d in (here, *here.parents):
        if (d / "shared").is_dir():
            return str(d / "shared")
    return None


def plan(suite: Suite, root: str | os.PathLike | None = None, models_dir: str | os.PathLike = "models",
         timeout: float | None = None, limit: int | None = None, log=None,
         count: int | None = None) -> Plan:
    """The work items of ``suite`` (the first ``limit`` ones when given); ``timeout`` overrides
    the suite's per-instance timeout, ``count`` its number of data points (a robustness suite).
    Models to train are trained here, once."""
    if count is not None and suite.data is not None:
        suite = replace(suite, data=replace(suite.data, count=count))
    base = root_of(suite, root)
    if suite.kind == "vnncomp":
        fn, works = solve_instance, _vnncomp(suite, base, timeout)
    else:
        fn, works = certify_instance, _robustness(suite, base, Path(models_dir), timeout, log)
    if limit is not None:
        works = works[:limit]
    return Plan(suite, fn, tuple(works))


def _vnncomp(suite: Suite, base: Path, timeout: float | None) -> list[Work]:
    csv_path = resolve(base, suite.instances, f"suite {suite.name!r}: instances")
    instances, _dups, paths, expected = prepare_suite(csv_path, csv_path.parent,
                                                      timeout or suite.timeout)
    return vnncomp_works(instances, paths, expected, suite.threads, None, suite.name)


def load_points(suite: Suite, base: Path) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """(points in [0, 1] pixel units, labels, dataset indices) of the suite's data slice."""
    from ..data import load_dataset

    spec = suite.data
    data = load_dataset(data_source(base, spec.source, f"suite {suite.name!r}: data"))
    n = len(data)
    if n == 0:
        raise DataError(f"suite {suite.name!r}: the dataset {spec.source} holds no images")
    count = min(spec.count or n, n)
    if spec.sample == "uniform":
        gen = torch.Generator().manual_seed(spec.seed)
        idx = sorted(int(i) for i in torch.randperm(n, generator=gen)[:count])
    else:
        idx = list(range(count))
    sel = torch.tensor(idx, dtype=torch.long)
    return data.images[sel] / data.pixel_max, data.labels[sel], idx


def _robustness(suite: Suite, base: Path, models_dir: Path, timeout: float | None,
                log) -> list[Work]:
    x, labels, idx = load_points(suite, base)
    t = timeout or suite.timeout
    p = "inf" if suite.p == math.inf else suite.p
    works = []
    for spec in suite.models:
        model = str(prepare_model(spec, base, models_dir, log))
        for method in suite.methods:
            for eps in suite.eps:
                for i, k in enumerate(idx):
                    opts = {"seed": k, "smooth": asdict(suite.smooth), "radius": suite.radius}
                    fields = {"suite": suite.name, "kind": "robustness", "model": spec.name,
                              "method": method, "eps": eps, "p": p, "index": k,
                              "label": int(labels[i]), "timeout": t}
                    key = f"{spec.name}/{method}/eps={eps:g}/{k}"
                    works.append(Work(key, fields, (model, x[i].clone(), int(labels[i]), eps,
                                                    suite.p, method, t, suite.threads, opts),
                                      t, key))
    return works


def run_plan(p: Plan, out: str | os.PathLike | JsonlStore, executor=None,
             grace: float = SUITE_GRACE_S, progress: bool = True, log=None) -> RunCounts:
    """Run every planned instance without a row in ``out`` (a JSON Lines path or an open
    :class:`JsonlStore`; resumable)."""
    store = out if isinstance(out, JsonlStore) else JsonlStore(Path(out), p.suite.name)
    return run_work(p.fn, p.works, executor or LocalPool(1), store, grace,
                    log if log is not None else sys.stderr, progress, p.suite.name)


__all__ = ["Plan", "SHARED_ENV", "load_points", "plan", "root_of", "run_plan"]
