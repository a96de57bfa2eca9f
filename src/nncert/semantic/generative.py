"""Generators for perceptual mutations (GCert, Yuan, Wang & Su, USENIX Security 2023).

A VAE whose decoder G is a ReLU network (so f∘G stays piecewise linear and ExactLine applies):
``Linear–ReLU–Linear–ReLU–Linear`` followed by the clamp to [0, 1] written with ReLUs,
``clamp(u, 0, 1) = relu(u) − relu(u − 1)``. GCert's two requirements, here:

* **Continuity** (bi-Lipschitz G): training adds ``jacobian_weight · E‖J_G(z)·u‖²`` (u standard
  normal, a Hutchinson estimate of ‖J_G‖_F², by a finite difference), and
  :func:`measure_continuity` estimates the constants on held-out latent pairs:
  ``lower ≤ ‖G(z) − G(z')‖ / ‖z − z'‖ ≤ upper`` and ``C = max(upper, 1 / lower)``.
* **Independence**: a mutation's direction is the mean latent shift ``μ(τ(x)) − μ(x)`` over
  data pairs; directions are orthogonalised in order (Gram–Schmidt), and a local mutation's
  direction is projected onto the null space of the decoder's Jacobian restricted to the pixels
  outside its region (it then changes, to first order, nothing outside the region).
  :func:`independence` measures how much each direction performs each mutation.

The decoder is exported as a Graph (and ONNX) with :func:`decoder_graph`; segments
``z → z + δ·d`` in its latent space are then certified with :mod:`.segments` and
:mod:`.quantitative` on ``compose(decoder, classifier)``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, DataError, ModelError, ShapeError
from ..models import ops
from ..models.graph import Graph, Node, sequential
from ..models.to_onnx import to_onnx
from ..utils import write_atomic
from .transforms import apply_transform


@dataclass(frozen=True)
class VAEConfig:
    """Latent size, hidden width, full-batch Adam steps, learning rate, KL weight ``beta``,
    continuity weight ``jacobian_weight`` (0 disables it), finite-difference step, seed."""

    latent: int = 8
    hidden: int = 128
    steps: int = 400
    lr: float = 3e-3
    beta: float = 0.5
    jacobian_weight: float = 0.0
    fd_step: float = 1e-2
    batch: int = 512
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.latent, self.hidden, self.steps, self.batch) < 1:
            raise ConfigError("latent, hidden, steps and batch must be ≥ 1")
        if self.lr <= 0 or self.beta < 0 or self.jacobian_weight < 0 or self.fd_step <= 0:
            raise ConfigError("lr and fd_step must be > 0; beta and jacobian_weight ≥ 0")


def clamp01(u: torch.Tensor) -> torch.Tensor:
    """``clamp(u, 0, 1)`` as the decoder graph computes it: ``relu(u) − relu(u − 1)``."""
    return torch.relu(u) - torch.relu(u - 1)


class VAE(nn.Module):
    """Encoder x ↦ (μ, log σ²); decoder z ↦ clamp01(MLP(z)) of the image shape."""

    def __init__(self, image_shape: tuple[int, ...], latent: int, hidden: int):
        super().__init__()
        n = 1
        for s in image_shape:
            n *= int(s)
        self.image_shape = tuple(int(s) for s in image_shape)
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(n, hidden), nn.ReLU(),
                                     nn.Linear(hidden, hidden), nn.ReLU())
        self.mu, self.logvar = nn.Linear(hidden, latent), nn.Linear(hidden, latent)
        self.decoder = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                     nn.ReLU(), nn.Linear(hidden, n))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        return self.mu(h), self.logvar(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return clamp01(self.decoder(z)).reshape(z.shape[0], *self.image_shape)


def _jacobian_penalty(vae: VAE, z: torch.Tensor, step: float) -> torch.Tensor:
    """Hutchinson estimate of the mean ‖J_G(z)‖_F² by a finite difference along u ~ N(0, I)."""
    u = torch.randn_like(z)
    diff = (vae.decode(z + step * u) - vae.decode(z)).flatten(1) / step
    return (diff * diff).sum(1).mean()


def train_vae(images: torch.Tensor, config: VAEConfig = VAEConfig()) -> VAE:
    """A VAE trained on ``images`` (N, C, H, W) in [0, 1] (Bernoulli-style squared loss)."""
    if images.dim() != 4:
        raise ShapeError("training images (N, C, H, W)", (0, 0, 0, 0), tuple(images.shape))
    torch.manual_seed(config.seed)
    x_all = images.float()
    vae = VAE(tuple(x_all.shape[1:]), config.latent, config.hidden)
    opt = torch.optim.Adam(vae.parameters(), lr=config.lr)
    gen = torch.Generator().manual_seed(config.seed)
    for _ in range(config.steps):
        idx = torch.randint(0, x_all.shape[0], (min(config.batch, x_all.shape[0]),), generator=gen)
        x = x_all[idx]
        mu, logvar = vae.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        rec = F.mse_loss(vae.decode(z), x, reduction="sum") / x.shape[0]
        kl = -0.5 * torch.mean(torch.sum(1 + logvar - mu**2 - logvar.exp(), 1))
        loss = rec + config.beta * kl
        if config.jacobian_weight:
            loss = loss + config.jacobian_weight * _jacobian_penalty(vae, mu, config.fd_step)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return vae.eval()


def _linear(m: nn.Linear) -> ops.Linear:
    return ops.Linear(m.weight.detach().clone(), m.bias.detach().clone())


def decoder_graph(vae: VAE) -> Graph:
    """The decoder as a Graph from the latent (latent,) to the image shape, equal to
    ``vae.decode``: the clamp is ``relu(u) − relu(u − 1)`` (two ReLU nodes and a Sub, no dense
    identity matrices), then a Reshape."""
    layers = [m for m in vae.decoder if isinstance(m, nn.Linear)]
    n = layers[-1].out_features
    body = sequential([_linear(layers[0]), ops.ReLU(), _linear(layers[1]), ops.ReLU(),
                       _linear(layers[2])], (layers[0].in_features,), prefix="G")
    tail = clamp01_nodes(body.output_name, torch.ones(n), ("G_shift", "G_hi", "G_lo", "G_clamp"))
    tail.append(Node("G_image", ops.Reshape(vae.image_shape), ("G_clamp",)))
    return Graph([*body.nodes, *tail], body.input_shape, body.input_name)


def clamp01_nodes(src: str, ones: torch.Tensor, names: tuple[str, str, str, str]) -> list[Node]:
    """Nodes computing ``clamp(src, 0, 1)`` as :func:`clamp01` does, ``relu(u) − relu(u − 1)``
    (``ones``: a tensor of ones of src's shape; ``names``: the shift, two ReLU and Sub nodes,
    the last one the clamped output): piecewise linear, so ExactLine and every bound method
    take it as it is."""
    shift, hi, lo, out = names
    return [Node(hi, ops.ReLU(), (src,)),
            Node(shift, ops.ElementwiseAffine(None, -ones), (src,)),
            Node(lo, ops.ReLU(), (shift,)),
            Node(out, ops.Sub(), (hi, lo))]


def encoder_graph(vae: VAE) -> Graph:
    """The encoder's mean μ as a Graph from the image shape to (latent,)."""
    layers = [m for m in vae.encoder if isinstance(m, nn.Linear)]
    body: list[ops.Op] = [ops.Flatten(), _linear(layers[0]), ops.ReLU(), _linear(layers[1]),
                          ops.ReLU(), _linear(vae.mu)]
    return sequential(body, vae.image_shape, prefix="E")


