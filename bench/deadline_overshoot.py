"""Worst overshoot of ``nncert vnncomp run`` past its timeout on hard instances.

Runs each instance as its own process (``python -m nncert.cli.main vnncomp run``, with
PYTHONPATH as given by the caller) and prints, per instance, the result word, the wall time of
the whole process and ``overshoot = wall − timeout`` (the time between the deadline and the
answer; interpreter start-up and imports included, since VNN-COMP counts them too), and the
library's own overshoot: the time ``run_instance`` took (printed by the CLI, loading included)
minus the timeout.

``--from-launch`` runs a small driver instead of the CLI: the same ``verify_all`` call, but
with the deadline counted from the process's launch (``clock.since_process_start()``) and an
``os._exit`` right after the result file is written, as the CLI could do, to show what that
would give.

    PYTHONPATH=$PWD/src python bench/deadline_overshoot.py --timeout 10 [--only mnistfc]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path("/work/shared/benchmarks")
DRIVER = """
import os
import sys
from nncert.clock import Deadline, since_process_start
from nncert.complete.verify import verify_all
from nncert.complete.vnncomp import instance_config, load_instance
from nncert.utils import write_atomic
onnx, vnnlib, timeout, out = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
cfg = instance_config(timeout)
deadline = Deadline.after(cfg.timeout_s - since_process_start())
graph, problems = load_instance(onnx, vnnlib)
res = verify_all(problems, cfg, onnx, deadline=deadline)
write_atomic(out, res.to_vnncomp())
print(f"{res.verdict.vnncomp()} ({res.method})")
sys.stdout.flush()
os._exit(0)  # skip the interpreter's teardown (about a second with torch loaded)
"""
INSTANCES = [
    ("mnistfc", "onnx/mnist-net_256x6.onnx", "vnnlib/prop_0_0.05.vnnlib"),
    ("mnistfc", "onnx/mnist-net_256x4.onnx", "vnnlib/prop_3_0.03.vnnlib"),
    ("cifar10_resnet", "onnx/resnet_2b.onnx", "vnnlib/prop_0_eps_0.008.vnnlib.gz"),
    ("cifar10_resnet", "onnx/resnet_4b.onnx", "vnnlib/prop_1_eps_0.008.vnnlib.gz"),
    ("oval21", "onnx/cifar_base_kw.onnx",
     "vnnlib/cifar_base_kw-img7779-eps0.04771241830065359.vnnlib"),
    ("oval21", "onnx/cifar_wide_kw.onnx", None),  # first instance of that net in the list
]


def _first(bench: str, onnx: str) -> str:
    for line in (ROOT / bench / "instances.csv").read_text().splitlines():
        o, v, _ = line.split(",")
        if o.strip() == onnx:
            return v.strip()
    raise SystemExit(f"no instance of {onnx} in {bench}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--only", default=None, help="benchmark name filter")
    ap.add_argument("--from-launch", action="store_true",
                    help="deadline counted from the process's launch (a driver, not the CLI)")
    args = ap.parse_args()
    worst = -float("inf")
    with tempfile.TemporaryDirectory() as tmp:
        for bench, onnx, vnnlib in INSTANCES:
            if args.only and args.only not in bench:
                continue
            vnnlib = vnnlib or _first(bench, onnx)
            out = Path(tmp) / "out.txt"
            files = [str(ROOT / bench / onnx), str(ROOT / bench / vnnlib)]
            cmd = [sys.executable, "-m", "nncert.cli.main", "vnncomp", "run",
                   "--onnx", files[0], "--vnnlib", files[1],
                   "--timeout", str(args.timeout), "--out", str(out)]
            if args.from_launch:
                cmd = [sys.executable, "-c", DRIVER, *files, str(args.timeout), str(out)]
            t0 = time.perf_counter()
            p = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
            wall = time.perf_counter() - t0
            word = out.read_text().split("\n")[0] if out.exists() else f"rc={p.returncode}"
            worst = max(worst, wall - args.timeout)
            m = re.search(r" in ([0-9.]+) s", p.stdout)
            lib = f"{float(m.group(1)) - args.timeout:+6.2f} s" if m else "?"
            print(f"{bench:15s} {Path(onnx).stem:18s} {Path(vnnlib).name[:40]:40s} {word:8s} "
                  f"wall {wall:6.2f} s  overshoot {wall - args.timeout:+6.2f} s  library {lib}",
                  flush=True)
            if p.returncode not in (0,):
                print("   stderr:", p.stderr.strip().splitlines()[-1:] if p.stderr else "")
    print(f"worst overshoot {worst:+.2f} s (timeout {args.timeout} s)")


if __name__ == "__main__":
    main()
