"""Geometric and photometric transforms as sets of images, with sound per-pixel bounds.

A :class:`TransformSet` is the set ``{τ(x, p) : p ∈ [lo_b, hi_b]}`` of images obtained from one
image ``x`` by a transform ``τ`` whose parameters ``p`` range over a box (one box per batch
element, so the pieces of a split parameter range bound in one call). Its :meth:`box` is a
sound pixel :class:`~nncert.specs.Box` containing every such image, which any bound method
consumes; splitting the parameter box tightens it (DeepG, Balunović et al., NeurIPS 2019, and
GCert's geometric mutations use the same split-and-bound scheme; here the per-pixel bounds are
intervals).

Transforms (parameters in brackets):

* ``rotate`` [degrees, counter-clockwise about the image centre], ``translate`` [dx, dy in
  pixels], ``scale`` [factor > 0, about the centre], ``shear`` [horizontal shear factor]:
  the image is resampled with bilinear interpolation, zero outside the image. The source
  coordinates of each pixel are bounded by interval arithmetic over the parameter box, and
  the exact minimum and maximum of the bilinear interpolant over that coordinate rectangle are
  taken (on each grid cell the interpolant is bilinear, so its extremes over a sub-rectangle lie
  at the sub-rectangle's corners: the rectangle's corners and its crossings with grid lines).
* ``brightness`` [β: x + β] and ``contrast`` [α: μ + α·(x − μ), μ the image mean], both
  clipped to ``clip``: each pixel is monotone in the parameter, so the bounds are the values at
  the ends of the interval.
* ``blur`` [σ ≥ 0, pixels: Gaussian blur over a 5×5 window] and ``fog`` [α ∈ [0, 1]: a blend
  towards a fixed fog pattern], clipped to ``clip``: see :mod:`.filters` for their bounds
  (blur: weight intervals and a knapsack per pixel; fog: the ends, each pixel being affine).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .. import clock
from ..bounds import compute_bounds
from ..clock import NEVER, Deadline, DeadlineExceededError
from ..errors import ConfigError, ShapeError
from ..result import Counterexample, Result, Verdict
from ..specs.input_sets import AffineBand, Box
from ..specs.output import OutputSpec
from ..specs.problem import VerificationProblem
from . import filters

#: transform name → number of parameters
TRANSFORMS: dict[str, int] = {
    "rotate": 1, "translate": 2, "scale": 1, "shear": 1, "brightness": 1, "contrast": 1,
    "blur": 1, "fog": 1,
}
GEOMETRIC = ("rotate", "translate", "scale", "shear")
_WIDEN = 1e-9  # coordinate intervals are widened by this (float64 rounding of sin/cos/products)


# -- concrete transforms ------------------------------------------------------------------------
def _grid(H: int, W: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    rows = torch.arange(H, dtype=like.dtype, device=like.device).reshape(H, 1).expand(H, W)
    cols = torch.arange(W, dtype=like.dtype, device=like.device).reshape(1, W).expand(H, W)
    return rows, cols, (H - 1) / 2, (W - 1) / 2


def _source(name: str, p: torch.Tensor, H: int, W: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Source (row, col) of every output pixel for parameters p (B, n_params): (B, H, W) each."""
    rows, cols, cy, cx = _grid(H, W, p)
    dy, dx = rows - cy, cols - cx
    v = [p[:, i].reshape(-1, 1, 1) for i in range(p.shape[1])]
    if name == "rotate":
        th = v[0] * (math.pi / 180)
        return cy - torch.sin(th) * dx + torch.cos(th) * dy, cx + torch.cos(th) * dx + torch.sin(th) * dy
    if name == "translate":
        return rows - v[1], cols - v[0]
    if name == "scale":
        return cy + dy / v[0], cx + dx / v[0]
    return rows.expand(p.shape[0], H, W), cols - v[0] * dy  # shear


