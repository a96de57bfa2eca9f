"""How late do timeouts come back on a loaded machine?

Starts ``--load`` CPU-bound busy-loop processes (default 2, killed at the end), then runs hard
mnistfc instances (256x4 / 256x6, no tool solved them in VNN-COMP 2021, so they run into their
timeout) through the real CLI:

* ``vnncomp run`` (``nncert vnncomp run``, and ``vnncomp_scripts/run_instance.sh``, which
  calls the lighter ``python -m nncert.cli.vnncomp`` entry): answer time = wall time of the
  whole command (interpreter start-up included, as the VNN-COMP harness counts it), from
  outside the process;
* ``vnncomp suite`` (one small instances.csv): answer time = the ``time_s`` of each row
  (from the moment the instance was handed to its worker) and the suite's wall time.

Overshoot = answer time − timeout. The target is ≤ +2 s whatever the load. Writes a Markdown
table to ``bench/out/timeout_bench.md`` (and prints it).

    python bench/timeout_bench.py --quick   # ~1-2 minutes: a CLI run, a script run, a 2-instance
                                            # suite, timeout 10 s
    python bench/timeout_bench.py           # 4 instances x (CLI, script) + a 4-instance suite,
                                            # at 10 s and 20 s (~8 minutes)
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
SCRIPTS = HERE.parent / "vnncomp_scripts"
MNISTFC = HERE.parent.parent / "shared" / "benchmarks" / "mnistfc"
# expected "unknown" in mnistfc/expected.csv: no VNN-COMP 2021 tool solved them
HARD = [("onnx/mnist-net_256x4.onnx", "vnnlib/prop_1_0.03.vnnlib"),
        ("onnx/mnist-net_256x6.onnx", "vnnlib/prop_3_0.03.vnnlib"),
        ("onnx/mnist-net_256x4.onnx", "vnnlib/prop_0_0.05.vnnlib"),
        ("onnx/mnist-net_256x6.onnx", "vnnlib/prop_5_0.05.vnnlib")]


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    return env


def _cli(*argv) -> list[str]:
    return [sys.executable, "-m", "nncert.cli.main", "vnncomp", *map(str, argv)]


def start_load(n: int) -> list[subprocess.Popen]:
    """``n`` busy-loop python processes (one core each)."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def stop_load(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.kill()
    for p in procs:
        p.wait()


def bench_run(onnx: str, vnnlib: str, timeout: float, tmp: Path, entry: str) -> dict:
    """One instance through ``nncert vnncomp run`` (entry "cli") or run_instance.sh ("script")."""
    out = tmp / f"{entry}_{Path(onnx).stem}_{Path(vnnlib).stem}_{timeout:g}.txt"
    if entry == "script":
        cmd = ["bash", str(SCRIPTS / "run_instance.sh"), "v1", "mnistfc", str(MNISTFC / onnx),
               str(MNISTFC / vnnlib), str(out), f"{timeout:g}"]
    else:
        cmd = _cli("run", "--onnx", MNISTFC / onnx, "--vnnlib", MNISTFC / vnnlib,
                   "--timeout", timeout, "--out", out)
    t0 = time.monotonic()
    proc = subprocess.run(cmd, env=dict(_env(), NNCERT_PYTHON=sys.executable),
                          capture_output=True, text=True)
    wall = time.monotonic() - t0
    answer = out.read_text().split("\n", 1)[0] if out.exists() else f"(no file, rc {proc.returncode})"
    m = re.search(r"start-up and imports ([0-9.]+) s", proc.stdout)
    return {"mode": f"run ({entry})", "instance": f"{Path(onnx).stem} {Path(vnnlib).stem}",
            "timeout": timeout, "answer": answer, "time": wall,
            "startup": f"{float(m.group(1)):.2f}" if m else "?"}


