"""Bounds of the open (subdomain, row) pairs of a search, each optimised as its own problem.

A search keeps, per subdomain, the spec rows of the clauses it has not proved yet (a clause
proved on a subdomain stays proved on its subsets). :func:`bound_open_rows` bounds only those
pairs: every pair is a one-row problem with its own relaxation slopes and split multipliers β
(alpha/beta-CROWN, Xu et al. 2021, Wang et al. 2021), warm-started from the subdomain's.

* Proved pairs leave the optimisation early (their parameters are kept), so the rows still
  open get the steps.
* The parameter search may run in a lower precision (``search_graph``, e.g. a float32 copy:
  about twice as fast); every slope in its range and every β ≥ 0 gives a sound bound, so the
  bounds returned are always evaluated again in ``graph``'s dtype: the better of the warm start
  and the final parameters, intersected with ``doms.lower`` (a parent's bounds hold on its
  children).

Sound for every point of each subdomain given intermediate bounds sound on it (the engine's
:func:`~nncert.bounds.subdomains.prepare_subdomains` clips, refines and completes them).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from ..clock import NEVER, Deadline
from ..models.graph import Graph
from ..specs.input_sets import InputSet
from .alpha_crown import AlphaCrownConfig, _adam_step, _init_slopes, _project
from .core import Interval
from .crown import backward_bounds
from .subdomains import (
    EngineConfig,
    Subdomains,
    batch_set,
    kept_bounds,
    prepare_subdomains,
    relu_inputs,
)

Params = dict[str, torch.Tensor]


@dataclass(frozen=True, eq=False)
class Pairs:
    """P one-row problems: problem p is row ``C[p]`` (1, n_out) + ``d[p]`` over element p of
    ``input_set`` (batch P) with intermediate bounds ``inter`` (batch P), split signs
    ``signs`` (pre-activation node → (P, *shape) float, 0 free) and a warm start ``slopes`` /
    ``betas`` ((P, 1, *shape) each, keyed like ``backward_bounds``' slopes / like ``signs``)."""

    input_set: InputSet
    C: torch.Tensor
    d: torch.Tensor
    inter: Mapping[str, Interval]
    signs: Mapping[str, torch.Tensor]
    slopes: Mapping[str, torch.Tensor] | None
    betas: Mapping[str, torch.Tensor] | None

    @property
    def size(self) -> int:
        return self.C.shape[0]

    def select(self, idx: torch.Tensor) -> Pairs:
        def pick(m):
            return None if m is None else {k: v[idx] for k, v in m.items()}
        return Pairs(self.input_set[idx], self.C[idx], self.d[idx],
                     {k: Interval(v.lower[idx], v.upper[idx]) for k, v in self.inter.items()},
                     pick(self.signs), pick(self.slopes), pick(self.betas))

    def to(self, dtype: torch.dtype) -> Pairs:
        def cast(m):
            return None if m is None else {k: v.to(dtype) for k, v in m.items()}
        return Pairs(self.input_set.to(dtype=dtype), self.C.to(dtype), self.d.to(dtype),
                     {k: Interval(v.lower.to(dtype), v.upper.to(dtype))
                      for k, v in self.inter.items()},
                     cast(self.signs), cast(self.slopes), cast(self.betas))


def _offsets(signs: Mapping[str, torch.Tensor], betas: Mapping[str, torch.Tensor]):
    """beta-CROWN's offsets ``−β∘s`` at the split pre-activation nodes."""
    return {n: -b * signs[n].unsqueeze(1) for n, b in betas.items() if n in signs}


def evaluate(graph: Graph, p: Pairs, slopes: Mapping[str, torch.Tensor] | None,
             betas: Mapping[str, torch.Tensor] | None, capture: dict | None = None,
             mode: str = "adaptive") -> torch.Tensor:
    """Sound lower bounds (P, 1) of the pairs with the given parameters (any slope in range,
    any β ≥ 0), in ``graph``'s dtype; ``capture`` as in ``backward_bounds``."""
    dt = p.C.dtype
    sl = None if slopes is None else {k: v.to(dt) for k, v in slopes.items()}
    off = {} if betas is None else _offsets(p.signs, {k: v.to(dt).clamp(min=0)
                                                      for k, v in betas.items()})
    with torch.no_grad():
        lower, _ = backward_bounds(graph, p.input_set, p.C, p.d, p.inter, sl, off,
                                   need_upper=False, relaxation=mode, capture=capture)
    return lower


def _leaves(p: Pairs, cfg: AlphaCrownConfig, graph: Graph):
    """Trainable slopes (with ranges) and β of the pairs, from their warm start."""
    params, ranges = _init_slopes(graph, p.inter, p.size, 1, cfg.crown.relaxation, p.slopes,
                                  graph.output_name)
    betas = {}
    for n, s in p.signs.items():
        b0 = p.betas.get(n) if p.betas is not None else None
        b = s.new_zeros(p.size, 1, *s.shape[1:]) if b0 is None else b0.to(s).clamp(min=0)
        betas[n] = b.detach().expand(p.size, 1, *s.shape[1:]).clone().requires_grad_(True)
    return params, ranges, betas


def optimize_pairs(graph: Graph, p: Pairs, cfg: AlphaCrownConfig,
                   deadline: Deadline = NEVER) -> tuple[Params, Params]:
    """The slopes and β (P, 1, *shape) after ``cfg.iterations`` projected Adam steps
    maximising each pair's bound in ``graph``'s dtype (a search: the caller evaluates the
    result soundly with :func:`evaluate`). A pair whose bound is positive leaves with its
    current parameters; the rest are re-gathered once fewer than 3/4 are still live.
    Past ``deadline`` (checked before every step) it raises
    :class:`~nncert.clock.DeadlineExceededError`."""
    params, ranges, betas = _leaves(p, cfg, graph)
    out_s = {k: v.detach().clone() for k, v in params.items()}
    out_b = {k: v.detach().clone() for k, v in betas.items()}
    act = torch.arange(p.size, device=p.C.device)
    sub = p
    moments = [(torch.zeros_like(t), torch.zeros_like(t)) for t in [*params.values(),
                                                                     *betas.values()]]
    live = torch.ones(act.numel(), dtype=torch.bool, device=act.device)
    cache: dict = {}  # the relaxations' fixed parts (same bounds every step)
    with torch.enable_grad():
        for it in range(1, cfg.iterations + 1):
            if not bool(live.any()):
                break
            deadline.check()
            lower, _ = backward_bounds(graph, sub.input_set, sub.C, sub.d, sub.inter, params,
                                       _offsets(sub.signs, betas), need_upper=False,
                                       relaxation=cfg.crown.relaxation, relax_cache=cache)
            if not lower.requires_grad:
                break
            done = (lower.detach() > 0).all(-1) & live
            leaves = [*params.values(), *betas.values()]
            grads = torch.autograd.grad(-lower.clamp(max=1.0).sum(), leaves, allow_unused=True)
            if bool(done.any()):  # proved with these parameters: keep them
                _write(out_s, out_b, params, betas, act, done)
                live &= ~done
            lrs = [cfg.lr] * len(params) + [cfg.lr_beta] * len(betas)
            _adam_step(list(zip(leaves, lrs)), grads, moments, it, cfg.lr_decay ** (it - 1))
            _project(params, ranges, betas)
            if int(live.sum()) < 0.75 * live.numel():
                _write(out_s, out_b, params, betas, act, live)
                keep = live.nonzero().flatten()
                act, sub, cache = act[keep], sub.select(keep), {}
                params = {k: v.detach()[keep].requires_grad_(True) for k, v in params.items()}
                betas = {k: v.detach()[keep].requires_grad_(True) for k, v in betas.items()}
                moments = [(m[keep], v[keep]) for m, v in moments]
                live = torch.ones(act.numel(), dtype=torch.bool, device=act.device)
    _write(out_s, out_b, params, betas, act, live)
    return out_s, out_b


def _write(out_s: Params, out_b: Params, params: Params, betas: Params, act: torch.Tensor,
           mask: torch.Tensor) -> None:
    """Copy the parameters of the masked live problems into the full-size outputs."""
    idx = act[mask]
    for out, src in ((out_s, params), (out_b, betas)):
        for k, v in src.items():
            out[k][idx] = v.detach()[mask].to(out[k].dtype)


def bound_pairs(graph: Graph, p: Pairs, cfg: AlphaCrownConfig, *,
                search_graph: Graph | None = None, capture: dict | None = None,
                deadline: Deadline = NEVER) -> tuple[torch.Tensor, Params, Params]:
    """Sound lower bounds (P,) of the pairs, and the final slopes and β (warm starts).

    The search runs on ``search_graph`` (with the pairs cast to its dtype) when given; the
    bounds are those of the warm start and of the final parameters, both evaluated on
    ``graph`` (the better of the two per pair); ``capture`` gets the A of the final
    parameters' pass."""
    deadline.check()
    sg = search_graph if search_graph is not None else graph
    sdt = sg.dtype
    if cfg.iterations <= 0 or p.size == 0:
        start = evaluate(graph, p, p.slopes, p.betas, capture, cfg.crown.relaxation)
        return start[:, 0], dict(p.slopes or {}), dict(p.betas or {})
    start = evaluate(graph, p, p.slopes, p.betas, mode=cfg.crown.relaxation)
    sp = p if sdt == p.C.dtype else p.to(sdt)
    slopes, betas = optimize_pairs(sg, sp, cfg, deadline)
    deadline.check()
    final = evaluate(graph, p, slopes, betas, capture, cfg.crown.relaxation)
    return torch.maximum(start, final)[:, 0], slopes, betas


@dataclass(frozen=True, eq=False)
class OpenRowBounds:
    """``lower`` (B, R): sound lower bounds of the open rows on each subdomain, +inf for rows
    not bounded (closed) and for empty subdomains; ``intermediate``: the bounds used (clipped,
    refined; batch B); ``empty`` (B,); ``slopes`` / ``betas`` (B, R, *shape; betas keyed by
    ReLU name): the warm start with the bounded pairs' final parameters written in;
    ``dom``, ``row`` (P,): the pairs bounded; ``input_coefficients`` (P, 1, *input shape) or
    None: A at the graph input of each pair's final pass (candidate points)."""

    lower: torch.Tensor
    intermediate: Mapping[str, Interval]
    empty: torch.Tensor
    slopes: Mapping[str, torch.Tensor]
    betas: Mapping[str, torch.Tensor]
    dom: torch.Tensor
    row: torch.Tensor
    input_coefficients: torch.Tensor | None


def _pairs(xs: InputSet, C, d, inter, pre, doms: Subdomains, dom, row, z_of) -> Pairs:
    """The (subdomain ``dom[p]``, row ``row[p]``) problems with their warm starts."""
    slopes = None if doms.slopes is None else {
        k: v[dom, row].unsqueeze(1) for k, v in doms.slopes.items()}
    betas = None if doms.betas is None else {
        z_of[r]: v[dom, row].unsqueeze(1) for r, v in doms.betas.items() if z_of[r] in pre}
    signs = {z: s[dom].to(C.dtype) for z, s in pre.items() if bool((s != 0).any())}
    return Pairs(xs[dom], C[dom, row].unsqueeze(1), d[dom, row].unsqueeze(1),
                 {k: Interval(v.lower[dom], v.upper[dom]) for k, v in inter.items()},
                 signs, slopes, betas)


def _scatter(full: Mapping[str, torch.Tensor] | None, part: Params, dom, row, B: int,
             R: int) -> Params:
    """``full`` (B, R, *shape) with rows (dom, row) replaced by ``part`` (P, 1, *shape);
    entries missing from ``full`` start at 0 (any slope in [0, 1], any β ≥ 0 is sound); those
    missing from ``part`` stay as they are."""
    out = dict(full or {})
    for k, v in part.items():
        base = full.get(k) if full is not None else None
        if base is None:
            base = v.new_zeros(B, R, *v.shape[2:])
        else:
            base = base.clone()
        base[dom, row] = v[:, 0].to(base.dtype)
        out[k] = base
    return out


def bound_open_rows(graph: Graph, input_set: InputSet, C: torch.Tensor, d: torch.Tensor,
                    doms: Subdomains, open_rows: torch.Tensor,
                    config: EngineConfig | None = None, *, search_graph: Graph | None = None,
                    refine_only: Mapping[str, torch.Tensor] | None = None,
                    use_beta: bool = True, deadline: Deadline = NEVER) -> OpenRowBounds:
    """Sound lower bounds of the rows ``C·y + d`` (C (1 or B, R, n_out)) marked in
    ``open_rows`` (B, R) on each subdomain of ``doms`` (of the batch-1 ``input_set``, or each
    its own element of a batch-B one), every (subdomain, open row) pair optimised as its own
    problem (see the module docstring), never below ``doms.lower``; ``use_beta`` False
    leaves the split constraints to the clipped bounds only (no β). Past ``deadline`` it
    raises :class:`~nncert.clock.DeadlineExceededError`."""
    cfg = config or EngineConfig()
    B = doms.batch_size
    xs, inter, empty, pre = prepare_subdomains(graph, input_set, doms, cfg,
                                               refine_only=refine_only, deadline=deadline)
    C, d = C.expand(B, -1, -1), d.expand(B, -1)
    R = C.shape[1]
    dom, row = (open_rows & ~empty.unsqueeze(1)).nonzero(as_tuple=True)
    z_of = relu_inputs(graph)
    p = _pairs(xs, C, d, inter, pre if use_beta else {}, doms, dom, row, z_of)
    cap = {graph.input_name: None}
    lb, slopes, betas = bound_pairs(graph, p, cfg.alpha, search_graph=search_graph,
                                    capture=cap, deadline=deadline)
    lower = torch.full((B, R), math.inf, dtype=C.dtype, device=C.device)
    if doms.lower is not None:
        lb = torch.maximum(lb, doms.lower[dom, row].to(lb))
    lower[dom, row] = lb
    relu_of = {z: r for r, z in z_of.items()}
    return OpenRowBounds(lower, {k: v for k, v in inter.items() if k in kept_bounds(graph)},
                         empty, _scatter(doms.slopes, slopes, dom, row, B, R),
                         _scatter(doms.betas, {relu_of[z]: b for z, b in betas.items()},
                                  dom, row, B, R),
                         dom, row, cap[graph.input_name])


def relu_coefficients(graph: Graph, input_set: InputSet, C: torch.Tensor, d: torch.Tensor,
                      inter: Mapping[str, Interval],
                      slopes: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The coefficients A (B, R, *shape) of the rows ``C·y + d`` (C (B, R, n_out)) on every
    ReLU's output in one CROWN pass with ``slopes`` (for branching scores: a heuristic, so
    any dtype will do; ``input_set`` has B elements or one)."""
    xs = batch_set(input_set, C.shape[0])
    cap = dict.fromkeys(relu_inputs(graph))
    with torch.no_grad():
        backward_bounds(graph, xs, C, d, inter, slopes, need_upper=False, capture=cap)
    return {k: v for k, v in cap.items() if v is not None}
