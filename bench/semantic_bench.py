"""Semantic certification benchmark (issue 15): generative segments and rotation on MNIST or
CIFAR-10.

    python bench/semantic_bench.py                       # both parts, short (a few minutes)
    python bench/semantic_bench.py --part segments --images 50 --train 20000
    python bench/semantic_bench.py --part rotation --images 50
    python bench/semantic_bench.py --cifar               # CIFAR-10 (colour directions)
    python bench/semantic_bench.py --digits              # the embedded 8x8 digits (seconds)

Networks are trained here (one pass over --train MNIST training images, Adam): FC 2x100,
FC 3x100 (deeper), ConvSmall (conv 16@4x4/2, conv 32@4x4/2, FC 100), ConvSmall trained with
rotation augmentation (±30°), and ConvSmall trained with generative augmentation (each batch
plus its decodings moved along a random direction by δ ~ U[0, --delta]); on request (--nets)
FC 2x100, FC 3x100, FC 6x100 and ConvDeep (ConvSmall with a third convolution, 64@3x3, and a
second FC 100) trained that way too. --residual: the generative mutations are the decoded
change added to x, clamp01(x + G(z + t·δ·d) − G(z)), for the segments and the augmentation
(the segments then start at x, so images need only be classified correctly as x; no matched
table). The generator is the
VAE of nncert.semantic.generative with a 2x256 ReLU decoder and the continuity regulariser,
trained first; directions: rotate, scale, thickness, brightness, local (CIFAR-10: rotate,
scale, brightness, colour, local).

Part ``segments``: per network × direction, on the first --images test images x classified
correctly both as x and as G(E(x)) (segment z = E(x) → z + δ·d, δ = --delta): ExactLine's
certified rate, mean exact robust fraction, mean pieces per segment (against the network's
ReLU count), segments per second (batched ExactLine on the row's segments); quantitative CROWN
lower/upper (max 64 pieces per segment).

With --common every network is certified on the same images (the first --images that all
of them classify correctly), and a paired table compares the networks the talk's findings
order (deeper, convolutional, augmented against the network without): per direction the
images certified by both, by one only and by neither, McNemar's exact p-value on the
discordant images, and the mean change of the exact fraction (bench/semantic_pool.py pools
these tables over several --seed runs). --no-quant skips the
quantitative columns; --part segments-only skips the matched table.

Part ``rotation``: rotation by ±30° (parameter range [−30, 30]): certified rate and time per
image of CROWN with parameter splitting (8 initial pieces, up to 512) side by side with interval
bounds on one pixel box for the whole range (the naive pixel-interval approach).

Part ``matched``: the same mutation two ways, at the magnitude the generator's direction was
learnt from: rotation by 0..30° and scaling by 1..1.25 as a geometric transform of the image x
(crown with parameter splitting) and of its decoding G(E(x)), against the generative segment
δ ∈ [0, δmax] along the learnt direction (ExactLine), on the same images. The mean L2 pixel
change at the end of each route says how far the two magnitudes really match; a last column
stretches each image's segment to the δ whose decoded change has the geometric route's L2
(searched on a grid up to 40 segment lengths; shown: the median δ in units of the direction,
and how many images never reach that L2 and stay at the cap).

Writes bench/out/semantic.md (semantic-cifar.md with --cifar; --out elsewhere) and prints it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import nn

from nncert.data import load_dataset, to_unit
from nncert.models.from_torch import from_torch
from nncert.models.graph import compose
from nncert.semantic.augment import generative_augmenter, transform_augmenter
from nncert.semantic.generative import VAEConfig, build_generator
from nncert.semantic.latent import certify_line, certify_lines, latent_segment, residual_decoder
from nncert.semantic.quantitative import QuantConfig
from nncert.semantic.segments import as_float64
from nncert.semantic.transforms import TransformConfig, apply_transform, certify_transform
from nncert.smoothing.stats import binomial_pvalue
from nncert.training.data import load_split

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared" / "data" / "mnist"
CIFAR = ROOT.parent / "shared" / "data" / "cifar10"
OUT = ROOT / "bench" / "out"


NETS = ("FC 2x100", "FC 3x100", "ConvSmall", "ConvSmall+rot-aug", "ConvSmall+gen-aug",
        "FC 2x100+gen-aug", "FC 3x100+gen-aug", "FC 6x100+gen-aug", "ConvDeep+gen-aug")
DEFAULT_NETS = NETS[:5]


def _nets(channels: int, side: int) -> dict[str, nn.Module]:
    n = channels * side * side
    k, s1 = (4, 2) if side >= 16 else (3, 1)  # MNIST: ConvSmall; 8x8 digits: a smaller stride

    def conv():
        body = nn.Sequential(nn.Conv2d(channels, 16, k, s1), nn.ReLU(), nn.Conv2d(16, 32, k, 2),
                             nn.ReLU(), nn.Flatten())
        flat = body(torch.zeros(1, channels, side, side)).shape[1]
        return nn.Sequential(*body, nn.Linear(flat, 100), nn.ReLU(), nn.Linear(100, 10))

    def conv_deep():  # ConvSmall with a third convolution (64@3x3, padding 1) and a second FC 100
        body = nn.Sequential(nn.Conv2d(channels, 16, k, s1), nn.ReLU(), nn.Conv2d(16, 32, k, 2),
                             nn.ReLU(), nn.Conv2d(32, 64, 3, 1, 1), nn.ReLU(), nn.Flatten())
        flat = body(torch.zeros(1, channels, side, side)).shape[1]
        return nn.Sequential(*body, nn.Linear(flat, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(),
                             nn.Linear(100, 10))

    def fc(depth: int):
        layers = [nn.Flatten(), nn.Linear(n, 100), nn.ReLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(100, 100), nn.ReLU()]
        return nn.Sequential(*layers, nn.Linear(100, 10))

    nets = {"FC 2x100": fc(2), "FC 3x100": fc(3), "ConvSmall": conv(), "ConvSmall+rot-aug": conv(),
            "ConvSmall+gen-aug": conv(),
            # built last, so the five above keep the initial weights of earlier runs
            "FC 2x100+gen-aug": fc(2), "FC 3x100+gen-aug": fc(3),
            "FC 6x100+gen-aug": fc(6), "ConvDeep+gen-aug": conv_deep()}
    assert tuple(nets) == NETS
    return nets


def train(net: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, augment=None,
          seed: int = 0) -> nn.Module:
    """Adam, batches of 128; ``augment(xb, yb, rng)`` returns the batch to train on."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0], generator=gen)
        for i in range(0, x.shape[0], 128):
            xb, yb = x[perm[i:i + 128]], y[perm[i:i + 128]]
            if augment is not None:
                xb, yb = augment(xb, yb, gen)
            opt.zero_grad()
            nn.functional.cross_entropy(net(xb), yb).backward()
            opt.step()
    return net.eval()


