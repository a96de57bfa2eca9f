"""``nncert smooth certify|predict|train``: randomized smoothing (Cohen et al. 2019) on a dataset.

``certify`` writes one TSV row per test point, ``idx label predict radius correct time pa_lower``
(the reference tool's columns, time in seconds, predict = -1 for an abstention), appended and
flushed row by row so an interrupted run keeps every finished point, after a first line
``# nncert smooth certify {settings}``; rerun with the same settings, it resumes (points already
in the file are skipped). Then a PNG plot of certified accuracy against radius and, on stdout,
the table at radii 0, 0.25, 0.5, 0.75, 1.0.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..utils import is_special, open_through, save_png, sync
from .common import (
    LazyChoices,
    add_device_arg,
    check_writable,
    is_torch_file,
    progress,
    resolve_device,
    shape,
    write_atomic,
)

if TYPE_CHECKING:
    import torch


# -- shared with cli/pixeldp.py ---------------------------------------------------------------
class RowWriter:
    """A TSV file written row by row (append + flush + fsync), so a kill loses no finished row.

    Its first line, ``# nncert COMMAND {settings as JSON}``, records the settings (read it with
    ``pandas.read_csv(path, sep="\\t", comment="#")``); then the column names. An existing
    file with the same command and settings is resumed: its rows are kept (``self.rows``, a
    row cut short by a kill is dropped) and new rows are appended. Other settings, or a file
    nncert did not write, are a ConfigError: nothing is overwritten. A device, pipe or symlink
    (``/dev/stdout``) is written through, from the start."""

    def __init__(self, path: str | os.PathLike, columns: Sequence[str], command: str = "",
                 settings: dict | None = None):
        self.path = Path(path)
        self.columns = list(columns)
        self.marker = f"# nncert {command} " + json.dumps(settings or {}, sort_keys=True)
        self.rows: list[list[str]] = []
        fresh = (self.path.is_symlink() or is_special(self.path) or not self.path.exists()
                 or self.path.stat().st_size == 0)
        if fresh:
            Path(os.path.realpath(self.path)).parent.mkdir(parents=True, exist_ok=True)
            self._f, self._own = open_through(self.path, "w")
            self._write_line(self.marker)
            self._write(self.columns)
            return
        self.rows = self._existing(command, settings or {})
        lines = [self.marker, "\t".join(self.columns)] + ["\t".join(r) for r in self.rows]
        write_atomic(self.path, "\n".join(lines) + "\n")  # without a torn last line
        self._f, self._own = open(self.path, "a"), True  # noqa: SIM115 - closed in close()

    def _existing(self, command: str, settings: dict) -> list[list[str]]:
        text = self.path.read_text(errors="replace")
        lines = text.split("\n")
        torn = lines.pop()  # "" when the file ends with a newline
        head = f"# nncert {command} "
        if not lines or not lines[0].startswith(head):
            raise ConfigError(f"--out {self.path} exists but was not written by `nncert {command}`: "
                              "remove it or choose another --out (it is never overwritten)")
        try:
            old = json.loads(lines[0][len(head):])
        except json.JSONDecodeError:
            raise ConfigError(f"--out {self.path}: unreadable settings line") from None
        new = json.loads(json.dumps(settings))
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if diff:
            was = ", ".join(f"{k}={old.get(k)}" for k in diff)
            now = ", ".join(f"{k}={new.get(k)}" for k in diff)
            raise ConfigError(f"--out {self.path} holds results for other settings ({was}; this "
                              f"run: {now}): choose another --out or remove it to start over")
        if len(lines) < 2 or lines[1].split("\t") != self.columns:
            raise ConfigError(f"--out {self.path}: line 2 is not the column header")
        rows = [ln.split("\t") for ln in lines[2:] if ln]
        bad = [i for i, r in enumerate(rows, 3) if len(r) != len(self.columns)]
        if bad or torn:
            if bad and bad != [len(rows) + 2]:
                raise ConfigError(f"--out {self.path}: line {bad[0]} does not have "
                                  f"{len(self.columns)} columns")
            rows = [r for r in rows if len(r) == len(self.columns)]
        return rows

    def done(self) -> set[str]:
        """The first column (idx) of every row already in the file."""
        return {r[0] for r in self.rows}

    def _write_line(self, line: str) -> None:
        self._f.write(line + "\n")
        sync(self._f)

    def _write(self, values: Sequence[object]) -> None:
        self._write_line("\t".join(str(v) for v in values))

    def row(self, values: Sequence[object]) -> None:
        self._write(values)

    def close(self) -> None:
        if self._own:
            self._f.close()
        else:
            self._f.flush()


def plot_span(radii: Sequence[float]) -> float:
    """The x-axis end: 5% past the largest finite certified radius (or size), so a PixelDP
    plot whose sizes are all below 0.02 is not squeezed into the left edge of [0, 1];
    1.0 when nothing was certified."""
    finite = [r for r in radii if math.isfinite(r) and r > 0]
    return (max(finite) if finite else 1.0) * 1.05


def plot_certified_accuracy(path: str | os.PathLike, radii: Sequence[float],
                            correct: Sequence[bool], title: str, xlabel: str = "L2 radius") -> None:
    """Certified accuracy (correct and radius ≥ r) against r, as a PNG (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..smoothing import stats

    top = plot_span(radii)
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
    save_png(fig, path)


def accuracy_table(radii: Sequence[float], correct: Sequence[bool], at: Sequence[float],
                   label: str = "radius") -> str:
    from ..smoothing import stats

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

    plot: Path | None
    title: str
    at: Sequence[float]
    headline: Callable[[Tally], str]
    xlabel: str = "L2 radius"
    label: str = "radius"


def parse_row(cells: Sequence[str]) -> tuple[float, bool, bool, float]:
    """(radius or size, correct, abstained, time_s) of a row written by certify: the columns
    ``idx label predict radius correct time ...``."""
    try:
        return float(cells[3]), cells[4] == "1", cells[2] == "-1", float(cells[5])
    except (IndexError, ValueError):
        raise ConfigError(f"unreadable result row {list(cells)!r}") from None


def certify_rows(count: int, desc: str, writer: RowWriter,
                 one: Callable[[int], tuple[list, float, bool, bool, float]], report: Report,
                 key: Callable[[int], int] = int) -> None:
    """Certify points ``0..count-1`` except those whose ``key(i)`` (the idx column) the writer
    already holds: ``one(i)`` → (row, radius, correct, abstained, time_s); each row is written
    as soon as it is known. Then the summary of all rows, old and new (plot, headline,
    table) — on Ctrl-C too, marked as partial, before the interrupt goes on."""
    tally = Tally()
    for cells in writer.rows:
        radius, ok, abstained, time_s = parse_row(cells)
        tally.radii.append(radius)
        tally.correct.append(ok)
        tally.abstained += abstained
        tally.time_s += time_s
    done = writer.done()
    todo = [i for i in range(count) if str(key(i)) not in done]
    if writer.rows:
        print(f"resuming {writer.path}: {len(writer.rows)} rows kept, {len(todo)} points to go",
              file=sys.stderr)

    def finish(interrupted: bool) -> None:
        writer.close()
        if not tally.radii:
            return
        if report.plot is not None:
            plot_certified_accuracy(report.plot, tally.radii, tally.correct, report.title,
                                    xlabel=report.xlabel)
        head = "INTERRUPTED: partial results\n" if interrupted else ""
        print(head + report.headline(tally))
        print(accuracy_table(tally.radii, tally.correct, report.at, label=report.label))
        plotted = f", plot to {report.plot}" if report.plot is not None else ""
        print(f"rows written to {writer.path}{plotted}", file=sys.stderr)

    try:
        for i in progress(todo, total=len(todo), desc=desc):
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
    from ..smoothing import stats

    stats.check_positive(args.sigma, "--sigma")
    stats.check_alpha(args.alpha, "--alpha")
    stats.check_count(args.n, "--n")
    stats.check_count(args.batch, "--batch")
    stats.check_count(args.skip, "--skip")
    if getattr(args, "n0", None) is not None:
        stats.check_count(args.n0, "--n0")
    if args.count is not None:
        stats.check_count(args.count, "--count", 0)


def default_plot(out: str, plot: str | None) -> Path | None:
    """--plot, or OUT with .png for a plain file (none for /dev/stdout, a device or a pipe)."""
    if plot:
        return Path(plot)
    if Path(out).is_symlink() or is_special(out):
        return None
    return Path(out).with_suffix(".png")


def _base_graph(args: argparse.Namespace, image_shape: tuple[int, ...]):
    """The base classifier: ONNX, or a .pt state_dict with --arch (nothing is unpickled)."""
    from ..models import load
    from ..smoothing.train import load_architecture

    in_shape = args.input_shape or image_shape
    if args.arch is not None:
        if not is_torch_file(args.model):
            raise ConfigError(f"--arch names the architecture of a .pt state_dict; {args.model} "
                              "is not a .pt/.pth file")
        return load(load_architecture(args.model, args.arch, in_shape), in_shape)
    return load(args.model)


def _load_smooth(args: argparse.Namespace):
    from ..smoothing.smooth import Smooth
    from ..smoothing.train import load_images

    device = resolve_device(args.device)
    images, labels, name = load_images(args.data, None)
    images, labels = images[::args.skip], labels[::args.skip]
    if args.count is not None:
        images, labels = images[:args.count], labels[:args.count]
    graph = _base_graph(args, tuple(images.shape[1:])).to(device)
    x = model_inputs(images, graph.input_shape)
    smooth = Smooth(graph, None, args.sigma, seed=args.seed)
    indices = list(range(0, len(labels) * args.skip, args.skip))
    return smooth, x, labels, indices, name


def _settings(args: argparse.Namespace, *names: str) -> dict:
    """What makes rows comparable: a resumed --out must have been written with the same."""
    out = {"model": os.path.abspath(args.model), "data": str(args.data)}
    out.update({n: getattr(args, n) for n in names})
    return out


# -- certify ----------------------------------------------------------------------------------
def run_certify(args: argparse.Namespace) -> int:
    from ..smoothing import stats

    _check_common(args)
    check_writable(args.out, "--out")
    plot = default_plot(args.out, args.plot)
    if plot is not None:
        check_writable(plot, "--plot")
    smooth, x, labels, indices, name = _load_smooth(args)
    writer = RowWriter(args.out, ["idx", "label", "predict", "radius", "correct", "time", "pa_lower"],
                       "smooth certify", _settings(args, "arch", "sigma", "n0", "n", "alpha",
                                                   "batch", "seed", "skip"))

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
                 Report(plot, title, stats.STANDARD_RADII, headline), key=lambda i: indices[i])
    return 0


