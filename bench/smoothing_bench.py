"""Randomized-smoothing benchmark: sampling overhead and certified accuracy.

1. Throughput ratio: ``Smooth.certify``'s samples per second divided by the raw forward-pass
   throughput of the same model at the same batch size (target ≥ 0.9). Runs alternate
   (raw, certify, raw, certify, ...) so load from other processes hits both alike; the ratio is
   taken between medians.
2. Certified accuracy at radii 0, 0.25, 0.5, 0.75, 1.0 of a small CNN trained with Gaussian
   noise augmentation, through the CLI itself (so each table comes with the exact commands that
   reproduce it): on MNIST (``../shared/data/mnist``, ``--mnist-count`` test images) for each
   sigma, and on the embedded digits (all 297 test images).

Writes ``bench/out/smoothing.md`` (and the TSVs/PNGs/models beside it). Examples::

    python bench/smoothing_bench.py                      # everything, defaults below
    python bench/smoothing_bench.py --only throughput
    python bench/smoothing_bench.py --mnist-count 100 --n 10000 --epochs 1
"""

from __future__ import annotations

import argparse
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from nncert.cli.main import main as cli  # noqa: E402
from nncert.smoothing import Smooth, certified_accuracy  # noqa: E402
from nncert.smoothing.stats import STANDARD_RADII  # noqa: E402
from nncert.smoothing.train import small_cnn  # noqa: E402

OUT = ROOT / "bench" / "out"
MNIST = ROOT.parent / "shared" / "data" / "mnist"


# -- 1. throughput ---------------------------------------------------------------------------
def throughput(model, input_shape, batch: int, n: int, n0: int, repeats: int, sigma: float = 0.25):
    """Samples/s over ``repeats`` alternating runs, {name: (best, median)}, of

    * ``raw``: the forward pass on a fixed batch, one batch at a time (torch's defaults);
    * ``raw_parallel``: the same, but as many single-threaded batches at once as there are
      intra-op threads — the scheduling certify uses, so certify ÷ raw_parallel is the
      like-for-like sampling-and-counting overhead;
    * ``certify``: ``Smooth.certify`` with its defaults (the faster schedule, by timing);
    * ``certify_1``: ``Smooth.certify`` with ``workers=1`` (one batch at a time)."""
    from concurrent.futures import ThreadPoolExecutor

    x = torch.rand(input_shape, generator=torch.Generator().manual_seed(0))
    xb = x + sigma * torch.randn((batch, *input_shape), generator=torch.Generator().manual_seed(1))
    steps = max(1, (n + n0) // batch)
    total = steps * batch
    threads = torch.get_num_threads()

    def one(_=None):
        with torch.inference_mode():
            model(xb)

    def raw_run():
        for _ in range(steps):
            one()

    def raw_parallel():
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(one, range(steps)))
        finally:
            torch.set_num_threads(threads)

    auto = Smooth(model, 10, sigma, seed=0)
    single = Smooth(model, 10, sigma, seed=0, workers=1)
    runs = {"raw": raw_run, "raw_parallel": raw_parallel,
            "certify": lambda: auto.certify(x, n0, total - n0, 0.001, batch, seed=0),
            "certify_1": lambda: single.certify(x, n0, total - n0, 0.001, batch, seed=0)}
    for fn in runs.values():  # warm-up
        fn()
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            t = time.perf_counter()
            fn()
            rates[name].append(total / (time.perf_counter() - t))
    return {name: (max(r), statistics.median(r)) for name, r in rates.items()}


