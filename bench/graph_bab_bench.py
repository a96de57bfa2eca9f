"""Graph ReLU BaB on VNN-COMP instances: verdict, method, time and BaB statistics per instance.

    PYTHONPATH=$PWD/src OMP_NUM_THREADS=1 python bench/graph_bab_bench.py \\
        /work/shared/benchmarks/cifar10_resnet 60 2b:10 2b:22 4b:0

Items are ``net:prop`` (cifar10_resnet naming) or ``onnx,vnnlib`` paths relative to the root.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from nncert.complete.vnncomp import run_instance


def _paths(root: Path, item: str) -> tuple[Path, Path]:
    if "," in item:
        onnx, vnnlib = item.split(",")
        return root / onnx, root / vnnlib
    net, prop = item.split(":")
    eps = "0.008" if net == "2b" else "0.004"
    return root / f"onnx/resnet_{net}.onnx", root / f"vnnlib/prop_{prop}_eps_{eps}.vnnlib.gz"


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    root, timeout = Path(argv[0]), float(argv[1])
    for item in argv[2:]:
        onnx, vnnlib = _paths(root, item)
        t0 = time.perf_counter()
        r = run_instance(onnx, vnnlib, timeout)
        bab = r.stats.get("bab", {})
        print(f"{item:8s} {r.verdict.name:9s} {r.method:15s} {time.perf_counter() - t0:7.1f} s "
              f"{ {k: v for k, v in bab.items() if k != 'reason'} }", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