def _data(args):
    if args.digits:
        tr, te = load_dataset("digits:train"), load_dataset("digits:test")
    elif args.cifar:  # all five training batches (up to 50,000 images)
        tr = load_split("cifar10", True, CIFAR.parent).head(args.train)
        te = load_dataset(CIFAR, count=1000)
        return tr.images.float(), tr.labels, to_unit(te).float(), te.labels
    else:
        tr = load_dataset(MNIST / "train-images-idx3-ubyte.gz", count=args.train)
        te = load_dataset(MNIST, count=2000)
    return to_unit(tr).float(), tr.labels, to_unit(te).float(), te.labels


def _relus(graph) -> int:
    return sum(int(torch.tensor(graph.shapes[n.name]).prod()) for n in graph.nodes
               if n.op.kind == "ReLU")


def _correct(args, g, gen, xte, yte) -> torch.Tensor:
    """Test images that ``g`` classifies correctly as x and (unless --residual, where the
    segments start at x itself) as its decoded encoding G(E(x))."""
    with torch.no_grad():
        ok = g(xte).argmax(1) == yte
        if not args.residual:
            ok &= g(gen.decoder(gen.encoder(xte)).reshape(xte.shape)).argmax(1) == yte
    return ok


def segments_part(args, graphs, gen, xte, yte, per_image: dict | None = None) -> list[str]:
    """The segment table; ``per_image[(network, direction)]`` receives (test indices, exact
    verdicts, exact fractions) for the paired comparison."""
    rows = ["| network | direction | ReLUs f∘G | exact certified | exact fraction | quant. lower | "
            "quant. upper | pieces/segment | segments/s (exact) |", "|---" * 9 + "|"]
    quant = QuantConfig(method="crown", max_pieces=64, tolerance=1e-3)
    dec = as_float64(gen.decoder)
    common = None
    if args.common:  # one image set for every network: the paired comparison
        ok = torch.stack([_correct(args, g, gen, xte, yte) for g in graphs.values()]).all(0)
        common = ok.nonzero().flatten()[:args.images].tolist()
    for name, g in graphs.items():
        fg = as_float64(compose(gen.decoder, g))
        idx = common if common is not None else (
            _correct(args, g, gen, xte, yte).nonzero().flatten()[:args.images].tolist())
        for direction in gen.directions if idx else ():
            d = gen.directions[direction]
            cert, frac, lows, ups, pieces = 0, 0.0, 0.0, 0.0, 0
            t0 = time.perf_counter()
            ends = [latent_segment(gen.encoder, xte[i], d, args.delta) for i in idx]
            if args.residual:  # one graph per image: f(clamp01(x + G(z) − G(z0)))
                fgs = [as_float64(compose(residual_decoder(dec, xte[i].double(), z0), g))
                       for i, (z0, _) in zip(idx, ends)]
                exact = [certify_line(f, z0, z1, int(yte[i]), "exact")
                         for f, i, (z0, z1) in zip(fgs, idx, ends)]
            else:
                fgs = [fg] * len(idx)
                exact = certify_lines(fg, torch.stack([z0 for z0, _ in ends]),
                                      torch.stack([z1 for _, z1 in ends]), yte[idx], "exact")
            t_exact = time.perf_counter() - t0  # ExactLine on all segments of the row
            for f, i, (z0, z1), ex in zip(fgs, idx, ends, exact):
                if not args.no_quant:
                    q = certify_line(f, z0, z1, int(yte[i]), "quantitative", quant)
                    lows += q.fraction_lower
                    ups += q.fraction_upper
                cert += ex.result.verdict.value == "verified"
                frac += ex.fraction_lower
                pieces += ex.stats["pieces"]
            if per_image is not None:
                per_image[name, direction] = (
                    list(idx), [ex.result.verdict.value == "verified" for ex in exact],
                    [float(ex.fraction_lower) for ex in exact])
            n = max(len(idx), 1)
            quants = "– | –" if args.no_quant else f"{lows / n:.3f} | {ups / n:.3f}"
            rows.append(f"| {name} | {direction} | {_relus(fgs[0])} | {cert}/{len(idx)} | "
                        f"{frac / n:.3f} | {quants} | {pieces / n:.1f} | "
                        f"{len(idx) / max(t_exact, 1e-9):.1f} |")
            print(rows[-1], flush=True)
    return rows


