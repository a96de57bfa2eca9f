"""Activation-split branch-and-bound on any graph (conv, residual Add, MaxPool, ...) with
ReLUs or general activations (LeakyReLU, Sigmoid, Tanh).

Search only: pop the worst open subdomains, split one neuron each (keyed by graph node name):
an unstable ReLU by sign (BaBSR score), a general activation's input at a point
(``bounds/activation_splits.py``, GenBaB, Shi et al. 2024; score in
``activation_branching.py``); bound both children with ``bounds/subdomains.py``
(alpha/beta-CROWN, warm-started from the parent), push the unproved ones. VERIFIED only when
every leaf's sound lower bound proves the spec (the leaves cover the input set: each split is
a two-way case distinction of one neuron, z ≥ 0 | z ≤ 0 or z ≥ p | z ≤ p); FALSIFIED only
with a counterexample confirmed by ``check`` on the concrete model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import torch

from ..bounds.activation_splits import (
    activation_inputs,
    split_limits,
    split_points,
    unsplit_limits,
)
from ..bounds.alpha_crown import AlphaCrownConfig
from ..bounds.core import Interval
from ..bounds.subdomains import (
    EngineConfig,
    SubdomainBounds,
    Subdomains,
    bound_subdomains,
    relu_inputs,
    root_subdomain,
)
from ..clock import Deadline, DeadlineExceededError
from ..errors import ConfigError
from ..result import Counterexample
from ..specs.output import OutputSpec
from ..specs.problem import VerificationProblem
from . import branching as br
from .activation_branching import activation_scores
from .bab import BaBOutcome, first_confirmed

Checker = Callable[[torch.Tensor], Counterexample | None]


@dataclass(frozen=True)
class GraphBaBConfig:
    """``batch_size``: subdomains split per step (2× as many children bounded together);
    ``alpha_iters`` / ``root_alpha_iters``: alpha/beta steps per child / at the root;
    ``max_domains``: UNKNOWN past this many open subdomains; ``max_steps``: UNKNOWN past this
    many steps (None: no cap; an iteration budget for tests); ``refine_intermediate``: re-bound
    each child's nodes after its ReLU splits (see EngineConfig; children of general
    activation splits are always re-bounded); ``act_min_width``: Sigmoid/Tanh neurons no
    wider than this are not split."""

    batch_size: int = 16
    alpha_iters: int = 10
    root_alpha_iters: int = 50
    lr: float = 0.1
    lr_beta: float = 0.05
    max_domains: int = 20_000
    max_steps: int | None = None
    refine_intermediate: bool = False
    attack_steps: int = 10  # PGD steps from each bounded subdomain's worst corner ...
    attack_every: int = 5  # ... every this many steps (the others check the corners only)
    heuristic: str = "fsb"  # "babsr" or "fsb" (BaBSR's top fsb_topk tried with one CROWN pass)
    fsb_topk: int = 4
    act_min_width: float = 1e-5
    stuck_alpha_iters: int = 100  # alpha/beta steps for a subdomain with nothing left to split
    search_dtype: str | None = "float32"  # dtype of the alpha/beta steps (the bounds that
    # decide are computed in the network's dtype; None: search in it too)

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.max_domains < 1:
            raise ConfigError("GraphBaBConfig: batch_size and max_domains must be ≥ 1")
        if self.heuristic not in ("babsr", "fsb") or self.fsb_topk < 1:
            raise ConfigError("GraphBaBConfig: heuristic must be 'babsr' or 'fsb', fsb_topk ≥ 1")
        if self.alpha_iters < 0 or self.root_alpha_iters < 0 or self.stuck_alpha_iters < 0:
            raise ConfigError("GraphBaBConfig: alpha iterations must be ≥ 0")
        if self.search_dtype not in (None, "float32", "float64"):
            raise ConfigError("GraphBaBConfig: search_dtype must be None, 'float32' or "
                              f"'float64', got {self.search_dtype!r}")

    def engine(self, iterations: int, refine_activation_splits: bool = True) -> EngineConfig:
        alpha = AlphaCrownConfig(iterations=iterations, lr=self.lr, lr_beta=self.lr_beta,
                                 search_dtype=self.search_dtype)
        return EngineConfig(alpha, self.refine_intermediate, refine_activation_splits)


def _cat(parts: list[Subdomains]) -> Subdomains:
    """One batch from several. A warm-start entry missing from a part is zero there (β) —
    any warm start is sound; an intermediate bound must be in every part."""
    def cat(ms):
        if any(m is None for m in ms):
            return None
        keys = set().union(*ms)
        return {k: torch.cat([m[k] if k in m else _zeros_like_batch(ms, k, p.batch_size)
                              for m, p in zip(ms, parts)]) for k in keys}
    inter = {k: Interval(torch.cat([p.intermediate[k].lower for p in parts]),
                         torch.cat([p.intermediate[k].upper for p in parts]))
             for k in set(parts[0].intermediate).intersection(*(p.intermediate for p in parts))}
    return Subdomains(cat([p.splits for p in parts]), inter, cat([p.slopes for p in parts]),
                      cat([p.betas for p in parts]),
                      None if any(p.lower is None for p in parts)
                      else torch.cat([p.lower for p in parts]), cat([p.limits for p in parts]))


def _zeros_like_batch(ms, key: str, batch: int) -> torch.Tensor:
    ref = next(m[key] for m in ms if key in m)
    return ref.new_zeros((batch, *ref.shape[1:]))


def _names(graph) -> list[str]:
    """The nodes a split may sit on: every ReLU, then every branchable general activation
    (the layer index of a split choice points into this list)."""
    return [*relu_inputs(graph), *activation_inputs(graph)]


def _scores(problem, bounds: SubdomainBounds, splits: Mapping[str, torch.Tensor],
            z_of: Mapping[str, str], config: GraphBaBConfig) -> list[torch.Tensor]:
    """Scores (B, n) per node of ``_names`` (0 where no split helps) on the best row of the
    worst clause of each subdomain: BaBSR for ReLUs (0 for stable or split neurons), the
    gap score of ``activation_branching`` for general activations."""
    spec = problem.output_spec
    rows, vals = br.clause_best_rows(spec, bounds.lower)
    worst = rows.gather(1, vals.argmin(1, keepdim=True)).squeeze(1)
    names = list(z_of)
    B, R = bounds.lower.shape
    layers, As = [], []
    for r in names:
        iv = bounds.intermediate[z_of[r]]
        free = (splits[r] == 0).flatten(1)
        lo = torch.where(free, iv.lower.flatten(1), torch.zeros_like(free, dtype=iv.lower.dtype))
        layers.append((lo, iv.upper.flatten(1)))
        A = bounds.coefficients.get(r)  # (None: the ReLU does not reach the output)
        As.append(lo.new_zeros(B, R, lo.shape[1]) if A is None else A.flatten(2))
    return br.babsr_scores(layers, As, worst) + activation_scores(
        problem.graph, bounds, worst, config.act_min_width)


def _children(graph, doms: Subdomains, names: list[str], layer: torch.Tensor,
              idx: torch.Tensor) -> Subdomains:
    """Two children per subdomain (all +1 / upper-side children, then all −1 / lower-side):
    the parent's splits plus one on neuron ``idx`` of node ``names[layer]`` (a ReLU: its
    sign; a general activation: its input at ``split_points`` of the parent's bounds); the
    parent's (clipped) intermediate bounds, sound on each child (a subset), and its warm
    start."""
    B = layer.shape[0]
    rows = torch.arange(B, device=layer.device)
    splits = {}
    for k, r in enumerate(names):
        if r not in doms.splits:
            continue
        s = doms.splits[r].reshape(B, -1)
        pos, neg = s.clone(), s.clone()
        sel = layer == k
        pos[rows[sel], idx[sel]] = 1
        neg[rows[sel], idx[sel]] = -1
        splits[r] = torch.cat([pos, neg]).reshape(2 * B, *doms.splits[r].shape[1:])
    for r, s in doms.splits.items():
        splits.setdefault(r, torch.cat([s, s]))

    def twice(m):
        return None if m is None else {k: torch.cat([v, v]) for k, v in m.items()}
    inter = {k: Interval(torch.cat([v.lower, v.lower]), torch.cat([v.upper, v.upper]))
             for k, v in doms.intermediate.items()}
    lower = None if doms.lower is None else torch.cat([doms.lower, doms.lower])
    limits = _child_limits(graph, doms, names, layer, idx)
    return Subdomains(splits, inter, twice(doms.slopes), twice(doms.betas), lower, limits)


def _child_limits(graph, doms: Subdomains, names: list[str], layer: torch.Tensor,
                  idx: torch.Tensor) -> dict[str, torch.Tensor] | None:
    """The children's activation limits (upper sides, then lower sides), split at
    ``split_points`` of the parent's bounds of the chosen neuron (strictly inside them for
    every candidate; the two sides cover the parent whatever the point)."""
    if doms.limits is None:
        return None
    out = {}
    for a, lim in doms.limits.items():
        sel = (layer == names.index(a)).nonzero().flatten()
        iv = doms.intermediate[graph.node(a).inputs[0]]
        lo, hi = iv.lower.flatten(1)[sel, idx[sel]], iv.upper.flatten(1)[sel, idx[sel]]
        up, down = split_limits(lim, sel, idx[sel], split_points(graph.node(a).op, lo, hi))
        out[a] = torch.cat([up, down])
    return out


def _try_points(problem: VerificationProblem, bounds: SubdomainBounds, check: Checker,
                steps: int = 0):
    """From the input-set corner minimising each subdomain's worst row's linear bound (and
    as many random points of the set), ``steps`` of signed-gradient descent on the spec
    margin over the whole set; points that violate the spec on the graph are handed to
    ``check`` (the concrete re-check)."""
    g, xs, spec = problem.graph, problem.input_set, problem.output_spec
    A = bounds.coefficients.get(g.input_name)
    if A is None:
        return None
    rows, vals = br.clause_best_rows(spec, bounds.lower)
    worst = rows.gather(1, vals.argmin(1, keepdim=True)).squeeze(1)
    a = A[torch.arange(A.shape[0], device=A.device), worst]
    x = xs.project(torch.where(a > 0, xs.lower, xs.upper))
    if steps:  # random starts too: corners may sit where the margin is flat
        x = torch.cat([x, xs.sample(x.shape[0])[:, 0]])
    x = _descend(g, xs, spec.expand(x.shape[0]), x, steps)
    with torch.no_grad():
        margins = spec.expand(x.shape[0]).margin(g.forward(x).flatten(1))
    return first_confirmed(x, margins, check, x.shape[0])


def _descend(g, xs, spec: OutputSpec, x: torch.Tensor, steps: int) -> torch.Tensor:
    """PGD on the margin (signed gradient, shrinking steps), projected into the set."""
    size = float((xs.upper - xs.lower).max()) / 8
    with torch.enable_grad():
        for _ in range(steps):
            x = x.detach().requires_grad_(True)
            m = spec.margin(g(x).flatten(1))
            if bool((m <= 0).any()):
                break
            (grad,) = torch.autograd.grad(m.sum(), x)
            x = xs.project(x - size * grad.sign())
            size *= 0.8
    return x.detach()


def _margin(spec, lower: torch.Tensor) -> torch.Tensor:
    return spec.clause_max(lower).amin(-1)


def _bound(problem, doms: Subdomains, iters: int, config: GraphBaBConfig, deadline: Deadline,
           refine_activation_splits: bool = True):
    spec = problem.output_spec
    return bound_subdomains(problem.graph, problem.input_set, spec.C, spec.d, doms,
                            config.engine(iters, refine_activation_splits), proved=spec.proved,
                            deadline=deadline)


@dataclass(frozen=True, eq=False)
class _Open:
    """Open subdomains (bounded, unproved): their state for the children, their margin lower
    bound and the neuron each will be split on (ReLU index into ``names``, flat index)."""

    doms: Subdomains
    margin: torch.Tensor
    layer: torch.Tensor
    idx: torch.Tensor

    def select(self, i: torch.Tensor) -> _Open:
        return _Open(self.doms.select(i), self.margin[i], self.layer[i], self.idx[i])


def _cat_open(parts: list[_Open]) -> _Open:
    full = [p for p in parts if p.margin.numel()]
    if len(full) <= 1:
        return full[0] if full else parts[0]
    return _Open(_cat([p.doms for p in full]), torch.cat([p.margin for p in full]),
                 torch.cat([p.layer for p in full]), torch.cat([p.idx for p in full]))


class _Queue:
    """The open subdomains as a list of small batches (one per step), so that popping the
    worst ones copies only those (and the rest of their batches), not the whole queue."""

    def __init__(self, first: _Open):
        self.chunks = [first] if first.margin.numel() else []

    def __len__(self) -> int:
        return sum(c.margin.numel() for c in self.chunks)

    def min_margin(self) -> float:
        return min(float(c.margin.min()) for c in self.chunks)

    def push(self, o: _Open) -> None:
        if o.margin.numel():
            self.chunks.append(o)

    def pop(self, k: int) -> _Open:
        """The (up to) k open subdomains with the lowest margins, removed from the queue."""
        margins = torch.cat([c.margin for c in self.chunks])
        owner = torch.cat([torch.full((c.margin.numel(),), i) for i, c in enumerate(self.chunks)])
        local = torch.cat([torch.arange(c.margin.numel()) for c in self.chunks])
        pick = margins.argsort()[:k]
        taken, kept = [], []
        for i, c in enumerate(self.chunks):
            mine = local[pick[owner[pick] == i]]
            if not mine.numel():
                kept.append(c)
                continue
            taken.append(c.select(mine))
            rest = torch.ones(c.margin.numel(), dtype=torch.bool)
            rest[mine] = False
            if bool(rest.any()):
                kept.append(c.select(rest.nonzero().flatten()))
        self.chunks = kept
        return _cat_open(taken)


def _settle(problem, doms: Subdomains, b: SubdomainBounds, z_of, config: GraphBaBConfig,
            deadline: Deadline, stats: dict):
    """The unproved, non-empty subdomains of a bounded batch as _Open (with their split
    choice); those with no neuron left to split get ``stuck_alpha_iters`` more steps of
    alpha/beta (their bound is then only as loose as the multipliers' convergence); the ones
    still unproved are counted as stuck and dropped (the outcome can then not be VERIFIED)."""
    spec = problem.output_spec
    keep = ~(spec.proved(b.lower) | b.empty)
    i = keep.nonzero().flatten()
    state = Subdomains(doms.splits, b.intermediate, b.slopes, b.betas, b.lower,
                       doms.limits).select(i)
    sb = SubdomainBounds(b.lower[i], state.intermediate,
                         {k: v[i] for k, v in b.coefficients.items()}, {}, {}, b.empty[i])
    scores = _scores(problem, sb, state.splits, z_of, config)
    if config.heuristic == "fsb" and i.numel():
        layer, idx = _fsb(problem, state, scores, _names(problem.graph), config, deadline)
    else:
        layer, idx = br.flat_argmax(scores)
    stuck = layer < 0
    if bool(stuck.any()) and config.stuck_alpha_iters > 0:
        k = stuck.nonzero().flatten()
        again = _bound(problem, state.select(k), config.stuck_alpha_iters, config, deadline)
        stuck[k] = ~(spec.proved(again.lower) | again.empty)
    stats["stuck"] += int(stuck.sum())
    j = (~stuck).nonzero().flatten()
    return _Open(state.select(j), _margin(spec, sb.lower)[j], layer[j], idx[j])


def _fsb(problem, state: Subdomains, scores, names, config: GraphBaBConfig, deadline: Deadline):
    """Filtered smart branching (De Palma et al. 2021): of each subdomain's top-k BaBSR
    candidates, the one whose worse child has the best bound after one CROWN pass with
    the parent's slopes and β. Returns (ReLU index, flat index) per subdomain, −1 if none."""
    vals, layer, idx = br.topk_candidates(scores, config.fsb_topk)  # (B, k) each
    B, k = vals.shape
    kids = _cat([_children(problem.graph, state, names, layer[:, c], idx[:, c])
                 for c in range(k)])
    kids = replace(kids, lower=None)
    b = _bound(problem, kids, 0, config, deadline, refine_activation_splits=False)
    m = _margin(problem.output_spec, b.lower).reshape(k, 2, B).amin(1)  # worse child
    m = torch.where(vals.T > 0, m, torch.full_like(m, -math.inf))
    best = m.argmax(0)
    rows = torch.arange(B)
    ok = vals[rows, best] > 0
    return (torch.where(ok, layer[rows, best], torch.full_like(best, -1)), idx[rows, best])


def _step(problem, queue: _Queue, names, z_of, config: GraphBaBConfig, deadline, check,
          stats) -> Counterexample | None:
    """Split the worst ``batch_size`` open subdomains, bound the children, push the open
    ones; returns a confirmed counterexample or None."""
    parents = queue.pop(config.batch_size)
    kids = _children(problem.graph, parents.doms, names, parents.layer, parents.idx)
    b = _bound(problem, kids, config.alpha_iters, config, deadline)
    stats["domains"] += kids.batch_size
    steps = config.attack_steps if stats["steps"] % max(config.attack_every, 1) == 0 else 0
    cex = _try_points(problem, b, check, steps)
    queue.push(_settle(problem, kids, b, z_of, config, deadline, stats))
    return cex


def _clause_problem(problem: VerificationProblem, clause: tuple[int, ...]):
    """The problem restricted to one clause (its rows as one disjunction)."""
    spec = problem.output_spec
    rows = list(clause)
    sub = OutputSpec(spec.C[:, rows], spec.d[:, rows], (tuple(range(len(rows))),))
    return VerificationProblem(problem.graph, problem.input_set, sub, problem.name)


def _clause_state(root: _Open, rows: list[int]) -> _Open:
    """The root's open state with only ``rows`` of the per-row tensors (slopes, lower)."""
    d = root.doms
    slopes = None if d.slopes is None else {k: v[:, rows] for k, v in d.slopes.items()}
    lower = None if d.lower is None else d.lower[:, rows]
    doms = Subdomains(d.splits, d.intermediate, slopes, None, lower, d.limits)
    return _Open(doms, lower.amax(1), root.layer, root.idx)


def _search(problem, open_: _Open, z_of, config: GraphBaBConfig, deadline: Deadline, check,
            stats: dict) -> BaBOutcome:
    """Pop, split, bound, push until no subdomain is open or a budget runs out."""
    names = _names(problem.graph)
    queue = _Queue(open_)
    while queue.chunks:
        lower = queue.min_margin()
        stats["open_lower"], stats["open"] = lower, len(queue)  # the current tree's progress
        if deadline.expired():
            return BaBOutcome("timeout", lower=lower, stats=stats)
        if len(queue) > config.max_domains or (
                config.max_steps is not None and stats["steps"] >= config.max_steps):
            return BaBOutcome("unknown", lower=lower, stats={**stats, "reason": "budget"})
        cex = _step(problem, queue, names, z_of, config, deadline, check, stats)
        stats["steps"] += 1
        if cex is not None:
            return BaBOutcome("falsified", cex, stats=stats)
    if stats["stuck"]:
        return BaBOutcome("unknown", stats={**stats, "reason": "no neuron left to split"})
    return BaBOutcome("verified", lower=math.inf, stats=stats)


def graph_relu_bab(problem: VerificationProblem, config: GraphBaBConfig, deadline: Deadline,
                   check: Checker, root_intermediate: Mapping[str, Interval] | None = None
                   ) -> BaBOutcome:
    """Decide a batch-1 problem on a graph with ReLUs by ReLU-split BaB (see the module
    docstring). ``root_intermediate``: bounds sound on the input set to start from.
    Clauses proved at the root are proved on every subdomain; each other clause gets its own
    search tree (worst clause first), and the property is VERIFIED when every tree closes.
    "timeout" past ``deadline``, "unknown" past the caps or when a subdomain has no neuron
    left to split."""
    if problem.batch_size != 1:
        raise ConfigError("graph_relu_bab takes a batch-1 problem")
    stats = {"domains": 1, "steps": 0, "stuck": 0}
    try:
        return _decide(problem, config, deadline, check, root_intermediate, stats)
    except DeadlineExceededError:
        return BaBOutcome("timeout", stats=stats)


def _decide(problem: VerificationProblem, config: GraphBaBConfig, deadline: Deadline,
            check: Checker, root_intermediate, stats: dict) -> BaBOutcome:
    g, spec = problem.graph, problem.output_spec
    z_of = relu_inputs(g)
    root = root_subdomain(g, problem.input_set, config.engine(0), root_intermediate)
    if activation_inputs(g):
        root = replace(root, limits=unsplit_limits(g, root.intermediate))
    b = _bound(problem, root, config.root_alpha_iters, config, deadline)
    stats["root_lower"] = float(_margin(spec, b.lower).min())
    cex = _try_points(problem, b, check, config.attack_steps)
    if cex is not None:
        return BaBOutcome("falsified", cex, stats=stats)
    state = _settle(problem, root, b, z_of, config, deadline, stats)
    if not state.margin.numel():
        return _search(problem, state, z_of, config, deadline, check, stats)
    clause_lb = spec.clause_max(b.lower)[0]
    todo = [k for k in clause_lb.argsort().tolist() if float(clause_lb[k]) <= 0]
    stats["open_clauses"] = len(todo)
    for k in todo:
        rows = list(spec.clauses[k])
        out = _search(_clause_problem(problem, spec.clauses[k]), _clause_state(state, rows),
                      z_of, config, deadline, check, stats)
        if out.status != "verified":
            return out
        stats["clauses_closed"] = stats.get("clauses_closed", 0) + 1
    return BaBOutcome("verified", lower=math.inf, stats=stats)
