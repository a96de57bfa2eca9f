"""Training objectives as small frozen values with one interface:
``loss(step, x, y) -> (scalar loss, {name: float} to log)``.

Every robust loss builds on the one bound engine (``nncert.bounds.compute_bounds`` with
``grad=True``) over ``step.graph``, a Graph whose weights are the module's Parameters (see
:func:`~nncert.training.architectures.live_graph`). The robust cross-entropy of sound lower
bounds ``l_j`` of the margins ``y_label − y_j`` over the ε-ball is the cross-entropy of the
logits ``z`` with ``z_label = 0, z_j = −l_j``; since cross-entropy grows with every wrong-class
logit and ``y_j − y_label ≤ −l_j`` at every point of the ball, it is ≥ the cross-entropy at
*every* point of the ball (in particular at the PGD point), and equals the natural loss at
ε = 0. The sound losses (IBP, CROWN-IBP, DiffAI) therefore upper-bound the adversarial loss;
SABR (a small box around a PGD point) upper-bounds the loss at its own PGD point only, by
design (Müller et al. 2023).

Inputs ``x`` are in [0, 1] (``step.clip``); ε is in the same units.
"""

from __future__ import annotations

import dataclasses
import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from ..bounds import compute_bounds
from ..bounds.crown import CrownConfig
from ..bounds.zonotope import RELU_RULES, ZonotopeConfig
from ..errors import ConfigError, ModelError
from ..models import ops
from ..models.graph import Graph
from ..specs.input_sets import LpBall
from ..specs.output import OutputSpec
from ..specs.problem import VerificationProblem
from .schedules import Constant, Ramp

Schedule = Constant | Ramp
Logs = dict[str, float]


@dataclass(frozen=True, eq=False)
class Step:
    """What a loss sees: the module, the Graph on its parameters, the training time ``t`` in
    epochs (for schedules), a random generator on the data's device, and the input domain."""

    model: nn.Module
    graph: Graph | None
    t: float = 0.0
    generator: torch.Generator | None = None
    clip: tuple[float, float] = (0.0, 1.0)
    #: a model with BatchNorm: its :class:`~nncert.training.architectures.LiveBatchNorm`,
    #: which sets ``graph``'s BatchNorm nodes to the statistics of the last clean pass
    batchnorm: Any = None

    def with_batch_statistics(self) -> Step:
        """This step with ``graph`` fixed at the BatchNorm statistics the model's last forward
        pass recorded (call it right after the clean pass); itself when there is no BatchNorm."""
        if self.batchnorm is None:
            return self
        return dataclasses.replace(self, graph=self.batchnorm.graph(), batchnorm=None)


class Loss(Protocol):
    name: str
    #: whether ``step.graph`` must be set (bound-based losses); else it may be None
    needs_graph: bool

    def __call__(self, step: Step, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, Logs]:
        ...


def final(s: Schedule) -> float:
    """The value a schedule ends at."""
    return s.value if isinstance(s, Constant) else s.end


def as_schedule(v: float | Schedule) -> Schedule:
    return Constant(float(v)) if isinstance(v, (int, float)) else v