# -- predict ----------------------------------------------------------------------------------
def run_predict(args: argparse.Namespace) -> int:
    _check_common(args)
    check_writable(args.out, "--out")
    smooth, x, labels, indices, _ = _load_smooth(args)
    writer = RowWriter(args.out, ["idx", "label", "predict", "correct", "time", "pvalue"],
                       "smooth predict", _settings(args, "arch", "sigma", "n", "alpha", "batch",
                                                   "seed", "skip"))
    done = len(writer.rows)
    n_correct = sum(r[3] == "1" for r in writer.rows)
    abstained = sum(r[2] == "-1" for r in writer.rows)
    total_time = sum(float(r[4]) for r in writer.rows)
    todo = [i for i in range(len(labels)) if str(indices[i]) not in writer.done()]
    try:
        for i in progress(todo, total=len(todo), desc="smooth predict"):
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
    import torch

    from ..smoothing.train import (
        MODELS,
        accuracy,
        export_onnx,
        load_images,
        save_weights,
        train_gaussian,
    )

    if not (args.sigma >= 0 and math.isfinite(args.sigma)):
        raise ConfigError(f"--sigma must be ≥ 0, got {args.sigma}")
    check_writable(args.out, "--out")
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
    if is_torch_file(args.out):
        save_weights(model, args.out)
    else:
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


