"""The bound engine for search: a batch of ReLU-split subdomains of one input set.

A *subdomain* is the input set intersected with sign constraints on pre-activation neurons:
for a ReLU node ``r`` with input ``z``, split +1 on neuron j means ``z_j ≥ 0`` (active), −1
means ``z_j ≤ 0`` (inactive), 0 leaves it free. Splits are keyed by the **ReLU node's name**
and may sit on any ReLU of the DAG (convolutions, residual Adds, MaxPool, Flatten...).

``bound_subdomains`` bounds a batch of subdomains sharing one input set with the machinery of
``crown.py`` / ``alpha_crown.py`` (there is no other copy of CROWN): the split neurons' bounds
are clipped (``_clip_splits``), the relaxation slopes (alpha-CROWN, Xu et al. 2021) and the
split multipliers β ≥ 0 (beta-CROWN, Wang et al. 2021) are optimised from an optional warm
start. Every returned lower bound is sound for every point of its subdomain, given
intermediate bounds that are sound on that subdomain (a child may reuse its parent's: the
child is a subset). A subdomain whose clipped bounds are infeasible is empty: lower = +inf.

Besides the spec bounds it returns what branching needs: the clipped intermediate bounds of
every ReLU input and the coefficients ``A`` of the spec rows on every ReLU's output (BaBSR,
Bunel et al. 2020), plus the final slopes and β for warm-starting children.

A subdomain may also carry splits of general activations (LeakyReLU, Sigmoid, Tanh) at a point
(``Subdomains.limits``, see ``activation_splits.py``): their pre-activation bounds are clipped
to the limits and, by default, every node downstream is re-bounded on the subdomain.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from ..clock import NEVER, Deadline
from ..models import ops
from ..models.graph import Graph
from ..specs.input_sets import InputSet
from ..specs.output import OutputSpec
from .activation_splits import activation_inputs, clip_interval, clip_to_limits, limits_by_input
from .alpha_crown import AlphaCrownConfig, Proved, _clip_splits, _complete, _optimize_rows
from .core import Interval
from .crown import BACKWARD, CrownConfig, _relaxed_inputs, intermediate_bounds
from .interval import spec_bounds_from_interval
from .traversal import check_supported


@dataclass(frozen=True)
class EngineConfig:
    """``alpha``: the slope/β optimisation of the spec rows (``iterations=0``: plain CROWN
    with the clipped bounds and zero β). ``refine_intermediate``: re-bound (CROWN) every node
    downstream of a split node on each subdomain, intersected with the given bounds (tighter,
    costs one CROWN pass per unstable downstream neuron and subdomain).
    ``refine_activation_splits``: the same, for subdomains with general activation splits
    (``Subdomains.limits``; the narrower relaxation mostly pays off downstream)."""

    alpha: AlphaCrownConfig = field(default_factory=lambda: AlphaCrownConfig(iterations=20))
    refine_intermediate: bool = False
    refine_activation_splits: bool = True

    @property
    def crown(self) -> CrownConfig:
        return self.alpha.crown


def relu_inputs(graph: Graph) -> dict[str, str]:
    """ReLU node name → the name of its input (pre-activation) node, in graph order."""
    return {n.name: n.inputs[0] for n in graph if isinstance(n.op, ops.ReLU)}


def kept_bounds(graph: Graph) -> set[str]:
    """The nodes whose bounds the engine reads: the input, every relaxed node's input and
    the node the interval spec bound starts from (what a subdomain needs to store)."""
    out = graph.node(graph.output_name)
    ibp = out.inputs[0] if isinstance(out.op, ops.Linear) else graph.output_name
    return {graph.input_name, ibp, *_relaxed_inputs(graph)}


def is_relu_chain(graph: Graph) -> bool:
    """Whether every node has one input, the previous node's output (a plain chain)."""
    prev = graph.input_name
    for node in graph:
        if len(node.inputs) != 1 or node.inputs[0] != prev:
            return False
        prev = node.name
    return True


