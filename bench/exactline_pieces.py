"""ExactLine's pieces against the network's size (issue 15: the O((N²)^L) claim, measured).

    OMP_NUM_THREADS=1 python bench/exactline_pieces.py                 # MNIST (../shared)
    OMP_NUM_THREADS=1 python bench/exactline_pieces.py --digits        # the embedded digits

Networks: MLPs input-N-...-N-10 with L hidden ReLU layers of width N, for N in --widths and L
in --depths, each ``random`` (PyTorch's default initialisation) and ``trained`` (--epochs of
Adam on --train training images). Segments: x → rotate(x, 30°) in pixel space for the first
--segments test images. ExactLine (``certify_lines(..., "exact")``) splits the segment where any
neuron changes sign, so its piece count is the number of linear regions the line crosses.

A piece is cut at most once by each neuron of a layer (a neuron is affine on a piece), so L
layers of N neurons give at most (N+1)^L pieces; GCert quotes O((N²)^L). The table puts the
measured mean and max next to the neuron count N·L and both bounds (as log10), and the time per
segment. Writes bench/out/exactline_pieces.md and prints it.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
from torch import nn

from nncert.data import load_dataset, to_unit
from nncert.models.from_torch import from_torch
from nncert.semantic.latent import certify_lines
from nncert.semantic.transforms import apply_transform
from semantic_bench import train  # (bench/ is on the path when a script here runs)

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared" / "data" / "mnist"
OUT = ROOT / "bench" / "out"


def mlp(inputs: int, width: int, depth: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    for i in range(depth):
        layers += [nn.Linear(inputs if i == 0 else width, width), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, 10))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--widths", type=int, nargs="+", default=[25, 50, 100, 200])
    p.add_argument("--depths", type=int, nargs="+", default=[1, 2, 3, 4])
    p.add_argument("--segments", type=int, default=50)
    p.add_argument("--train", type=int, default=10000)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--digits", action="store_true", help="the embedded 8x8 digits instead")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.digits:
        tr, te = load_dataset("digits:train"), load_dataset("digits:test")
    else:
        tr = load_dataset(MNIST / "train-images-idx3-ubyte.gz", count=args.train)
        te = load_dataset(MNIST, count=args.segments)
    xtr, ytr = to_unit(tr).float(), tr.labels
    x = to_unit(te).float()[:args.segments].double()
    ends = torch.stack([apply_transform(xi, "rotate", torch.tensor([[30.0]]))[0] for xi in x])
    shape = tuple(x.shape[1:])
    rows = ["| N | L | weights | neurons N·L | pieces mean | pieces max | log10 (N+1)^L | "
            "log10 (N²)^L | ms/segment |", "|---" * 9 + "|"]
    for depth in args.depths:
        for width in args.widths:
            for weights in ("random", "trained"):
                torch.manual_seed(0)
                net = mlp(math.prod(shape), width, depth)
                if weights == "trained":
                    train(net, xtr, ytr, args.epochs, augment=False)
                g = from_torch(net.eval(), shape)
                with torch.no_grad():
                    labels = g(x.float()).argmax(1)
                t0 = time.perf_counter()
                reps = certify_lines(g, x, ends, labels, "exact")
                ms = 1000 * (time.perf_counter() - t0) / len(reps)
                pieces = torch.tensor([float(r.stats["pieces"]) for r in reps])
                rows.append(f"| {width} | {depth} | {weights} | {width * depth} | "
                            f"{float(pieces.mean()):.1f} | {int(pieces.max())} | "
                            f"{depth * math.log10(width + 1):.1f} | "
                            f"{depth * math.log10(width ** 2):.1f} | {ms:.1f} |")
                print(rows[-1], flush=True)
    data = "digits 8x8" if args.digits else "MNIST"
    lines = [f"# ExactLine pieces per segment ({data}, x → rotate(x, 30°), "
             f"{x.shape[0]} segments)", "", *rows]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "exactline_pieces.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
