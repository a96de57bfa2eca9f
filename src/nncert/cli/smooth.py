"""``nncert smooth certify|predict|train``: randomized smoothing (Cohen et al. 2019) on a dataset.

``certify`` writes one TSV row per test point, ``idx label predict radius correct time pa_lower``
(the reference tool's columns, time in seconds, predict = -1 for an abstention), appended and
flushed row by row so an interrupted run keeps every finished point; then a PNG plot of certified
accuracy against radius and, on stdout, the table at radii 0, 0.25, 0.5, 0.75, 1.0.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import torch

from ..errors import ConfigError
from ..models import load
from ..smoothing import stats
from ..smoothing.smooth import Smooth
from ..smoothing.train import MODELS, accuracy, export_onnx, load_images, train_gaussian
from .common import add_device_arg, progress, resolve_device


# -- shared with cli/pixeldp.py ---------------------------------------------------------------
class RowWriter:
    """A TSV file written row by row (append + flush + fsync), so Ctrl-C loses nothing written."""

    def __init__(self, path: str | os.PathLike, columns: Sequence[str]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.columns = list(columns)
        self._f: TextIO = open(self.path, "w")  # noqa: SIM115 - closed in close()
        self._write(self.columns)

    def _write(self, values: Sequence[object]) -> None:
        self._f.write("\t".join(str(v) for v in values) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def row(self, values: Sequence[object]) -> None:
        self._write(values)

    def close(self) -> None:
        self._f.close()


def plot_certified_accuracy(path: str | os.PathLike, radii: Sequence[float],
                            correct: Sequence[bool], title: str, xlabel: str = "L2 radius") -> None:
    """Certified accuracy (correct and radius ≥ r) against r, as a PNG (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top = max([r for r in radii if math.isfinite(r)] + [1.0]) * 1.05
    grid = [top * i / 400 for i in range(401)]
    acc = stats.certified_accuracy(radii, correct, grid)
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    ax.plot(grid, acc, drawstyle="steps-post")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("certified accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(0, top)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def accuracy_table(radii: Sequence[float], correct: Sequence[bool], at: Sequence[float],
                   label: str = "radius") -> str:
    acc = stats.certified_accuracy(radii, correct, at)
    lines = [f"{label:<8} certified accuracy"]
    lines += [f"{r:<8.3g} {a:.3f}" for r, a in zip(at, acc)]
    return "\n".join(lines)


@dataclass
class Tally:
    """Outcomes of the points certified so far."""

    radii: list[float] = field(default_factory=list)
    correct: list[bool] = field(default_factory=list)
    abstained: int = 0
    time_s: float = 0.0


@dataclass(frozen=True)
class Report:
    """How a certify run is summarised: plot (PNG) and title, table thresholds ``at`` (column
    name ``label``), x-axis label, and ``headline(tally)``, the first summary line."""

    plot: Path
    title: str
    at: Sequence[float]
    headline: Callable[[Tally], str]
    xlabel: str = "L2 radius"
    label: str = "radius"


def certify_rows(count: int, desc: str, writer: RowWriter,
                 one: Callable[[int], tuple[list, float, bool, bool, float]], report: Report) -> None:
    """Certify points ``0..count-1``: ``one(i)`` → (row, radius, correct, abstained, time_s);
    each row is written as soon as it is known. Then the summary (plot, headline, table) — on
    Ctrl-C too, marked as partial, before the interrupt goes on."""
    tally = Tally()

    def finish(interrupted: bool) -> None:
        writer.close()
        if not tally.radii:
            return
        plot_certified_accuracy(report.plot, tally.radii, tally.correct, report.title,
                                xlabel=report.xlabel)
        head = "INTERRUPTED: partial results\n" if interrupted else ""
        print(head + report.headline(tally))
        print(accuracy_table(tally.radii, tally.correct, report.at, label=report.label))
        print(f"rows written to {writer.path}, plot to {report.plot}", file=sys.stderr)

    try:
        for i in progress(range(count), total=count, desc=desc):
            row, radius, ok, abstained, time_s = one(i)
            writer.row(row)
            tally.radii.append(radius)
            tally.correct.append(ok)
            tally.abstained += abstained
            tally.time_s += time_s
    except KeyboardInterrupt:
        finish(True)
        raise
    finish(False)


def model_inputs(images: torch.Tensor, input_shape: tuple[int, ...]) -> torch.Tensor:
    """Dataset images (N, C, H, W) reshaped to the model's input shape when sizes agree."""
    if tuple(images.shape[1:]) == tuple(input_shape):
        return images
    if math.prod(images.shape[1:]) == math.prod(input_shape):
        return images.reshape(len(images), *input_shape)
    raise ConfigError(f"dataset images have shape {tuple(images.shape[1:])} but the model expects "
                      f"{tuple(input_shape)}")


def _check_common(args: argparse.Namespace) -> None:
    stats.check_positive(args.sigma, "--sigma")
    stats.check_alpha(args.alpha, "--alpha")
    stats.check_count(args.n, "--n")
    stats.check_count(args.batch, "--batch")
    stats.check_count(args.skip, "--skip")
    if getattr(args, "n0", None) is not None:
        stats.check_count(args.n0, "--n0")
    if args.count is not None:
        stats.check_count(args.count, "--count", 0)


def _load_smooth(args: argparse.Namespace):
    device = resolve_device(args.device)
    images, labels, name = load_images(args.data, None)
    images, labels = images[::args.skip], labels[::args.skip]
    if args.count is not None:
        images, labels = images[:args.count], labels[:args.count]
    suffix = Path(args.model).suffix
    graph = load(args.model, tuple(images.shape[1:])) if suffix in (".pt", ".pth") else load(args.model)
    graph = graph.to(device)
    x = model_inputs(images, graph.input_shape)
    smooth = Smooth(graph, None, args.sigma, seed=args.seed)
    indices = list(range(0, len(labels) * args.skip, args.skip))
    return smooth, x, labels, indices, name


# -- certify ----------------------------------------------------------------------------------
def run_certify(args: argparse.Namespace) -> int:
    _check_common(args)
    smooth, x, labels, indices, name = _load_smooth(args)
    out = Path(args.out)
    plot = Path(args.plot) if args.plot else out.with_suffix(".png")
    writer = RowWriter(out, ["idx", "label", "predict", "radius", "correct", "time", "pa_lower"])

    def one(i: int):
        idx = indices[i]
        cert = smooth.certify(x[i], args.n0, args.n, args.alpha, args.batch, seed=args.seed + idx)
        label = int(labels[i])
        ok = cert.prediction is not None and cert.prediction == label
        pred = -1 if cert.prediction is None else cert.prediction
        row = [idx, label, pred, f"{cert.radius:.4f}", int(ok), f"{cert.time_s:.4f}",
               f"{cert.pa_lower:.6f}"]
        return row, cert.radius, ok, cert.prediction is None, cert.time_s

    def headline(t: Tally) -> str:
        return (f"{len(t.radii)} points, {t.abstained} abstained, sigma={args.sigma}, "
                f"n0={args.n0}, n={args.n}, alpha={args.alpha}, {t.time_s:.1f} s "
                f"({t.time_s / len(t.radii):.3f} s/point)")

    title = (f"{Path(args.model).name} on {name}\nsigma={args.sigma}, n0={args.n0}, n={args.n}, "
             f"alpha={args.alpha}")
    certify_rows(len(labels), "smooth certify", writer, one,
                 Report(plot, title, stats.STANDARD_RADII, headline))
    return 0


# -- predict ----------------------------------------------------------------------------------
def run_predict(args: argparse.Namespace) -> int:
    _check_common(args)
    smooth, x, labels, indices, _ = _load_smooth(args)
    writer = RowWriter(args.out, ["idx", "label", "predict", "correct", "time", "pvalue"])
    n_correct = abstained = done = 0
    total_time = 0.0
    try:
        for i in progress(range(len(labels)), total=len(labels), desc="smooth predict"):
            idx = indices[i]
            pred = smooth.predict(x[i], args.n, args.alpha, args.batch, seed=args.seed + idx)
            label = int(labels[i])
            ok = pred.prediction is not None and pred.prediction == label
            writer.row([idx, label, -1 if pred.prediction is None else pred.prediction, int(ok),
                        f"{pred.time_s:.4f}", f"{pred.pvalue:.3g}"])
            n_correct += ok
            abstained += pred.prediction is None
            done += 1
            total_time += pred.time_s
    finally:
        writer.close()
        if done:
            print(f"{done} points: accuracy {n_correct / done:.3f}, abstained {abstained} "
                  f"({abstained / done:.1%}), sigma={args.sigma}, n={args.n}, alpha={args.alpha}, "
                  f"{total_time:.1f} s")
    return 0


# -- train ------------------------------------------------------------------------------------
def run_train(args: argparse.Namespace) -> int:
    if not (args.sigma >= 0 and math.isfinite(args.sigma)):
        raise ConfigError(f"--sigma must be ≥ 0, got {args.sigma}")
    device = resolve_device(args.device)
    images, labels, name = load_images(args.data, args.count)
    if len(labels) == 0:
        raise ConfigError(f"no training images in {args.data}")
    torch.manual_seed(args.seed)
    num_classes = int(labels.max()) + 1
    model = MODELS[args.arch](tuple(images.shape[1:]), max(num_classes, 2))
    history = train_gaussian(model, images, labels, args.sigma, epochs=args.epochs,
                             batch_size=args.batch, lr=args.lr, seed=args.seed, device=device,
                             progress=True)
    model = model.cpu().eval()
    export_onnx(model, tuple(images.shape[1:]), args.out)
    print(f"trained {args.arch} on {name} ({len(labels)} images) with Gaussian noise "
          f"sigma={args.sigma} for {args.epochs} epochs: final loss {history[-1]:.4f}")
    if args.test_data:
        xt, yt, tname = load_images(args.test_data, None)
        clean = accuracy(model, xt, yt)
        noisy = accuracy(model, xt, yt, sigma=args.sigma, seed=args.seed) if args.sigma > 0 else clean
        print(f"{tname}: clean accuracy {clean:.3f}, accuracy under noise sigma={args.sigma}: {noisy:.3f}")
    print(f"model written to {args.out}", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("smooth", help="randomized smoothing: certify, predict, train",
                       description="Randomized smoothing (Cohen, Rosenfeld & Kolter 2019): L2 "
                                   "certificates that hold with probability 1 - alpha for a "
                                   "classifier smoothed with Gaussian noise of std SIGMA.")
    ss = p.add_subparsers(dest="smooth_command", metavar="ACTION")

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--model", required=True, help="base classifier: ONNX file, or .pt module")
        q.add_argument("--data", default="digits:test",
                       help="dataset (anything nncert.data reads: digits, digits:test, an MNIST "
                            "IDX file or folder, ...); inputs are pixels/pixel_max in [0,1] "
                            "(default: digits:test)")
        q.add_argument("--sigma", type=float, required=True, help="noise std, in [0,1] pixel units")
        q.add_argument("--alpha", type=float, default=0.001,
                       help="failure probability per point (default 0.001)")
        q.add_argument("--n", type=int, default=100_000, help="Monte-Carlo samples (default 100000)")
        q.add_argument("--count", type=int, default=None, help="only the first K points")
        q.add_argument("--skip", type=int, default=1, help="take every SKIP-th point (default 1)")
        q.add_argument("--batch", type=int, default=1000, help="noisy samples per forward pass")
        q.add_argument("--seed", type=int, default=0,
                       help="noise seed; point idx uses SEED + idx; answers are reproducible "
                       "for the same seed and --batch (default 0)")
        add_device_arg(q)

    c = ss.add_parser("certify", help="certified prediction and L2 radius for each point",
                      description="CERTIFY of Cohen et al. for each test point: select the class "
                                  "with N0 samples, lower-bound its probability with N samples "
                                  "(Clopper-Pearson, level ALPHA), radius sigma*Phi^-1(pA_lower); "
                                  "abstain (predict -1) when pA_lower <= 1/2.")
    common(c)
    c.add_argument("--n0", type=int, default=100, help="selection samples (default 100)")
    c.add_argument("--out", required=True, help="TSV of results, one row per point")
    c.add_argument("--plot", default=None, help="PNG plot (default: OUT with .png)")
    c.set_defaults(func=run_certify)

    pr = ss.add_parser("predict", help="smoothed prediction with abstention for each point",
                       description="PREDICT of Cohen et al.: the top class of N noisy samples, or "
                                   "abstain (-1) when a two-sided binomial test of the top two "
                                   "counts has p-value > ALPHA.")
    common(pr)
    pr.add_argument("--out", required=True, help="TSV of results, one row per point")
    pr.set_defaults(func=run_predict)

    t = ss.add_parser("train", help="train a base classifier with Gaussian noise augmentation",
                      description="Train a small CNN (or MLP) on DATA with inputs x + N(0, sigma^2) "
                                  "and save it as ONNX for `nncert smooth certify`.")
    t.add_argument("--data", default="digits:train", help="training set (default digits:train)")
    t.add_argument("--test-data", default=None, help="report clean/noisy accuracy on this set")
    t.add_argument("--sigma", type=float, required=True, help="noise std (0: plain training)")
    t.add_argument("--arch", default="cnn", choices=sorted(MODELS), help="model (default cnn)")
    t.add_argument("--epochs", type=int, default=20, help="epochs (default 20)")
    t.add_argument("--batch", type=int, default=128, help="batch size (default 128)")
    t.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    t.add_argument("--count", type=int, default=None, help="only the first K training images")
    t.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    t.add_argument("--out", required=True, help="ONNX file to write")
    add_device_arg(t)
    t.set_defaults(func=run_train)
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])