@dataclass(frozen=True, eq=False)
class Subdomains:
    """B subdomains of one input set.

    splits: ReLU node name → int8 (B, *input shape) in {+1, −1, 0}.
    intermediate: node name → Interval (B, *shape), sound on each subdomain (at least every
      ReLU / relaxed node's input; missing ones are filled by CROWN).
    slopes / betas: optional warm start (``slopes`` as ``backward_bounds`` takes them,
      (B, R, *shape); ``betas`` keyed by ReLU name, (B, R, *shape), and the β of activation
      limits by ``limit_key(pre-activation node)``, (B, R, 2, *shape)), any value is sound.
    lower: optional (B, R) lower bounds of the spec rows already known to hold on each
      subdomain (e.g. its parent's: a child is a subset); the engine never returns less.
    limits: optional splits of general activations (``activation_splits.py``): activation
      node name → (B, 2, *input shape), ``limits[:, 0] ≤ z ≤ limits[:, 1]`` (±inf: free).
    """

    splits: Mapping[str, torch.Tensor]
    intermediate: Mapping[str, Interval]
    slopes: Mapping[str, torch.Tensor] | None = None
    betas: Mapping[str, torch.Tensor] | None = None
    lower: torch.Tensor | None = None
    limits: Mapping[str, torch.Tensor] | None = None

    @property
    def batch_size(self) -> int:
        return next(iter(self.intermediate.values())).lower.shape[0]

    def select(self, idx: torch.Tensor) -> Subdomains:
        """The subdomains ``idx`` (a (k,) index tensor), in that order."""
        def pick(m):
            return None if m is None else {k: v[idx] for k, v in m.items()}
        return Subdomains(pick(self.splits), {k: v[idx] for k, v in self.intermediate.items()},
                          pick(self.slopes), pick(self.betas),
                          None if self.lower is None else self.lower[idx], pick(self.limits))


def root_subdomain(graph: Graph, input_set: InputSet, config: EngineConfig | None = None,
                   intermediate: Mapping[str, Interval] | None = None) -> Subdomains:
    """The unsplit domain (batch 1): ``intermediate`` when given (sound on the set), else
    CROWN's intermediate bounds."""
    cfg = config or EngineConfig()
    if input_set.batch_size != 1:
        raise ValueError("root_subdomain takes a batch-1 input set")
    inter = dict(intermediate) if intermediate is not None else intermediate_bounds(
        graph, input_set, cfg.crown)
    inter = {k: v for k, v in inter.items() if k in kept_bounds(graph)}
    splits = {r: torch.zeros((1, *inter[z].shape), dtype=torch.int8,
                             device=inter[z].lower.device)
              for r, z in relu_inputs(graph).items()}
    return Subdomains(splits, inter)


@dataclass(frozen=True, eq=False)
class SubdomainBounds:
    """Sound lower bounds (B, R) of the spec rows on each subdomain (+inf when empty), the
    clipped intermediate bounds (of ``kept_bounds``), the coefficients A (B, R, *shape) of
    the rows on each ReLU's and branchable activation's output and on the graph input (last
    pass; for branching and attack starts only), the final slopes and β (warm starts)."""

    lower: torch.Tensor
    intermediate: Mapping[str, Interval]
    coefficients: Mapping[str, torch.Tensor]
    slopes: Mapping[str, torch.Tensor]
    betas: Mapping[str, torch.Tensor]
    empty: torch.Tensor


def _pre_activation_signs(graph: Graph, splits: Mapping[str, torch.Tensor]):
    """Splits keyed by pre-activation node (what ``_clip_splits`` and β read). Two ReLUs of
    one node: the first non-zero sign wins (dropping a constraint is sound)."""
    out: dict[str, torch.Tensor] = {}
    for relu, z in relu_inputs(graph).items():
        s = splits.get(relu)
        if s is None:
            continue
        out[z] = s if z not in out else torch.where(out[z] != 0, out[z], s)
    return out


def _descendants(graph: Graph, names: set[str]) -> set[str]:
    seen, todo = set(), list(names)
    while todo:
        for c in graph.consumers(todo.pop()):
            if c.name not in seen:
                seen.add(c.name)
                todo.append(c.name)
    return seen


