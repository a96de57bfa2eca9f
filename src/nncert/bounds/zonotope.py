"""Zonotope bound propagation: DeepZono (Singh et al., NeurIPS 2018, "Fast and Effective
Robustness Certification") and the DiffAI ReLU transformers zBox, zSwitch, zSmooth and the
HybridZonotope (Mirman et al., ICML 2018, "Differentiable Abstract Interpretation for Provably
Robust Neural Networks"); AI2 (Gehr et al., S&P 2018) introduced the domain for networks.

An element is ``x = center + Σ_g generators[g]·ε_g + β`` with noise symbols ``ε_g ∈ [-1, 1]``
shared by every node and an uncorrelated box term ``|β| ≤ box`` (DiffAI's ``beta``; zero for a
pure zonotope). Affine ops are exact; every nonlinearity is replaced, per neuron, by a sound
linear relaxation ``f(x) ∈ λ·x + μ ± e`` over the neuron's current bounds ``[l, u]``, and the
fresh error ``e`` becomes either new generators (fresh noise symbols) or box term.

Soundness: for every input ``x`` of the set there are noise values under which every node's
element contains that node's concrete value. Generators are aligned by index across the whole
graph: a walk keeps one count of the noise symbols used so far, so branches of a DAG never reuse
an index for different symbols, and shorter generator lists are zero-padded before combining.

Everything is plain differentiable torch (no in-place updates on tracked tensors), batched over
problems and on the device of the input tensors, so DiffAI-style training can backpropagate
through :func:`zonotope_walk` and :func:`zonotope_spec_bounds`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..models import ops
from ..models.graph import Graph
from ..specs.input_sets import Box, InputSet, LpBall
from ..specs.output import OutputSpec
from ..specs.problem import VerificationProblem
from .core import Bounds, Interval, map_stacked
from .traversal import forward_walk

RELU_RULES = ("deepzono", "zbox", "zswitch", "zsmooth", "hybrid")


@dataclass(frozen=True)
class ZonotopeConfig:
    """How nonlinearities are relaxed.

    ``relu`` (also used for LeakyReLU) picks the per-neuron relaxation of an unstable neuron:

    * ``"deepzono"``: minimal-area parallelogram, slope ``λ = (u − s·l)/(u − l)`` (Singh 2018).
    * ``"zbox"``: the neuron's interval ``[f(l), f(u)]``, correlations dropped (DiffAI zBox).
    * ``"zswitch"``: per neuron, zBox or the slope-1 "zDiag" relaxation, whichever has the
      smaller area (DiffAI). DeepZono's slope always has a smaller area than the box, so the
      switch is between the two slope-extremes as in DiffAI.
    * ``"zsmooth"``: the convex combination ``w·zDiag + (1 − w)·zBox`` with ``w = u/(u − l)``,
      continuous in the bounds (DiffAI).
    * ``"hybrid"``: DiffAI's HybridZonotope ReLU: zBox whose error goes to the box term.

    ``box_errors`` sends every fresh error term to the box term instead of new generators (the
    HybridZonotope representation; DiffAI uses it for all its rules). ``"hybrid"`` implies it.
    """

    relu: str = "deepzono"
    box_errors: bool = False

    def __post_init__(self) -> None:
        if self.relu not in RELU_RULES:
            raise ConfigError(f"zonotope relu rule {self.relu!r} unknown; choose from "
                              f"{', '.join(RELU_RULES)}")

    @property
    def errors_to_box(self) -> bool:
        return self.box_errors or self.relu == "hybrid"


# -- the element ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Zonotope:
    """``center + Σ_g generators[:, g]·ε_g ± box``: center (B, *shape), generators
    (B, G, *shape), box (B, *shape) ≥ 0 (``None`` means zero: a pure zonotope)."""

    center: torch.Tensor
    generators: torch.Tensor
    box: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.box is None:
            object.__setattr__(self, "box", torch.zeros_like(self.center))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.center.shape[1:])

    @property
    def num_generators(self) -> int:
        return self.generators.shape[1]

    @property
    def radius(self) -> torch.Tensor:
        return self.generators.abs().sum(dim=1) + self.box

    @property
    def lower(self) -> torch.Tensor:
        return self.center - self.radius

    @property
    def upper(self) -> torch.Tensor:
        return self.center + self.radius

    def padded(self, count: int) -> torch.Tensor:
        """The generators zero-padded to ``count`` (trailing, never-used noise symbols)."""
        extra = count - self.num_generators
        if extra <= 0:
            return self.generators
        pad = self.generators.new_zeros((self.generators.shape[0], extra, *self.shape))
        return torch.cat([self.generators, pad], dim=1)


class _ScaledBasis(Zonotope):
    """A zonotope whose generators are ``scale[b, g]·basis[g]``: one basis shared by the batch
    (the box input's unit vectors and their images through the affine ops that follow it),
    scaled per element by the box radii. Affine ops map the G basis vectors once instead of
    B·G generators; the generators are materialised only when a later op reads them."""

    def __init__(self, center: torch.Tensor, basis: torch.Tensor, scale: torch.Tensor,
                 box: torch.Tensor | None = None):
        object.__setattr__(self, "center", center)
        object.__setattr__(self, "basis", basis)  # (G, *shape)
        object.__setattr__(self, "scale", scale)  # (B, G)
        object.__setattr__(self, "box", torch.zeros_like(center) if box is None else box)

    @property
    def generators(self) -> torch.Tensor:  # type: ignore[override]
        s = self.scale.reshape(*self.scale.shape, *[1] * (self.basis.dim() - 1))
        return s * self.basis.unsqueeze(0)

    @property
    def num_generators(self) -> int:
        return self.basis.shape[0]

    @property
    def radius(self) -> torch.Tensor:
        flat = self.basis.reshape(self.basis.shape[0], -1).abs()
        return (self.scale.abs() @ flat).reshape(self.center.shape) + self.box


def fresh_generators(err: torch.Tensor) -> torch.Tensor:
    """One new generator per neuron with ``err > 0``, (B, *s) → (B, k, *s) where k is the
    largest such count over the batch; neuron n of batch b gets its own row of value err."""
    B = err.shape[0]
    flat = err.reshape(B, -1)
    mask = flat > 0
    k = int(mask.sum(dim=1).max()) if flat.numel() else 0
    slot = torch.cumsum(mask.long(), dim=1) - 1
    rows = torch.arange(k, device=err.device).view(1, k, 1)
    onehot = (slot.unsqueeze(1) == rows) & mask.unsqueeze(1)
    return (onehot.to(err.dtype) * flat.unsqueeze(1)).reshape(B, k, *err.shape[1:])


# -- the walk context ------------------------------------------------------------------------


class _Walk:
    """Per-walk state: the config, how many noise symbols are in use (so new ones get fresh
    indices), and, for a set that is not a box (an L2 ball, ...), that set: its first ``n_in``
    symbols are then the input dims, ``x = box_center + box_radius·ε``."""

    def __init__(self, config: ZonotopeConfig, count: int, input_set: InputSet | None = None,
                 box_center: torch.Tensor | None = None, box_radius: torch.Tensor | None = None):
        self.config, self.count = config, count
        self.input_set, self.box_center, self.box_radius = input_set, box_center, box_radius

    def add_error(self, center, generators, box, err) -> Zonotope:
        """The element with a fresh independent error ``[-err, err]`` added per neuron."""
        if self.config.errors_to_box:
            return Zonotope(center, generators, box + err)
        new = fresh_generators(err)
        if new.shape[1] == 0:
            return Zonotope(center, generators, box)
        old = Zonotope(center, generators).padded(self.count)
        self.count += new.shape[1]
        return Zonotope(center, torch.cat([old, new], dim=1), box)

    def range(self, mid: torch.Tensor, gens: torch.Tensor, box: torch.Tensor):
        """Sound (min, max) of ``mid + Σ_g gens[:, g]·ε_g ± box`` over the walk's input set:
        mid, box (B, M); gens (B, G, M). For a non-box set the input symbols are concretised
        through the set (tighter than their box); otherwise each ε_g ranges over [-1, 1]."""
        if self.input_set is None:
            rad = gens.abs().sum(dim=1) + box
            return mid - rad, mid + rad
        n = self.box_radius[0].numel()
        r = self.box_radius.reshape(-1, n, 1)
        A = torch.where(r > 0, gens[:, :n] / torch.where(r > 0, r, torch.ones_like(r)), 0.0)
        c0 = torch.einsum("bnm,bn->bm", A, self.box_center.reshape(-1, n))
        lo, hi = self.input_set.concretize(A.transpose(1, 2).reshape(*mid.shape, *self.box_center.shape[1:]))
        rad = gens[:, n:].abs().sum(dim=1) + box
        return mid - c0 + lo - rad, mid - c0 + hi + rad

    def bounds(self, z: Zonotope) -> tuple[torch.Tensor, torch.Tensor]:
        """Elementwise (lower, upper) of ``z``, shaped like its center."""
        if self.input_set is None:
            r = z.radius
            return z.center - r, z.center + r
        B = z.center.shape[0]
        lo, hi = self.range(z.center.reshape(B, -1), z.generators.flatten(2), z.box.reshape(B, -1))
        return lo.reshape(z.center.shape), hi.reshape(z.center.shape)


def from_input_set(input_set: InputSet,
                   config: ZonotopeConfig | None = None) -> tuple[Zonotope, _Walk]:
    """The zonotope of the set's box hull, with the walk context that goes with it.

    For a Box or an L∞ ball (boxes themselves) the zonotope is exact: center + one generator
    per input dim (radius times the unit vector; zero for dims of zero width), kept as a
    shared basis scaled per element until an op needs the generators themselves. For any other
    set (an L2 ball, ...) the box hull contains the set, which makes the element sound; every
    dim then gets a generator, in input order, and the context concretises those input symbols
    through the set itself (``concretize``), so bounds are as tight as the set allows for the
    part linear in the input (never looser than the box hull's).
    """
    config = config or ZonotopeConfig()
    lo, hi = input_set.lower, input_set.upper
    c, r = (hi + lo) / 2, (hi - lo) / 2
    box_like = isinstance(input_set, Box) or (isinstance(input_set, LpBall) and input_set.p == math.inf)
    if not box_like:
        n, B = r[0].numel(), r.shape[0]
        eye = torch.eye(n, dtype=r.dtype, device=r.device)
        gens = (eye.unsqueeze(0) * r.reshape(B, 1, n)).reshape(B, n, *r.shape[1:])
        return Zonotope(c, gens), _Walk(config, n, input_set, c, r)
    B, n = r.shape[0], r[0].numel()
    basis = torch.eye(n, dtype=r.dtype, device=r.device).reshape(n, *r.shape[1:])
    return _ScaledBasis(c, basis, r.reshape(B, n)), _Walk(config, n)


# -- transformers ------------------------------------------------------------------------------


def _affine(op: ops.AffineOp, z: Zonotope, *, ctx: _Walk) -> Zonotope:
    """Exact: center through ``forward``, generators through ``linear``, box through
    ``abs_linear``."""
    center = op.forward(z.center)
    if isinstance(z, _ScaledBasis):
        return _ScaledBasis(center, op.linear(z.basis), z.scale, op.abs_linear(z.box))
    return Zonotope(center, map_stacked(op.linear, z.generators, center.shape[1:]),
                    op.abs_linear(z.box))


def _linear_multi(op: ops.LinearMultiOp, *zs: Zonotope, ctx: _Walk) -> Zonotope:
    """Exact: generators aligned by index (zero-padded to the longest) before combining."""
    count = max(z.num_generators for z in zs)
    center = op.forward(*(z.center for z in zs))
    B, out_shape = center.shape[0], center.shape[1:]
    if count == 0:
        gens = center.new_zeros((B, 0, *out_shape))
    else:
        flat = [z.padded(count).reshape(B * count, *z.shape) for z in zs]
        gens = op.forward(*flat).reshape(B, count, *out_shape)
    return Zonotope(center, gens, op.abs_forward(*(z.box for z in zs)))


def _elementwise(z: Zonotope, slope, shift, err, ctx: _Walk) -> Zonotope:
    """Apply ``f(x) ∈ slope·x + shift ± err`` per neuron (valid on the neuron's bounds)."""
    return ctx.add_error(slope * z.center + shift, slope.unsqueeze(1) * z.generators,
                         slope.abs() * z.box, err)


def relu_relaxation(rule: str, lb, ub, s: float = 0.0):
    """``(slope, shift, err)`` with ``max(x, s·x) ∈ slope·x + shift ± err`` for all x in
    ``[l, u]`` (s ∈ [0, 1]); exact (err 0) on stable neurons. See :class:`ZonotopeConfig`."""
    cross = (lb < 0) & (ub > 0)
    one = torch.ones_like(ub)
    w = torch.where(cross, ub - lb, one)
    dz_slope = (ub - s * lb) / w  # chord slope: f(x) − λx ∈ [0, u(1 − λ)]
    dz = (dz_slope, ub * (1 - dz_slope) / 2)
    diag = (one, (1 - s) * (-lb) / 2)  # f(x) − x ∈ [0, (1 − s)(−l)]
    box_shift, box_err = (ub + s * lb) / 2, (ub - s * lb) / 2  # f(x) ∈ [s·l, u]
    if rule == "deepzono":
        slope, shift, err = dz[0], dz[1], dz[1]
    elif rule in ("zbox", "hybrid"):
        slope, shift, err = torch.zeros_like(ub), box_shift, box_err
    elif rule == "zswitch":
        use_box = (ub - s * lb) < (1 - s) * (-lb)  # box area < diag area
        slope = torch.where(use_box, 0.0, one)
        shift = torch.where(use_box, box_shift, diag[1])
        err = torch.where(use_box, box_err, diag[1])
    else:  # zsmooth
        t = ub / w
        slope, shift = t, t * diag[1] + (1 - t) * box_shift
        err = t * diag[1] + (1 - t) * box_err
    stable_slope = torch.where(lb >= 0, one, s * one)
    zero = torch.zeros_like(ub)
    return (torch.where(cross, slope, stable_slope), torch.where(cross, shift, zero),
            torch.where(cross, err, zero))


def _relu_like(op: ops.Activation, z: Zonotope, *, ctx: _Walk) -> Zonotope:
    s = op.negative_slope if isinstance(op, ops.LeakyReLU) else 0.0
    lb, ub = ctx.bounds(z)
    return _elementwise(z, *relu_relaxation(ctx.config.relu, lb, ub, s), ctx)


def _derivative(op: ops.Activation, x: torch.Tensor) -> torch.Tensor:
    """f'(x) for the sigmoid (σ(x)·σ(−x)) and tanh (1/cosh²), accurate in the tails."""
    if isinstance(op, ops.Sigmoid):
        return torch.sigmoid(x) * torch.sigmoid(-x)
    return torch.cosh(x).pow(-2)


def s_curve_relaxation(op: ops.Activation, lb, ub):
    """DeepZono's S-curve rule: ``λ = min(f'(l), f'(u))``; since f' is unimodal with its peak
    at 0, ``f(x) − λx`` is non-decreasing on [l, u], so it lies in [f(l) − λl, f(u) − λu].
    Sound for every l ≤ u (l == u included)."""
    fl, fu = op.fn(lb), op.fn(ub)
    lam = torch.minimum(_derivative(op, lb), _derivative(op, ub))
    gl, gu = fl - lam * lb, fu - lam * ub
    lo, hi = torch.minimum(gl, gu), torch.maximum(gl, gu)
    return lam, (lo + hi) / 2, (hi - lo) / 2


def _s_curve(op: ops.Activation, z: Zonotope, *, ctx: _Walk) -> Zonotope:
    lb, ub = ctx.bounds(z)
    return _elementwise(z, *s_curve_relaxation(op, lb, ub), ctx)


def _windows(op: ops.MaxPool2d, x: torch.Tensor, fill: float) -> torch.Tensor:
    """(N, C, H, W) → (N, C, kh·kw, L): each pooling window, padding filled with ``fill``."""
    ph, pw = op.padding
    if ph or pw:
        x = F.pad(x, (pw, pw, ph, ph), value=fill)
    N, C = x.shape[:2]
    cols = F.unfold(x, op.kernel, dilation=op.dilation, stride=op.stride)
    return cols.reshape(N, C, math.prod(op.kernel), cols.shape[-1])


def _maxpool(op: ops.MaxPool2d, z: Zonotope, *, ctx: _Walk) -> Zonotope:
    """Exact where one input of a window dominates (its lower bound ≥ every other input's
    upper bound): the output is that input's affine form. Elsewhere the output is the interval
    ``[max l, max u]`` (sound since max is monotone), carried as a fresh error."""
    lb, ub = ctx.bounds(z)
    out_shape = op.forward(z.center).shape
    wl, wu = _windows(op, lb, -math.inf), _windows(op, ub, -math.inf)
    best = wl.argmax(dim=2, keepdim=True)
    others = wu.scatter(2, best, -math.inf).amax(dim=2)
    lo_best = wl.gather(2, best).squeeze(2)
    dom = (lo_best >= others).reshape(out_shape)
    hi = wu.amax(dim=2).reshape(out_shape)
    lo = lo_best.reshape(out_shape)

    def pick(x: torch.Tensor) -> torch.Tensor:
        """The dominant input of each window; x is (B·G, C, H, W) with G rows per problem."""
        idx = best.repeat_interleave(x.shape[0] // best.shape[0], dim=0)
        return _windows(op, x, 0.0).gather(2, idx).squeeze(2).reshape(x.shape[0], *out_shape[1:])

    domf = dom.to(z.center.dtype)
    center = torch.where(dom, pick(z.center), (lo + hi) / 2)
    gens = map_stacked(pick, z.generators, out_shape[1:]) * domf.unsqueeze(1)
    return ctx.add_error(center, gens, pick(z.box) * domf, torch.where(dom, 0.0, (hi - lo) / 2))


TRANSFORMERS = {
    **dict.fromkeys(ops.AFFINE_OPS, _affine),
    **dict.fromkeys((ops.Add, ops.Sub, ops.Concat), _linear_multi),
    ops.ReLU: _relu_like,
    ops.LeakyReLU: _relu_like,
    ops.Sigmoid: _s_curve,
    ops.Tanh: _s_curve,
    ops.MaxPool2d: _maxpool,
}


# -- entry points ------------------------------------------------------------------------------


def _walk(graph: Graph, input_set: InputSet, config: ZonotopeConfig | None):
    init, ctx = from_input_set(input_set, config)
    table = {t: functools.partial(fn, ctx=ctx) for t, fn in TRANSFORMERS.items()}
    return forward_walk(graph, table, init, "zonotope"), ctx


def zonotope_walk(graph: Graph, input_set: InputSet,
                  config: ZonotopeConfig | None = None) -> dict[str, Zonotope]:
    """The zonotope of every node's output (and of the input) over ``input_set``."""
    return _walk(graph, input_set, config)[0]


def _spec_range(graph: Graph, spec: OutputSpec, values: dict[str, Zonotope], ctx: _Walk):
    """Bounds of ``C·y + d``, linear in the output zonotope; a final Linear is folded into C
    (exact for the generators, tighter for the box term)."""
    out = graph.node(graph.output_name)
    C, d = spec.C, spec.d
    if isinstance(out.op, ops.Linear):
        z = values[out.inputs[0]]
        d = d if out.op.bias_ is None else d + C @ out.op.bias_
        C = torch.einsum("bro,oi->bri", C, out.op.weight)
    else:
        z = values[graph.output_name]
    B = z.center.shape[0]
    mid = torch.einsum("brn,bn->br", C, z.center.reshape(B, -1)) + d
    gens = torch.einsum("brn,bgn->bgr", C, z.generators.flatten(2))
    box = torch.einsum("brn,bn->br", C.abs(), z.box.reshape(B, -1))
    return ctx.range(mid, gens, box)


def zonotope_spec_bounds(graph: Graph, input_set: InputSet, spec: OutputSpec,
                         config: ZonotopeConfig | None = None):
    """(lower, upper) of the spec rows, (B, R) each, and every node's zonotope; differentiable
    in the weights (use it for DiffAI-style training losses)."""
    values, ctx = _walk(graph, input_set, config)
    lower, upper = _spec_range(graph, spec, values, ctx)
    return lower, upper, values


def zonotope_bounds(problem: VerificationProblem, config: ZonotopeConfig | None = None) -> Bounds:
    """Sound bounds of the problem's spec rows from the zonotope domain; ``intermediate``
    holds every node's (and the input's) elementwise interval."""
    values, ctx = _walk(problem.graph, problem.input_set, config)
    lower, upper = _spec_range(problem.graph, problem.output_spec, values, ctx)
    inter = {name: Interval(*ctx.bounds(z)) for name, z in values.items()}
    stats = {"generators": ctx.count, "relu": ctx.config.relu,
             "box_errors": ctx.config.errors_to_box}
    return Bounds(lower, upper, "zonotope", inter, stats=stats)