# -- mutations and their latent directions ------------------------------------------------------
def thicken(x: torch.Tensor, amount: float = 0.5) -> torch.Tensor:
    """Stroke thickening: a blend towards the 3×3 grey dilation (max filter)."""
    return (1 - amount) * x + amount * F.max_pool2d(x, 3, 1, 1)


def local_thicken(x: torch.Tensor, mask: torch.Tensor, amount: float = 0.5) -> torch.Tensor:
    """A local mutation: thicken the strokes inside ``mask`` (H, W) only."""
    return torch.where(mask.bool(), thicken(x, amount), x)


def mutate(x: torch.Tensor, name: str) -> torch.Tensor:
    """The mutations GCert learns, on a batch (N, C, H, W) in [0, 1]: ``rotate`` (30°),
    ``scale`` (×1.25), ``thickness``, ``brightness`` (×0.6 of the ink), ``local`` (thicker
    bottom half) and, on colour images, ``colour`` (a warm cast: red ×1.25, blue ×0.75)."""
    if name == "rotate":
        return torch.stack([apply_transform(xi, "rotate", torch.tensor([[30.0]]))[0] for xi in x])
    if name == "scale":
        return torch.stack([apply_transform(xi, "scale", torch.tensor([[1.25]]))[0] for xi in x])
    if name == "thickness":
        return thicken(x)
    if name == "brightness":
        return x * 0.6
    if name == "local":
        return local_thicken(x, local_mask(x.shape[-2:]))
    if name == "colour":
        if x.shape[1] != 3:
            raise ConfigError(f"the colour mutation needs 3-channel images, got {x.shape[1]} "
                              "channel(s)")
        cast = torch.tensor([1.25, 1.0, 0.75], dtype=x.dtype, device=x.device)
        return (x * cast.reshape(1, 3, 1, 1)).clamp(0, 1)
    raise ConfigError(f"unknown mutation {name!r}; choose from {', '.join(MUTATIONS)}")