def _architectures() -> list[str]:
    """--arch's choices (read when first needed: building the parser imports no torch)."""
    from ..smoothing.train import MODELS

    return sorted(MODELS)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("smooth", help="randomized smoothing: certify, predict, train",
                       description="Randomized smoothing (Cohen, Rosenfeld & Kolter 2019): L2 "
                                   "certificates that hold with probability 1 - alpha for a "
                                   "classifier smoothed with Gaussian noise of std SIGMA.")
    ss = p.add_subparsers(dest="smooth_command", metavar="ACTION")

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--model", required=True,
                       help="base classifier: ONNX file, or a .pt state_dict with --arch (read "
                            "with torch.load(weights_only=True); nothing is unpickled)")
        q.add_argument("--arch", default=None, choices=LazyChoices(_architectures), metavar="ARCH",
                       help="architecture of a .pt state_dict (as `smooth train --arch`: "
                            "%(choices)s), read with torch.load(weights_only=True)")
        q.add_argument("--input-shape", type=shape, default=None,
                       help="input shape of a --arch model without the batch dim (default: the "
                            "dataset's image shape)")
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
    c.add_argument("--out", required=True,
                   help="TSV of results, one row per point, written as each is decided; an "
                        "existing OUT with the same settings is resumed (its points skipped)")
    c.add_argument("--plot", default=None, help="PNG plot (default: OUT with .png)")
    c.set_defaults(func=run_certify)

    pr = ss.add_parser("predict", help="smoothed prediction with abstention for each point",
                       description="PREDICT of Cohen et al.: the top class of N noisy samples, or "
                                   "abstain (-1) when a two-sided binomial test of the top two "
                                   "counts has p-value > ALPHA.")
    common(pr)
    pr.add_argument("--out", required=True,
                    help="TSV of results, one row per point; an existing OUT with the same "
                         "settings is resumed")
    pr.set_defaults(func=run_predict)

    t = ss.add_parser("train", help="train a base classifier with Gaussian noise augmentation",
                      description="Train a small CNN (or MLP) on DATA with inputs x + N(0, sigma^2) "
                                  "and save it as ONNX for `nncert smooth certify` (or, for an "
                                  "OUT ending in .pt, its state_dict: certify it with --arch).")
    t.add_argument("--data", default="digits:train", help="training set (default digits:train)")
    t.add_argument("--test-data", default=None, help="report clean/noisy accuracy on this set")
    t.add_argument("--sigma", type=float, required=True, help="noise std (0: plain training)")
    t.add_argument("--arch", default="cnn", choices=LazyChoices(_architectures), metavar="ARCH",
                   help="model, one of %(choices)s (default cnn)")
    t.add_argument("--epochs", type=int, default=20, help="epochs (default 20)")
    t.add_argument("--batch", type=int, default=128, help="batch size (default 128)")
    t.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    t.add_argument("--count", type=int, default=None, help="only the first K training images")
    t.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    t.add_argument("--out", required=True,
                   help="ONNX file to write (a .pt/.pth name: the state_dict instead)")
    add_device_arg(t)
    t.set_defaults(func=run_train)
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])
