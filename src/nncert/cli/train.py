"""``nncert train``: certified training (natural, PGD, IBP, CROWN-IBP, DiffAI, SABR, Gaussian
noise) of a literature architecture on MNIST, CIFAR-10 or the embedded digits; writes the
ONNX model, a weights-only checkpoint, a per-epoch CSV log and an accuracy plot."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError, ModelError
from .common import (
    LazyChoices,
    add_device_arg,
    check_writable,
    nonnegative_float,
    nonnegative_int,
    positive_float,
    positive_int,
    resolve_device,
)

if TYPE_CHECKING:
    import torch

    from ..training import losses

METHODS = ("natural", "pgd", "ibp", "crown-ibp", "diffai", "sabr", "noise")


def outputs(out: str) -> dict[str, Path]:
    """The files a run writes beside ``--out model.onnx``."""
    p = Path(out)
    stem = p.with_suffix("") if p.suffix == ".onnx" else p
    return {"onnx": p, "checkpoint": Path(f"{stem}.ckpt.pt"), "log": Path(f"{stem}.log.csv"),
            "plot": Path(f"{stem}.png")}


def make_loss(args: argparse.Namespace) -> losses.Loss:
    """The loss object of ``--method`` with the documented schedules (in epochs): ε ramps
    linearly from 0 to --eps over [--warmup, --warmup + --ramp]; κ from 1 to --kappa and β
    (CROWN-IBP) from 1 to --beta over the same window."""
    from ..training import losses
    from ..training.schedules import Constant, Ramp

    for flag, v in (("--kappa", args.kappa), ("--beta", args.beta)):
        if v is not None and not 0 <= v <= 1:
            raise ConfigError(f"{flag} must lie in [0, 1], got {v:g}")
    ramp = args.ramp if args.ramp is not None else args.epochs / 2
    win = (args.warmup, ramp)
    eps = Ramp(0.0, args.eps, *win, shape=args.ramp_shape)
    kappa_end = args.kappa if args.kappa is not None else (
        0.0 if args.method in ("crown-ibp", "sabr") else 0.5)
    kappa = Ramp(1.0, kappa_end, *win)
    reg = args.warmup_reg
    m = args.method
    if m == "natural":
        return losses.Natural()
    if m == "noise":
        if args.sigma is None:
            raise ConfigError("--method noise needs --sigma (the noise std, in [0,1] pixel units)")
        return losses.GaussianNoise(args.sigma)
    if m == "pgd":
        return losses.PGD(Constant(args.eps), steps=args.pgd_steps)
    if m == "ibp":
        return losses.IBP(eps, kappa, reg)
    if m == "crown-ibp":
        return losses.CrownIBP(eps, kappa, reg, beta=Ramp(1.0, args.beta, *win))
    if m == "diffai":
        return losses.DiffAI(eps, kappa, reg, relu=args.domain, box_errors=args.box_errors)
    return losses.SABR(eps, kappa, reg, lam=args.sabr_lambda, steps=args.pgd_steps)


def _evaluator(test, eps: float, device, methods: tuple[str, ...]):
    """Per-epoch accuracies on ``test``: clean, PGD, and certified by any of ``methods``."""
    import torch

    from ..models import load
    from ..training.evaluate import certified, correct, pgd_correct

    x, y = test.images.to(device), test.labels.to(device)

    def on_epoch(epoch: int, model) -> dict:
        g = load(model, x.shape[1:]).to(device)  # a detached snapshot of the weights
        cert = torch.zeros_like(y, dtype=torch.bool)
        for method in methods:
            cert |= certified(g, x, y, eps, method)
        return {"clean": float(correct(g, x, y).float().mean()),
                "pgd": float(pgd_correct(g, x, y, eps, steps=10).float().mean()),
                "certified": float(cert.float().mean())}
    return on_epoch


def export(model, shape, path: Path, check_x: torch.Tensor) -> float:
    """Write the model as ONNX (atomically) and read it back with ``nncert.load``: returns the
    largest output difference (a ModelError above 1e-4: the file would not be the model)."""
    import torch

    from ..models import load
    from ..models.to_onnx import to_onnx

    model = model.cpu().eval()
    graph = load(model, shape)
    tmp = path.with_name(f".{path.name}.tmp")
    to_onnx(graph, tmp)
    os.replace(tmp, path)
    with torch.no_grad():
        diff = float((load(str(path))(check_x) - model(check_x)).abs().max())
    if diff > 1e-4:
        raise ModelError(f"{path}: the ONNX file differs from the trained model by {diff:.2e}")
    return diff


def run(args: argparse.Namespace) -> int:
    import torch

    from ..training import architectures, losses
    from ..training.data import NORMALIZATION, load_split
    from ..training.loop import load_checkpoint

    device = resolve_device(args.device)
    files = outputs(args.out)
    for what, p in files.items():
        check_writable(p, f"--out ({what})")
    if args.resume is not None:
        if not Path(args.resume).is_file():
            raise ConfigError(f"--resume {args.resume}: no such checkpoint file")
        load_checkpoint(args.resume)  # a bad file fails now, before any data is read
    loss = make_augmented(args, make_loss(args))
    train = load_split(args.data, True, args.data_dir).head(args.count)
    test = load_split(args.data, False, args.data_dir).head(args.eval_count)
    shape = tuple(train.images.shape[1:])
    if isinstance(loss, losses.Augmented):  # a generator for other images fails here, not later
        loss.augment(train.images[:1], train.labels[:1], torch.Generator().manual_seed(0))
    mean, std = NORMALIZATION[args.data]
    model = architectures.build(args.arch, shape, 10, mean, std, seed=args.seed,
                                batchnorm=args.batchnorm)
    if args.init == "ibp":
        losses.ibp_init_(model, torch.Generator().manual_seed(args.seed))
    return _train(args, model, loss, train, test, shape, files, device)


def _train(args, model, loss, train, test, shape, files, device) -> int:
    from ..training.loop import TrainConfig, fit, native_bfloat16

    # DiffAI trains the zonotope's bounds, which IBP and CROWN-IBP do not see
    methods = ("interval", "crown-ibp", *(("zonotope",) if args.method == "diffai" else ()))
    evaluate = _evaluator(test, args.eps, device, methods)

    def on_epoch(epoch, m):
        row = evaluate(epoch, m)
        print(f"epoch {epoch}: " + ", ".join(f"{k} {v:.1%}" for k, v in row.items()), flush=True)
        return row

    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                      optimizer=args.optimizer, lr_schedule=args.lr_schedule,
                      grad_clip=args.grad_clip, crop_pad=args.crop_pad, flip=args.flip,
                      precision=args.precision,
                      seed=args.seed, device=str(device),
                      checkpoint=str(files["checkpoint"]))
    title = f"{args.arch} {loss.name} eps={args.eps:g} on {args.data}"
    print(f"training {args.arch} ({sum(p.numel() for p in model.parameters()):,} parameters) on "
          f"{args.data} ({len(train.labels)} images) with {loss.name}, eps {args.eps:g}, "
          f"{args.epochs} epochs, device {device}", flush=True)
    if args.precision == "bfloat16" and not native_bfloat16(device):
        print(f"nncert: note: device {device} has no native bfloat16 (on a CPU: AVX512-BF16 or "
              "AMX), so --precision bfloat16 is emulated and slower than float32 (a DM-medium "
              "SABR probe on two AVX2-only CPUs: 4.7x and 13x slower)", file=sys.stderr, flush=True)
    try:
        history = fit(model, loss, train.images, train.labels, cfg, resume=args.resume,
                      on_epoch=on_epoch, after_epoch=_writer(files, title))
    except KeyboardInterrupt:
        export(model, shape, files["onnx"], test.images[:16].cpu())
        raise
    diff = export(model, shape, files["onnx"], test.images[:16].cpu())
    last = history.rows[-1] if history.rows else {}
    print(f"wrote {files['onnx']} (ONNX read back by nncert.load: max difference {diff:.1e}), "
          f"{files['checkpoint']}, {files['log']}, {files['plot']}")
    print(f"last epoch on {len(test.labels)} test images: clean {last.get('clean', 0):.1%}, "
          f"PGD {last.get('pgd', 0):.1%}, certified {last.get('certified', 0):.1%}")
    return 0


def _writer(files, title):
    """Rewrites the CSV log and the plot from every epoch's row so far (a resumed run's rows
    come from its checkpoint)."""
    from ..training.report import plot_history, write_log

    def write(history) -> None:
        write_log(files["log"], history.rows)
        plot_history(files["plot"], history.rows, title)
    return write


# --data, --arch and --domain's choices come from the library's tables when first read:
# building the parser imports neither nncert.training nor torch
def _datasets() -> tuple[str, ...]:
    from ..training.data import DATASETS

    return DATASETS


def _architectures() -> list[str]:
    from ..training.architectures import ARCHITECTURES

    return sorted(ARCHITECTURES)


def _precisions() -> tuple[str, ...]:
    from ..training.loop import PRECISIONS

    return PRECISIONS


def _relu_rules() -> tuple[str, ...]:
    from ..bounds.zonotope import RELU_RULES

    return RELU_RULES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="certified training (IBP, CROWN-IBP, DiffAI, SABR, PGD, ...)",
                       description="Trains an architecture of the literature with a certified "
                                   "(or adversarial, or noise) training method; writes the ONNX "
                                   "model, a weights-only checkpoint (.ckpt.pt), a per-epoch CSV "
                                   "log (.log.csv) and a plot of clean/PGD/certified accuracy "
                                   "(.png) beside --out. Ctrl-C keeps the last checkpoint.")
    p.add_argument("--data", required=True, choices=LazyChoices(_datasets), metavar="DATA",
                   help="one of %(choices)s")
    p.add_argument("--data-dir", default=None,
                   help="folder holding mnist/ and cifar10/ (default: $NNCERT_DATA or ../shared/data)")
    p.add_argument("--arch", required=True, choices=LazyChoices(_architectures), metavar="ARCH",
                   help="one of %(choices)s")
    p.add_argument("--method", required=True, choices=METHODS)
    p.add_argument("--eps", type=nonnegative_float, required=True,
                   help="L-inf radius in [0,1] pixel units (the final one of the ramp)")
    p.add_argument("--epochs", type=positive_int, required=True)
    p.add_argument("--out", required=True, help="the ONNX model to write (others go beside it)")
    p.add_argument("--resume", default=None, help="a checkpoint of an earlier run to continue")
    add_device_arg(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=positive_int, default=128)
    p.add_argument("--lr", type=positive_float, default=1e-3)
    p.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    p.add_argument("--lr-schedule", choices=("cosine", "constant"), default="cosine")
    p.add_argument("--grad-clip", type=nonnegative_float, default=10.0)
    p.add_argument("--crop-pad", type=nonnegative_int, default=0, metavar="P",
                   help="train on random crops of each image zero-padded by P pixels (CIFAR-10's "
                        "standard augmentation uses 4; default 0: off)")
    p.add_argument("--flip", action="store_true",
                   help="train on random left-right mirror images too (CIFAR-10; not digits)")
    p.add_argument("--precision", choices=LazyChoices(_precisions), default="float32",
                   help="arithmetic of the training passes: bfloat16 runs each batch's attack, "
                        "bounds and forward passes under autocast (1.36x faster for DM-medium "
                        "SABR on a CPU with AVX512-BF16, 4.7-13x slower on AVX2-only CPUs, "
                        "which emulate it: a note says so); weights, optimiser, checkpoints, the "
                        "per-epoch evaluation and the exported model stay float32, and "
                        "certificates are computed later in full precision (default float32)")
    p.add_argument("--count", type=positive_int, default=None, help="only the first K training images")
    p.add_argument("--eval-count", type=positive_int, default=200,
                   help="test images evaluated after each epoch (default 200)")
    p.add_argument("--warmup", type=nonnegative_float, default=0.0,
                   help="epochs at eps = 0 before the ramp")
    p.add_argument("--ramp", type=nonnegative_float, default=None,
                   help="epochs of the eps ramp (default: half the epochs)")
    p.add_argument("--ramp-shape", choices=("linear", "smooth"), default="linear")
    p.add_argument("--kappa", type=nonnegative_float, default=None,
                   help="final weight of the natural loss, from 1 (default 0.5; crown-ibp, sabr 0)")
    p.add_argument("--beta", type=nonnegative_float, default=0.0,
                   help="crown-ibp: final weight of the CROWN-IBP bound (starts at 1)")
    p.add_argument("--domain", choices=LazyChoices(_relu_rules), default="zswitch", metavar="RULE",
                   help="diffai: zonotope ReLU rule, one of %(choices)s (default: zswitch)")
    p.add_argument("--box-errors", action="store_true", help="diffai: new errors into the box part")
    p.add_argument("--sabr-lambda", type=positive_float, default=0.4,
                   help="sabr: the box radius as a share of eps")
    p.add_argument("--pgd-steps", type=positive_int, default=10)
    p.add_argument("--sigma", type=nonnegative_float, default=None, help="noise: the std")
    p.add_argument("--batchnorm", action="store_true",
                   help="a BatchNorm after every convolution and hidden dense layer (Shi et al. "
                        "2021: with --init ibp and --warmup-reg, faster certified training); the "
                        "bounds use each batch's statistics while training, the exported model "
                        "the running ones")
    p.add_argument("--init", choices=("default", "ibp"), default="default",
                   help="initial weights: PyTorch's default or Shi et al.'s IBP init (made for "
                        "networks with BatchNorm; slower to start without it)")
    p.add_argument("--warmup-reg", type=nonnegative_float, default=0.0,
                   help="Shi et al.'s warm-up regulariser weight λ during the ramp (their "
                        "value: 0.5; default 0: off, it was made for networks with BatchNorm)")
    _augment_args(p)
    p.set_defaults(func=run)


def _augment_choices() -> tuple[str, ...]:
    from ..semantic.transforms import TRANSFORMS

    return (*TRANSFORMS, "generative")


def _augment_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "augmentation", "train on each batch plus a mutated copy of it (same labels): a "
                        "geometric/photometric transform, or a generator's latent mutations "
                        "(the segments `semantic segment` certifies)")
    g.add_argument("--augment", choices=LazyChoices(_augment_choices), default=None,
                   metavar="MUTATION", help="one of %(choices)s (default: none)")
    g.add_argument("--augment-range", type=float, nargs=2, metavar=("LO", "HI"), default=None,
                   help="a transform's parameter range, drawn uniformly (e.g. rotate -30 30: "
                        "degrees; translate: pixels; scale: a factor)")
    g.add_argument("--generator", default=None,
                   help="generative: a directory written by `semantic train-generator`")
    g.add_argument("--augment-delta", type=nonnegative_float, default=1.0,
                   help="generative: δ drawn from [0, this] along a direction (default 1)")
    g.add_argument("--augment-directions", default=None,
                   help="generative: comma-separated direction names (default: all)")
    g.add_argument("--augment-residual", action="store_true",
                   help="generative: add the decoded change to the image, clamp01(x + G(E(x) + "
                        "δ·d) − G(E(x))), instead of replacing the image by its decoding (the "
                        "segments of `semantic segment --residual`; for blurred generators)")


def make_augmented(args: argparse.Namespace, loss: losses.Loss) -> losses.Loss:
    """``loss`` behind the augmenter ``--augment`` names, or ``loss`` itself without one."""
    from ..semantic.augment import generative_augmenter, transform_augmenter
    from ..training.losses import Augmented

    if args.augment is None:
        for flag, v in (("--augment-range", args.augment_range), ("--generator", args.generator),
                        ("--augment-directions", args.augment_directions),
                        ("--augment-residual", args.augment_residual or None)):
            if v is not None:
                raise ConfigError(f"{flag} needs --augment")
        return loss
    if args.augment == "generative":
        if args.generator is None or args.augment_range is not None:
            raise ConfigError("--augment generative needs --generator DIR (and takes "
                              "--augment-delta, not --augment-range)")
        from ..semantic.generative import load_generator

        names = None if args.augment_directions is None else [
            n.strip() for n in args.augment_directions.split(",") if n.strip()]
        aug = generative_augmenter(load_generator(args.generator), args.augment_delta, names,
                                   residual=args.augment_residual)
        kind = "gen-res-aug" if args.augment_residual else "gen-aug"
        return Augmented(loss, aug, f"{kind}({args.augment_delta:g})")
    if args.augment_range is None or args.generator is not None or args.augment_residual:
        raise ConfigError(f"--augment {args.augment} needs --augment-range LO HI (and no "
                          "--generator or --augment-residual)")
    lo, hi = args.augment_range
    return Augmented(loss, transform_augmenter(args.augment, lo, hi),
                     f"{args.augment}-aug({lo:g},{hi:g})")