#: every mutation; the defaults by image kind: strokes for grey images, colour for RGB ones
MUTATIONS = ("rotate", "scale", "thickness", "brightness", "local", "colour")
GREY_MUTATIONS = ("rotate", "scale", "thickness", "brightness", "local")
COLOUR_MUTATIONS = ("rotate", "scale", "brightness", "colour", "local")


def default_mutations(channels: int) -> tuple[str, ...]:
    """The mutations learnt by default for images of ``channels`` channels."""
    return COLOUR_MUTATIONS if channels == 3 else GREY_MUTATIONS


def local_mask(hw) -> torch.Tensor:
    """The region of the local mutation: the bottom half of the image."""
    H, W = int(hw[0]), int(hw[1])
    m = torch.zeros(H, W)
    m[H // 2:] = 1
    return m


@torch.no_grad()
def mutation_direction(vae: VAE, x: torch.Tensor, x_mutated: torch.Tensor) -> torch.Tensor:
    """The mean latent shift ``μ(x_mutated) − μ(x)`` over the pairs: (latent,)."""
    return (vae.encode(x_mutated.float())[0] - vae.encode(x.float())[0]).mean(0)


def orthogonalise(directions: torch.Tensor) -> torch.Tensor:
    """Gram–Schmidt in the given order, each row keeping its own length: row i is the part of
    direction i orthogonal to rows 0..i−1, rescaled to direction i's norm."""
    out: list[torch.Tensor] = []
    for d in directions:
        v = d.clone()
        for u in out:
            v = v - (v @ u) / (u @ u) * u
        out.append(v * (d.norm() / v.norm().clamp_min(1e-12)))
    return torch.stack(out)


def _jacobians(vae: VAE, z: torch.Tensor) -> list[torch.Tensor]:
    return [torch.autograd.functional.jacobian(lambda v: vae.decode(v[None])[0].flatten(), zi)
            for zi in z]


def local_projection(vae: VAE, z: torch.Tensor, direction: torch.Tensor, mask: torch.Tensor,
                     keep: float = 0.5) -> torch.Tensor:
    """``direction`` projected onto the latent subspace that changes the pixels inside ``mask``
    most relative to those outside it.

    With A = Σ J_outᵀJ_out and B = Σ J_inᵀJ_in (the decoder's Jacobians at the latent points z,
    (M, latent), split by the mask), the generalized eigenvectors of (A, B) with the smallest
    ratios vᵀAv / vᵀBv (the share ``keep`` of them, at least one) span the most local
    directions; the direction is projected onto their span (least squares). With fewer latent
    dimensions than outside pixels an exact null space of J_out is usually {0}, hence this."""
    if not 0 < keep <= 1:
        raise ConfigError(f"keep must lie in (0, 1], got {keep}")
    inside = mask.bool().expand(vae.image_shape).flatten()
    A = sum(J[~inside].T @ J[~inside] for J in _jacobians(vae, z)).double()
    B = sum(J[inside].T @ J[inside] for J in _jacobians(vae, z)).double()
    B = B + 1e-9 * torch.trace(B) * torch.eye(B.shape[0], dtype=B.dtype)
    L = torch.linalg.cholesky(B)
    Linv = torch.linalg.inv(L)
    _, U = torch.linalg.eigh(Linv @ A @ Linv.T)  # ascending ratios
    W = (Linv.T @ U)[:, : max(1, round(keep * U.shape[1]))]
    coef = torch.linalg.lstsq(W, direction.double().unsqueeze(1)).solution
    return (W @ coef).squeeze(1).to(direction.dtype)


def outside_leakage(vae: VAE, z: torch.Tensor, direction: torch.Tensor, mask: torch.Tensor
                    ) -> float:
    """Mean over z of ‖J_out·d‖ / ‖J·d‖: the share of the first-order image change along d
    that falls outside ``mask`` (0: purely local)."""
    outside = ~mask.bool().expand(vae.image_shape).flatten()
    out = []
    for J in _jacobians(vae, z):
        out.append(float((J[outside] @ direction).norm() / (J @ direction).norm().clamp_min(1e-30)))
    return sum(out) / len(out)


# -- measurements -------------------------------------------------------------------------------
@torch.no_grad()
def measure_continuity(vae: VAE, images: torch.Tensor, pairs: int = 2000, seed: int = 0
                       ) -> dict[str, float]:
    """Bi-Lipschitz estimates on latent pairs (μ of random held-out images, paired at random):
    ``lower``/``upper`` are the min/max of ‖G(z) − G(z')‖₂ / ‖z − z'‖₂ and ``C`` is
    ``max(upper, 1/lower)`` (estimates from samples, not bounds)."""
    g = torch.Generator().manual_seed(seed)
    mu = vae.encode(images.float())[0]
    i = torch.randint(0, mu.shape[0], (pairs,), generator=g)
    j = torch.randint(0, mu.shape[0], (pairs,), generator=g)
    keep = i != j
    za, zb = mu[i[keep]], mu[j[keep]]
    ratio = (vae.decode(za) - vae.decode(zb)).flatten(1).norm(dim=1) / (za - zb).norm(dim=1)
    lo, hi = float(ratio.min()), float(ratio.max())
    return {"lower": lo, "upper": hi, "C": max(hi, 1.0 / max(lo, 1e-12)),
            "median": float(ratio.median())}


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)


