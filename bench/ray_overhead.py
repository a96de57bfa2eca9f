"""Ray's overhead against the local process pool on the same suite, side by side.

Runs the ACAS Xu suite (``vnncomp2021-acasxu``, 186 instances) on the local pool and on a local
Ray instance with the same number of workers, alternating (local, Ray, local, Ray, ...), each
into a fresh results file; reports each wall time, the ratio Ray / local (target ≤ 1.15) and
whether both gave the same rows (times aside). The Ray instance is started before the timed
runs (a cluster is already running when one submits to it); its actors' start-up is timed.
Writes ``bench/out/ray_overhead.md``.

    python bench/ray_overhead.py --shared ../shared --jobs 2 [--limit 10] [--repeat 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from nncert.benchmarks.executors import LocalPool, RayPool
from nncert.benchmarks.plan import plan, run_plan
from nncert.benchmarks.runner import comparable, read_results
from nncert.benchmarks.suites import load_suite

HERE = Path(__file__).resolve().parent


def timed(p, out: Path, executor) -> float:
    if out.exists():
        out.unlink()
    t0 = time.perf_counter()
    run_plan(p, out, executor, progress=False)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", default="vnncomp2021-acasxu")
    ap.add_argument("--shared", default=str(HERE.parent.parent / "shared"))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None, help="only the first N instances")
    ap.add_argument("--timeout", type=float, default=None, help="override instance timeouts")
    ap.add_argument("--repeat", type=int, default=1, help="local/Ray pairs to run")
    ap.add_argument("--out", default=str(HERE / "out"))
    args = ap.parse_args(argv)
    import ray

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    p = plan(load_suite(args.suite), args.shared, timeout=args.timeout, limit=args.limit)
    t0 = time.perf_counter()
    ray.init(num_cpus=args.jobs, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.environ.get("PYTHONPATH", ""),
                                       "OMP_NUM_THREADS": "1"}})
    ray_start = time.perf_counter() - t0
    lines = [f"# Ray vs local pool: {args.suite}, {len(p.works)} instances, {args.jobs} workers",
             "", f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} cores; "
             f"Ray start-up (untimed) {ray_start:.1f} s", "",
             "| pair | local pool wall (s) | Ray wall (s) | Ray / local | same rows |",
             "|---:|---:|---:|---:|---|"]
    ratios = []
    for i in range(args.repeat):
        a, b = out / f"ray_overhead_local_{i}.jsonl", out / f"ray_overhead_ray_{i}.jsonl"
        t_local = timed(p, a, LocalPool(args.jobs))
        t_ray = timed(p, b, RayPool(None, args.jobs))
        same = comparable(read_results(a)) == comparable(read_results(b))
        ratios.append(t_ray / t_local)
        lines.append(f"| {i + 1} | {t_local:.1f} | {t_ray:.1f} | {t_ray / t_local:.3f} | "
                     f"{'yes' if same else 'NO'} |")
        print(lines[-1], flush=True)
    ray.shutdown()
    worst = max(ratios)
    lines += ["", f"Worst Ray / local ratio: **{worst:.3f}** (target ≤ 1.15)."]
    (out / "ray_overhead.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if worst <= 1.15 else 1


if __name__ == "__main__":
    sys.exit(main())
