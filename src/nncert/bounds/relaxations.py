"""Linear relaxations of elementwise activations, grouped by traits.

For an activation ``σ`` and pre-activation bounds ``lb ≤ x ≤ ub`` (elementwise tensors) a
relaxation gives two lines valid on ``[lb, ub]``::

    lower_slope·x + lower_bias ≤ σ(x) ≤ upper_slope·x + upper_bias

Two families cover the IR's activations:

* **piecewise linear, convex** (ReLU, LeakyReLU(s), slope s ∈ [0, 1]): the upper line is the
  chord; the lower line passes through the origin with a slope in ``[s, 1]`` chosen by the mode
  ("adaptive": CROWN, Zhang et al. 2018; "deeppoly": the area heuristic of Singh et al. 2019;
  "fastlin": parallel to the chord, Weng et al. 2018) or given (alpha-CROWN, Xu et al. 2021).
  Stable neurons (lb ≥ 0 or ub ≤ 0) are exact.
* **S-shaped** (Sigmoid, Tanh: convex for x ≤ 0, concave for x ≥ 0, derivative unimodal with its
  maximum at 0): tangents and chords per region (CROWN's rule); in the mixed case the tangent
  through the far endpoint is found by bisection. The tangent points are parameterised by
  ``θ ∈ [0, 1]`` over their *valid range*, so every θ gives a sound line (alpha-CROWN optimises
  them). "deeppoly" uses DeepPoly's lines with slope ``min(σ'(lb), σ'(ub))``.

Sound for every finite interval, including ``lb == ub`` and very wide ones (checked on dense grids
in ``tests/bounds/test_relaxations.py``). S-shaped lines are computed in float64.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import ConfigError
from ..models import ops

MODES = ("adaptive", "deeppoly", "fastlin")

#: widths at or below this (float64) use constant lines ``σ(lb) ≤ σ(x) ≤ σ(ub)`` (monotone σ).
_TINY = 1e-9
_BISECTION_STEPS = 32  # bracket ≤ 2⁻³² of the interval; the kept side is the sound one


@dataclass(frozen=True, eq=False)
class LinearRelaxation:
    """``lower_slope·x + lower_bias ≤ σ(x) ≤ upper_slope·x + upper_bias`` on [lb, ub]."""

    lower_slope: torch.Tensor
    lower_bias: torch.Tensor
    upper_slope: torch.Tensor
    upper_bias: torch.Tensor


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ConfigError(f"unknown relaxation {mode!r}; choose from {', '.join(MODES)}")


# -- piecewise linear: ReLU, LeakyReLU ---------------------------------------------------------
def _negative_slope(op: ops.Op) -> float:
    return float(getattr(op, "negative_slope", 0.0))


def _pwl_default_slope(s: float, lb, ub, mode: str, chord: torch.Tensor) -> torch.Tensor:
    if mode == "fastlin":
        return chord
    one, low = torch.ones_like(lb), torch.full_like(lb, s)
    return torch.where(ub > -lb if mode == "deeppoly" else ub >= -lb, one, low)


def _pwl_chord(s: float, lb, ub, unstable):
    width = torch.where(unstable, ub - lb, torch.ones_like(ub))
    return torch.where(unstable, (ub - s * lb) / width, torch.ones_like(ub))


def pwl_relaxation(op, lb, ub, mode="adaptive", lower_param=None, upper_param=None):
    """ReLU / LeakyReLU(s): chord above; below, the line through 0 with slope in [s, 1]
    (``lower_param`` when given, clamped to that range; otherwise by ``mode``). Exact when stable."""
    s = _negative_slope(op)
    active, inactive = lb >= 0, ub <= 0
    unstable = ~(active | inactive)
    chord = _pwl_chord(s, lb, ub, unstable)
    if lower_param is None:
        alpha = _pwl_default_slope(s, lb, ub, mode, chord)
    else:
        alpha = lower_param.clamp(s, 1.0)
    stable_slope = torch.where(active, torch.ones_like(lb), torch.full_like(lb, s))
    up_slope = torch.where(unstable, chord, stable_slope)
    up_bias = torch.where(unstable, ub * (1 - chord), torch.zeros_like(ub))
    lo_slope = torch.where(unstable, alpha, stable_slope)
    return LinearRelaxation(lo_slope, torch.zeros_like(lo_slope), up_slope, up_bias)


def pwl_init(op, lb, ub, mode="adaptive"):
    """The lower slopes ``mode`` picks (the start point of alpha-CROWN); no upper parameter."""
    s = _negative_slope(op)
    unstable = (lb < 0) & (ub > 0)
    return _pwl_default_slope(s, lb, ub, mode, _pwl_chord(s, lb, ub, unstable)), None


# -- S-shaped: Sigmoid, Tanh -------------------------------------------------------------------
def _dsigmoid(x: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(x)
    return s * (1 - s)


def _dtanh(x: torch.Tensor) -> torch.Tensor:
    return 1 - torch.tanh(x) ** 2


S_SHAPED: dict[type, tuple[Callable, Callable]] = {
    ops.Sigmoid: (torch.sigmoid, _dsigmoid),
    ops.Tanh: (torch.tanh, _dtanh),
}


def _bisect_increasing(g, lo, hi):
    """For g increasing with g(lo) < 0 ≤ g(hi): a bracket [lo', hi'] of its root."""
    for _ in range(_BISECTION_STEPS):
        mid = (lo + hi) / 2
        pos = g(mid) >= 0
        lo, hi = torch.where(pos, lo, mid), torch.where(pos, mid, hi)
    return lo, hi


@torch.no_grad()
def _tangent_limits(f, df, lb, ub):
    """``dL ∈ [lb, 0]``: tangents at t ≤ dL lie below σ on [lb, ub] (mixed case);
    ``dU ∈ [0, ub]``: tangents at t ≥ dU lie above σ on [lb, ub]. Bisection keeps the sound side."""
    zero = torch.zeros_like(lb)
    # both bisections in one stacked tensor (half the ops): dL is the root of
    # f(t) + f'(t)(ub − t) − f(ub) on [min(lb, 0), 0], dU that of f(t) + f'(t)(lb − t) − f(lb)
    # on [0, max(ub, 0)]; each increasing there
    far = torch.stack([ub, lb])
    f_far = f(far)
    lo, hi = _bisect_increasing(lambda t: f(t) + df(t) * (far - t) - f_far,
                                torch.stack([torch.minimum(lb, zero), zero]),
                                torch.stack([zero, torch.maximum(ub, zero)]))
    return lo[0], hi[1]


def _tangent(f, df, t):
    k = df(t)
    return k, f(t) - k * t


def _s_deeppoly(f, df, lb, ub, fl, fu, chord):
    lam = torch.minimum(df(lb), df(ub))
    lo_k = torch.where(lb > 0, chord, lam)
    up_k = torch.where(ub <= 0, chord, lam)
    return lo_k, fl - lo_k * lb, up_k, fu - up_k * ub


def _s_crown(f, df, lb, ub, fl, fu, chord, theta_l, theta_u):
    dL, dU = _tangent_limits(f, df, lb.detach(), ub.detach())
    convex, concave = ub <= 0, lb >= 0
    # lower: chord on the concave side or when it stays below σ; else a tangent at t ∈ [lb, t_hi]
    chord_lo = concave | (~convex & (df(lb) >= chord))
    t_hi = torch.where(convex, ub, torch.maximum(dL, lb))
    k, b = _tangent(f, df, lb + theta_l * (t_hi - lb))
    lo_k, lo_b = torch.where(chord_lo, chord, k), torch.where(chord_lo, fl - chord * lb, b)
    # upper: mirror image
    chord_up = convex | (~concave & (df(ub) >= chord))
    t_lo = torch.where(concave, lb, torch.minimum(dU, ub))
    k, b = _tangent(f, df, t_lo + theta_u * (ub - t_lo))
    up_k, up_b = torch.where(chord_up, chord, k), torch.where(chord_up, fu - chord * ub, b)
    return lo_k, lo_b, up_k, up_b


def s_shaped_init(op, lb, ub, mode="adaptive"):
    """CROWN's tangent points as θ: midpoint in a one-sided region, the tangent through the
    far endpoint in the mixed case."""
    half = torch.full_like(lb, 0.5)
    return (torch.where(ub <= 0, half, torch.ones_like(lb)),
            torch.where(lb >= 0, half, torch.zeros_like(lb)))


def s_shaped_relaxation(op, lb, ub, mode="adaptive", lower_param=None, upper_param=None):
    """Sigmoid / Tanh lines (see the module docstring). With parameters given, CROWN's rule
    with tangent points ``θ`` (clamped to [0, 1]) whatever ``mode``."""
    f, df = S_SHAPED[type(op)]
    dtype = lb.dtype
    lb, ub = lb.double(), ub.double()
    fl, fu = f(lb), f(ub)
    tiny = (ub - lb) <= _TINY
    chord = (fu - fl) / torch.where(tiny, torch.ones_like(ub), ub - lb)
    if mode == "deeppoly" and lower_param is None and upper_param is None:
        lines = _s_deeppoly(f, df, lb, ub, fl, fu, chord)
    else:
        init_l, init_u = s_shaped_init(op, lb, ub)
        tl = init_l if lower_param is None else lower_param.double().clamp(0, 1)
        tu = init_u if upper_param is None else upper_param.double().clamp(0, 1)
        lines = _s_crown(f, df, lb, ub, fl, fu, chord, tl, tu)
    lo_k, lo_b, up_k, up_b = (torch.where(tiny, c, v) for c, v in
                              zip((0.0, fl, 0.0, fu), lines))
    return LinearRelaxation(lo_k.to(dtype), lo_b.to(dtype), up_k.to(dtype), up_b.to(dtype))


# -- the table ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ActivationRelaxation:
    """One family's rules: ``relax(op, lb, ub, mode, lower_param, upper_param)``,
    ``init(op, lb, ub, mode) -> (lower_param, upper_param | None)`` and the parameters' range."""

    relax: Callable[..., LinearRelaxation]
    init: Callable[..., tuple[torch.Tensor, torch.Tensor | None]]
    param_range: Callable[[ops.Op], tuple[float, float]]
    has_upper_param: bool


PIECEWISE_LINEAR = ActivationRelaxation(pwl_relaxation, pwl_init,
                                        lambda op: (_negative_slope(op), 1.0), False)
S_SHAPED_FAMILY = ActivationRelaxation(s_shaped_relaxation, s_shaped_init,
                                       lambda op: (0.0, 1.0), True)

RELAXATIONS: dict[type, ActivationRelaxation] = {
    ops.ReLU: PIECEWISE_LINEAR,
    ops.LeakyReLU: PIECEWISE_LINEAR,
    ops.Sigmoid: S_SHAPED_FAMILY,
    ops.Tanh: S_SHAPED_FAMILY,
}


def relax(op: ops.Op, lower: torch.Tensor, upper: torch.Tensor, mode: str = "adaptive",
          lower_param: torch.Tensor | None = None,
          upper_param: torch.Tensor | None = None) -> LinearRelaxation:
    """The relaxation of ``op`` on [lower, upper] (see the module docstring)."""
    return RELAXATIONS[type(op)].relax(op, lower, upper, mode, lower_param, upper_param)