@torch.no_grad()
def independence(vae: VAE, images: torch.Tensor, directions: dict[str, torch.Tensor]
                 ) -> dict[str, dict[str, float]]:
    """``M[i][j]``: mean |cos| between the image change of moving z = μ(x) along direction i
    (``G(z + d_i) − G(z)``) and the pixel change of mutation j on the decoded image
    (``τ_j(G(z)) − G(z)``). High on the diagonal: the direction does its mutation; low off it:
    it leaves the other mutations alone."""
    z = vae.encode(images.float())[0]
    base = vae.decode(z)
    change = {j: (mutate(base, j) - base).flatten(1) for j in directions}
    out: dict[str, dict[str, float]] = {}
    for i, d in directions.items():
        moved = (vae.decode(z + d) - base).flatten(1)
        out[i] = {j: float(_cos(moved, change[j]).abs().mean()) for j in directions}
    return out


# -- a trained generator with its directions, saved as ONNX + npz + JSON -------------------------
@dataclass(frozen=True, eq=False)
class Generator:
    """A decoder and encoder (Graphs), the named latent directions (orthogonalised; the local
    one projected), and the measurements taken when it was built."""

    decoder: Graph
    encoder: Graph
    directions: dict[str, torch.Tensor]
    report: dict


def build_generator(train: torch.Tensor, held_out: torch.Tensor, config: VAEConfig = VAEConfig(),
                    mutations: tuple[str, ...] | None = None, pairs: int = 500) -> Generator:
    """Train a VAE on ``train``, learn one direction per mutation (default:
    :func:`default_mutations` of the images' channels) from ``pairs`` data pairs
    (x, τ(x)), project the local one, orthogonalise them (the local one first, so it keeps its
    projection; then the others in the order given), and measure the continuity, the local
    direction's outside leakage and the independence on ``held_out``."""
    mutations = mutations or default_mutations(int(train.shape[1]))
    vae = train_vae(train, config)
    x = train[:pairs].float()
    dirs = {m: mutation_direction(vae, x, mutate(x, m)) for m in mutations}
    leak = {}
    if "local" in dirs:
        with torch.no_grad():
            z = vae.encode(x[:32])[0]
        mask = local_mask(x.shape[-2:])
        leak["before"] = outside_leakage(vae, z, dirs["local"], mask)
        dirs["local"] = local_projection(vae, z, dirs["local"], mask)
        leak["after"] = outside_leakage(vae, z, dirs["local"], mask)
    order = sorted(dirs, key=lambda m: m != "local")  # the projected local direction is kept
    ortho = dict(zip(order, orthogonalise(torch.stack([dirs[m] for m in order]))))
    ortho = {m: ortho[m] for m in dirs}
    if "local" in dirs:
        leak["after_orthogonalisation"] = outside_leakage(vae, z, ortho["local"], mask)
    report = {"config": config.__dict__, "continuity": measure_continuity(vae, held_out),
              "local_outside_leakage": leak,
              "independence": independence(vae, held_out, ortho),
              "direction_norms": {k: float(v.norm()) for k, v in ortho.items()}}
    return Generator(decoder_graph(vae), encoder_graph(vae), ortho, report)