# -- pieces ----------------------------------------------------------------------------------
def robust_ce(lower: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Cross-entropy of the worst-case logits ``z_y = 0, z_j = −lower_j`` (rows of
    ``OutputSpec.robustness``: j ≠ y in increasing order). ≥ CE at every point where the
    margins are ≥ ``lower``."""
    B = y.shape[0]
    keep = torch.ones(B, num_classes, dtype=torch.bool, device=y.device)
    keep[torch.arange(B, device=y.device), y] = False
    z = torch.zeros(B, num_classes, dtype=lower.dtype, device=lower.device)
    z = z.masked_scatter(keep, -lower)
    return F.cross_entropy(z, y)


def ball(x: torch.Tensor, eps: float, clip: tuple[float, float]) -> LpBall:
    return LpBall(x, float(eps), math.inf, clip[0], clip[1])


def margin_bounds(step: Step, input_set, y: torch.Tensor, method: str, config: Any = None):
    """Sound, differentiable bounds (a ``Bounds``) of the margins ``y_label − y_j`` over the set."""
    if step.batchnorm is not None:
        raise ModelError("bounds of a network with BatchNorm need the batch statistics: call "
                         "step.with_batch_statistics() after the clean forward pass")
    g = step.graph
    spec = OutputSpec.robustness(y, g.num_outputs, dtype=g.dtype, device=y.device)
    return compute_bounds(VerificationProblem(g, input_set, spec), method, config, grad=True)


def pgd_ce(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int,
           step_size: float, clip: tuple[float, float],
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Madry et al.'s L∞ PGD on the cross-entropy from a uniform random start: a point of
    ``[x − ε, x + ε] ∩ clip`` (detached); gradients go to the input only, never to the model."""
    lo, hi = (x - eps).clamp(*clip), (x + eps).clamp(*clip)
    if eps == 0:
        return x.detach()
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    xa = lo + u * (hi - lo)
    with batchnorm_kept(model):
        for _ in range(steps):
            xa = xa.detach().requires_grad_(True)
            with torch.enable_grad():
                (g,) = torch.autograd.grad(F.cross_entropy(model(xa), y, reduction="sum"), xa)
            xa = torch.minimum(torch.maximum(xa.detach() + step_size * g.sign(), lo), hi)
    return xa.detach()


@contextmanager
def batchnorm_kept(model):
    """Forward passes inside leave every BatchNorm's running statistics (and the batch
    statistics recorded for the bounds) as they were: an attack's points are not data. The
    passes inside update copies of the buffers; the originals, which an earlier pass may have
    saved for its backward, are never written."""
    mods = model.modules() if isinstance(model, nn.Module) else ()
    bns = [m for m in mods if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(dict(m._buffers), m.__dict__.get("_nncert_batch")) for m in bns]
    for m in bns:
        for k, b in list(m._buffers.items()):
            if b is not None:
                m._buffers[k] = b.clone()
    try:
        yield
    finally:
        for m, (buffers, batch) in zip(bns, saved):
            m._buffers.update(buffers)
            if batch is not None:
                m.__dict__["_nncert_batch"] = batch


def _mix(kappa: float, nat: torch.Tensor, rob: torch.Tensor) -> torch.Tensor:
    return kappa * nat + (1 - kappa) * rob if kappa > 0 else rob


def shi_regularizer(graph: Graph, intermediate, tol: float = 0.5) -> torch.Tensor:
    """Shi et al. 2021's warm-up regularisers from IBP bounds: ``L_tightness`` (the mean
    pre-activation radius should not explode relative to the input's) plus ``L_relu`` (active
    and inactive neurons balanced in mean and variance), averaged over the ReLU layers."""
    inp = intermediate[graph.input_name]
    r0 = inp.radius.mean()
    tight, relu, n = r0.new_zeros(()), r0.new_zeros(()), 0
    for node in graph:
        if not isinstance(node.op, ops.ReLU):
            continue
        iv = intermediate[node.inputs[0]]
        center, rad = iv.center, iv.radius
        tight = tight + F.relu(tol - r0 / rad.mean().clamp(min=1e-12)) / tol
        act, inact = (iv.lower > 0).to(center.dtype), (iv.upper < 0).to(center.dtype)
        delta = (center - center.mean()) ** 2
        mean_ratio = (center * act).mean() / (-(center * inact).mean()).clamp(min=1e-12)
        var_ratio = (delta * act).sum() / (delta * inact).sum().clamp(min=1e-12)
        mean_ratio = torch.minimum(mean_ratio, 1 / mean_ratio.clamp(min=1e-12))
        var_ratio = torch.minimum(var_ratio, 1 / var_ratio.clamp(min=1e-12))
        term = (F.relu(tol - mean_ratio) + F.relu(tol - var_ratio)) / tol
        if bool(torch.isfinite(term)):
            relu = relu + term
        n += 1
    return (tight + relu) / max(n, 1)


# -- the losses --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Natural:
    """Plain cross-entropy."""

    name: str = field(default="natural", init=False)
    needs_graph: ClassVar[bool] = False

    def __call__(self, step: Step, x, y):
        loss = F.cross_entropy(step.model(x), y)
        return loss, {"nat": float(loss.detach())}


@dataclass(frozen=True)
class GaussianNoise:
    """Cross-entropy on ``x + N(0, σ²I)`` (Cohen et al. 2019), the base classifier of
    randomized smoothing; σ = 0 is plain training. The noise is drawn from ``step.generator``."""

    sigma: float
    name: str = field(default="noise", init=False)
    needs_graph: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if not (self.sigma >= 0 and math.isfinite(self.sigma)):
            raise ConfigError(f"sigma must be ≥ 0, got {self.sigma!r}")

    def __call__(self, step: Step, x, y):
        if self.sigma > 0:
            x = x + torch.randn(x.shape, generator=step.generator, device=x.device,
                                dtype=x.dtype) * self.sigma
        loss = F.cross_entropy(step.model(x), y)
        return loss, {"nat": float(loss.detach())}


@dataclass(frozen=True)
class Augmented:
    """``base`` on the batch an augmenter makes of ``(x, y)``: ``augment(x, y, generator) ->
    (x', y')`` (e.g. :func:`nncert.semantic.augment.transform_augmenter`), drawn from
    ``step.generator``. What ``base`` promises (an upper bound of the adversarial loss, …) then
    holds on the augmented batch."""

    base: Loss
    augment: Any
    label: str = "aug"

    @property
    def name(self) -> str:
        return f"{self.base.name}+{self.label}"

    @property
    def needs_graph(self) -> bool:
        return self.base.needs_graph

    def __call__(self, step: Step, x, y):
        xa, ya = self.augment(x, y, step.generator)
        return self.base(step, xa, ya)


@dataclass(frozen=True)
class PGD:
    """Madry et al. 2018: cross-entropy at an L∞ PGD point (``steps`` steps of
    ``step_size·ε``, random start)."""

    eps: Schedule
    steps: int = 10
    step_size: float = 0.25
    name: str = field(default="pgd", init=False)
    needs_graph: ClassVar[bool] = False

    def __call__(self, step: Step, x, y):
        eps = self.eps(step.t)
        xa = pgd_ce(step.model, x, y, eps, self.steps, self.step_size * eps, step.clip,
                    step.generator)
        loss = F.cross_entropy(step.model(xa), y)
        return loss, {"adv": float(loss.detach()), "eps": eps}


@dataclass(frozen=True)
class _Certified:
    """``κ·natural + (1 − κ)·robust`` with the robust part from sound bounds over the ball."""

    eps: Schedule
    kappa: Schedule = Constant(0.0)
    #: Shi et al. 2021 warm-up regulariser weight λ (0: off); intensity λ·(1 − ε_t/ε_max)
    warmup_reg: float = 0.0
    needs_graph: ClassVar[bool] = True

    def bounds(self, step: Step, x, y, eps: float):
        raise NotImplementedError

    def __call__(self, step: Step, x, y):
        eps, kappa = self.eps(step.t), self.kappa(step.t)
        # the clean pass first: with BatchNorm it sets the batch statistics the bounds use
        # (and their gradient flows through it)
        with torch.enable_grad() if kappa > 0 or step.batchnorm is not None else torch.no_grad():
            nat = F.cross_entropy(step.model(x), y)
        step = step.with_batch_statistics()
        b = self.bounds(step, x, y, eps)
        rob = robust_ce(b.lower, y, step.graph.num_outputs)
        loss = _mix(kappa, nat, rob)
        logs = {"nat": float(nat.detach()), "rob": float(rob.detach()), "eps": eps,
                "kappa": kappa}
        eps_max = final(self.eps)
        if self.warmup_reg > 0 and eps_max > 0 and eps < eps_max and b.intermediate:
            reg = self.warmup_reg * (1 - eps / eps_max) * shi_regularizer(step.graph,
                                                                          b.intermediate)
            loss = loss + reg
            logs["reg"] = float(reg.detach())
        return loss, logs


@dataclass(frozen=True)
class IBP(_Certified):
    """Gowal et al. 2018: interval bound propagation over the ε-ball, ε ramped, κ mixing."""

    name: str = field(default="ibp", init=False)

    def bounds(self, step, x, y, eps):
        return margin_bounds(step, ball(x, eps, step.clip), y, "interval")


@dataclass(frozen=True)
class CrownIBP(_Certified):
    """Zhang et al. 2020: ``β·CROWN-IBP + (1 − β)·IBP`` lower bounds (CROWN's backward pass on
    IBP intermediate bounds); β goes from 1 to 0 in the original schedule."""

    beta: Schedule = Constant(1.0)
    name: str = field(default="crown-ibp", init=False)

    def bounds(self, step, x, y, eps):
        s = ball(x, eps, step.clip)
        ibp = margin_bounds(step, s, y, "interval")
        beta = self.beta(step.t)
        if beta <= 0:
            return ibp
        cfg = CrownConfig(intermediate="ibp")
        crown = margin_bounds(step, s, y, "crown", cfg)
        lower = beta * crown.lower + (1 - beta) * ibp.lower
        return type(ibp)(lower, ibp.upper, "crown-ibp", ibp.intermediate)


@dataclass(frozen=True)
class DiffAI(_Certified):
    """Mirman et al. 2018: training through a zonotope domain; ``relu`` names its ReLU
    transformer (deepzono, zbox, zswitch, zsmooth, hybrid) and ``box_errors`` sends new error
    terms to the box part (HybridZonotope)."""

    relu: str = "zswitch"
    box_errors: bool = False
    name: str = field(default="diffai", init=False)

    def __post_init__(self) -> None:
        if self.relu not in RELU_RULES:
            raise ConfigError(f"DiffAI domain {self.relu!r} unknown; choose from "
                              f"{', '.join(RELU_RULES)}")

    def bounds(self, step, x, y, eps):
        cfg = ZonotopeConfig(relu=self.relu, box_errors=self.box_errors)
        return margin_bounds(step, ball(x, eps, step.clip), y, "zonotope", cfg)


@dataclass(frozen=True)
class SABR(_Certified):
    """Müller et al. 2023: IBP over a small box of radius ``λ·ε`` around a PGD point, placed
    inside the ε-ball (it contains that point). Not a bound over the whole ball, by design."""

    lam: float = 0.4
    steps: int = 8
    step_size: float = 0.5
    name: str = field(default="sabr", init=False)

    def __post_init__(self) -> None:
        if not 0 < self.lam <= 1:
            raise ConfigError(f"SABR λ must lie in (0, 1], got {self.lam}")

    def bounds(self, step, x, y, eps):
        xa = pgd_ce(step.model, x, y, eps, self.steps, self.step_size * eps, step.clip,
                    step.generator)
        r = (1 - self.lam) * eps
        c = torch.minimum(torch.maximum(xa, x - r), x + r)
        return margin_bounds(step, ball(c, self.lam * eps, step.clip), y, "interval")


# -- initialisation ----------------------------------------------------------------------------
@torch.no_grad()
def ibp_init_(model: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Shi et al. 2021's IBP initialisation, in place: every Linear/Conv2d weight drawn from
    ``N(0, 2π / fan_in²)`` so that interval radii neither explode nor vanish with depth."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            fan_in = m.weight[0].numel()
            std = math.sqrt(2 * math.pi) / fan_in
            w = torch.randn(m.weight.shape, generator=generator) * std
            m.weight.copy_(w.to(m.weight.device, m.weight.dtype))
    return model
