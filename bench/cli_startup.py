"""CPU and wall time of ``nncert`` commands in fresh processes, for one or more source trees side
by side (interleaved, so a loaded machine slows each tree alike).

    python bench/cli_startup.py [--src DIR ...] [--reps 3]

``--src`` defaults to this checkout's ``src``; give another tree's ``src`` (e.g. a ``git
archive`` of main) to compare. CPU time is the child's user + system time (getrusage), which the
load of other processes hardly changes; wall time is printed too but is noisy on a shared
machine. Writes bench/out/cli_startup.md.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _model(folder: Path) -> Path:
    """A small 8x8 digits classifier as ONNX, for a real ``verify`` run."""
    import torch

    path = folder / "net.onnx"
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(),
                              torch.nn.Linear(32, 10))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 1, 8, 8),), str(path), dynamo=False,
                          input_names=["input"], dynamic_axes={"input": {0: "N"}})
    return path


def commands(model: Path) -> dict[str, list[str]]:
    return {
        "nncert --help": ["--help"],
        "nncert verify (usage error)": ["verify", "--model", str(model)],
        "nncert verify --count 3": ["verify", "--model", str(model), "--data", "digits:test",
                                    "--eps", "0.01", "--count", "3"],
    }


def measure(src: str, argv: list[str]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of ``python -m nncert.cli.main ARGV`` with ``src`` first."""
    env = {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "nncert.cli.main", *argv], env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", action="append", default=None, help="a source tree (repeatable)")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    srcs = args.src or [str(ROOT / "src")]
    with tempfile.TemporaryDirectory() as tmp:
        cmds = commands(_model(Path(tmp)))
        best: dict[tuple[str, str], tuple[float, float]] = {}
        for _ in range(args.reps):
            for name, argv in cmds.items():
                for src in srcs:  # interleaved
                    cpu, wall = measure(src, argv)
                    old = best.get((name, src), (float("inf"), float("inf")))
                    best[(name, src)] = (min(old[0], cpu), min(old[1], wall))
    head = "| command | " + " | ".join(f"`{s}` CPU / wall (s)" for s in srcs) + " |"
    lines = [head, "|" + "---|" * (len(srcs) + 1)]
    for name in cmds:
        cells = [f"{best[(name, s)][0]:.2f} / {best[(name, s)][1]:.2f}" for s in srcs]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append(f"\n(best of {args.reps}; load average {os.getloadavg()[0]:.1f})")
    text = "\n".join(lines) + "\n"
    print(text)
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "cli_startup.md").write_text(text)


if __name__ == "__main__":
    main()