def save_generator(gen: Generator, directory) -> list[Path]:
    """Write decoder.onnx, encoder.onnx, directions.npz (no pickles) and report.json."""


    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    paths = [to_onnx(gen.decoder, d / "decoder.onnx"), to_onnx(gen.encoder, d / "encoder.onnx")]
    names = list(gen.directions)
    vecs = np.stack([gen.directions[n].detach().double().numpy() for n in names])
    np.savez(d / "directions.npz", names=np.array(names, dtype="U32"), vectors=vecs)
    write_atomic(d / "report.json", json.dumps(gen.report, indent=2, default=str) + "\n")
    return [*paths, d / "directions.npz", d / "report.json"]


def load_directions(path) -> dict[str, torch.Tensor]:
    """The named directions of a directions.npz (read without pickles)."""


    p = Path(path)
    if not p.is_file():
        raise DataError(f"directions file not found: {p}")
    try:
        with np.load(p, allow_pickle=False) as f:
            names, vecs = [str(n) for n in f["names"]], np.asarray(f["vectors"], dtype=np.float64)
    except (ValueError, KeyError, OSError) as e:
        raise DataError(f"{p}: not a directions file (npz with 'names' and 'vectors'): {e}") from e
    if vecs.ndim != 2 or vecs.shape[0] != len(names) or not np.isfinite(vecs).all():
        raise DataError(f"{p}: 'vectors' must be a finite (len(names), latent) array")
    return {n: torch.from_numpy(v.copy()) for n, v in zip(names, vecs)}


def load_generator(directory) -> Generator:
    """The generator a :func:`save_generator` call wrote to ``directory`` (ONNX graphs and an
    npz read without pickles; ``report.json`` if present, else an empty report). A clear
    ModelError when the directory or its files are missing or do not fit together."""
    from ..models import load

    d = Path(directory)
    if not d.is_dir():
        raise ModelError(f"a generator must be a directory written by train-generator: {d}")
    for name in ("decoder.onnx", "encoder.onnx", "directions.npz"):
        if not (d / name).is_file():
            raise ModelError(f"{d}: no {name} (a generator directory holds decoder.onnx, "
                             "encoder.onnx and directions.npz)")
    decoder, encoder = load(d / "decoder.onnx"), load(d / "encoder.onnx")
    directions = load_directions(d / "directions.npz")
    latent = int(np.prod(decoder.input_shape))
    if encoder.num_outputs != latent:
        raise ModelError(f"{d}: the encoder makes {encoder.num_outputs} latent values, the "
                         f"decoder reads {latent}")
    for name, v in directions.items():
        if v.numel() != latent:
            raise ModelError(f"{d}: direction {name!r} has {v.numel()} values, the latent {latent}")
    try:
        report = json.loads((d / "report.json").read_text())
    except (OSError, ValueError):
        report = {}
    return Generator(decoder, encoder, directions, report)
