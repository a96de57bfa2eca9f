"""ExactLine speed on f∘G (issue 15's target: ≥ 100 segments/s), old and new side by side.

    PYTHONPATH=src OMP_NUM_THREADS=1 python bench/semantic_speed.py            # trained nets
    PYTHONPATH=src OMP_NUM_THREADS=1 python bench/semantic_speed.py --weights random
    PYTHONPATH=src OMP_NUM_THREADS=1 python bench/semantic_speed.py --segments 200 --repeat 3

f: the MNIST MLP 784-100-100-100-10 (ReLU). G: the VAE decoder of nncert.semantic.generative
with latent 8 and two hidden layers of 256 (ReLU), clamped to [0, 1] with two ReLUs
(``relu(u) − relu(u − 1)``), so f∘G has 2·256 + 2·784 + 3·100 = 2,380 ReLUs and stays piecewise
linear. ``--weights trained`` (default) trains f for one epoch on --train MNIST images and the
VAE for --vae-steps Adam steps (both in seconds to a minute here); ``--weights random`` uses
PyTorch's default initialisation (no data needed; decoded images are then noise).

Segments: z = E(x) → z + δ·d for the first test images x and the learned directions d (mean
latent shift of rotate / scale / thickness / brightness pairs), --segments in all.

Timed on the same segments in the same process, interleaved per repeat (the machine is shared,
so ratios, not absolute times, are the measurement):

* ``old``: ``certify_segment_exact`` of commit 3dc7422 (git show, loaded as a module), one
  segment at a time: ExactLine with the float64 re-evaluation of every breakpoint;
* ``new``: ``certify_segments_exact`` of this tree, all segments in one batched call.

Both must agree: same verdicts, breakpoints to 1e-9, robust fractions to 1e-9 (checked, the run
fails otherwise). Prints segments/s, pieces per segment, the ratio old/new and ``uptime``.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time
import types
from pathlib import Path

import torch
from torch import nn

from nncert.data import load_dataset, to_unit
from nncert.models.from_torch import from_torch
from nncert.models.graph import compose
from nncert.semantic.generative import VAE, VAEConfig, decoder_graph, encoder_graph, mutate, train_vae
from nncert.semantic.segments import as_float64, certify_segments_exact
from nncert.specs.output import OutputSpec

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared" / "data" / "mnist"
REFERENCE = "3dc7422"
DIRECTIONS = ("rotate", "scale", "thickness", "brightness")


def load_reference(commit: str = REFERENCE) -> types.ModuleType:
    """segments.py as of ``commit``, imported as nncert.semantic._segments_ref."""
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:src/nncert/semantic/segments.py"],
                         check=True, capture_output=True, text=True).stdout
    name = "nncert.semantic._segments_ref"
    spec = importlib.util.spec_from_loader(name, loader=None)
    mod = importlib.util.module_from_spec(spec)
    mod.__package__ = "nncert.semantic"
    sys.modules[name] = mod
    exec(compile(src, f"{commit}:segments.py", "exec"), mod.__dict__)
    return mod


def _classifier(x: torch.Tensor, y: torch.Tensor, trained: bool) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(),
                        nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 10))
    if trained:
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        for i in range(0, x.shape[0], 128):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x[i:i + 128]), y[i:i + 128]).backward()
            opt.step()
    return net.eval()


def build(args) -> tuple:
    """(f∘G in float64, starts (N, 8), ends (N, 8), labels (N,), description)."""
    if args.weights == "trained":
        tr = load_dataset(MNIST / "train-images-idx3-ubyte.gz", count=args.train)
        te = load_dataset(MNIST, count=500)
        xtr, ytr, xte = to_unit(tr).float(), tr.labels, to_unit(te).float()
        vae = train_vae(xtr, VAEConfig(latent=8, hidden=256, steps=args.vae_steps))
    else:
        torch.manual_seed(0)
        xtr, ytr = torch.rand(0, 1, 28, 28), torch.zeros(0, dtype=torch.long)
        xte = torch.rand(500, 1, 28, 28)
        vae = VAE((1, 28, 28), 8, 256).eval()
    f = from_torch(_classifier(xtr, ytr, args.weights == "trained"), (1, 28, 28))
    G, E = decoder_graph(vae), encoder_graph(vae)
    fg = as_float64(compose(G, f))
    with torch.no_grad():
        dirs = [(vae.encode(mutate(xte[:200], m))[0] - vae.encode(xte[:200])[0]).mean(0)
                for m in DIRECTIONS]
        z = E(xte).double()
    n_img = -(-args.segments // len(dirs))
    starts = z[:n_img].repeat_interleave(len(dirs), 0)[:args.segments]
    ends = starts + args.delta * torch.stack(dirs).double().repeat(n_img, 1)[:args.segments]
    with torch.no_grad():
        labels = fg(starts).argmax(1)
    return fg, starts, ends, labels


def run_old(ref, fg, starts, ends, labels):
    out = []
    for a, b, lab in zip(starts, ends, labels):
        spec = OutputSpec.robustness([int(lab)], fg.num_outputs, dtype=torch.float64)
        out.append(ref.certify_segment_exact(fg, a, b, spec))
    return out


def run_new(fg, starts, ends, labels, chunk=64):
    spec = OutputSpec.robustness(labels, fg.num_outputs, dtype=torch.float64)
    return certify_segments_exact(fg, starts, ends, spec, chunk=chunk)


def _agree(old, new) -> None:
    for i, (o, n) in enumerate(zip(old, new)):
        if o.result.verdict != n.result.verdict or abs(o.fraction_lower - n.fraction_lower) > 1e-9:
            raise SystemExit(f"segment {i}: old {o.result.verdict.value} {o.fraction_lower} vs "
                             f"new {n.result.verdict.value} {n.fraction_lower}")
        if o.stats["pieces"] != n.stats["pieces"]:
            raise SystemExit(f"segment {i}: {o.stats['pieces']} pieces (old) vs "
                             f"{n.stats['pieces']} (new)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", choices=["trained", "random"], default="trained")
    p.add_argument("--segments", type=int, default=100)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--delta", type=float, default=1.0)
    p.add_argument("--train", type=int, default=10000)
    p.add_argument("--vae-steps", type=int, default=300)
    p.add_argument("--no-old", action="store_true", help="time the new code only")
    args = p.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    fg, starts, ends, labels = build(args)
    print(f"built f∘G ({args.weights} weights) and {starts.shape[0]} segments in "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    ref = None if args.no_old else load_reference()
    t_old, t_new, old, new = [], [], None, None
    for _ in range(args.repeat):
        if ref is not None:
            t = time.perf_counter()
            old = run_old(ref, fg, starts, ends, labels)
            t_old.append(time.perf_counter() - t)
        t = time.perf_counter()
        new = run_new(fg, starts, ends, labels)
        t_new.append(time.perf_counter() - t)
    n = starts.shape[0]
    pieces = sum(r.stats["pieces"] for r in new) / n
    verdicts = {v: sum(r.result.verdict.value == v for r in new)
                for v in ("verified", "falsified", "unknown")}
    print(f"segments: {n}; pieces per segment: {pieces:.1f}; verdicts (new): {verdicts}")
    best_new = min(t_new)
    print(f"new (batched): {n / best_new:8.1f} segments/s (best of {args.repeat}; all: "
          + ", ".join(f"{n / t:.1f}" for t in t_new) + ")")
    if ref is not None:
        _agree(old, new)
        best_old = min(t_old)
        print(f"old ({REFERENCE}): {n / best_old:8.1f} segments/s (all: "
              + ", ".join(f"{n / t:.1f}" for t in t_old) + ")")
        ratios = [o / w for o, w in zip(t_old, t_new)]
        print("ratio old/new per repeat: " + ", ".join(f"{r:.2f}" for r in ratios)
              + "; old and new agree on verdicts, pieces and fractions")
    print("uptime:" + subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
          .split("load average")[-1])


if __name__ == "__main__":
    main()
