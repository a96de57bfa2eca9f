"""``nncert verify``: certify robustness of each test point of a dataset at its label."""

from __future__ import annotations

import argparse
import math
import sys

import torch

from ..benchmarks.robustness import (
    RobustnessConfig,
    certify_points,
    prepare_inputs,
    summarize,
    with_normalization,
)
from ..bounds import METHODS
from ..data import load_dataset
from ..models import load
from ..models.graph import Graph
from ..models.onnx_runtime import run_onnx
from .common import add_device_arg, progress, resolve_device, write_json


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from e


def _onnx_reference(model: str, graph: Graph, source: Graph):
    """For an ONNX model: onnxruntime on the file, fed through any normalisation node the CLI
    put in front, so FALSIFIED points are confirmed on the source model too."""
    if not str(model).endswith(".onnx"):
        return None
    prefix = graph.nodes[0].op if graph is not source else None

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            x = prefix.forward(x) if prefix is not None else x
        return run_onnx(model, x.float().cpu())

    return run


def _write(args: argparse.Namespace, rows: list[dict], config: RobustnessConfig,
           interrupted: bool = False) -> dict:
    """The summary; also written with the rows to ``--out`` (atomically) when given."""
    summary = summarize(rows, config)
    summary.update(model=str(args.model), data=str(args.data), interrupted=interrupted)
    if args.out:
        write_json(args.out, {"summary": summary, "results": rows})
    return summary


def run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    config = RobustnessConfig(eps=args.eps, method=args.method,
                              p=math.inf if args.p == "inf" else 2.0, batch_size=args.batch)
    source = load(args.model).to(device)
    graph = with_normalization(source, args.mean, args.std)
    reference = _onnx_reference(args.model, graph, source)
    data = load_dataset(args.data, count=args.count)
    x = prepare_inputs(data.images, graph, args.scale or data.pixel_max)
    rows: list[dict] = []
    bar = progress(range(x.shape[0]), total=x.shape[0], desc=f"verify {args.method}")
    try:
        for row in certify_points(graph, x, data.labels, config, reference=reference):
            rows.append(row)
            next(bar, None)
    except KeyboardInterrupt:
        _write(args, rows, config, interrupted=True)
        raise
    summary = _write(args, rows, config)
    print(f"{summary['verified']}/{summary['count']} verified "
          f"(certified accuracy {summary['certified_accuracy']:.1%}, clean accuracy "
          f"{summary['clean_accuracy']:.1%}) with {args.method} at eps={args.eps} "
          f"in {sum(r['time_s'] for r in rows):.2f} s")
    if args.out:
        print(f"results written to {args.out}", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify", help="certify local robustness of dataset points with a bound method",
        description="For each test point x with label l, try to prove that every input within "
                    "the L_p ball of radius EPS around x (clipped to [0,1]) is classified l. "
                    "Inputs are pixels scaled to [0,1] (divided by --scale); --mean/--std add "
                    "the model's normalisation as an explicit first layer. VERIFIED is a sound "
                    "certificate; UNKNOWN means the method could not decide.",
    )
    p.add_argument("--model", required=True, help="ONNX file (or .pt with a whole nn.Module)")
    p.add_argument("--data", required=True,
                   help="dataset: ERAN CSV, MNIST IDX images file (labels file beside it), "
                        "CIFAR-10 batch (.npz or python pickle), or 'digits' (embedded)")
    p.add_argument("--eps", type=float, required=True, help="radius in [0,1] pixel units")
    p.add_argument("--method", default="interval", choices=sorted(METHODS),
                   help="bound method (default: interval)")
    p.add_argument("--p", default="inf", choices=["inf", "2"], help="norm of the ball")
    p.add_argument("--count", type=int, default=None, help="certify only the first N points")
    p.add_argument("--batch", type=int, default=64, help="points bounded at once (default 64)")
    p.add_argument("--scale", type=float, default=None,
                   help="divide raw pixels by this (default: the dataset's max, e.g. 255)")
    p.add_argument("--mean", type=_floats, default=None, help="per-channel mean, e.g. 0.1307")
    p.add_argument("--std", type=_floats, default=None, help="per-channel std, e.g. 0.3081")
    p.add_argument("--out", default=None, help="write JSON {summary, results} here")
    add_device_arg(p)
    p.set_defaults(func=run)