def bilinear(image: torch.Tensor, r: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """The bilinear interpolant of ``image`` (C, H, W), zero outside it, at real coordinates
    r, c (any equal shapes S): (C, *S)."""
    C, H, W = image.shape
    padded = torch.nn.functional.pad(image, (1, 1, 1, 1))  # grid index k ↦ padded k + 1
    r = r.clamp(-1.0, float(H))
    c = c.clamp(-1.0, float(W))
    r0, c0 = torch.floor(r).clamp(max=H - 1), torch.floor(c).clamp(max=W - 1)
    fr, fc = r - r0, c - c0
    i0, j0 = r0.long() + 1, c0.long() + 1

    def at(i, j):
        return padded[:, i, j]

    top = at(i0, j0) * (1 - fc) + at(i0, j0 + 1) * fc
    bottom = at(i0 + 1, j0) * (1 - fc) + at(i0 + 1, j0 + 1) * fc
    return top * (1 - fr) + bottom * fr


def apply_transform(image: torch.Tensor, name: str, params: torch.Tensor,
                    clip: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
    """τ(image, p) for each row p of params (B, n_params): (B, C, H, W)."""
    _check_name(name)
    params = params.to(image.dtype).reshape(-1, TRANSFORMS[name])
    if name == "brightness":
        return (image + params.reshape(-1, 1, 1, 1)).clamp(*clip)
    if name == "contrast":
        mu = image.mean()
        return (mu + params.reshape(-1, 1, 1, 1) * (image - mu)).clamp(*clip)
    if name == "blur":
        return filters.blur(image, params[:, 0]).clamp(*clip)
    if name == "fog":
        return filters.fog(image, params[:, 0]).clamp(*clip)
    r, c = _source(name, params, image.shape[1], image.shape[2])
    return bilinear(image, r, c).transpose(0, 1)


def _check_name(name: str) -> None:
    if name not in TRANSFORMS:
        raise ConfigError(f"unknown transform {name!r}; choose from {', '.join(TRANSFORMS)}")


# -- sound bounds over a parameter box ----------------------------------------------------------
def _cos_range(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sound [min, max] of cos over [lo, hi] (radians), elementwise."""
    a, b = torch.cos(lo), torch.cos(hi)
    mn, mx = torch.minimum(a, b), torch.maximum(a, b)
    has_max = torch.floor(hi / (2 * math.pi)) >= torch.ceil(lo / (2 * math.pi))
    has_min = torch.floor((hi - math.pi) / (2 * math.pi)) >= torch.ceil((lo - math.pi) / (2 * math.pi))
    mx = torch.where(has_max, torch.ones_like(mx), mx)
    mn = torch.where(has_min, -torch.ones_like(mn), mn)
    return mn, mx


def _times(lo: torch.Tensor, hi: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[lo, hi] · k for a constant (grid) k."""
    a, b = lo * k, hi * k
    return torch.minimum(a, b), torch.maximum(a, b)


def _source_bounds(name: str, lo: torch.Tensor, hi: torch.Tensor, H: int, W: int):
    """Sound intervals of the source (row, col) of every pixel over the parameter boxes
    (B, n_params): (r_lo, r_hi, c_lo, c_hi), each (B, H, W)."""
    rows, cols, cy, cx = _grid(H, W, lo)
    dy, dx = rows - cy, cols - cx
    v_lo = [lo[:, i].reshape(-1, 1, 1) for i in range(lo.shape[1])]
    v_hi = [hi[:, i].reshape(-1, 1, 1) for i in range(hi.shape[1])]
    if name == "rotate":
        t_lo, t_hi = v_lo[0] * (math.pi / 180), v_hi[0] * (math.pi / 180)
        cmn, cmx = _cos_range(t_lo, t_hi)
        smn, smx = _cos_range(t_lo - math.pi / 2, t_hi - math.pi / 2)  # sin θ = cos(θ − π/2)
        a, b = _times(-smx, -smn, dx)
        e, f = _times(cmn, cmx, dy)
        g, h = _times(cmn, cmx, dx)
        m, n = _times(smn, smx, dy)
        return cy + a + e, cy + b + f, cx + g + m, cx + h + n
    if name == "translate":
        return rows - v_hi[1], rows - v_lo[1], cols - v_hi[0], cols - v_lo[0]
    if name == "scale":
        r_a, r_b = _times(1 / v_hi[0], 1 / v_lo[0], dy)
        c_a, c_b = _times(1 / v_hi[0], 1 / v_lo[0], dx)
        return cy + r_a, cy + r_b, cx + c_a, cx + c_b
    s_a, s_b = _times(v_lo[0], v_hi[0], dy)  # shear
    B = lo.shape[0]
    return rows.expand(B, H, W), rows.expand(B, H, W), cols - s_b, cols - s_a


def _candidates(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """lo, hi and every integer strictly between them, padded by repeating lo: (…, K + 2)."""
    first = torch.floor(lo) + 1
    k = int((torch.ceil(hi) - first).clamp(min=0).max()) if lo.numel() else 0
    steps = torch.arange(k, dtype=lo.dtype, device=lo.device)
    inner = first.unsqueeze(-1) + steps
    inner = torch.where(inner < hi.unsqueeze(-1), inner, lo.unsqueeze(-1))
    return torch.cat([lo.unsqueeze(-1), hi.unsqueeze(-1), inner], -1)


def _bilinear_range(image: torch.Tensor, r_lo, r_hi, c_lo, c_hi
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact min and max of the bilinear interpolant over each coordinate rectangle: (B, C, H, W)."""
    rc, cc = _candidates(r_lo, r_hi), _candidates(c_lo, c_hi)  # (B, H, W, Kr), (B, H, W, Kc)
    rr = rc.unsqueeze(-1).expand(*rc.shape, cc.shape[-1])
    cc = cc.unsqueeze(-2).expand(*rc.shape, cc.shape[-1])
    vals = bilinear(image, rr, cc)  # (C, B, H, W, Kr, Kc)
    flat = vals.flatten(-2)
    return flat.amin(-1).transpose(0, 1), flat.amax(-1).transpose(0, 1)


@dataclass(frozen=True, eq=False)
class TransformSet:
    """The images ``τ(image, p)`` for p in the boxes ``[lo[b], hi[b]]`` (B, n_params).

    ``image`` is (C, H, W) in the units of ``clip`` (the photometric transforms clip to it).
    This is not an :class:`~nncert.specs.InputSet` on purpose: its box hull is for bounding
    only; a counterexample must be a transformed image, found by trying parameters."""

    image: torch.Tensor
    transform: str
    lo: torch.Tensor
    hi: torch.Tensor
    clip: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        _check_name(self.transform)
        n = TRANSFORMS[self.transform]
        if self.image.dim() != 3:
            raise ShapeError("transform image (C, H, W)", (0, 0, 0), tuple(self.image.shape))
        if self.lo.dim() != 2 or self.lo.shape != self.hi.shape or self.lo.shape[1] != n:
            raise ShapeError(f"{self.transform} parameter boxes (B, {n})", (1, n),
                             tuple(self.lo.shape))
        if not bool(torch.isfinite(self.lo).all() and torch.isfinite(self.hi).all()):
            raise ConfigError("transform parameter range contains NaN or infinite values")
        if bool((self.lo > self.hi).any()):
            raise ConfigError(f"{self.transform} parameter range has its lower end above its upper end")
        if self.transform == "scale" and bool((self.lo <= 0).any()):
            raise ConfigError("scale factors must be > 0")
        if self.transform == "blur" and bool((self.lo < 0).any()):
            raise ConfigError("blur σ must be ≥ 0")
        if self.transform == "fog" and bool((self.lo < 0).any() or (self.hi > 1).any()):
            raise ConfigError("fog intensities must lie in [0, 1]")

    @property
    def batch_size(self) -> int:
        return self.lo.shape[0]

    def images(self, params: torch.Tensor) -> torch.Tensor:
        """The transformed images at parameters (M, n_params): (M, C, H, W)."""
        return apply_transform(self.image, self.transform, params, self.clip)

    def sample_params(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n parameters in each box: (n, B, n_params)."""
        u = torch.rand((n, *self.lo.shape), generator=generator, dtype=self.lo.dtype)
        return self.lo + u * (self.hi - self.lo)

    def box(self, chunk: int = 16) -> Box:
        """A sound pixel box per parameter box: every τ(image, p), p ∈ [lo[b], hi[b]], lies in
        box b (float64 inside, returned in the image's dtype, widened outward by one ulp)."""
        x = self.image.double()
        lo, hi = self.lo.double(), self.hi.double()
        if self.transform == "blur":
            low, high = filters.blur_bounds(x, lo[:, 0], hi[:, 0])
            low, high = low.clamp(*self.clip), high.clamp(*self.clip)
        elif self.transform in ("brightness", "contrast", "fog"):
            a = apply_transform(x, self.transform, lo, self.clip)
            b = apply_transform(x, self.transform, hi, self.clip)
            low, high = torch.minimum(a, b), torch.maximum(a, b)
        else:
            parts = [self._geometric(x, lo[i:i + chunk], hi[i:i + chunk])
                     for i in range(0, lo.shape[0], chunk)]
            low, high = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        dt = self.image.dtype
        low = torch.nextafter(low.to(dt), torch.tensor(-math.inf, dtype=dt))
        high = torch.nextafter(high.to(dt), torch.tensor(math.inf, dtype=dt))
        return Box(low, high)

    def band(self, sub: int = 8, chunk: int = 16) -> AffineBand:
        """Linear pixel bounds in the parameters (DeepG's idea, made sound by intervals): for
        box b and every u ∈ [0, 1]^K, ``τ(image, lo_b + u·(hi_b − lo_b))`` lies in the band's
        ``offset_b + Σ_k u_k·gens_bk + [e_lo_b, e_hi_b]`` (an
        :class:`~nncert.specs.AffineBand` over the normalised parameters u).

        The plane is the least-squares fit of τ at the (sub + 1)^K grid points of the box; any
        plane would do, since the error interval is what makes the band sound: on each of the
        sub^K sub-boxes, the sub-box's sound pixel box (:meth:`box`) minus the plane's exact
        range there. Computed in float64; the error covers the rounding of the plane to the
        image's dtype, and is widened outward by one ulp in it."""
        if sub < 1:
            raise ConfigError("band: sub must be ≥ 1")
        parts = [self[i:i + chunk]._band(sub) for i in range(0, self.batch_size, chunk)]
        return AffineBand(*(torch.cat([p[j] for p in parts]) for j in range(4)))

    def _band(self, sub: int):
        K, dt = TRANSFORMS[self.transform], self.image.dtype
        x, lo, hi = self.image.double(), self.lo.double(), self.hi.double()
        B, n = lo.shape[0], self.image.numel()
        grid = torch.linspace(0.0, 1.0, sub + 1, dtype=torch.float64)
        U = torch.cartesian_prod(*[grid] * K).reshape(-1, K)  # (M, K) fit points
        imgs = apply_transform(x, self.transform, (lo[:, None] + U * (hi - lo)[:, None])
                               .reshape(-1, K), self.clip).reshape(B, -1, n)
        X = torch.cat([torch.ones(U.shape[0], 1, dtype=torch.float64), U], 1)
        coef = (torch.linalg.pinv(X) @ imgs).to(dt).double()  # (B, K + 1, n), as stored
        offset, gens = coef[:, 0], coef[:, 1:]
        u_lo = torch.cartesian_prod(*[grid[:-1]] * K).reshape(-1, K)  # (S, K) sub-boxes
        u_hi = torch.cartesian_prod(*[grid[1:]] * K).reshape(-1, K)
        # the outer sub-boxes end exactly at lo and hi (lo + 1·(hi − lo) may round below hi)
        p_lo = torch.where(u_lo == 0, lo[:, None], lo[:, None] + u_lo * (hi - lo)[:, None])
        p_hi = torch.where(u_hi == 1, hi[:, None], lo[:, None] + u_hi * (hi - lo)[:, None])
        pieces = TransformSet(x, self.transform, p_lo.reshape(-1, K), p_hi.reshape(-1, K),
                              self.clip).box()
        a, b = gens[:, None] * u_lo[None, :, :, None], gens[:, None] * u_hi[None, :, :, None]
        p_min = offset[:, None] + torch.minimum(a, b).sum(2)  # (B, S, n) plane's range
        p_max = offset[:, None] + torch.maximum(a, b).sum(2)
        slack = 1e-12 * (1.0 + offset.abs() + gens.abs().sum(1))  # float64 rounding
        e_lo = (pieces.lo.reshape(B, -1, n) - p_max).amin(1) - slack
        e_hi = (pieces.hi.reshape(B, -1, n) - p_min).amax(1) + slack
        e_lo = torch.nextafter(e_lo.to(dt), torch.tensor(-math.inf, dtype=dt))
        e_hi = torch.nextafter(e_hi.to(dt), torch.tensor(math.inf, dtype=dt))
        shape = (B, *self.image.shape)
        return (offset.to(dt).reshape(shape), gens.to(dt).reshape(B, K, *self.image.shape),
                e_lo.reshape(shape), e_hi.reshape(shape))

    def _geometric(self, x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor):
        r_lo, r_hi, c_lo, c_hi = _source_bounds(self.transform, lo, hi, x.shape[1], x.shape[2])
        return _bilinear_range(x, r_lo - _WIDEN, r_hi + _WIDEN, c_lo - _WIDEN, c_hi + _WIDEN)

    def split(self) -> TransformSet:
        """Every box bisected along its widest parameter: 2B boxes (left halves, then right)."""
        dim = (self.hi - self.lo).argmax(dim=1)
        rows = torch.arange(self.batch_size)
        mid = (self.lo[rows, dim] + self.hi[rows, dim]) / 2
        hi_left, lo_right = self.hi.clone(), self.lo.clone()
        hi_left[rows, dim], lo_right[rows, dim] = mid, mid
        return TransformSet(self.image, self.transform, torch.cat([self.lo, lo_right]),
                            torch.cat([hi_left, self.hi]), self.clip)

    def __getitem__(self, idx) -> TransformSet:
        lo, hi = self.lo[idx], self.hi[idx]
        if lo.dim() == 1:
            lo, hi = lo.unsqueeze(0), hi.unsqueeze(0)
        return TransformSet(self.image, self.transform, lo, hi, self.clip)


def uniform_pieces(image: torch.Tensor, transform: str, lo, hi, pieces: int,
                   clip: tuple[float, float] = (0.0, 1.0)) -> TransformSet:
    """The parameter box [lo, hi] cut into ``pieces`` equal parts along each parameter."""
    _check_name(transform)
    n = TRANSFORMS[transform]
    lo_t = torch.as_tensor(lo, dtype=torch.float64).reshape(n)
    hi_t = torch.as_tensor(hi, dtype=torch.float64).reshape(n)
    if pieces < 1:
        raise ConfigError("pieces must be ≥ 1")
    edges = [torch.linspace(float(a), float(b), pieces + 1, dtype=torch.float64)
             for a, b in zip(lo_t, hi_t)]
    starts = torch.cartesian_prod(*[e[:-1] for e in edges]).reshape(-1, n)
    ends = torch.cartesian_prod(*[e[1:] for e in edges]).reshape(-1, n)
    return TransformSet(image, transform, starts, ends, clip)


# -- deciding robustness over a parameter range --------------------------------------------------
#: what a bound method is given for a parameter box (TransformConfig.pixels)
PIXEL_BOUNDS = ("box", "linear", "both")


def _bound_pieces(graph, part: TransformSet, spec: OutputSpec, config: TransformConfig,
                  deadline: Deadline) -> torch.Tensor:
    """Sound lower bounds (B, R) of the spec rows on every image of each parameter box of
    ``part``: the bound method on the pieces' pixel sets (``config.pixels``); with "both",
    the larger of the two bounds (each is sound)."""
    sets = {"box": (part.box,), "linear": (lambda: part.band(config.band_sub),),
            "both": (part.box, lambda: part.band(config.band_sub))}[config.pixels]
    lower = None
    for make in sets:
        b = compute_bounds(VerificationProblem(graph, make(), spec), config.method,
                           config.method_config, deadline)
        lower = b.lower if lower is None else torch.maximum(lower, b.lower)
    return lower


@dataclass(frozen=True)
class TransformConfig:
    """``method``: a bound method (``nncert.bounds.METHODS``). ``initial_pieces`` per parameter,
    ``max_pieces``: most parameter boxes bounded in all; ``batch``: boxes per bound call;
    ``probes``: random parameters tried on the concrete graph before bounding.
    ``pixels``: what the bound method gets for a parameter box: ``"linear"`` (pixels linear
    in the parameters plus an error interval, :meth:`TransformSet.band`, with ``band_sub``
    sub-boxes per parameter; on MNIST rotations ±30° it certifies what boxes certify with
    3–4× fewer pieces), ``"box"`` (interval pixel bounds, :meth:`TransformSet.box`), or
    ``"both"`` (the better bound of the two, twice the cost per piece, never more pieces than
    boxes)."""

    method: str = "crown"
    initial_pieces: int = 8
    max_pieces: int = 1024
    batch: int = 32
    probes: int = 32
    seed: int = 0
    method_config: object = None
    pixels: str = "linear"
    band_sub: int = 8

    def __post_init__(self) -> None:
        if min(self.initial_pieces, self.max_pieces, self.batch) < 1 or self.probes < 0:
            raise ConfigError("initial_pieces, max_pieces and batch must be ≥ 1, probes ≥ 0")
        if self.pixels not in PIXEL_BOUNDS or self.band_sub < 1:
            raise ConfigError(f"pixels must be one of {PIXEL_BOUNDS}, band_sub ≥ 1; "
                              f"got {self.pixels!r}, {self.band_sub}")


@dataclass(frozen=True, eq=False)
class TransformReport:
    """The verdict over the whole parameter range (a Result; FALSIFIED carries the transformed
    image at ``param`` re-run on the concrete graph), the share of the parameter box's volume
    proved robust (a sound lower bound of the robust share), and the parameter boxes proved
    robust, ``proved_lo``/``proved_hi`` (M, n_params) (None: none recorded)."""

    result: Result
    proved_fraction: float
    param: torch.Tensor | None = None
    proved_lo: torch.Tensor | None = None
    proved_hi: torch.Tensor | None = None


def _violating(graph, images: torch.Tensor, spec) -> torch.Tensor:
    with torch.no_grad():
        y = graph.forward(images.to(graph.device, graph.dtype)).flatten(1)
    return ~spec.expand(images.shape[0]).holds(y)


def _falsified(graph, tset: TransformSet, spec, params: torch.Tensor, t0: float, stats):
    """A FALSIFIED report when one of ``params`` (M, n) gives a misclassified image, else None."""

    if params.numel() == 0:
        return None
    images = tset.images(params).to(graph.dtype)
    bad = _violating(graph, images, spec).nonzero().flatten()
    if bad.numel() == 0:
        return None
    i = int(bad[0])
    with torch.no_grad():
        y = graph.forward(images[i:i + 1])[0]
    stats["param"] = params[i].tolist()
    res = Result(Verdict.FALSIFIED, f"transform-{stats['method']}", clock.now() - t0,
                 counterexample=Counterexample(images[i].cpu(), y.cpu()), stats=stats)
    return TransformReport(res, 0.0, params[i])


def certify_transform(graph, image: torch.Tensor, label: int, transform: str, lo, hi,
                      config: TransformConfig = TransformConfig(), deadline: Deadline = NEVER
                      ) -> TransformReport:
    """Is ``graph`` robust at ``label`` for every ``τ(image, p)``, p ∈ [lo, hi]?

    VERIFIED when every piece of the split parameter box is proved by the bound method on its
    sound pixel box; FALSIFIED when a concrete parameter's image is misclassified (probes, the
    centres of undecided pieces, or any point of a piece proved violated everywhere); otherwise
    UNKNOWN (budget spent) or TIMEOUT (deadline passed)."""

    t0, stats = clock.now(), {"method": config.method, "pieces_bounded": 0}
    spec = OutputSpec.robustness([label], graph.num_outputs, dtype=graph.dtype, device=graph.device)
    todo = uniform_pieces(image, transform, lo, hi, config.initial_pieces)
    total = float(torch.prod(todo.hi - todo.lo, 1).sum()) or 1.0
    gen = torch.Generator().manual_seed(config.seed)
    probes = todo.sample_params(max(1, config.probes // todo.batch_size) if config.probes else 0,
                                gen).reshape(-1, todo.lo.shape[1])
    probes = torch.cat([probes, todo.lo[:1], todo.hi[-1:]]) if config.probes else probes
    found = _falsified(graph, todo, spec, probes, t0, stats)
    if found is not None:
        return found
    proved, status, boxes = 0.0, Verdict.UNKNOWN, []
    while todo.batch_size:
        if stats["pieces_bounded"] >= config.max_pieces or deadline.expired():
            status = Verdict.TIMEOUT if deadline.expired() else Verdict.UNKNOWN
            break
        take = min(config.batch, todo.batch_size, config.max_pieces - stats["pieces_bounded"])
        part, rest = todo[:take], todo[take:] if take < todo.batch_size else None
        stats["pieces_bounded"] += take
        try:
            lower = _bound_pieces(graph, part, spec.expand(take), config, deadline)
        except DeadlineExceededError:
            status = Verdict.TIMEOUT
            break
        ok = spec.expand(take).proved(lower).cpu()
        proved += float(torch.prod(part.hi - part.lo, 1)[ok].sum())
        boxes.append((part.lo[ok], part.hi[ok]))
        found = _falsified(graph, part, spec, ((part.lo + part.hi) / 2)[~ok], t0, stats)
        if found is not None:
            return TransformReport(found.result, proved / total, found.param, *_stack(boxes))
        open_ = part[~ok].split() if bool((~ok).any()) else None
        todo = _join(rest, open_, part)
    else:
        status = Verdict.VERIFIED
    stats["proved_fraction"] = proved / total
    name = f"transform-{config.method}"
    return TransformReport(Result(status, name, clock.now() - t0, stats=stats), proved / total,
                           None, *_stack(boxes))


def _stack(boxes: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor | None, ...]:
    if not boxes:
        return None, None
    return torch.cat([b[0] for b in boxes]), torch.cat([b[1] for b in boxes])


def _join(a: TransformSet | None, b: TransformSet | None, like: TransformSet) -> TransformSet:
    sets = [s for s in (a, b) if s is not None]
    if not sets:
        empty = like.lo[:0]
        return _derived_empty(like, empty)
    if len(sets) == 1:
        return sets[0]
    return TransformSet(like.image, like.transform, torch.cat([s.lo for s in sets]),
                        torch.cat([s.hi for s in sets]), like.clip)


def _derived_empty(like: TransformSet, empty: torch.Tensor) -> TransformSet:
    return TransformSet(like.image, like.transform, empty, empty.clone(), like.clip)
