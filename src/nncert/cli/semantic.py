"""``nncert semantic``: certification beyond norm balls (GCert).

* ``semantic transform``: robustness of each test image to a geometric or photometric transform
  over a parameter range (``--transform rotate --range -30 30``), decided by parameter splitting
  with a bound method.
* ``semantic segment``: robustness along a generator's latent segment z → z + δ·d for a learned
  direction (``--generator DIR --direction rotate``), exact (ExactLine), quantitative or one pass
  of a bound method.
* ``semantic train-generator``: train the VAE with the continuity regulariser, learn the
  mutation directions, and write decoder.onnx, encoder.onnx, directions.npz and report.json.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError, DataError, ModelError
from .common import (
    LazyChoices,
    RowSink,
    add_out_args,
    check_writable,
    finite_floats,
    nonnegative_float,
    positive_float,
    positive_floats,
    positive_int,
    progress,
    run_settings,
)

if TYPE_CHECKING:
    import torch

    from ..models.graph import Graph

CHUNK = 64  # segments per batched ExactLine pass
STRIP_ROWS = 16  # inputs drawn in a --strip PNG (the first ones)


def _classifier(args: argparse.Namespace) -> tuple[Graph, torch.Tensor, torch.Tensor]:
    """(classifier with normalisation, images in [0, 1] of its input shape, labels)."""
    from ..benchmarks.robustness import prepare_inputs, with_normalization
    from ..data import load_dataset
    from ..models import load

    data = load_dataset(args.data, count=args.count)
    if len(data) == 0:
        raise DataError(f"{args.data}: the dataset holds no images")
    graph = with_normalization(load(args.model), args.mean, args.std)
    x = prepare_inputs(data.images, graph, args.scale if args.scale is not None else data.pixel_max)
    return graph, x, data.labels


def _summary(rows: list[dict], **extra) -> dict:
    n = len(rows)
    count = {v: sum(r["verdict"] == v for r in rows) for v in ("verified", "falsified", "unknown",
                                                                 "timeout")}
    out = {"count": n, **count, "certified_rate": count["verified"] / n if n else 0.0,
           "mean_time_s": sum(r["time_s"] for r in rows) / n if n else 0.0}
    for key in ("fraction_lower", "fraction_upper", "proved_fraction"):
        vals = [r[key] for r in rows if key in r]
        if vals:
            out[f"mean_{key}"] = sum(vals) / len(vals)
    return {**out, **extra}


def _finish(args: argparse.Namespace, summary: dict) -> None:
    if args.out:
        print(f"results written to {args.out}", file=sys.stderr)
    fraction = ""
    if "mean_fraction_lower" in summary:
        fraction = (f"; mean robust fraction in [{summary['mean_fraction_lower']:.4f}, "
                    f"{summary['mean_fraction_upper']:.4f}]")
    elif "mean_proved_fraction" in summary:
        fraction = f"; mean proved share of the range {summary['mean_proved_fraction']:.4f}"
    print(f"{summary['verified']}/{summary['count']} verified, {summary['falsified']} falsified "
          f"(mean {summary['mean_time_s']:.3f} s per input){fraction}")


# -- PNG strips ---------------------------------------------------------------------------------
def _check_outputs(args: argparse.Namespace) -> RowSink:
    """The sink of --out's rows, once every output can be written."""
    sink = RowSink(args.out, args.resume)
    sink.check()
    if args.strip:
        check_writable(args.strip, "--strip")
    if args.strip_images < 2:
        raise ConfigError(f"--strip-images must be ≥ 2, got {args.strip_images}")
    return sink


def _fails(graph: Graph, points: torch.Tensor, label: int) -> torch.Tensor:
    """Which points (K, ...) the concrete graph does not classify as ``label``."""
    import torch

    from ..specs.output import OutputSpec

    spec = OutputSpec.robustness([label], graph.num_outputs, dtype=graph.dtype)
    with torch.no_grad():
        y = graph.forward(points.reshape(-1, *graph.input_shape).to(graph.dtype)).flatten(1)
    return ~spec.expand(y.shape[0]).holds(y)