def _refined(graph: Graph, xs: InputSet, inter: Mapping[str, Interval],
             pre: Mapping[str, torch.Tensor], cfg: EngineConfig,
             only: Mapping[str, torch.Tensor] | None = None,
             deadline: Deadline = NEVER,
             limits_z: Mapping[str, torch.Tensor] | None = None) -> dict[str, Interval]:
    """``inter`` (already clipped) with every node downstream of a split re-bounded by CROWN
    on the subdomain (only the neurons ``only`` allows, per node), each intersected with its
    given bounds and clipped by its splits (and activation limits ``limits_z``, keyed by
    pre-activation node) before later nodes read it. Sound on the subdomain: every
    relaxation uses bounds sound on it, so the backward bounds hold on it, and so do their
    intersections and clips."""
    limits_z = limits_z or {}
    split_nodes = {z for z, s in pre.items() if bool((s != 0).any())} | set(limits_z)
    down = _descendants(graph, split_nodes)
    if not down:
        return dict(inter)

    def post(name: str, iv: Interval) -> Interval:
        if name in inter:  # never looser than the parent's bounds, whatever the pass did
            iv = iv.intersect(inter[name])
        if name in limits_z:
            iv = clip_interval(iv, limits_z[name])[0]
        return _clip_splits({name: iv}, {name: pre[name]})[0][name] if name in pre else iv

    given = {k: v for k, v in inter.items() if k not in down}
    return intermediate_bounds(graph, xs, cfg.crown, given=given, post=post, prior=inter,
                               only=only, deadline=deadline)


def batch_set(input_set: InputSet, B: int) -> InputSet:
    """The input set of each of B subdomains: ``input_set`` itself when it has B elements
    (own boxes), its one element repeated when it has one (a shared set)."""
    if input_set.batch_size == B:
        return input_set
    if input_set.batch_size != 1:
        raise ValueError(f"input set of batch {input_set.batch_size} for {B} subdomains")
    return input_set[torch.zeros(B, dtype=torch.long, device=input_set.lower.device)]


def prepare_subdomains(graph: Graph, input_set: InputSet, doms: Subdomains,
                       config: EngineConfig | None = None, *,
                       refine_only: Mapping[str, torch.Tensor] | None = None,
                       deadline: Deadline = NEVER):
    """(input set per subdomain, intermediate bounds, empty (B,), split signs by
    pre-activation node): the bounds are ``doms.intermediate`` clipped by the splits,
    re-bounded downstream of the splits when ``config.refine_intermediate`` (only the neurons
    of ``refine_only`` where given: node → bool (B, *shape)), completed by CROWN where
    missing; all sound on each subdomain. ``empty``: subdomains whose constraints are
    infeasible."""
    cfg = config or EngineConfig()
    check_supported(graph, BACKWARD, "subdomain bounds")
    B = doms.batch_size
    xs = batch_set(input_set, B)
    pre = _pre_activation_signs(graph, doms.splits)
    inter, empty = _clip_splits(doms.intermediate, pre) if pre else (dict(doms.intermediate),
                                                                     None)
    inter, empty, refined = _limited(graph, xs, inter, pre, empty, doms.limits, cfg, deadline)
    if cfg.refine_intermediate and pre and not refined:
        inter = _refined(graph, xs, inter, pre, cfg, refine_only, deadline)
        empty = empty | _clip_splits(inter, pre)[1]
    inter = _complete(graph, xs, inter, cfg.alpha)
    if empty is None:
        empty = torch.zeros(B, dtype=torch.bool, device=xs.lower.device)
    return xs, inter, empty, pre


def _spec_ibp(graph: Graph, C, d, inter: Mapping[str, Interval]) -> torch.Tensor | None:
    """Interval lower bounds of the rows from the output's (or last Linear's input's) bounds,
    when those are present; sound on each subdomain since the intervals are."""
    out = graph.node(graph.output_name)
    need = out.inputs[0] if isinstance(out.op, ops.Linear) else graph.output_name
    if need not in inter:
        return None
    B = inter[need].lower.shape[0]
    spec = OutputSpec.conjunction(C.expand(B, -1, -1), d.expand(B, -1))
    return spec_bounds_from_interval(graph, spec, dict(inter))[0]