#: the talk's orderings as pairs (A, B) where B is expected to certify more: deeper,
#: convolutional, trained with augmentation
PAIRS = (("FC 2x100", "FC 3x100"), ("FC 2x100+gen-aug", "FC 3x100+gen-aug"),
         ("FC 2x100+gen-aug", "FC 6x100+gen-aug"), ("ConvSmall+gen-aug", "ConvDeep+gen-aug"),
         ("FC 2x100", "ConvSmall"), ("FC 2x100+gen-aug", "ConvSmall+gen-aug"),
         ("ConvSmall", "ConvSmall+gen-aug"), ("FC 2x100", "FC 2x100+gen-aug"))


def _pair_row(label: str, a: list) -> str:
    """One comparison row from [(verdict A, verdict B, fraction A, fraction B)] per image."""
    only_a = sum(va and not vb for va, vb, _, _ in a)
    only_b = sum(vb and not va for va, vb, _, _ in a)
    both = sum(va and vb for va, vb, _, _ in a)
    n = len(a)
    p = binomial_pvalue(only_b, only_a + only_b)
    diff = [fb - fa for _, _, fa, fb in a]
    up, down = sum(d > 1e-9 for d in diff), sum(d < -1e-9 for d in diff)
    return (f"| {label} | {n} | {both} | {only_a} | {only_b} | {n - both - only_a - only_b} | "
            f"{p:.3f} | {sum(diff) / max(n, 1):+.3f} | {up} / {down} |")


