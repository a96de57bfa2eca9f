"""``nncert evaluate``: clean, PGD and certified accuracy of a model on a test set for every
bound method (and complete verification with a per-image timeout), as Markdown and CSV."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ..errors import ConfigError
from .common import (
    LazyChoices,
    add_device_arg,
    check_writable,
    nonnegative_float,
    positive_float,
    positive_int,
    resolve_device,
    write_atomic,
)

if TYPE_CHECKING:
    import torch


def _bound_methods() -> tuple[str, ...]:
    from ..training.evaluate import BOUND_METHODS

    return BOUND_METHODS


def _datasets() -> tuple[str, ...]:
    from ..training.data import DATASETS

    return DATASETS


def _methods(text: str) -> list[str]:
    BOUND_METHODS = _bound_methods()
    names = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in names if m not in BOUND_METHODS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown bound method(s) {', '.join(bad) or text!r}; "
                                         f"choose from {', '.join(BOUND_METHODS)}")
    return names


def sample(n: int, count: int, how: str, seed: int) -> torch.Tensor:
    """Indices of the test images: the first ``count`` or ``count`` drawn uniformly (sorted)."""
    import torch

    if how == "first":
        return torch.arange(min(count, n))
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[:count].sort().values


def _indices(text: str) -> list[int]:
    try:
        idx = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--indices takes comma-separated integers, got {text!r}") from None
    if not idx or min(idx) < 0:
        raise argparse.ArgumentTypeError(f"--indices takes test-set indices ≥ 0, got {text!r}")
    return idx


def run(args: argparse.Namespace) -> int:
    import torch

    from ..models import load
    from ..training.data import load_split
    from ..training.evaluate import evaluate, per_image_csv, to_csv, to_markdown

    device = resolve_device(args.device)
    for path, what in ((args.out, "--out"), (args.csv, "--csv"), (args.per_image, "--per-image")):
        if path:
            check_writable(path, what)
    graph = load(args.model).to(device)
    test = load_split(args.data, False, args.data_dir)
    if tuple(test.images.shape[1:]) != graph.input_shape:
        raise ConfigError(f"{args.model} takes inputs of shape {graph.input_shape}, but "
                          f"{args.data} images have shape {tuple(test.images.shape[1:])}")
    if args.indices is None:
        idx = sample(len(test.labels), args.count, args.sample, args.seed)
    elif max(args.indices) >= len(test.labels):
        raise ConfigError(f"--indices: {args.data} has {len(test.labels)} test images, so no "
                          f"image {max(args.indices)}")
    else:
        idx = torch.tensor(args.indices)
    x, y = test.images[idx].to(device, graph.dtype), test.labels[idx].to(device)
    rows = []
    for eps in args.eps:
        rows += evaluate(graph, x, y, eps, list(args.methods), timeout_s=args.timeout)
    md = to_markdown(rows)
    how = args.sample if args.indices is None else "--indices"
    print(f"{args.model} on {len(y)} {args.data} test images ({how}); accuracy in %:\n")
    print(md, end="")
    if args.out:
        write_atomic(args.out, md)
    if args.csv:
        write_atomic(args.csv, to_csv(rows))
    if args.per_image:
        write_atomic(args.per_image, per_image_csv(rows, idx.tolist(), y.tolist()))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="clean, PGD and certified accuracy for every bound method",
                       description="Evaluates an ONNX classifier on test images (inputs in "
                                   "[0,1]): clean accuracy, PGD accuracy and certified accuracy "
                                   "of every bound method at each --eps, and with --timeout "
                                   "complete verification of what the bounds leave open "
                                   "(column 'complete') and the share it leaves unfalsified "
                                   "(the true robust accuracy lies between the two).")
    p.add_argument("model", help="an ONNX model (e.g. written by nncert train)")
    p.add_argument("--data", required=True, choices=LazyChoices(_datasets), metavar="DATA",
                   help="one of %(choices)s")
    p.add_argument("--data-dir", default=None,
                   help="folder holding mnist/ and cifar10/ (default: $NNCERT_DATA or ../shared/data)")
    p.add_argument("--eps", type=nonnegative_float, nargs="+", required=True,
                   help="one or more L-inf radii in [0,1] pixel units (e.g. 0.007843 for "
                        "2/255); one table row each")
    p.add_argument("--count", type=positive_int, default=100, help="test images (default 100)")
    p.add_argument("--sample", choices=("first", "uniform"), default="first",
                   help="the first COUNT test images, or COUNT drawn uniformly with --seed")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--indices", type=_indices, default=None, metavar="I,J,...",
                   help="evaluate exactly these test images (indices into the test set, as "
                        "--per-image writes them; overrides --count and --sample), e.g. to "
                        "rerun the images complete verification left open with a longer --timeout")
    p.add_argument("--methods", type=_methods, default=LazyChoices(_bound_methods),
                   help="comma-separated bound methods (default: %(default)s)")
    p.add_argument("--timeout", type=positive_float, default=None,
                   help="seconds of complete verification per open image (default: none)")
    p.add_argument("--out", default=None, help="write the Markdown table here")
    p.add_argument("--csv", default=None, help="write the rows as CSV here")
    p.add_argument("--per-image", default=None, metavar="FILE",
                   help="write one CSV line per (eps, image): its test-set index, label and 1/0 "
                        "per column of the table (an image open after complete verification has "
                        "complete 0 and unfalsified 1)")
    add_device_arg(p)
    p.set_defaults(func=run)