def _caption(i: int, label: int, row: dict) -> str:
    if "proved_fraction" in row:
        what = f"proved share of the range {row['proved_fraction']:.3f}"
    elif row["fraction_lower"] == row["fraction_upper"]:
        what = f"robust fraction {row['fraction_lower']:.3f}"
    else:
        what = f"robust fraction in [{row['fraction_lower']:.3f}, {row['fraction_upper']:.3f}]"
    return f"input {i}, label {label}: {row['verdict']}; {what}"


def _segment_strip(args, graph: Graph, reports: dict, rows: list[dict], point_at) -> None:
    """The --strip PNG of the first inputs decided in this run (``reports``: index → report);
    ``point_at(i, t)`` (K,) → model inputs of input i."""
    if not args.strip:
        return
    from ..semantic.strip import save_strip, segment_row

    out = []
    for row in [r for r in rows if r["index"] in reports][:STRIP_ROWS]:
        i, label = row["index"], row["label"]
        out.append(segment_row(reports[i], functools.partial(point_at, i),
                               lambda t, i=i, label=label: _fails(graph, point_at(i, t), label),
                               args.strip_images, _caption(i, label, row)))
    save_strip(args.strip, out)
    print(f"strip written to {args.strip}", file=sys.stderr)


# -- transform ----------------------------------------------------------------------------------
def _check_range(name: str, values: list[float]) -> tuple[list[float], list[float]]:
    from ..semantic.transforms import TRANSFORMS

    n = TRANSFORMS[name]
    if len(values) != 2 * n:
        raise ConfigError(f"--range for {name} takes {2 * n} numbers (lower then upper end of "
                          f"each of its {n} parameter{'s' if n > 1 else ''}), got {len(values)}")
    lo, hi = values[0::2], values[1::2]  # LO HI for each parameter in turn
    if any(a > b for a, b in zip(lo, hi)):
        raise ConfigError(f"--range for {name}: a lower end is above its upper end ({values})")
    if name == "scale" and min(lo) <= 0:
        raise ConfigError("--range for scale: factors must be > 0")
    if name == "blur" and min(lo) < 0:
        raise ConfigError("--range for blur: σ must be ≥ 0")
    if name == "fog" and (min(lo) < 0 or max(hi) > 1):
        raise ConfigError("--range for fog: intensities must lie in [0, 1]")
    return lo, hi


def run_transform(args: argparse.Namespace) -> int:
    from ..semantic.strip import save_strip
    from ..semantic.transforms import TransformConfig, certify_transform

    sink = _check_outputs(args)
    lo, hi = _check_range(args.transform, args.range)
    graph, x, labels = _classifier(args)
    config = TransformConfig(method=args.method, initial_pieces=args.pieces,
                             max_pieces=args.max_pieces, batch=args.batch, pixels=args.pixels,
                             band_sub=args.band_sub)
    strip: list = []
    done = sink.start("semantic transform", run_settings(args), x.shape[0])
    todo = [i for i in range(x.shape[0]) if i not in done]

    def decided():
        for i in progress(todo, total=len(todo), desc=f"semantic {args.transform}"):
            label = int(labels[i])
            rep = certify_transform(graph, x[i], label, args.transform, lo, hi, config)
            row = {"index": i, "label": label, "verdict": rep.result.verdict.value,
                   "proved_fraction": rep.proved_fraction, "time_s": rep.result.time_s,
                   "pieces_bounded": rep.result.stats.get("pieces_bounded", 0)}
            if rep.param is not None:
                row["counterexample_param"] = [float(v) for v in rep.param.flatten()]
            if args.strip and len(strip) < STRIP_ROWS:
                strip.append(_transform_row(args, graph, x[i], label, rep, lo, hi, row))
            yield row

    _, summary = sink.collect(decided(), lambda rows, stop: _summary(
        rows, model=str(args.model), data=str(args.data), transform=args.transform,
        range=[lo, hi], method=args.method, pixels=args.pixels, interrupted=stop))
    _finish(args, summary)
    if strip:
        save_strip(args.strip, strip)
        print(f"strip written to {args.strip}", file=sys.stderr)
    return 0