def paired_part(per_image: dict, directions) -> list[str]:
    """Each pair of PAIRS present, per direction and pooled over directions, on the common
    image set: images certified by both / only A / only B / neither, McNemar's exact p (two-sided
    binomial test on the discordant images), the mean exact-fraction change B − A, and on how
    many images B's fraction is above / below A's."""
    rows = ["| A → B, direction | images | both | A only | B only | neither | McNemar p | "
            "fraction B − A | fraction higher: B / A |", "|---" * 9 + "|"]
    for a, b in PAIRS:
        pooled = []
        for d in directions:
            if (a, d) not in per_image or (b, d) not in per_image:
                continue
            (ia, va, fa), (ib, vb, fb) = per_image[a, d], per_image[b, d]
            assert ia == ib, "the paired comparison needs --common"
            joined = list(zip(va, vb, fa, fb))
            pooled += joined
            rows.append(_pair_row(f"{a} → {b}, {d}", joined))
        if pooled:
            rows.append(_pair_row(f"**{a} → {b}, all directions**", pooled))
    return rows


def rotation_part(args, graphs, xte, yte) -> list[str]:
    rows = ["| network | method | certified (±30°) | falsified | mean s/image | pieces/image |",
            "|---" * 6 + "|"]
    configs = {"crown + splitting": TransformConfig("crown", 8, 512, 32, pixels="box"),
               "crown + splitting, linear pixels": TransformConfig("crown", 8, 512, 32,
                                                                   pixels="linear"),
               "interval, one box": TransformConfig("interval", 1, 1, 1, probes=0, pixels="box")}
    for name, g in graphs.items():
        pred = g(xte).argmax(1)
        idx = [i for i in range(xte.shape[0]) if int(pred[i]) == int(yte[i])][:args.images]
        for how, cfg in configs.items():
            t0, ok, bad, pieces = time.perf_counter(), 0, 0, 0
            for i in idx:
                r = certify_transform(g, xte[i], int(yte[i]), "rotate", [-30.0], [30.0], cfg)
                ok += r.result.verdict.value == "verified"
                bad += r.result.verdict.value == "falsified"
                pieces += r.result.stats["pieces_bounded"]
            n = max(len(idx), 1)
            dt = (time.perf_counter() - t0) / n
            rows.append(f"| {name} | {how} | {ok}/{len(idx)} | {bad} | {dt:.3f} | {pieces / n:.1f} |")
            print(rows[-1], flush=True)
    return rows


#: mutations with both a geometric transform and a learnt direction: (transform, its range)
MATCHED = {"rotate": ("rotate", 0.0, 30.0), "scale": ("scale", 1.0, 1.25)}


@torch.no_grad()
def _equal_l2_delta(gen, z0: torch.Tensor, step: torch.Tensor, target: float) -> torch.Tensor:
    """The smallest δ on a grid in [0, 40] with ‖G(z0 + δ·step) − G(z0)‖₂ ≥ target (40 if
    none)."""
    grid = torch.linspace(0, 40, 321, dtype=z0.dtype)
    images = gen.decoder(z0[None] + grid[:, None] * step[None]).flatten(1)
    far = ((images - images[:1]).norm(dim=1) >= target).nonzero()
    return grid[far[0, 0]] if far.numel() else grid[-1]


