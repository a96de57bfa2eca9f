"""``nncert pixeldp train|certify``: PixelDP (Lecuyer et al. 2019) on a dataset.

``train`` writes nncert's PixelDP model file (a ``torch.save`` dict with the architecture name,
input shape, DP config and state dict; see ``nncert.smoothing.pixeldp``), not ONNX: the noise layer
sits inside the network and is not part of a deterministic exported graph. ``certify`` reads it
back and writes one TSV row per point, ``idx label predict size correct time epsilon``, a PNG plot
of certified accuracy against size and a table on stdout.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..errors import ConfigError
from .common import LazyChoices, add_device_arg, check_writable, resolve_device
from .smooth import Report, RowWriter, Tally, certify_rows, default_plot, model_inputs


def _sizes(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from e


def _pixeldp_table(name: str, sort: bool = False) -> LazyChoices:
    """Choices from a table of nncert.smoothing.pixeldp, read when first needed (building the
    parser imports neither the smoothing package nor torch)."""
    def names() -> list[str]:
        from ..smoothing import pixeldp

        table = getattr(pixeldp, name)
        return sorted(table) if sort else list(table)
    return LazyChoices(names)


def run_train(args: argparse.Namespace) -> int:
    import torch

    from ..smoothing.pixeldp import PixelDPConfig, build_pixeldp, save_pixeldp
    from ..smoothing.train import load_images, train_pixeldp

    config = PixelDPConfig(epsilon=args.epsilon, delta=args.delta, L=args.L, norm=args.norm,
                           mechanism=args.mechanism)
    check_writable(args.out, "--out")
    device = resolve_device(args.device)
    images, labels, name = load_images(args.data, args.count)
    if len(labels) == 0:
        raise ConfigError(f"no training images in {args.data}")
    torch.manual_seed(args.seed)
    net = build_pixeldp(args.arch, tuple(images.shape[1:]), max(int(labels.max()) + 1, 2), config)
    history = train_pixeldp(net, images, labels, epochs=args.epochs, batch_size=args.batch,
                            lr=args.lr, seed=args.seed, device=device, progress=True)
    net = net.cpu().eval()
    save_pixeldp(net, args.out)
    kind = "sigma" if config.mechanism == "gaussian" else "scale b"
    print(f"trained PixelDP {args.arch} on {name} ({len(labels)} images), {config.mechanism} noise "
          f"{kind}={config.noise_scale:.4f} for (epsilon={config.epsilon}, delta={config.delta}) at "
          f"{config.norm} size L={config.L}; first-layer sensitivity {net.sensitivity():.6f}; "
          f"final loss {history[-1]:.4f}")
    print(f"model written to {args.out}", file=sys.stderr)
    return 0


def run_certify(args: argparse.Namespace) -> int:
    from ..smoothing import stats
    from ..smoothing.pixeldp import certify, load_pixeldp
    from ..smoothing.train import load_images

    stats.check_alpha(args.alpha, "--alpha")
    stats.check_count(args.n, "--n")
    stats.check_count(args.batch, "--batch")
    if args.count is not None:
        stats.check_count(args.count, "--count", 0)
    check_writable(args.out, "--out")
    plot = default_plot(args.out, args.plot)
    if plot is not None:
        check_writable(plot, "--plot")
    device = resolve_device(args.device)
    net = load_pixeldp(args.model, device)
    images, labels, name = load_images(args.data, args.count)
    x = model_inputs(images, net.input_shape)
    cfg = net.config
    sizes = args.sizes or [0.0, 0.5 * cfg.L, cfg.L, 1.5 * cfg.L, 2.0 * cfg.L]
    settings = {"model": os.path.abspath(args.model), "data": str(args.data), "n": args.n,
                "alpha": args.alpha, "batch": args.batch, "seed": args.seed}
    writer = RowWriter(args.out, ["idx", "label", "predict", "size", "correct", "time", "epsilon"],
                       "pixeldp certify", settings)

    def one(i: int):
        cert = certify(net, x[i], args.n, args.alpha, args.batch, seed=args.seed + i)
        label = int(labels[i])
        ok = cert.prediction == label
        row = [i, label, cert.prediction, f"{cert.size:.5f}", int(ok), f"{cert.time_s:.4f}",
               f"{cert.epsilon:.4f}"]
        return row, cert.size, ok, False, cert.time_s

    def headline(t: Tally) -> str:
        return (f"{len(t.radii)} points, {sum(r > 0 for r in t.radii)} certified (size > 0), "
                f"{cfg.mechanism} noise {net.noise_scale:.4f}, n={args.n}, alpha={args.alpha}, "
                f"{t.time_s:.1f} s")

    title = (f"PixelDP {Path(args.model).name} on {name}\n{cfg.mechanism}, "
             f"eps={cfg.epsilon}, delta={cfg.delta}, n={args.n}")
    certify_rows(len(labels), "pixeldp certify", writer, one,
                 Report(plot, title, sizes, headline, xlabel=f"{cfg.norm.upper()} size",
                        label="size"))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pixeldp", help="PixelDP: train with a DP noise layer, certify",
                       description="PixelDP (Lecuyer et al. 2019): a noise layer after a first "
                                   "layer of bounded sensitivity makes the scores (epsilon, delta)-"
                                   "differentially private in the input, which certifies the "
                                   "expected-score prediction against L2 (or L1) changes.")
    ss = p.add_subparsers(dest="pixeldp_command", metavar="ACTION")

    t = ss.add_parser("train", help="train a PixelDP network and save it (.pt)",
                      description="Train with the noise layer on, keeping the first layer's "
                                  "sensitivity <= 1; writes nncert's PixelDP model file.")
    t.add_argument("--data", default="digits:train", help="training set (default digits:train)")
    t.add_argument("--epsilon", type=float, default=1.0, help="DP epsilon (default 1.0)")
    t.add_argument("--delta", type=float, default=0.05, help="DP delta (Gaussian; default 0.05)")
    t.add_argument("--L", type=float, default=0.1,
                   help="construction attack size in [0,1] pixel units (default 0.1)")
    t.add_argument("--norm", default="l2", choices=_pixeldp_table("NORMS"), metavar="NORM",
                   help="attack norm, one of %(choices)s (default l2)")
    t.add_argument("--mechanism", default="gaussian", choices=_pixeldp_table("MECHANISMS"),
                   metavar="NOISE",
                   help="noise, one of %(choices)s (default gaussian; laplace needs --norm l1)")
    t.add_argument("--arch", default="cnn", choices=_pixeldp_table("ARCHS", sort=True),
                   metavar="ARCH", help="network, one of %(choices)s (default cnn)")
    t.add_argument("--epochs", type=int, default=20, help="epochs (default 20)")
    t.add_argument("--batch", type=int, default=128, help="batch size (default 128)")
    t.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    t.add_argument("--count", type=int, default=None, help="only the first K training images")
    t.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    t.add_argument("--out", required=True, help="model file to write (.pt)")
    add_device_arg(t)
    t.set_defaults(func=run_train)

    c = ss.add_parser("certify", help="PixelDP prediction and certified size for each point",
                      description="Monte-Carlo expected scores with N noise draws, Hoeffding bounds "
                                  "at confidence 1-ALPHA (union over classes), and the largest "
                                  "size for which the PixelDP robustness condition holds.")
    c.add_argument("--model", required=True, help="model file written by `nncert pixeldp train`")
    c.add_argument("--data", default="digits:test", help="dataset (default digits:test)")
    c.add_argument("--n", type=int, default=1000, help="noise draws per point (default 1000)")
    c.add_argument("--alpha", type=float, default=0.05, help="failure probability (default 0.05)")
    c.add_argument("--count", type=int, default=None, help="only the first K points")
    c.add_argument("--batch", type=int, default=1000, help="noise draws per forward pass")
    c.add_argument("--seed", type=int, default=0, help="noise seed; point i uses SEED + i")
    c.add_argument("--sizes", type=_sizes, default=None,
                   help="sizes of the table (default: 0, L/2, L, 1.5L, 2L)")
    c.add_argument("--out", required=True,
                   help="TSV of results, one row per point; an existing OUT with the same "
                        "settings is resumed")
    c.add_argument("--plot", default=None, help="PNG plot (default: OUT with .png)")
    add_device_arg(c)
    c.set_defaults(func=run_certify)
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])
