"""alpha-CROWN (Xu et al. 2021) and the beta-CROWN split hook (Wang et al. 2021).

Every choice of the free relaxation parameters — ReLU/LeakyReLU lower slopes in [s, 1],
Sigmoid/Tanh tangent points θ ∈ [0, 1] — gives a sound CROWN bound, so they are optimised by
projected Adam to maximise the spec rows' lower bounds, one parameter per row and neuron. The
best bound seen per row is kept and the start point is CROWN's, so the result is never looser
than CROWN.

With ReLU splits (``z ≥ 0`` / ``z ≤ 0`` on pre-activation neurons z) the split neurons'
bounds are clipped, and multipliers ``β ≥ 0`` of the split constraints ``s·z ≥ 0`` enter the
backward pass as the offset ``−β∘s`` at z (Lagrangian relaxation): the bound stays sound on the
input set ∩ the split constraints for every β ≥ 0 and is optimised jointly with the slopes.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import torch

from ..clock import NEVER, Deadline
from ..errors import ConfigError
from ..models.graph import Graph
from ..specs.input_sets import InputSet
from ..specs.problem import VerificationProblem
from . import relaxations
from .activation_splits import limit_betas, limit_terms
from .core import Bounds, Interval
from .crown import (
    BACKWARD,
    CrownConfig,
    _ancestors,
    _bounds,
    _relaxed_inputs,
    backward_bounds,
    intermediate_bounds,
    upper_key,
)
from .traversal import check_supported

Proved = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class AlphaCrownConfig:
    """iterations of Adam (lr for slopes, lr_beta for split multipliers, both decayed by
    lr_decay per step); optimize_intermediate: also optimise every intermediate node's bounds
    (its own parameters, layer by layer: slower, tighter); optimize_upper: also minimise the
    upper bounds (else CROWN's are returned); early_stop: once the property is proved for
    every batch element. ``search_dtype``: run the Adam steps on a copy of the network in
    this dtype (e.g. "float32" for a float64 network: convolutions on the CPU are several times
    faster); the bounds returned are still computed in the network's own dtype, from the start
    point and from the parameters found, row by row the better (None: search in the network's
    dtype). ``crown`` configures the start point (relaxation "adaptive")."""

    iterations: int = 20
    lr: float = 0.1
    lr_beta: float = 0.05
    lr_decay: float = 0.98
    optimize_intermediate: bool = False
    optimize_upper: bool = False
    early_stop: bool = True
    search_dtype: str | None = None
    crown: CrownConfig = field(default_factory=CrownConfig)

    def __post_init__(self) -> None:
        if self.iterations < 0 or self.lr <= 0 or self.lr_beta <= 0:
            raise ConfigError("iterations must be ≥ 0 and learning rates > 0")
        if self.search_dtype not in (None, "float32", "float64"):
            raise ConfigError("search_dtype must be None, 'float32' or 'float64', got "
                              f"{self.search_dtype!r}")
        if not 0 < self.lr_decay <= 1:
            raise ConfigError(f"lr_decay must lie in (0, 1], got {self.lr_decay}")


def _init_slopes(graph: Graph, intermediate: Mapping[str, Interval], B: int, R: int, mode: str,
                 init: Mapping[str, torch.Tensor] | None, start: str):
    """Trainable parameters (B, R, *shape) per activation that ``start`` depends on (and per
    upper line), with their ranges; from ``init`` where given, else the relaxation's own
    choice (CROWN's)."""
    params, ranges = {}, {}
    keep = _ancestors(graph, start)
    for node in graph:
        fam = relaxations.RELAXATIONS.get(type(node.op))
        if fam is None or node.name not in keep:
            continue
        iv = intermediate[node.inputs[0]]
        lo, up = fam.init(node.op, iv.lower.unsqueeze(1), iv.upper.unsqueeze(1), mode)
        shape = (B, R, *iv.shape)
        for key, t in ((node.name, lo), (upper_key(node.name), up)):
            if t is None:
                continue
            if init is not None and key in init:
                t = init[key].to(iv.lower)
            params[key] = t.detach().expand(shape).clone().requires_grad_(True)
            ranges[key] = fam.param_range(node.op)
    return params, ranges


def _clip_splits(intermediate: Mapping[str, Interval], splits: Mapping[str, torch.Tensor]):
    """Bounds clipped by the splits, and which batch elements' subdomains are empty."""
    out = dict(intermediate)
    B = next(iter(intermediate.values())).lower.shape[0]
    empty = torch.zeros(B, dtype=torch.bool, device=next(iter(intermediate.values())).lower.device)
    for name, s in splits.items():
        iv = intermediate[name]
        s = s.to(iv.lower.device)
        lo = torch.where(s > 0, iv.lower.clamp(min=0), iv.lower)
        hi = torch.where(s < 0, iv.upper.clamp(max=0), iv.upper)
        bad = lo > hi
        empty |= bad.reshape(B, -1).any(1)
        out[name] = Interval(lo, torch.where(bad, lo, hi))
    return out, empty


def _complete(graph, input_set, intermediate, cfg: AlphaCrownConfig, deadline: Deadline = NEVER):
    """``intermediate`` with any missing bounds a backward pass needs filled in by CROWN."""
    needed = set(_relaxed_inputs(graph)) | {graph.input_name}
    if needed <= set(intermediate):
        return intermediate
    return intermediate_bounds(graph, input_set, cfg.crown, given=intermediate, deadline=deadline)


def _project(params, ranges, betas) -> None:
    with torch.no_grad():
        for key, t in params.items():
            t.clamp_(*ranges[key])
        for b in betas.values():
            b.clamp_(min=0)


def _adam_step(leaves, grads, moments, t: int, scale: float) -> None:
    """Step ``t`` (from 1) of Adam with torch.optim.Adam's defaults, learning rates times
    ``scale`` (the exponential decay), except that the denominator is ``√(v̂ + ε²)`` rather than
    ``√v̂ + ε`` (the same step to within ε, but zero entries of v, parameters without gradient,
    take a slow path in torch's CPU sqrt). Written out because constructing torch.optim.Adam
    imports torch._dynamo: seconds that no deadline check can interrupt."""
    b1, b2, eps = 0.9, 0.999, 1e-8
    with torch.no_grad():
        for (p, lr), g, (m, v) in zip(leaves, grads, moments):
            if g is None:
                continue
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (v / (1 - b2**t)).add_(eps * eps).sqrt_()
            p.addcdiv_(m, denom, value=-lr * scale / (1 - b1**t))


def _optimize_rows(graph, input_set, C, d, intermediate, cfg: AlphaCrownConfig, **kw):
    """:func:`_search_rows` (same arguments and results), its Adam steps in
    ``cfg.search_dtype`` when that differs from the rows' dtype (see :func:`_mixed_rows`)."""
    sdt = None if cfg.search_dtype is None else getattr(torch, cfg.search_dtype)
    if sdt is None or sdt == C.dtype or cfg.iterations == 0:
        return _search_rows(graph, input_set, C, d, intermediate, cfg, **kw)
    return _mixed_rows(graph, input_set, C, d, intermediate, cfg, sdt, **kw)


_SEARCH_COPIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def search_copy(graph: Graph, dtype: torch.dtype) -> Graph:
    """``graph`` in ``dtype``, made once per graph and dtype (kept while the graph lives)."""
    copies = _SEARCH_COPIES.setdefault(graph, {})
    if dtype not in copies:
        copies[dtype] = graph.to(dtype=dtype)
    return copies[dtype]


def _cast(m, dtype: torch.dtype):
    """A dict's floating tensors in ``dtype`` (None stays None)."""
    if m is None:
        return None
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in m.items()}


def _mixed_rows(graph, input_set, C, d, intermediate, cfg: AlphaCrownConfig, sdt, *,
                signs=None, init_slopes=None, proved: Proved | None = None, start=None,
                deadline: Deadline = NEVER, init_betas=None, capture=None, limits=None,
                best_rows: dict | None = None):
    """:func:`_search_rows` whose Adam steps run on copies in ``sdt``: one pass in the rows'
    dtype at the start point (the warm start, else CROWN's; it ends the call when it proves
    every row), the search in ``sdt`` from there, one pass in the rows' dtype with the
    parameters found. Each row's bound, slopes and β are those of the better of the two
    passes, so the result is never looser than the start point, and every bound returned was
    computed in the rows' dtype (the search's rounding only steers which sound parameters are
    evaluated: every slope in its range and β ≥ 0 gives a sound bound). ``capture`` and
    ``best_rows`` see only those two passes."""
    once = replace(cfg, iterations=0)
    common = {"signs": signs, "start": start, "deadline": deadline, "limits": limits}
    first, s0, _, b0 = _search_rows(graph, input_set, C, d, intermediate, once,
                                    init_slopes=init_slopes, init_betas=init_betas,
                                    capture=capture, best_rows=best_rows, **common)
    if cfg.early_stop and proved is not None and bool(proved(first).all()):
        return first, s0, 0, b0
    _, s1, steps, b1 = _search_rows(
        search_copy(graph, sdt), input_set.to(dtype=sdt), C.to(sdt),
        None if d is None else d.to(sdt),
        {k: Interval(v.lower.to(sdt), v.upper.to(sdt)) for k, v in intermediate.items()},
        cfg, signs=_cast(signs, sdt), init_slopes=s0, init_betas=b0, proved=proved,
        start=start, deadline=deadline, limits=_cast(limits, sdt))
    last, s1, _, b1 = _search_rows(graph, input_set, C, d, intermediate, once,
                                   init_slopes=s1, init_betas=b1, capture=capture,
                                   best_rows=best_rows, **common)
    better = last > first  # (B, R)

    def pick(new, old):
        out = {}
        for k, v in new.items():
            if k in old and v.shape[:2] == better.shape and old[k].shape == v.shape:
                v = torch.where(better.reshape(*better.shape, *[1] * (v.dim() - 2)), v, old[k])
            out[k] = v
        return out
    return torch.maximum(first, last), pick(s1, s0), steps, pick(b1, b0)


def _search_rows(graph, input_set, C, d, intermediate, cfg: AlphaCrownConfig, *,
                 signs=None, init_slopes=None, proved: Proved | None = None, start=None,
                 deadline: Deadline = NEVER, init_betas=None, capture=None, limits=None,
                 best_rows: dict | None = None):
    """Best lower bound (B, R) of the rows seen over the Adam run, the final parameters, the
    number of Adam steps taken and the final split multipliers β (keyed like ``signs``;
    warm-started from ``init_betas`` where given, clamped ≥ 0, so any start is sound).
    ``capture``: filled by ``backward_bounds`` with the A of the last pass at the named nodes.
    ``limits``: general activation split limits keyed by pre-activation node (see
    ``activation_splits.limit_terms``); their β are returned under ``limit_key(node)``.
    ``best_rows``: a dict, filled with ``"lower"`` (the best seen, as returned) and, for each
    node named in ``capture``, the A of the pass where each row had its best bound: per row the
    coefficients and the minimum of one linear bound (a consistent pair, unlike ``capture``,
    which holds the last pass's A). Past ``deadline`` (checked before every step) it raises
    :class:`~nncert.clock.DeadlineExceededError`."""
    B, R = input_set.batch_size, C.shape[1]
    params, ranges = _init_slopes(graph, intermediate, B, R, cfg.crown.relaxation, init_slopes,
                                  start or graph.output_name)
    signs = signs or {}
    betas = {n: _init_beta(init_betas, n, (B, R, *s.shape[1:]), C) for n, s in signs.items()}
    reach = _ancestors(graph, start or graph.output_name)  # a limit's constant needs its z term
    limits = {z: v for z, v in (limits or {}).items() if z in reach}
    betas.update(limit_betas(limits, init_betas, R, C))
    leaves = [(t, cfg.lr) for t in params.values()] + [(t, cfg.lr_beta) for t in betas.values()]
    moments = [(torch.zeros_like(t), torch.zeros_like(t)) for t, _ in leaves]
    best, steps = None, 0
    cache: dict = {}  # (the slope-free parts of the ReLU relaxations: the same every step)
    while True:
        deadline.check()
        offsets = {n: -betas[n] * signs[n].unsqueeze(1) for n in signs}
        extra = limit_terms(betas, limits, offsets)
        lower, _ = backward_bounds(graph, input_set, C, d, intermediate, params, offsets,
                                   need_upper=False, start=start,
                                   relaxation=cfg.crown.relaxation, capture=capture,
                                   relax_cache=cache)
        lower = lower if extra is None else lower + extra
        best = lower.detach() if best is None else torch.maximum(best, lower.detach())
        if best_rows is not None:
            _keep_best_rows(best_rows, lower.detach(), capture or {})
        done = cfg.early_stop and proved is not None and bool(proved(best).all())
        if done or steps == cfg.iterations or not leaves or not lower.requires_grad:
            return (best, {k: v.detach() for k, v in params.items()}, steps,
                    {k: v.detach() for k, v in betas.items()})
        grads = torch.autograd.grad(-lower.sum(), [t for t, _ in leaves], allow_unused=True)
        _adam_step(leaves, grads, moments, steps + 1, cfg.lr_decay ** steps)
        _project(params, ranges, betas)
        steps += 1


def _keep_best_rows(kept: dict, lower: torch.Tensor, capture: Mapping[str, torch.Tensor]):
    """``kept``'s rows replaced by this pass's where its bound is higher (see _optimize_rows)."""
    if "lower" not in kept:
        kept["lower"] = lower
        kept.update({k: v for k, v in capture.items() if v is not None})
        return
    better = lower > kept["lower"]
    kept["lower"] = torch.where(better, lower, kept["lower"])
    for k, v in capture.items():
        if v is not None:
            kept[k] = torch.where(better.reshape(*better.shape, *[1] * (v.dim() - 2)), v, kept[k])


def _init_beta(init: Mapping[str, torch.Tensor] | None, name: str, shape, like: torch.Tensor):
    """A trainable β ≥ 0 of ``shape``: ``init[name]`` (clamped at 0) when given, else zeros."""
    if init is not None and name in init:
        t = init[name].to(like).clamp(min=0).expand(shape)
    else:
        t = like.new_zeros(shape)
    return t.detach().clone().requires_grad_(True)


def optimize_bounds(
    graph: Graph,
    input_set: InputSet,
    C: torch.Tensor,
    d: torch.Tensor | None,
    intermediate: Mapping[str, Interval],
    config: AlphaCrownConfig | None = None,
    splits: Mapping[str, torch.Tensor] | None = None,
    init_slopes: Mapping[str, torch.Tensor] | None = None,
    *,
    proved: Proved | None = None,
    deadline: Deadline = NEVER,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """alpha/beta-CROWN lower bounds (B, R) of the rows ``C·y + d`` over each subdomain, and
    the optimised parameters (``slopes`` of ``backward_bounds``, (B, R, *shape) each; pass
    them back as ``init_slopes`` to warm-start a child subdomain).

    ``intermediate``: per-subdomain bounds (batch B) of at least every relaxed node's input
    (missing ones are computed by CROWN). ``splits``: ReLU input node → int8 (B, *shape) with
    +1 (z ≥ 0), −1 (z ≤ 0) or 0 (free). Sound for input set ∩ split constraints. A subdomain
    whose clipped bounds are infeasible (l > u: it is empty) gets lower bound +inf.
    Early stop once ``proved(lower)`` holds for every element (default: every row > 0).
    Past ``deadline`` it raises :class:`~nncert.clock.DeadlineExceededError`.
    """
    cfg = config or AlphaCrownConfig()
    check_supported(graph, BACKWARD, "alpha-crown")
    empty = None
    signs = {}
    if splits:
        intermediate, empty = _clip_splits(intermediate, splits)
        signs = {n: s.to(C.dtype) for n, s in splits.items() if bool((s != 0).any())}
    intermediate = _complete(graph, input_set, intermediate, cfg, deadline)
    with torch.enable_grad():
        lower, slopes, _, _ = _optimize_rows(graph, input_set, C, d, intermediate, cfg, signs=signs,
                                       init_slopes=init_slopes,
                                       proved=proved or (lambda lb: (lb > 0).all(1)),
                                       deadline=deadline)
    if empty is not None:
        lower = torch.where(empty.unsqueeze(1), torch.full_like(lower, torch.inf), lower)
    return lower, slopes


def _optimized_intermediate(graph, input_set, cfg: AlphaCrownConfig,
                            deadline: Deadline = NEVER):
    """Intermediate bounds each optimised with their own parameters, layer by layer."""
    def rows(name, C, idx, values):
        sub = {k: Interval(v.lower[idx], v.upper[idx]) for k, v in values.items()}
        R = C.shape[1]
        lower, *_ = _optimize_rows(graph, input_set[idx], torch.cat([C, -C], 1), None, sub,
                                     cfg, start=name, deadline=deadline)
        return lower[:, :R], -lower[:, R:]

    return intermediate_bounds(graph, input_set, cfg.crown, row_bounds=rows, deadline=deadline,
                               checks_per_pass=cfg.iterations + 1)


def optimized_intermediate_bounds(graph: Graph, input_set: InputSet,
                                  config: AlphaCrownConfig | None = None,
                                  deadline: Deadline = NEVER) -> dict[str, Interval]:
    """Sound bounds of every node over ``input_set``, each activation input's bounds optimised
    by alpha-CROWN with its own slopes, layer by layer (never looser than CROWN's). Past
    ``deadline`` it raises :class:`~nncert.clock.DeadlineExceededError`."""
    with torch.enable_grad():
        return _optimized_intermediate(graph, input_set, config or AlphaCrownConfig(), deadline)


def alpha_crown_bounds(problem: VerificationProblem,
                       config: AlphaCrownConfig | None = None,
                       deadline: Deadline = NEVER) -> Bounds:
    """alpha-CROWN bounds of the spec rows: never looser than CROWN's (row by row). With
    early_stop, only the batch elements CROWN leaves unproved are optimised. Past
    ``deadline`` it raises :class:`~nncert.clock.DeadlineExceededError`."""
    cfg = config or AlphaCrownConfig()
    g, spec, xs = problem.graph, problem.output_spec, problem.input_set
    crown = _bounds(problem, cfg.crown, "alpha-crown", deadline)
    values = crown.intermediate
    lower, steps = crown.lower.clone(), 0
    with torch.enable_grad():
        if cfg.optimize_intermediate:
            values = _optimized_intermediate(g, xs, cfg, deadline)
        todo = torch.arange(xs.batch_size, device=lower.device)
        if cfg.early_stop:
            todo = todo[~spec.proved(lower)]
        if todo.numel():
            sub = {k: v[todo] for k, v in values.items()}
            best, _, steps, _ = _optimize_rows(g, xs[todo], spec.C[todo], spec.d[todo], sub, cfg,
                                               proved=spec.proved, deadline=deadline)
            lower[todo] = torch.maximum(lower[todo], best)
        upper = crown.upper
        if cfg.optimize_upper:
            neg, *_ = _optimize_rows(g, xs, -spec.C, -spec.d, values, cfg, deadline=deadline)
            upper = torch.minimum(upper, -neg)
    return Bounds(lower, upper, "alpha-crown", values, stats={"steps": steps})