def run_throughput(args) -> list[str]:
    torch.manual_seed(0)
    module = small_cnn((1, 28, 28), 10).eval()
    from nncert.models import load

    graph = load(module, (1, 28, 28))
    lines = ["## Throughput: certify samples/s ÷ raw forward samples/s (target ≥ 0.9)", "",
             f"Small CNN (Wong & Kolter's: conv 16×4×4/2, conv 32×4×4/2, fc 100, fc 10) on 1×28×28, "
             f"torch {torch.__version__}, {torch.get_num_threads()} intra-op thread(s), device cpu. "
             f"Each run: {args.tp_samples} samples (certify: n0 = 100 of them for selection, in "
             f"their own smaller batch); {args.tp_repeats} rounds of alternating runs. Ratios "
             f"are between medians. 'vs raw' divides by the plain forward pass (one batch at a "
             f"time, torch's threading); 'like-for-like' divides by the forward pass run as "
             f"{torch.get_num_threads()} single-threaded batches at once (certify's other "
             f"schedule; by default it times both and keeps the faster), i.e. it isolates the "
             f"noise drawing and counting; 'workers=1' is certify one batch at a time against "
             f"the plain forward pass.", "",
             "| model | batch | raw forward samples/s | certify samples/s | ratio vs raw "
             "| ratio like-for-like | workers=1 ratio vs raw |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, model in (("torch nn.Module", module), ("nncert Graph", graph)):
        for batch in args.tp_batches:
            r = {k: v[1] for k, v in throughput(model, (1, 28, 28), batch, args.tp_samples, 100,
                                                args.tp_repeats).items()}
            row = (f"| {name} | {batch} | {r['raw']:,.0f} | {r['certify']:,.0f} | "
                   f"{r['certify'] / r['raw']:.3f} | {r['certify'] / r['raw_parallel']:.3f} | "
                   f"{r['certify_1'] / r['raw']:.3f} |")
            print(row, flush=True)
            lines.append(row)
    lines.append("")
    return lines


# -- 2. certified accuracy --------------------------------------------------------------------
def _cmd(argv: list[str]) -> str:
    """The command line, with paths relative to the repository root (where to run it)."""
    def rel(a: str) -> str:
        return a.replace(str(ROOT) + "/", "").replace(str(ROOT.parent) + "/", "../")

    return "nncert " + " ".join(shlex.quote(rel(str(a))) for a in argv)


def certify_table(tag: str, train_argv: list[str], certify_argv: list[str], model: Path,
                  tsv: Path) -> list[str]:
    train_argv, certify_argv = [str(a) for a in train_argv], [str(a) for a in certify_argv]
    t0 = time.perf_counter()
    if not model.exists():
        assert cli(train_argv) == 0
    t1 = time.perf_counter()
    assert cli(certify_argv) == 0
    t2 = time.perf_counter()
    rows = [line.split("\t") for line in tsv.read_text().splitlines()[1:]]
    radii = [float(r[3]) for r in rows]
    correct = [r[4] == "1" for r in rows]
    acc = certified_accuracy(radii, correct, STANDARD_RADII)
    abstain = sum(r[2] == "-1" for r in rows)
    return [
        f"### {tag}", "",
        "| radius | " + " | ".join(f"{r:g}" for r in STANDARD_RADII) + " |",
        "|---|" + "---:|" * len(STANDARD_RADII),
        "| certified accuracy | " + " | ".join(f"{a:.3f}" for a in acc) + " |", "",
        f"{len(rows)} test images, {abstain} abstained; training {t1 - t0:.0f} s "
        f"(0 = model reused), certification {t2 - t1:.0f} s "
        f"({(t2 - t1) / max(len(rows), 1):.2f} s/image).", "",
        "Reproduce:", "", "```", _cmd(train_argv), _cmd(certify_argv), "```", "",
    ]


def run_accuracy(args) -> list[str]:
    lines = ["## Certified accuracy (randomized smoothing, L2, pixels in [0, 1])", "",
             f"n0 = 100, n = {args.n}, alpha = {args.alpha}, seed 0 (point i uses seed i). "
             f"Certified accuracy at r = fraction of test images whose certified prediction is "
             f"correct with radius ≥ r (abstentions count as wrong).", ""]
    common = ["--n0", "100", "--n", str(args.n), "--alpha", str(args.alpha), "--batch",
              str(args.batch)]
    if "mnist" in args.only:
        train_images = args.mnist / "train-images-idx3-ubyte.gz"
        for sigma in args.sigmas:
            model = OUT / f"mnist_cnn_sigma{sigma}.onnx"
            tsv = OUT / f"mnist_sigma{sigma}.tsv"
            train = ["smooth", "train", "--data", train_images, "--sigma", sigma, "--epochs",
                     args.epochs, "--batch", "128", "--arch", "cnn", "--out", model]
            cert = ["smooth", "certify", "--model", model, "--data", args.mnist, "--sigma", sigma,
                    *common, "--count", args.mnist_count, "--out", tsv]
            block = certify_table(f"MNIST small CNN, sigma = {sigma} ({args.epochs} epoch(s) of "
                                  f"noise training)", train, cert, model, tsv)
            print("\n".join(block), flush=True)
            lines += block
    if "digits" in args.only:
        for sigma in args.sigmas:
            model = OUT / f"digits_cnn_sigma{sigma}.onnx"
            tsv = OUT / f"digits_sigma{sigma}.tsv"
            train = ["smooth", "train", "--data", "digits:train", "--sigma", sigma, "--epochs",
                     args.digits_epochs, "--arch", "cnn", "--out", model]
            cert = ["smooth", "certify", "--model", model, "--data", "digits:test", "--sigma", sigma,
                    *common, "--out", tsv]
            block = certify_table(f"Embedded digits (8×8, 297 test images), small CNN, sigma = "
                                  f"{sigma} ({args.digits_epochs} epochs)", train, cert, model, tsv)
            print("\n".join(block), flush=True)
            lines += block
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="+", default=["throughput", "mnist", "digits"],
                   choices=["throughput", "mnist", "digits"])
    p.add_argument("--sigmas", nargs="+", type=float, default=[0.25, 0.5])
    p.add_argument("--n", type=int, default=10_000, help="certification samples (default 10000)")
    p.add_argument("--alpha", type=float, default=0.001)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=1, help="MNIST training epochs (default 1)")
    p.add_argument("--digits-epochs", type=int, default=30)
    p.add_argument("--mnist", type=Path, default=MNIST)
    p.add_argument("--mnist-count", type=int, default=500)
    p.add_argument("--tp-batches", nargs="+", type=int, default=[100, 1000])
    p.add_argument("--tp-samples", type=int, default=20_000)
    p.add_argument("--tp-repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op CPU threads (default: torch's default)")
    p.add_argument("--out", type=Path, default=OUT / "smoothing.md")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    OUT.mkdir(parents=True, exist_ok=True)
    lines = ["# Randomized smoothing benchmark", "",
             f"Command (from the repository root): "
             f"`python {' '.join(shlex.quote(a) for a in sys.argv)}`  ",
             f"Machine: {platform.machine()}, {platform.processor() or 'cpu'}, "
             f"torch {torch.__version__}, {torch.get_num_threads()} threads.", ""]
    if "throughput" in args.only:
        lines += run_throughput(args)
    if "mnist" in args.only or "digits" in args.only:
        lines += run_accuracy(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