def matched_part(args, graphs, gen, xte, yte) -> list[str]:
    rows = ["| network | mutation | images | geometric on x | geometric on G(E(x)) | generative "
            "segment | pixel L2: geometric / generative | generative at equal L2 (median δ, "
            "capped) |",
            "|---" * 8 + "|"]
    cfg = TransformConfig("crown", 8, 512, 32, pixels="box")  # (as the published tables)
    with torch.no_grad():
        decoded = gen.decoder(gen.encoder(xte)).reshape(xte.shape)
    for name, g in graphs.items():
        fg = as_float64(compose(gen.decoder, g))
        with torch.no_grad():
            ok = (g(xte).argmax(1) == yte) & (g(decoded).argmax(1) == yte)
        idx = ok.nonzero().flatten()[:args.images].tolist()
        for m, (transform, lo, hi) in MATCHED.items():
            if m not in gen.directions or not idx:
                continue
            geo = [certify_transform(g, xte[i], int(yte[i]), transform, [lo], [hi], cfg)
                   for i in idx]
            geo_dec = [certify_transform(g, decoded[i], int(yte[i]), transform, [lo], [hi], cfg)
                       for i in idx]
            ends = [latent_segment(gen.encoder, xte[i], gen.directions[m], args.delta) for i in idx]
            z0, z1 = torch.stack([a for a, _ in ends]), torch.stack([b for _, b in ends])
            exact = certify_lines(fg, z0, z1, yte[idx], "exact")
            with torch.no_grad():
                moved_gen = (gen.decoder(z1.float()) - gen.decoder(z0.float())).flatten(1).norm(dim=1)
            end = torch.tensor([[hi]], dtype=torch.float64)
            moved_geo = torch.stack([(apply_transform(xte[i].double(), transform, end)[0]
                                      - xte[i].double()).norm() for i in idx])
            deltas = torch.stack([_equal_l2_delta(gen, a, b - a, float(t))
                                  for a, b, t in zip(z0, z1, moved_geo)])
            far = certify_lines(fg, z0, z0 + deltas[:, None] * (z1 - z0), yte[idx], "exact")

            def count(reports) -> str:
                return f"{sum(r.result.verdict.value == 'verified' for r in reports)}/{len(reports)}"

            rows.append(f"| {name} | {m} ({lo:g}..{hi:g}) | {len(idx)} | {count(geo)} | "
                        f"{count(geo_dec)} | {count(exact)} | "
                        f"{float(moved_geo.mean()):.2f} / {float(moved_gen.mean()):.2f} | "
                        f"{count(far)} ({float(deltas.median()) * args.delta:.1f}, "
                        f"{int((deltas >= 40).sum())} capped) |")
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", choices=["segments", "segments-only", "rotation", "matched", "all"],
                   default="all",
                   help="segments: the segment table and then the matched one; segments-only: "
                        "without the matched one; matched: only the matched table; rotation: "
                        "only ±30°; all: every table")
    p.add_argument("--images", type=int, default=20)
    p.add_argument("--train", type=int, default=10000, help="training images used (MNIST or CIFAR-10)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--delta", type=float, default=1.0)
    p.add_argument("--vae-steps", type=int, default=400)
    p.add_argument("--nets", default="all",
                   help="comma-separated networks to train and certify, of "
                        f"{', '.join(NETS)} (default 'all': the first five)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the classifiers' initial weights and batch order (default: "
                        "the state the generator's training leaves, and order seed 0, as in "
                        "the recorded runs); the generator is the same for every seed")
    p.add_argument("--residual", action="store_true",
                   help="generative mutations as the decoded change added to x, clamp01(x + "
                        "G(z + t·δ·d) − G(z)) (segments and generative augmentation; the matched "
                        "table is skipped)")
    p.add_argument("--common", action="store_true",
                   help="certify every network on the same images (the first --images that all "
                        "of them classify correctly) and add the paired comparison table")
    p.add_argument("--no-quant", action="store_true",
                   help="skip the quantitative CROWN bounds in the segment table (ExactLine only)")
    p.add_argument("--out", type=Path, default=None,
                   help="the Markdown file to write (default bench/out/semantic.md, or "
                        "semantic-cifar.md with --cifar)")
    p.add_argument("--digits", action="store_true", help="the embedded 8x8 digits instead")
    p.add_argument("--cifar", action="store_true",
                   help="CIFAR-10 (../shared/data/cifar10: the first --train training images, "
                        "the test batch's first 1,000 images) instead")
    args = p.parse_args()
    chosen = list(DEFAULT_NETS) if args.nets == "all" else [n.strip() for n in args.nets.split(",")]
    if [n for n in chosen if n not in NETS]:
        p.error(f"unknown network(s) in --nets {args.nets!r}; choose from {list(NETS)}")
    torch.set_num_threads(1)
    xtr, ytr, xte, yte = _data(args)
    channels, side = xtr.shape[1], xtr.shape[-1]
    t0 = time.perf_counter()
    gen = build_generator(xtr, xte[:1000], VAEConfig(latent=8, hidden=256, steps=args.vae_steps,
                                                     jacobian_weight=0.05))
    t_gen = time.perf_counter() - t0
    rotate = transform_augmenter("rotate", -30, 30, keep_original=False)
    generative = generative_augmenter(gen, args.delta, residual=args.residual)
    augmenters = {k: rotate if k.endswith("+rot-aug") else generative
                  for k in NETS if k.endswith("-aug")}
    t0 = time.perf_counter()
    if args.seed is not None:  # (without it: the random state the generator's training left)
        torch.manual_seed(args.seed)
    nets = _nets(channels, side)
    graphs = {k: from_torch(train(nets[k], xtr, ytr, args.epochs, augmenters.get(k),
                                  args.seed or 0), (channels, side, side)) for k in chosen}
    acc = {k: float((g(xte).argmax(1) == yte).float().mean()) for k, g in graphs.items()}
    print(f"trained {len(graphs)} classifiers in {time.perf_counter() - t0:.1f} s; test accuracy "
          + ", ".join(f"{k} {v:.3f}" for k, v in acc.items()), flush=True)
    data = "digits 8x8" if args.digits else "CIFAR-10" if args.cifar else "MNIST"
    lines = [f"# Semantic certification ({data})", "",
             "Test accuracy: " + ", ".join(f"{k} {v:.3f}" for k, v in acc.items()), ""]
    if args.part in ("segments", "segments-only", "matched", "all"):
        c = gen.report["continuity"]
        lines += [f"Generator: VAE, 2x256 ReLU decoder, trained in {t_gen:.1f} s; "
                  f"measured bi-Lipschitz C = {c['C']:.3g} (ratios {c['lower']:.3g} .. "
                  f"{c['upper']:.3g}); delta = {args.delta}"
                  + ("; residual mutations clamp01(x + G(z + t·δ·d) − G(z))" if args.residual else ""),
                  "",
                  "Independence (rows: direction moved; columns: |cos| with each mutation's pixel "
                  "change):", ""]
        ind = gen.report["independence"]
        lines += ["| direction | " + " | ".join(ind) + " |", "|---" * (len(ind) + 1) + "|"]
        lines += [f"| {k} | " + " | ".join(f"{v:.2f}" for v in row.values()) + " |"
                  for k, row in ind.items()]
        if args.part != "matched":
            per_image: dict = {}
            lines += [""] + segments_part(args, graphs, gen, xte, yte, per_image) + [""]
            if args.common:
                lines += ["Paired comparison (the same images for every network):", ""]
                lines += paired_part(per_image, gen.directions) + [""]
        if not args.residual and args.part != "segments-only":
            lines += ["", "The same mutation, geometric against generative:", ""]
            lines += matched_part(args, graphs, gen, xte, yte) + [""]
    if args.part in ("rotation", "all"):
        lines += ["Rotation ±30°:", ""] + rotation_part(args, graphs, xte, yte)
    out = args.out or OUT / f"semantic{'-cifar' if args.cifar else ''}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