def _transform_row(args, graph: Graph, image: torch.Tensor, label: int, rep, lo, hi, row: dict):
    from ..semantic.strip import transform_row
    from ..semantic.transforms import apply_transform

    def image_at(p: torch.Tensor) -> torch.Tensor:
        return apply_transform(image.double(), args.transform, p)

    return transform_row(rep, lo, hi, image_at,
                         lambda p: _fails(graph, image_at(p), label), args.strip_images,
                         _caption(row["index"], label, row))


# -- segment ------------------------------------------------------------------------------------
def _generator(args: argparse.Namespace, graph: Graph):
    from ..semantic.generative import load_generator

    d = Path(args.generator)
    gen = load_generator(d)
    if args.direction not in gen.directions:
        raise ConfigError(f"direction {args.direction!r} is not in {d / 'directions.npz'}; "
                          f"it has {', '.join(gen.directions)}")
    if gen.decoder.num_outputs != graph.num_inputs:
        raise ModelError(f"the generator makes images of shape {gen.decoder.output_shape}, the "
                         f"model reads {graph.input_shape}")
    return gen.decoder, gen.encoder, gen.directions[args.direction]


def run_segment(args: argparse.Namespace) -> int:
    import torch

    from ..models.graph import compose
    from ..semantic.latent import latent_segment, residual_decoder
    from ..semantic.segments import as_float64

    sink = _check_outputs(args)
    graph, x, labels = _classifier(args)
    decoder, encoder, direction = _generator(args, graph)
    if encoder.input_shape != tuple(x.shape[1:]):
        x = x.reshape(x.shape[0], *encoder.input_shape)
    ends = [latent_segment(encoder, xi, direction, args.delta) for xi in x]
    z0, z1 = torch.stack([a for a, _ in ends]), torch.stack([b for _, b in ends])
    if args.residual:  # one graph per image: f(clamp01(x + G(z) − G(z0)))
        dec64 = as_float64(decoder)

        def images_of(i: int) -> Graph:
            return residual_decoder(dec64, x[i].double(), z0[i])

        def fg(i: int) -> Graph:
            return as_float64(compose(images_of(i), graph))
    else:
        fg = as_float64(compose(decoder, graph))  # once for all images
    reports: dict = {}
    done = sink.start("semantic segment", run_settings(args), x.shape[0])
    rows, summary = sink.collect(
        _line_rows(args, fg, z0, labels, z1, reports, done, f"semantic {args.direction}"),
        lambda got, stop: _summary(got, model=str(args.model), data=str(args.data),
                                   method=args.method, generator=str(args.generator),
                                   direction=args.direction, delta=args.delta,
                                   residual=args.residual, interrupted=stop))

    def point_at(i: int, t: torch.Tensor) -> torch.Tensor:  # the images along segment i
        z = z0[i] + t.to(z0.dtype)[:, None] * (z1[i] - z0[i])
        if args.residual:
            return images_of(i).forward(z.to(torch.float64)).to(graph.dtype)
        return decoder.forward(z.to(decoder.dtype))

    _segment_strip(args, graph, reports, rows, point_at)
    _finish(args, summary)
    return 0