def _limited(graph: Graph, xs: InputSet, inter: dict[str, Interval],
             pre: Mapping[str, torch.Tensor], empty: torch.Tensor | None,
             limits: Mapping[str, torch.Tensor] | None, cfg: EngineConfig,
             deadline: Deadline = NEVER):
    """``inter`` clipped by the activation limits (and, with ``refine_activation_splits``,
    re-bounded downstream of them and of the ReLU splits, clipped again), with the empty
    subdomains, and whether it re-bounded; unchanged without finite limits."""
    limits_z = limits_by_input(graph, limits)
    if not limits_z:
        return inter, empty, False
    inter, e = clip_to_limits(inter, limits_z)
    empty = e if empty is None else empty | e
    if cfg.refine_activation_splits:
        inter = _refined(graph, xs, inter, pre, cfg, deadline=deadline, limits_z=limits_z)
        empty = empty | clip_to_limits(inter, limits_z)[1]
        if pre:
            empty = empty | _clip_splits(inter, pre)[1]
    return inter, empty, cfg.refine_activation_splits


def bound_subdomains(graph: Graph, input_set: InputSet, C: torch.Tensor, d: torch.Tensor,
                     doms: Subdomains, config: EngineConfig | None = None, *,
                     proved: Proved | None = None, deadline: Deadline = NEVER
                     ) -> SubdomainBounds:
    """Sound lower bounds of the rows ``C·y + d`` (C (1 or B, R, n_out), d (1 or B, R)) on
    each subdomain of ``doms``: subsets of the batch-1 ``input_set``, or each of its own
    element of a batch-B ``input_set`` (own boxes, as in input splitting).

    Sound for every slope in its range and every β ≥ 0 (so for any warm start and any number
    of steps): the result is the best bound seen, never looser than CROWN with the clipped
    intermediate bounds, and intersected with the interval bound and ``doms.lower`` (so a
    child whose ``lower`` is its parent's is never looser). ``proved(lower) -> (B,) bool``
    stops the optimisation early once every subdomain is done. Past ``deadline`` it raises
    :class:`~nncert.clock.DeadlineExceededError` (no bound is returned).
    """
    cfg = config or EngineConfig()
    B = doms.batch_size
    xs, inter, empty, pre = prepare_subdomains(graph, input_set, doms, cfg, deadline=deadline)
    C, d = C.expand(B, -1, -1), d.expand(B, -1)
    signs = {z: s.to(C.dtype) for z, s in pre.items() if bool((s != 0).any())}
    z_of = relu_inputs(graph)
    init_betas = None if doms.betas is None else {z_of.get(r, r): b
                                                  for r, b in doms.betas.items()}
    capture = dict.fromkeys([*z_of, *activation_inputs(graph), graph.input_name])
    with torch.enable_grad():
        lower, slopes, _, betas = _optimize_rows(
            graph, xs, C, d, inter, cfg.alpha, signs=signs, init_slopes=doms.slopes,
            proved=proved or (lambda lb: (lb > 0).all(1)), deadline=deadline,
            init_betas=init_betas, capture=capture,
            limits=limits_by_input(graph, doms.limits))
    for known in (_spec_ibp(graph, C, d, inter), doms.lower):
        if known is not None:
            lower = torch.maximum(lower, known.to(lower))
    lower = torch.where(empty.unsqueeze(1), torch.full_like(lower, torch.inf), lower)
    relu_of = {z: r for r, z in z_of.items()}
    keep = kept_bounds(graph)
    return SubdomainBounds(lower.detach(), {k: v for k, v in inter.items() if k in keep},
                           {r: a for r, a in capture.items() if a is not None}, slopes,
                           {relu_of.get(z, z): b for z, b in betas.items()}, empty)