def bench_suite(pairs, timeout: float, tmp: Path) -> tuple[list[dict], float]:
    inst = tmp / f"instances_{timeout:g}.csv"
    with inst.open("w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows((o, v, timeout) for o, v in pairs)
    out = tmp / f"results_{timeout:g}.csv"
    t0 = time.monotonic()
    proc = subprocess.run(_cli("suite", "--instances", inst, "--root", MNISTFC, "--out", out,
                               "--no-progress"), env=_env(), capture_output=True, text=True)
    wall = time.monotonic() - t0
    if proc.returncode not in (0, 1):
        print(proc.stderr, file=sys.stderr)
    rows = []
    with out.open(newline="") as f:
        for r in csv.DictReader(f):
            rows.append({"mode": "suite", "instance": f"{Path(r['onnx']).stem} "
                         f"{Path(r['vnnlib']).stem}", "timeout": timeout, "answer": r["result"],
                         "time": float(r["time_s"]), "startup": "-"})
    return rows, wall


def _late(r: dict) -> float:
    """Overshoot not explained by start-up: answer time − max(timeout, start-up). What the hard
    stop controls (start-up longer than the timeout leaves the verifier no time at all)."""
    startup = float(r["startup"]) if r["startup"] not in ("-", "?") else 0.0
    return r["time"] - max(r["timeout"], startup)


def table(rows: list[dict]) -> list[str]:
    lines = ["| mode | instance | timeout (s) | answer | answer time (s) | overshoot (s) | "
             "start-up (s) | overshoot after start-up (s) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['mode']} | {r['instance']} | {r['timeout']:g} | {r['answer']} | "
                     f"{r['time']:.2f} | {r['time'] - r['timeout']:+.2f} | {r['startup']} | "
                     f"{_late(r):+.2f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="~1-2 minutes: a CLI run, a script run, a 2-instance suite")
    ap.add_argument("--load", type=int, default=2, help="busy-loop load processes (default 2)")
    ap.add_argument("--timeouts", default=None, help="comma-separated seconds (default 10,20; "
                    "--quick: 10)")
    ap.add_argument("--out", default=str(HERE / "out" / "timeout_bench.md"))
    args = ap.parse_args(argv)
    if not (MNISTFC / "instances.csv").exists():
        print(f"skipping: {MNISTFC} not found", file=sys.stderr)
        return 0
    timeouts = [float(t) for t in (args.timeouts or ("10" if args.quick else "10,20")).split(",")]
    n = 2 if args.quick else 4
    rows: list[dict] = []
    walls = []
    load0 = os.getloadavg()
    load = start_load(args.load)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    try:
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            for t in timeouts:
                for k, (onnx, vnnlib) in enumerate(HARD[:n]):
                    for entry in (["cli", "script"][k % 2:k % 2 + 1] if args.quick
                                  else ["cli", "script"]):
                        rows.append(bench_run(onnx, vnnlib, t, tmp, entry))
                        print(table(rows[-1:])[-1], flush=True)
                srows, wall = bench_suite(HARD[:n], t, tmp)
                rows += srows
                walls.append((t, len(srows), wall))
                print("\n".join(table(srows)[2:]), flush=True)
    finally:
        stop_load(load)
    worst = max(rows, key=lambda r: r["time"] - r["timeout"])
    lines = ["# Timeouts under load", "",
             f"{started}; {os.cpu_count()} cores; {args.load} busy-loop load processes started by "
             f"the bench; load average before: {load0[0]:.2f}, at the end: "
             f"{os.getloadavg()[0]:.2f} (the machine may be shared with other jobs).", "",
             f"Command: `python bench/timeout_bench.py {' '.join(argv or sys.argv[1:])}`", ""]
    lines += table(rows)
    late = max(rows, key=_late)
    lines += ["", f"**Worst overshoot: {worst['time'] - worst['timeout']:+.2f} s** "
              f"({worst['mode']} {worst['instance']}, timeout {worst['timeout']:g} s); target ≤ +2 s.",
              f"Worst overshoot after start-up: {_late(late):+.2f} s ({late['mode']} "
              f"{late['instance']}).", ""]
    lines += [f"- suite of {k} instances at {t:g} s: wall {w:.1f} s for a budget of "
              f"{k * t:g} s (+{w - k * t:.1f} s: start-up, worker fork, summary)" for t, k, w in walls]
    lines += ["", "`run` times are the wall time of the whole command (interpreter start-up and "
              "imports included: they count against the timeout, as in VNN-COMP; the last column "
              "is the part spent before the verifier started); `suite` times are each row's "
              "time_s (from the hand-over to the worker)."]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
