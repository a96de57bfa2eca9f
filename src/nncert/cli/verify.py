"""``nncert verify``: certify robustness of each test point of a dataset at its label."""

from __future__ import annotations

import argparse
import math
import sys
from typing import TYPE_CHECKING

from ..errors import DataError
from .common import (
    LazyChoices,
    RowSink,
    add_device_arg,
    add_out_args,
    finite_floats,
    nonnegative_float,
    positive_float,
    positive_floats,
    positive_int,
    progress,
    resolve_device,
    run_settings,
)

if TYPE_CHECKING:
    import torch

    from ..benchmarks.robustness import RobustnessConfig
    from ..models.graph import Graph

#: --method names beyond the registry's (nncert.bounds.METHODS): a registry method with a config
VARIANTS: dict[str, tuple[str, str]] = {
    "deepzono": ("zonotope", "DeepZono ReLU relaxation (the same as zonotope)"),
    "zbox": ("zonotope", "DiffAI zBox: an unstable ReLU's interval, correlations dropped"),
    "zswitch": ("zonotope", "DiffAI zSwitch: per neuron zBox or zDiag, the smaller area"),
    "zsmooth": ("zonotope", "DiffAI zSmooth: a convex combination of zDiag and zBox"),
    "hybrid-zonotope": ("zonotope", "DiffAI HybridZonotope: zBox with the error in a box term"),
    "fast-lin": ("crown", "Fast-Lin: CROWN with the lower ReLU slope parallel to the upper"),
    "crown-ibp": ("crown", "CROWN-IBP: interval intermediate bounds, CROWN at the output"),
}


def method_config(method: str):
    """(registry method, its config) for a --method name; the registry's own names get None
    (their defaults)."""
    if method not in VARIANTS:
        return method, None
    base = VARIANTS[method][0]
    if base == "zonotope":
        from ..bounds.zonotope import ZonotopeConfig

        rule = {"hybrid-zonotope": "hybrid"}.get(method, method)
        return base, ZonotopeConfig(relu=rule)
    from ..bounds.crown import CrownConfig

    if method == "fast-lin":
        return base, CrownConfig(relaxation="fastlin")
    return base, CrownConfig(intermediate="ibp")


def _complete_config(args: argparse.Namespace):
    """The VerifyConfig of --method complete (its timeout is set per point)."""
    from ..complete.bab import BaBConfig
    from ..complete.verify import VerifyConfig

    return VerifyConfig(timeout_s=args.timeout, complete=args.complete,
                        bab=BaBConfig(timeout_s=args.timeout, branching=args.branching,
                                      heuristic=args.heuristic))


def _onnx_reference(model: str, graph: Graph, source: Graph):
    """For an ONNX model: onnxruntime on the file, fed through any normalisation node the CLI
    put in front, so FALSIFIED points are confirmed on the source model too."""
    if not str(model).endswith(".onnx"):
        return None
    import torch

    from ..models.onnx_runtime import run_onnx

    prefix = graph.nodes[0].op if graph is not source else None

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            x = prefix.forward(x) if prefix is not None else x
        return run_onnx(model, x.float().cpu())

    return run


def _summary(args: argparse.Namespace, rows: list[dict], config: RobustnessConfig,
             interrupted: bool = False) -> dict:
    from ..benchmarks.robustness import summarize

    summary = summarize(rows, config)
    summary.update(method=args.method, model=str(args.model), data=str(args.data),
                   interrupted=interrupted)
    return summary


def _load(args: argparse.Namespace):
    """(graph with normalisation, source graph, dataset)."""
    from ..benchmarks.robustness import with_normalization
    from ..data import load_dataset
    from ..models import load

    data = load_dataset(args.data, count=args.count)
    if len(data) == 0:
        raise DataError(f"{args.data}: the dataset holds no images")
    source = load(args.model).to(resolve_device(args.device))
    return with_normalization(source, args.mean, args.std), source, data


