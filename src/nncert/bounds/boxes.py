"""The bound engine for input splitting: a batch of boxes of one graph's input.

``bound_boxes`` bounds the spec rows on each box of a batch with the machinery of
``crown.py`` / ``alpha_crown.py`` (no other copy of CROWN): intermediate bounds by
:func:`~nncert.bounds.crown.intermediate_bounds` (each box's own CROWN bounds, intersected with
``prior``, bounds sound on a superset such as the parent box, so a child is never looser),
the rows by one backward pass that also returns their input coefficients, clause bounds of
disjunctions by :mod:`~nncert.bounds.clauses`, and, on the open boxes with few unstable ReLUs,
a few alpha-CROWN steps warm-started from given slopes (the parent's).

Soundness: every bound returned holds for every point of its box, given ``prior`` sound on it.
The clause bounds are built from the raw linear bounds of one pass (coefficients and minima of
the same pass), never from bounds intersected afterwards.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from ..clock import NEVER, Deadline
from ..specs.input_sets import Box
from ..specs.output import OutputSpec
from . import forward
from .alpha_crown import AlphaCrownConfig, _init_slopes, _optimize_rows
from .clauses import clause_lowers, linear_constant
from .core import Interval
from .crown import BACKWARD, CrownConfig, _relaxed_inputs, backward_bounds, intermediate_bounds
from .traversal import check_supported

#: entries of A per intermediate pass in input splitting (2 MB in float64)
CACHE_PASS_ELEMENTS = 2**18


@dataclass(frozen=True)
class BoxConfig:
    """``crown``: the intermediate bounds (``intermediate="crown"``: a backward pass per
    unstable neuron; "ibp": intervals only). ``alpha_iters`` Adam steps (learning rate
    ``alpha_lr``, no decay) on the open boxes with at most ``alpha_max_unstable`` unstable
    ReLU-like neurons (0 steps: CROWN only). ``forward_max_inputs``: without ``prior`` (at
    the root of a search), on graphs with at most this many inputs (and forward rules for
    every op), forward-mode linear bounds (:mod:`~nncert.bounds.forward`) tighten every node
    first, so that fewer neurons need a backward pass (0: never). (With a parent's bounds as
    prior they rarely pay for themselves: measured on ACAS Xu.) The default ``crown`` caps a
    pass at ``CACHE_PASS_ELEMENTS`` entries of A: the networks split on their inputs are
    small, and passes whose tensors stay in the CPU's cache cost about half as much per row
    as larger ones (measured on ACAS Xu: 0.12 ms per box at 64 boxes, 0.27 at 128)."""

    crown: CrownConfig = CrownConfig(max_pass_elements=CACHE_PASS_ELEMENTS)
    alpha_iters: int = 3
    alpha_max_unstable: int = 32
    alpha_lr: float = 0.3
    forward_max_inputs: int = 16


@dataclass(frozen=True, eq=False)
class BoxBounds:
    """Per box b of the batch: ``lower`` (B, R) sound lower bounds of the rows and ``coefficients``
    (B, R, n) the flat input coefficients of linear bounds whose minima they are (branching,
    candidate points); ``clauses`` (B, K) sound lower bounds of the spec's clauses;
    ``intermediate`` the bounds of every relaxed node's input (a prior for sub-boxes);
    ``slopes`` node → (B, R, *shape) the optimised ReLU slopes and ``optimized`` (B,) which
    boxes have them (a warm start for sub-boxes; the others hold CROWN's default)."""

    lower: torch.Tensor
    coefficients: torch.Tensor
    clauses: torch.Tensor
    intermediate: dict[str, Interval]
    slopes: dict[str, torch.Tensor]
    optimized: torch.Tensor


def input_reach(graph) -> torch.Tensor:
    """(n,) per flat input coordinate, the summed |coefficient| of the affine map from the
    input to the first node whose bounds a relaxation reads (the graph output when there is
    none): how far a side of the box reaches into the first nonlinearity."""
    relaxed = _relaxed_inputs(graph)
    first = next((n.name for n in graph if n.name in relaxed), graph.output_name)
    m = graph.shapes[first] if first != graph.input_name else graph.input_shape
    size = 1
    for s in m:
        size *= s
    eye = torch.eye(size, dtype=graph.dtype).unsqueeze(0)
    zero = torch.zeros((1, *graph.input_shape), dtype=graph.dtype)
    cap = {graph.input_name: None}
    backward_bounds(graph, Box(zero, zero), eye, None, {}, need_upper=False, start=first,
                    capture=cap)
    A = cap[graph.input_name]
    if A is None:  # (the node does not depend on the input)
        return torch.zeros(zero.numel(), dtype=graph.dtype)
    return A.reshape(size, -1).abs().sum(0)


def _row_pass(graph, boxes: Box, C, d, inter, slopes=None):
    """(lower (B, R), flat input coefficients (B, R, n)) of one CROWN pass of the rows."""
    cap = {graph.input_name: None}
    lower, _ = backward_bounds(graph, boxes, C, d, inter, slopes, need_upper=False,
                               capture=cap)
    B, R = lower.shape
    A = cap[graph.input_name]
    A = torch.zeros(B, R, boxes.lower[0].numel(), dtype=lower.dtype) if A is None else A
    return lower, A.reshape(B, R, -1)


def _clauses(spec: OutputSpec, boxes: Box, lower, A) -> torch.Tensor:
    """(B, K) clause bounds from raw linear bounds (``lower`` the minima of ``A·x + c``)."""
    B = lower.shape[0]
    flat = Box(boxes.lower.reshape(B, -1), boxes.upper.reshape(B, -1))
    return clause_lowers(spec, flat, A, linear_constant(flat, A, lower), lower=lower)


def _unstable(graph, inter: Mapping[str, Interval], idx: torch.Tensor) -> torch.Tensor | None:
    """(k,) number of unstable ReLU-like neurons of the boxes ``idx``; None without any."""
    count = None
    for name, pwl in _relaxed_inputs(graph).items():
        if not pwl:
            continue
        lo, up = inter[name].lower[idx], inter[name].upper[idx]
        u = ((lo < 0) & (up > 0)).flatten(1).sum(1)
        count = u if count is None else count + u
    return count


def default_slopes(graph, inter: Mapping[str, Interval], R: int, mode: str = "adaptive"):
    """The relaxations' own slope parameters (CROWN's), node → (B, R, *shape)."""
    params, _ = _init_slopes(graph, inter, next(iter(inter.values())).lower.shape[0], R, mode,
                             None, graph.output_name)
    return {k: v.detach() for k, v in params.items()}


def _alpha(graph, boxes: Box, spec: OutputSpec, inter, res: dict, cfg: BoxConfig,
           warm: Mapping[str, torch.Tensor] | None, warm_has, deadline: Deadline):
    """A few alpha steps on the open boxes with few unstable neurons, from ``warm`` where
    ``warm_has`` (else CROWN's slopes); ``res`` (lower, coefficients, clauses) updated, each
    the better of CROWN's and alpha's (both sound). Returns (the selected boxes' indices,
    their slopes) or None."""
    if cfg.alpha_iters <= 0:
        return None
    open_ = (~(res["clauses"] > 0).all(-1)).nonzero()[:, 0]
    unstable = _unstable(graph, inter, open_)
    if unstable is None:
        return None
    sel = open_[unstable <= cfg.alpha_max_unstable]
    if not sel.numel():
        return None
    k, R = sel.numel(), spec.C.shape[1]
    sub = {n: Interval(v.lower[sel], v.upper[sel]) for n, v in inter.items()}
    init = None
    if warm is not None and bool(warm_has[sel].any()):
        wh = warm_has[sel]
        init = {n: torch.where(wh.reshape(-1, *[1] * (v.dim() - 1)), warm[n][sel].to(v), v)
                if n in warm else v
                for n, v in default_slopes(graph, sub, R, cfg.crown.relaxation).items()}
    acfg = AlphaCrownConfig(iterations=cfg.alpha_iters, lr=cfg.alpha_lr, lr_decay=1.0,
                            crown=cfg.crown)
    sboxes = boxes[sel]
    cap: dict = {graph.input_name: None}
    kept: dict = {}
    with torch.enable_grad():
        best, slopes, _, _ = _optimize_rows(graph, sboxes, spec.C, spec.d.expand(k, -1), sub,
                                            acfg, init_slopes=init, deadline=deadline,
                                            proved=lambda lb: (lb > 0).all(1), capture=cap,
                                            best_rows=kept)
    A = kept[graph.input_name].reshape(k, R, -1)
    cl = _clauses(spec, sboxes, kept["lower"], A)  # (per row: the A and minimum of one pass)
    res["lower"][sel] = torch.maximum(res["lower"][sel], best)
    better = cl.amin(-1) > res["clauses"][sel].amin(-1)
    res["coefficients"][sel] = torch.where(better[:, None, None], A, res["coefficients"][sel])
    res["clauses"][sel] = torch.maximum(res["clauses"][sel], cl)
    return sel, slopes


def bound_boxes(graph, boxes: Box, spec: OutputSpec, config: BoxConfig | None = None, *,
                prior: Mapping[str, Interval] | None = None,
                warm: Mapping[str, torch.Tensor] | None = None,
                warm_has: torch.Tensor | None = None,
                deadline: Deadline = NEVER) -> BoxBounds:
    """Sound bounds of the batch-1 ``spec`` on each box of ``boxes`` (batch B).

    ``prior``: bounds of (some) nodes sound on each box (e.g. its parent's), intersected with
    the new ones (so they are never looser). ``warm`` node → (B, R, *shape) slopes to start
    the alpha steps from on the boxes where ``warm_has`` (B,) holds (any value is sound).
    Past ``deadline`` it raises :class:`~nncert.clock.DeadlineExceededError`."""
    cfg = config or BoxConfig()
    check_supported(graph, BACKWARD, "box bounds")
    if prior is None and graph.num_inputs <= cfg.forward_max_inputs and forward.supports(graph):
        prior = forward.forward_bounds(graph, boxes, prior, cfg.crown.relaxation, deadline)
    inter = intermediate_bounds(graph, boxes, cfg.crown, prior=prior, deadline=deadline)
    deadline.check()
    lower, A = _row_pass(graph, boxes, spec.C, spec.d, inter)
    res = {"lower": lower, "coefficients": A, "clauses": _clauses(spec, boxes, lower, A)}
    opt = _alpha(graph, boxes, spec, inter, res, cfg, warm, warm_has, deadline)
    B = boxes.batch_size
    has = torch.zeros(B, dtype=torch.bool)
    slopes: dict[str, torch.Tensor] = {}
    if opt is not None:
        sel, found = opt
        has[sel] = True
        for n, v in found.items():
            full = v.new_zeros((B, *v.shape[1:]))
            full[sel] = v
            slopes[n] = full
    keep = _relaxed_inputs(graph)
    return BoxBounds(res["lower"], res["coefficients"], res["clauses"],
                     {k: v for k, v in inter.items() if k in keep}, slopes, has)