# -- line (a segment in input space) -----------------------------------------------------------
def _line_rows(args, graph: Graph | Callable[[int], Graph], x: torch.Tensor, labels: torch.Tensor,
               ends: torch.Tensor, reports: dict, done: set[int], desc: str = "semantic line"
               ) -> Iterator[dict]:
    """One row per segment x[i] → ends[i] (i not in ``done``), certified at labels[i] with
    args.method (exact: batched, CHUNK segments per ExactLine pass, when all segments share
    one ``graph``; a callable gives segment i's own graph); each segment's report goes to
    ``reports[i]``."""
    import torch

    from ..semantic.latent import certify_lines
    from ..semantic.quantitative import QuantConfig

    config = QuantConfig(max_pieces=args.max_pieces, tolerance=args.tolerance)
    shared = hasattr(graph, "nodes")  # a Graph, not a callable giving one per segment
    step = CHUNK if args.method == "exact" and shared else 1
    todo = [i for i in range(x.shape[0]) if i not in done]
    for lo in progress(range(0, len(todo), step), total=-(-len(todo) // step), desc=desc):
        part = todo[lo:lo + step]
        g = graph if shared else graph(part[0])
        with torch.no_grad():
            starts = g.forward(x[part].to(g.dtype)).argmax(1).tolist()
        reps = certify_lines(g, x[part], ends[part], labels[part],
                             args.method, config, chunk=CHUNK, timeout_s=args.timeout)
        for i, start, rep in zip(part, starts, reps):
            reports[i] = rep
            row = {"index": i, "label": int(labels[i]), "start_prediction": start,
                   "verdict": rep.result.verdict.value,
                   "fraction_lower": rep.fraction_lower, "fraction_upper": rep.fraction_upper,
                   "time_s": rep.result.time_s, **{k: v for k, v in rep.stats.items()
                                                    if k in ("pieces", "pieces_bounded")}}
            if rep.t_star is not None:
                row["t_star"] = rep.t_star
            yield row


def run_line(args: argparse.Namespace) -> int:
    import torch

    from ..semantic.segments import as_float64
    from ..semantic.transforms import TRANSFORMS, apply_transform

    sink = _check_outputs(args)
    name, values = args.toward[0], args.toward[1:]
    if name not in TRANSFORMS:
        raise ConfigError(f"--toward: unknown transform {name!r}; choose from {', '.join(TRANSFORMS)}")
    try:
        param = torch.tensor([[float(v) for v in values]], dtype=torch.float64)
    except ValueError as e:
        raise ConfigError(f"--toward {name}: parameter values must be numbers, got {values}") from e
    if param.numel() != TRANSFORMS[name] or not bool(torch.isfinite(param).all()):
        raise ConfigError(f"--toward {name} takes {TRANSFORMS[name]} finite number(s), got {values}")
    if name == "scale" and float(param.min()) <= 0:
        raise ConfigError("--toward scale: the factor must be > 0")
    if name == "blur" and float(param.min()) < 0:
        raise ConfigError("--toward blur: σ must be ≥ 0")
    if name == "fog" and not 0 <= float(param.min()) <= float(param.max()) <= 1:
        raise ConfigError("--toward fog: the intensity must lie in [0, 1]")
    graph, x, labels = _classifier(args)
    if x.dim() != 4:
        raise ConfigError(f"--toward needs image inputs (C, H, W); the model reads {graph.input_shape}")
    ends = torch.stack([apply_transform(xi.double(), name, param)[0] for xi in x]).to(x.dtype)
    reports: dict = {}
    done = sink.start("semantic line", run_settings(args), x.shape[0])
    rows, summary = sink.collect(
        _line_rows(args, as_float64(graph), x, labels, ends, reports, done),
        lambda got, stop: _summary(got, model=str(args.model), data=str(args.data),
                                   method=args.method, toward=[name, *param.flatten().tolist()],
                                   interrupted=stop))
    _segment_strip(args, graph, reports, rows,
                   lambda i, t: x[i] + t.to(x.dtype).reshape(-1, *([1] * (x.dim() - 1))) * (ends[i] - x[i]))
    _finish(args, summary)
    return 0


# -- train-generator ----------------------------------------------------------------------------
def run_train(args: argparse.Namespace) -> int:
    from ..data import load_dataset
    from ..semantic.generative import VAEConfig, build_generator, save_generator

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out must be a directory: {out} is a file")
    check_writable(out / "report.json", "--out")
    train = load_dataset(args.data, count=args.count)
    held = load_dataset(args.held_out, count=args.held_out_count)
    if len(train) == 0 or len(held) == 0:
        raise DataError("the training or held-out dataset holds no images")
    if train.images.shape[1:] != held.images.shape[1:]:
        raise DataError(f"training images {tuple(train.images.shape[1:])} and held-out images "
                        f"{tuple(held.images.shape[1:])} differ in shape")
    config = VAEConfig(latent=args.latent, hidden=args.hidden, steps=args.steps,
                       jacobian_weight=args.jacobian_weight, seed=args.seed)
    gen = build_generator(train.images / train.pixel_max, held.images / held.pixel_max, config,
                          tuple(args.mutations) if args.mutations else None)
    paths = save_generator(gen, out)
    c = gen.report["continuity"]
    print(f"generator written to {out} ({', '.join(p.name for p in paths)}); measured "
          f"bi-Lipschitz C = {c['C']:.3g} (ratios {c['lower']:.3g} .. {c['upper']:.3g})")
    for name, row in gen.report["independence"].items():
        print(f"  {name:<11} " + " ".join(f"{k}={v:.2f}" for k, v in row.items()))
    return 0


def run_certify(args: argparse.Namespace) -> int:
    """``semantic certify``: the transform route (``--transform``) or the generator route
    (``--generator``), with each route's defaults filled in."""
    if (args.transform is None) == (args.generator is None):
        raise ConfigError("give either --transform (with --range) or --generator (with "
                          "--direction)")
    if args.transform is not None:
        if args.range is None:
            raise ConfigError(f"--transform {args.transform} needs --range")
        if args.residual:
            raise ConfigError("--residual is for --generator segments")
        if args.method in SEGMENT_ONLY:
            raise ConfigError(f"--method {args.method} is for generator segments; a transform "
                              "is decided by parameter splitting with a bound method (default: "
                              "crown)")
        args.method = args.method or "crown"
        args.max_pieces = args.max_pieces or 1024
        args.pixels = args.pixels or "linear"
        return run_transform(args)
    if args.pixels is not None:
        raise ConfigError("--pixels is for --transform (generator segments are lines already)")
    if args.direction is None:
        raise ConfigError("--generator needs --direction")
    args.method = args.method or "exact"
    args.max_pieces = args.max_pieces or 512
    return run_segment(args)


# -- parser -------------------------------------------------------------------------------------
# (the choices come from the library's tables when first read: building the parser imports
# neither nncert.semantic nor torch)
def _bound_methods() -> list[str]:
    from ..bounds import METHODS

    return sorted(METHODS)


def _transform_names() -> list[str]:
    from ..semantic.transforms import TRANSFORMS

    return list(TRANSFORMS)


def _mutation_names() -> list[str]:
    from ..semantic.generative import MUTATIONS

    return list(MUTATIONS)


#: the --method values of segments that are not bound methods
SEGMENT_ONLY = ("exact", "bab", "quantitative")


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="ONNX classifier")
    p.add_argument("--data", required=True,
                   help="dataset (as for `nncert verify`: 'digits:test', MNIST IDX, CIFAR-10, ERAN CSV)")
    p.add_argument("--count", type=positive_int, default=None, help="only the first N images")
    p.add_argument("--scale", type=positive_float, default=None,
                   help="divide raw pixels by this (default: the dataset's max)")
    p.add_argument("--mean", type=finite_floats, default=None, help="per-channel mean")
    p.add_argument("--std", type=positive_floats, default=None, help="per-channel std")
    add_out_args(p)
    p.add_argument("--strip", default=None, metavar="PNG",
                   help=f"write a PNG strip here: per input (the first {STRIP_ROWS}) images along "
                        "the segment or parameter range, framed green where proved robust, red "
                        "where the spec fails (a misclassified image, or a part proved violating), "
                        "grey where undecided, over a bar of the proved (green) and violating "
                        "(red) parts")
    p.add_argument("--strip-images", type=positive_int, default=10, metavar="K",
                   help="images per strip row (default 10, at least 2)")


def _register_transform(sub) -> None:
    p = sub.add_parser("transform", help="certify robustness to a transform over a parameter range",
                       description="VERIFIED: every image τ(x, p), p in the range, is classified "
                                   "as x's label (sound pixel bounds per parameter piece, pieces "
                                   "split until proved); FALSIFIED: a concrete parameter whose "
                                   "image is misclassified.")
    _model_args(p)
    p.add_argument("--transform", required=True, choices=LazyChoices(_transform_names),
                   metavar="TRANSFORM", help="one of %(choices)s")
    p.add_argument("--range", required=True, type=float, nargs="+", metavar="V",
                   help="parameter range: LO HI (translate: DX_LO DX_HI DY_LO DY_HI); rotate in "
                        "degrees, translate in pixels, scale as a factor, brightness as an offset "
                        "in [0,1] units, contrast as a factor, blur as the Gaussian σ in pixels (≥ 0; "
                        "5×5 window), fog as the blend intensity towards a fixed fog pattern "
                        "(in [0, 1])")
    p.add_argument("--method", default="crown", choices=LazyChoices(_bound_methods), metavar="METHOD",
                   help="bound method, one of %(choices)s (default: crown)")
    p.add_argument("--pieces", type=positive_int, default=8,
                   help="initial pieces per parameter (default 8; 1 = no splitting at first)")
    p.add_argument("--max-pieces", type=positive_int, default=1024,
                   help="most parameter pieces bounded per image (default 1024)")
    p.add_argument("--batch", type=positive_int, default=32, help="pieces per bound call")
    _pixel_args(p, "linear")
    p.set_defaults(func=run_transform)


PIXELS_HELP = ("what the bound method gets per parameter piece: linear (pixels linear in the "
               "parameter plus an error interval, as DeepG: fewer pieces), box (interval pixel "
               "bounds) or both (the better of the two bounds, twice the cost per piece)")


def _pixel_args(p, default: str | None, prefix: str = "") -> None:
    """--pixels and --band-sub (``default`` None on `certify`, whose generator route refuses
    --pixels; the transform route then uses linear)."""
    p.add_argument("--pixels", default=default, choices=["box", "linear", "both"],
                   help=prefix + PIXELS_HELP + " (default linear)")
    p.add_argument("--band-sub", type=positive_int, default=8, metavar="K",
                   help="linear pixels: sub-pieces per parameter that bound the error "
                        "(default 8; more: a narrower error, a slower band)")


RESIDUAL_HELP = ("certify the images clamp01(x + G(z) − G(E(x))) along the segment: the "
                 "generator's change added to x itself, so the segment starts at x, not at its "
                 "reconstruction G(E(x)) (for generators whose decodings are blurred, e.g. "
                 "CIFAR-10; one ExactLine pass per image)")


def _register_segment(sub) -> None:
    p = sub.add_parser("segment", help="certify along a generator's latent mutation segment",
                       description="For each image x: the segment z → z + DELTA·d in the latent "
                                   "space of the generator (z = E(x), d the named direction); "
                                   "is every decoded image classified as x's label?")
    _model_args(p)
    p.add_argument("--generator", required=True, help="directory written by train-generator")
    p.add_argument("--direction", required=True, help="direction name (see its directions.npz)")
    p.add_argument("--delta", type=nonnegative_float, default=1.0,
                   help="segment length in units of the direction (default 1)")
    p.add_argument("--residual", action="store_true", help=RESIDUAL_HELP)
    _segment_method_args(p)
    p.set_defaults(func=run_segment)


def _register_line(sub) -> None:
    p = sub.add_parser("line", help="certify along the straight line from each image to a mutated one",
                       description="For each image x: the pixel-space segment from x to τ(x, p) "
                                   "(--toward TRANSFORM P...), i.e. (1 − t)·x + t·τ(x, p); is every "
                                   "image on it classified as x's label?")
    _model_args(p)
    p.add_argument("--toward", required=True, nargs="+", metavar="ARG",
                   help="the end image: a transform and its parameter(s), e.g. 'brightness 0.3' "
                        "or 'rotate 30'")
    _segment_method_args(p)
    p.set_defaults(func=run_line)


def _segment_method_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", default="exact",
                   choices=LazyChoices(lambda: [*SEGMENT_ONLY, *_bound_methods()]),
                   metavar="METHOD",
                   help="exact (ExactLine: ReLU networks), bab (complete search on the "
                        "segment: any activation, a verdict without fraction), quantitative "
                        "(robust-fraction bounds) or a bound method (one pass): one of "
                        "%(choices)s (default: exact)")
    p.add_argument("--timeout", type=positive_float, default=30.0,
                   help="bab: seconds per segment (default 30)")
    p.add_argument("--max-pieces", type=positive_int, default=512,
                   help="quantitative: most pieces bounded (default 512)")
    p.add_argument("--tolerance", type=nonnegative_float, default=1e-3,
                   help="quantitative: stop when upper − lower ≤ this (default 1e-3)")