def run(args: argparse.Namespace) -> int:
    from ..benchmarks.robustness import COMPLETE, RobustnessConfig, certify_points, prepare_inputs

    sink = RowSink(args.out, args.resume)
    sink.check()
    resolve_device(args.device)
    method, mconfig = method_config(args.method)
    if method == COMPLETE:
        mconfig = _complete_config(args)
    config = RobustnessConfig(eps=args.eps, method=method,
                              p=math.inf if args.p == "inf" else 2.0,
                              batch_size=1 if method == COMPLETE else args.batch,
                              method_config=mconfig, timeout_s=args.timeout)
    graph, source, data = _load(args)
    reference = _onnx_reference(args.model, graph, source)
    x = prepare_inputs(data.images, graph, args.scale if args.scale is not None else data.pixel_max)
    done = sink.start("verify", run_settings(args), x.shape[0])
    todo = [i for i in range(x.shape[0]) if i not in done]
    bar = progress(range(len(todo)), total=len(todo), desc=f"verify {args.method}")

    def decided():
        if not todo:
            return
        for row in certify_points(graph, x[todo], data.labels[todo], config, reference=reference):
            row["index"] = todo[row["index"]]
            yield row
            next(bar, None)

    rows, summary = sink.collect(decided(), lambda got, stop: _summary(args, got, config, stop))
    print(f"{summary['verified']}/{summary['count']} verified "
          f"(certified accuracy {summary['certified_accuracy']:.1%}, clean accuracy "
          f"{summary['clean_accuracy']:.1%}) with {args.method} at eps={args.eps} "
          f"in {sum(r['time_s'] for r in rows):.2f} s")
    if "decided_by" in summary:
        print("decided by: " + "; ".join(
            f"{verdict} " + ", ".join(f"{how} {n}" for how, n in sorted(per.items()))
            for verdict, per in sorted(summary["decided_by"].items())))
    if args.out:
        print(f"results written to {args.out}", file=sys.stderr)
    return 0


def _method_names() -> list[str]:
    """--method's choices: the registry's methods, the variants, 'complete'."""
    from ..benchmarks.robustness import COMPLETE
    from ..bounds import METHODS

    return [*sorted(METHODS), *VARIANTS, COMPLETE]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify", help="certify local robustness of dataset points (bounds or complete)",
        description="For each test point x with label l, try to prove that every input within "
                    "the L_p ball of radius EPS around x (clipped to [0,1]) is classified l; a "
                    "point is certified only if it is itself classified l. "
                    "Inputs are pixels scaled to [0,1] (divided by --scale); --mean/--std add "
                    "the model's normalisation as an explicit first layer. VERIFIED is a sound "
                    "certificate; UNKNOWN means the method could not decide.",
    )
    p.add_argument("--model", required=True,
                   help="ONNX file (.onnx or .onnx.gz; .pt files are never unpickled)")
    p.add_argument("--data", required=True,
                   help="dataset: ERAN CSV, MNIST IDX images file (labels file beside it), "
                        "CIFAR-10 batch (.npz or python pickle), or 'digits' (embedded)")
    p.add_argument("--eps", type=nonnegative_float, required=True,
                   help="radius in [0,1] pixel units")
    p.add_argument("--method", default="interval",
                   choices=LazyChoices(_method_names), metavar="METHOD",
                   help="bound method (default: interval), one of %(choices)s. The variants: "
                        + "; ".join(f"{k} ({v[1]})" for k, v in VARIANTS.items())
                        + "; and 'complete': decide each point (attack, bounds, "
                        "branch-and-bound or MILP; nncert.complete.verify) within --timeout "
                        "seconds, recording which strategy decided it")
    p.add_argument("--timeout", type=positive_float, default=60.0,
                   help="seconds per point for --method complete (default 60)")
    p.add_argument("--complete", default="auto", choices=["auto", "bab", "milp", "none"],
                   help="--method complete: the complete stage (VerifyConfig.complete; "
                        "default auto)")
    p.add_argument("--branching", default="auto", choices=["auto", "input", "relu"],
                   help="--method complete: what branch-and-bound splits (BaBConfig.branching; "
                        "default auto)")
    p.add_argument("--heuristic", default="fsb", choices=["fsb", "babsr"],
                   help="--method complete: which ReLU to split (BaBConfig.heuristic; default "
                        "fsb)")
    p.add_argument("--p", default="inf", choices=["inf", "2"], help="norm of the ball")
    p.add_argument("--count", type=positive_int, default=None,
                   help="certify only the first N points")
    p.add_argument("--batch", type=positive_int, default=64,
                   help="points bounded at once (default 64)")
    p.add_argument("--scale", type=positive_float, default=None,
                   help="divide raw pixels by this (default: the dataset's max, e.g. 255); "
                        "every pixel must lie in [0, SCALE]")
    p.add_argument("--mean", type=finite_floats, default=None, help="per-channel mean, e.g. 0.1307")
    p.add_argument("--std", type=positive_floats, default=None, help="per-channel std, e.g. 0.3081")
    add_out_args(p)
    add_device_arg(p)
    p.set_defaults(func=run)
