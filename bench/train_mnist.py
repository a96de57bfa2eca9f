"""Certified-training benchmark: the commands behind issue 14's target figures.

    python bench/train_mnist.py --list                      # the experiments and their commands
    python bench/train_mnist.py --only mnist-0.1            # one full run (≤ 90 min on 2 cores)
    python bench/train_mnist.py --short --only table-ibp    # a minutes-long smoke version
    python bench/train_mnist.py --device cuda               # everything, on a GPU

Each experiment is one ``nncert train`` command (200 test images evaluated after each epoch)
followed by ``nncert evaluate`` on the first 1,000 test images (``--short``: 1 epoch, 200
images), both run through the real CLI entry point.
Writes bench/out/train/<name>.onnx (+ .ckpt.pt, .log.csv, .png), <name>.eval.csv and a summary
bench/out/train/summary.md with clean / PGD / certified accuracy and training time. Data from
../shared/data (override with --data-dir). Set OMP_NUM_THREADS for CPU runs.

Targets (issue 14): MNIST ε=0.1 clean ≥ 98%, certified ≥ 95%; ε=0.3 clean ≥ 96%, certified
≥ 85%; CIFAR-10 2/255 certified ≥ 50%, clean ≥ 60%; 8/255 certified ≥ 30%; and a table of the
six robust methods on one MNIST architecture at ε=0.1.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "train"
DATA = ROOT.parent / "shared" / "data"

def _exp(data, arch, method, eps, epochs, ramp, *extra, train_eps=None, lr="5e-4"):
    """(epochs, warmup, ramp) in full runs: 1 warm-up epoch at ε = 0, then the ramp to
    ``train_eps`` (default ``eps``); evaluated at ``eps``."""
    cert = ["--batch-size", "100", "--lr", lr, "--grad-clip", "10"]
    return {"data": data, "eps": eps, "schedule": (epochs, 1, ramp),
            "train": ["--data", data, "--arch", arch, "--method", method,
                      "--eps", str(train_eps or eps), *cert, *extra]}


TABLE_ARCH = "fc3x100"
SHI = ("--batchnorm", "--init", "ibp", "--warmup-reg", "0.5")
EXPERIMENTS = {
    # IBP at a larger training ε than the one evaluated (Gowal et al.'s recipe), a few times
    # faster per epoch than CROWN-IBP on the CPU, so that far more epochs fit in 90 minutes
    "mnist-0.1": _exp("mnist", "dm-small", "ibp", 0.1, 70, 25, train_eps=0.15),
    # ε = 0.3: 70 epochs at κ → 0.5 gave 95.7% clean / 88.6% certified; longer, and a larger
    # final weight of the natural loss, trades some of the certified margin for clean accuracy
    "mnist-0.3": _exp("mnist", "dm-small", "ibp", 0.3, 100, 35, "--kappa", "0.6", train_eps=0.4),
    # CIFAR-10: CROWN-IBP (tighter than IBP at small ε, ~5x its cost per epoch here) at 2/255,
    # IBP with a long ramp at 8/255; both on Wong & Kolter's small CNN ("cnn")
    "cifar-2": _exp("cifar10", "cnn", "crown-ibp", round(2 / 255, 6), 12, 6,
                    train_eps=round(2.2 / 255, 6), lr="1e-3"),
    "cifar-2-ibp": _exp("cifar10", "cnn", "ibp", round(2 / 255, 6), 24, 12,
                        train_eps=round(2.2 / 255, 6), lr="1e-3"),
    # the 24-epoch run used 8 of its 90 minutes: the same CNN for 250 epochs (~19 s each on
    # one core), and DM-small (~28 s an epoch) for 150
    "cifar-2-ibp-long": _exp("cifar10", "cnn", "ibp", round(2 / 255, 6), 250, 100,
                             train_eps=round(2.2 / 255, 6), lr="1e-3"),
    "cifar-2-ibp-dmsmall": _exp("cifar10", "dm-small", "ibp", round(2 / 255, 6), 150, 60,
                                train_eps=round(2.2 / 255, 6), lr="1e-3"),
    # the two above stop improving on the test set long before their end (the training loss
    # keeps falling): the same CNN on random crops (padding 4) and mirror images, as every
    # published CIFAR-10 recipe trains
    "cifar-2-ibp-crop": _exp("cifar10", "cnn", "ibp", round(2 / 255, 6), 190, 75,
                             "--crop-pad", "4", "--flip",
                             train_eps=round(2.2 / 255, 6), lr="1e-3"),
    "cifar-2-crop": _exp("cifar10", "cnn", "crown-ibp", round(2 / 255, 6), 16, 8,
                         "--crop-pad", "4", "--flip", train_eps=round(2.2 / 255, 6), lr="1e-3"),
    # with crops the CNN stops overfitting; a wider net (DM-small: its second convolution has
    # stride 1) on the same augmentation, and the CNN with crops at 8/255
    "cifar-2-dmsmall-crop": _exp("cifar10", "dm-small", "ibp", round(2 / 255, 6), 150, 60,
                                 "--crop-pad", "4", "--flip",
                                 train_eps=round(2.2 / 255, 6), lr="1e-3"),
    "cifar-8-crop": _exp("cifar10", "cnn", "ibp", round(8 / 255, 6), 220, 85,
                         "--crop-pad", "4", "--flip",
                         train_eps=round(8.8 / 255, 6), lr="1e-3"),
    # at 8/255 both stay far from fitting (robust training loss ~2.1 after the ramp): the natural
    # loss's final weight κ 0.5 → 0 (pure robust loss, as Shi et al. train), on the CNN (paired
    # with cifar-8-crop) and on the wider DM-small
    "cifar-8-crop-k0": _exp("cifar10", "cnn", "ibp", round(8 / 255, 6), 220, 85,
                            "--crop-pad", "4", "--flip", "--kappa", "0",
                            train_eps=round(8.8 / 255, 6), lr="1e-3"),
    "cifar-8-dmsmall-k0": _exp("cifar10", "dm-small", "ibp", round(8 / 255, 6), 160, 70,
                               "--crop-pad", "4", "--flip", "--kappa", "0",
                               train_eps=round(8.8 / 255, 6), lr="1e-3"),
    # Shi et al. 2021's recipe on top: BatchNorm after every convolution and hidden dense layer,
    # IBP initialisation and the warm-up regulariser during the ramp (paired with the two above;
    # fewer epochs, since BatchNorm makes an epoch dearer and the budget is 90 minutes)
    "cifar-8-crop-k0-bn": _exp("cifar10", "cnn", "ibp", round(8 / 255, 6), 160, 60,
                               "--crop-pad", "4", "--flip", "--kappa", "0", *SHI,
                               train_eps=round(8.8 / 255, 6), lr="1e-3"),
    "cifar-2-dmsmall-bn": _exp("cifar10", "dm-small", "ibp", round(2 / 255, 6), 110, 45,
                               "--crop-pad", "4", "--flip", *SHI,
                               train_eps=round(2.2 / 255, 6), lr="1e-3"),
    # the wider DM-medium at 8/255 with the same recipe, on both cores (OMP_NUM_THREADS=2):
    # ~125 s an epoch there, so 40 epochs fit 90 minutes; BatchNorm for its faster start, which
    # a schedule this short needs most
    "cifar-8-dmmedium-k0-bn": _exp("cifar10", "dm-medium", "ibp", round(8 / 255, 6), 40, 18,
                                   "--crop-pad", "4", "--flip", "--kappa", "0", *SHI,
                                   train_eps=round(8.8 / 255, 6), lr="1e-3"),
    # the same DM-medium recipe at 2/255, with the natural loss kept (κ → 0.5, the default),
    # against DM-small's 45.3% certified / 58.5% clean there
    "cifar-2-dmmedium-bn": _exp("cifar10", "dm-medium", "ibp", round(2 / 255, 6), 40, 18,
                                "--crop-pad", "4", "--flip", *SHI,
                                train_eps=round(2.2 / 255, 6), lr="1e-3"),
    # SABR (IBP over a box of radius λ·ε around a PGD point) on DM-small with crops, one core
    # each, side by side: IBP-trained nets stop at PGD ≤ 50% at 2/255, below the target, so
    # the training must give up less accuracy; two box sizes, paired
    **{f"cifar-2-dmsmall-sabr{lam}": _exp(
        "cifar10", "dm-small", "sabr", round(2 / 255, 6), 50, 20, "--crop-pad", "4", "--flip",
        "--sabr-lambda", f"0.{lam}", "--pgd-steps", "8",
        train_eps=round(2.2 / 255, 6), lr="1e-3") for lam in (2, 4)},
    # SABR on the wider DM-medium with BatchNorm, alone on both cores (OMP_NUM_THREADS=2): 4
    # PGD steps (8 cost ~1.5x more), ~250 s an epoch, so 20 epochs fit 90 minutes; κ → 0.3,
    # since DM-small's clean accuracy fell below 60% once κ reached 0
    "cifar-2-dmmedium-sabr": _exp(
        "cifar10", "dm-medium", "sabr", round(2 / 255, 6), 20, 9, "--crop-pad", "4", "--flip",
        "--sabr-lambda", "0.2", "--pgd-steps", "4", "--kappa", "0.3", *SHI,
        train_eps=round(2.2 / 255, 6), lr="1e-3"),
    # the same recipe with the batches' passes in bfloat16 (1.36x faster at 4 PGD steps on this
    # AVX512-BF16 CPU) and 2 PGD steps (another 1.25x): ~140 s an epoch, so 30 epochs fit
    "cifar-2-dmmedium-sabr-bf16": _exp(
        "cifar10", "dm-medium", "sabr", round(2 / 255, 6), 30, 13, "--crop-pad", "4", "--flip",
        "--sabr-lambda", "0.2", "--pgd-steps", "2", "--kappa", "0.3", "--precision", "bfloat16",
        *SHI, train_eps=round(2.2 / 255, 6), lr="1e-3"),
    "cifar-8": _exp("cifar10", "cnn", "ibp", round(8 / 255, 6), 130, 50,
                    train_eps=round(8.8 / 255, 6), lr="1e-3"),
    # the six robust methods on one MNIST architecture at ε = 0.1 (an MLP: DiffAI's zonotope
    # still costs ~0.8 s per batch of 100 on one core, ~8 min per epoch)
    **{f"table-{m}": _exp("mnist", TABLE_ARCH, m, 0.1, 5, 2, *x) for m, x in (
        ("pgd", []), ("ibp", []), ("crown-ibp", []), ("diffai", ["--domain", "zswitch", "--box-errors"]),
        ("sabr", []), ("noise", ["--sigma", "0.1"]))},
}
EVAL_METHODS = "interval,crown-ibp,crown,alpha-crown"


def commands(name: str, exp: dict, args) -> tuple[list[str], list[str]]:
    onnx = OUT / f"{name}.onnx"
    epochs, warmup, ramp = (1, 0, 0.5) if args.short else exp["schedule"]
    count = "200" if args.short else "1000"
    train = ["train", *exp["train"], "--epochs", str(epochs), "--warmup", str(warmup),
             "--ramp", str(ramp), "--out", str(onnx), "--data-dir", str(args.data_dir),
             "--device", args.device, "--eval-count", "200"]
    ev = ["evaluate", str(onnx), "--data", exp["data"], "--data-dir", str(args.data_dir),
          "--eps", str(exp["eps"]), "--count", count, "--methods", EVAL_METHODS,
          "--csv", str(OUT / f"{name}.eval.csv"), "--device", args.device]
    return train, ev


def _read(path: Path) -> dict[str, float]:
    with open(path) as f:
        return {r["method"]: float(r["accuracy"]) for r in csv.DictReader(f)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="*", default=None, choices=sorted(EXPERIMENTS))
    p.add_argument("--short", action="store_true", help="1 epoch, 200 test images")
    p.add_argument("--list", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--data-dir", type=Path, default=DATA)
    args = p.parse_args()
    from nncert.cli.main import main as nncert

    names = args.only or list(EXPERIMENTS)
    OUT.mkdir(parents=True, exist_ok=True)
    lines = ["| experiment | clean | PGD | IBP | CROWN-IBP | CROWN | alpha-CROWN | train s |",
             "|---|---|---|---|---|---|---|---|"]
    for name in names:
        train, ev = commands(name, EXPERIMENTS[name], args)
        if args.list:
            print(f"# {name}\nnncert {' '.join(train)}\nnncert {' '.join(ev)}\n")
            continue
        t0 = time.perf_counter()
        if nncert(train) != 0:
            return 1
        train_s = time.perf_counter() - t0
        if nncert(ev) != 0:
            return 1
        acc = _read(OUT / f"{name}.eval.csv")
        cells = [f"{acc.get(m, float('nan')):.1%}"
                 for m in ("clean", "pgd", "interval", "crown-ibp", "crown", "alpha-crown")]
        lines.append(f"| {name}{' (short)' if args.short else ''} | " + " | ".join(cells)
                     + f" | {train_s:.0f} |")
        print("\n".join(lines), flush=True)
    if not args.list:
        (OUT / "summary.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