def _register_train(sub) -> None:
    p = sub.add_parser("train-generator", help="train a VAE generator and its mutation directions",
                       description="Trains a VAE (ReLU decoder, continuity regulariser), learns "
                                   "one latent direction per mutation from data pairs, and writes "
                                   "decoder.onnx, encoder.onnx, directions.npz and report.json "
                                   "(measured bi-Lipschitz C and independence) into --out.")
    p.add_argument("--data", default="digits:train", help="training images (default digits:train)")
    p.add_argument("--held-out", default="digits:test", help="images for the measurements")
    p.add_argument("--count", type=positive_int, default=None)
    p.add_argument("--held-out-count", type=positive_int, default=1000)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--latent", type=positive_int, default=8)
    p.add_argument("--hidden", type=positive_int, default=128)
    p.add_argument("--steps", type=positive_int, default=400)
    p.add_argument("--jacobian-weight", type=nonnegative_float, default=0.05,
                   help="continuity regulariser weight (0 disables it)")
    mutations = LazyChoices(_mutation_names)
    p.add_argument("--mutations", nargs="+", choices=mutations, default=None, metavar="MUTATION",
                   help="the directions to learn, of %(choices)s (default: rotate, scale, "
                        "thickness, brightness, local for grey images; colour instead of "
                        "thickness for RGB ones)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run_train)


def _register_certify(sub) -> None:
    p = sub.add_parser("certify", help="certify a transform range or a generator segment (one door "
                                       "for `transform` and `segment`)",
                       description="One command for both routes. --transform T --range ...: is "
                                   "every image τ(x, p), p in the range, classified as x's label "
                                   "(as `semantic transform`)? --generator DIR --direction NAME: "
                                   "is every image decoded along z → z + DELTA·d (as `semantic "
                                   "segment`)?")
    _model_args(p)
    route = p.add_argument_group("route (exactly one)")
    route.add_argument("--transform", default=None, choices=LazyChoices(_transform_names),
                       metavar="TRANSFORM", help="one of %(choices)s (needs --range)")
    route.add_argument("--generator", default=None,
                       help="directory written by train-generator (needs --direction)")
    p.add_argument("--range", type=float, nargs="+", metavar="V", default=None,
                   help="transform: the parameter range (see `semantic transform --help`)")
    p.add_argument("--direction", default=None, help="generator: the direction name")
    p.add_argument("--delta", type=nonnegative_float, default=1.0,
                   help="generator: segment length in units of the direction (default 1)")
    p.add_argument("--residual", action="store_true", help="generator: " + RESIDUAL_HELP)
    p.add_argument("--method", default=None,
                   choices=LazyChoices(lambda: [*SEGMENT_ONLY, *_bound_methods()]),
                   metavar="METHOD",
                   help="one of %(choices)s; generator default exact (ExactLine), bab for the "
                        "complete search (any activation), quantitative for robust-fraction "
                        "bounds; transform: a bound method (default crown)")
    p.add_argument("--timeout", type=positive_float, default=30.0,
                   help="generator, bab: seconds per segment (default 30)")
    p.add_argument("--pieces", type=positive_int, default=8,
                   help="transform: initial pieces per parameter (default 8)")
    p.add_argument("--max-pieces", type=positive_int, default=None,
                   help="most pieces bounded per input (default: 1024 transform, 512 generator)")
    p.add_argument("--batch", type=positive_int, default=32,
                   help="transform: pieces per bound call")
    _pixel_args(p, None, prefix="transform: ")
    p.add_argument("--tolerance", type=nonnegative_float, default=1e-3,
                   help="quantitative: stop when upper − lower ≤ this (default 1e-3)")
    p.set_defaults(func=run_certify)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("semantic", help="semantic certification: transforms, generator segments",
                       description="Certification beyond norm balls (GCert): geometric and "
                                   "photometric transforms, and segments in a generator's "
                                   "latent space. Each subcommand has its own --help.")
    inner = p.add_subparsers(dest="semantic_command", metavar="SUBCOMMAND")
    _register_certify(inner)
    _register_transform(inner)
    _register_segment(inner)
    _register_line(inner)
    _register_train(inner)
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])
