"""Branch-and-bound over input boxes (input splitting; ReLU splitting lives in ``relu_split.py``
and ``graph_bab.py``, which share this module's queue, config and outcome).

Input splitting (:func:`input_bab`) runs on any graph the bound engine supports: every bound
comes from :func:`nncert.bounds.boxes.bound_boxes`; this module is only the search. The loops
are batched and best-first: each step pops the ``batch_size`` open subdomains with
the worst lower bound of the property margin, splits each in two, bounds all children in one
call, drops the proved ones, and tries the children's most promising points (the box center
and, per spec row, the input vertex minimising that row's linear bound) on the network —
any violation found goes through the concrete re-check before it counts. The queue is capped at
``max_domains`` (UNKNOWN beyond). The deadline (:class:`nncert.clock.Deadline`) is checked
between steps and inside every long computation of a step (bound passes in chunks, each alpha/
beta iteration, FSB scoring, PGD steps, MILP leaves); past it the search stops at the next check
and answers TIMEOUT.

Soundness: a subdomain is dropped only when every clause has a positive sound lower bound
(for input splitting a disjunction's bound may come from a convex combination of its rows'
linear bounds, :func:`nncert.bounds.clauses.disjunction_lower`) or its split constraints are contradictory;
VERIFIED means every subdomain was dropped. The bounds that drop a subdomain are computed in the
graph's dtype (float64 in ``verify``); ReLU splitting searches its alpha/beta parameters in
float32 and evaluates the final ones again in float64.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from .. import clock
from ..bounds.boxes import BoxBounds, BoxConfig, bound_boxes, default_slopes, input_reach
from ..bounds.core import Interval
from ..clock import Deadline, DeadlineExceededError
from ..errors import ConfigError
from ..models.graph import Graph
from ..result import Counterexample
from ..specs.input_sets import Box
from ..specs.output import OutputSpec
from . import branching as br

Checker = Callable[[torch.Tensor], Counterexample | None]  # flat (1, n) → confirmed cex


@dataclass(frozen=True)
class BaBConfig:
    """``branching``: 'auto' (input splits when the input has ≤ ``input_split_max_dim``
    dimensions, else ReLU splits), 'input' or 'relu'. ``heuristic`` picks the ReLU to split:
    'babsr' or 'fsb'."""

    timeout_s: float = 60.0
    branching: str = "auto"
    heuristic: str = "fsb"
    input_heuristic: str = "width"  # input splitting: "width" (first-layer reach) or "sb"
    fsb_topk: int = 8  # FSB: candidates scored per domain (ReLU splitting)
    fsb_restart_s: float = 120.0  # ReLU splitting with FSB: a property still open after
    # this many seconds of FSB search, whose splits went mostly (> half) into the last ReLU
    # layer, is searched again from the root with BaBSR (inf: never)
    input_split_max_dim: int = 16
    max_domains: int = 500_000
    batch_size: int = 1024  # input splitting: boxes per bounding call
    relu_batch_size: int = 256  # ReLU splitting: most domains per step
    alpha_iters: int = 20  # alpha/beta steps per ReLU-split step (from the parent's warm start)
    root_alpha_iters: int = 50
    root_intermediate_alpha_iters: int = 20  # ReLU splitting: alpha-CROWN steps on every
    # layer's bounds at the root (shared by all subdomains; 0: plain CROWN)
    root_intermediate_after_s: float = 20.0  # graph ReLU search: seconds searched from
    # CROWN's root bounds before it restarts from the alpha-optimised ones (0: from the start)
    beta: bool = True
    attack_every: int = 5  # PGD on the worst open subdomains every this many steps ...
    attack_share: float = 0.1  # ... while it has used less than this share of the time
    milp_leaf_unstable: int = 16  # ReLU splitting: domains with at most this many unstable
    # ReLUs left are decided exactly by the MILP (0: never)
    intermediate: str = "crown"  # input splitting: "forward" (interval bounds: cheap) or
    # "crown" (tighter)
    input_alpha_iters: int = 3  # input splitting: alpha steps on the spec bound of open boxes
    # (from the parent box's slopes) ...
    input_alpha_max_unstable: int = 32  # ... that have at most this many unstable ReLUs
    input_alpha_lr: float = 0.3  # ... Adam step size
    refine_intermediate: bool = True  # ReLU splitting: re-bound each child's layers after its
    # split (CROWN, only the neurons left unstable) ...
    refine_share: float = 0.1  # ... or only this share of each layer's unstable neurons, those
    # with the highest BaBSR scores in the parent
    queue_mb: int = 4096  # memory cap of the open subdomains (UNKNOWN beyond); each holds
    # its box or splits, per-layer bounds and warm-start alphas (and betas)
    clause_trees: bool = True  # ReLU splitting: each open clause of a domain is split on
    # its own (one tree per clause) instead of all clauses sharing the splits
    search_dtype: str = "float32"  # ReLU splitting: dtype of the alpha/beta search (the
    # bounds that decide are re-evaluated in the network's dtype)


    def __post_init__(self):
        for name, value, allowed in (("branching", self.branching, ("auto", "input", "relu")),
                                     ("heuristic", self.heuristic, ("babsr", "fsb")),
                                     ("input_heuristic", self.input_heuristic, ("width", "sb")),
                                     ("intermediate", self.intermediate, ("crown", "forward")),
                                     ("search_dtype", self.search_dtype,
                                      ("float32", "float64"))):
            if value not in allowed:
                raise ConfigError(f"BaBConfig.{name} must be one of {allowed}, got {value!r}")
        if not self.root_intermediate_after_s >= 0.0:
            raise ConfigError("BaBConfig.root_intermediate_after_s must be ≥ 0, got "
                              f"{self.root_intermediate_after_s}")
        if not self.fsb_restart_s > 0.0:
            raise ConfigError(f"BaBConfig.fsb_restart_s must be > 0, got {self.fsb_restart_s}")
        if not 0.0 <= self.refine_share <= 1.0:
            raise ConfigError(f"BaBConfig.refine_share must lie in [0, 1], got {self.refine_share}")


@dataclass
class BaBOutcome:
    status: str  # "verified" | "falsified" | "timeout" | "unknown"
    counterexample: Counterexample | None = None
    lower: float = -math.inf  # global lower bound of the margin when known
    stats: dict[str, Any] = field(default_factory=dict)


def _timeout_on_expiry(search):
    """``search(..., deadline, check, *, stats)`` as a function of ``(..., deadline, check)``
    that answers TIMEOUT (with the stats so far) when the deadline passes anywhere inside;
    its ``lower`` is the search's ``stats["open_lower"]`` when it records one (the lowest
    bound of an open subdomain after the last whole step: a sound lower bound of the margin)."""
    @functools.wraps(search)
    def run(*args, **kwargs) -> BaBOutcome:
        stats: dict[str, Any] = {}
        try:
            return search(*args, **kwargs, stats=stats)
        except DeadlineExceededError:
            return BaBOutcome("timeout", lower=stats.get("open_lower", -math.inf), stats=stats)
    return run


def _out_of_budget(q, deadline: Deadline, config: BaBConfig, stats: dict,
                   max_domains: int | None = None) -> BaBOutcome | None:
    """Raises past the deadline; UNKNOWN past the queue cap, else None (keep going)."""
    deadline.check()
    if q.n > (config.max_domains if max_domains is None else max_domains):
        stats["reason"] = "max_domains"
        return BaBOutcome("unknown", lower=q.min_score(), stats=stats)
    return None


def _forward_flat(graph: Graph):
    """The graph as a function of flat inputs (N, n) → flat outputs (N, m)."""
    shape = graph.input_shape

    def fn(x: torch.Tensor) -> torch.Tensor:
        return graph.forward(x.reshape(-1, *shape)).reshape(x.shape[0], -1)
    return fn


def _candidates(graph: Graph, spec: OutputSpec, lo, hi, A_x, check: Checker):
    """Evaluate box centers and per-row minimising vertices; confirm the violations."""
    B, n = lo.shape
    pts = [(lo + hi) / 2]
    if A_x is not None:
        for r in range(A_x.shape[1]):
            pts.append(torch.where(A_x[:, r] > 0, lo, hi))
    x = torch.stack(pts)  # (P, B, n)
    with torch.no_grad():
        y = _forward_flat(graph)(x.reshape(-1, n)).reshape(x.shape[0], B, -1)
        m = spec.expand(B).margin(y) if spec.batch_size == 1 else spec.margin(y)
    bad = (m <= 0).nonzero()
    if bad.numel():
        for j in m[bad[:, 0], bad[:, 1]].argsort().tolist()[:16]:
            p, b = bad[j].tolist()
            cex = check(x[p, b].reshape(1, n))
            if cex is not None:
                return cex
    return None


def _pgd_on(graph: Graph, spec: OutputSpec, lo, hi, check: Checker, deadline: Deadline,
            restarts: int = 8, steps: int = 20):
    from ..attacks import pgd

    B = lo.shape[0]
    x, m = pgd(_forward_flat(graph), lo, hi, spec.expand(B), restarts, steps, 0.25,
               deadline=deadline)
    return first_confirmed(x, m, check, 8)


def first_confirmed(points: torch.Tensor, margins: torch.Tensor, check: Checker,
                    count: int) -> Counterexample | None:
    """Of the ``count`` points with the lowest spec margins, the first violating one (margin
    ≤ 0) that ``check`` confirms on the concrete model, or None."""
    for b in margins.argsort().tolist()[:count]:
        if float(margins[b]) > 0:
            break
        cex = check(points[b].reshape(1, -1))
        if cex is not None:
            return cex
    return None


class _Queue:
    """Open subdomains as parallel tensors (columns of one row per subdomain, one of them
    ``score``); pops the lowest scores first.

    Rows live in slots of preallocated columns (grown by doubling); a pop gathers only the rows
    it returns and frees their slots, so neither push nor pop copies the rest of the queue."""

    def __init__(self):
        self.cols: dict[str, torch.Tensor] = {}
        self.free = torch.zeros(0, dtype=torch.bool)
        self.n = 0

    def _grow(self, cap: int) -> None:
        old = self.free.shape[0]
        for k, v in self.cols.items():
            new = torch.empty((cap, *v.shape[1:]), dtype=v.dtype)
            new[:old] = v
            self.cols[k] = new
        self.cols["score"][old:] = math.inf
        self.free = torch.cat([self.free, torch.ones(cap - old, dtype=torch.bool)])

    def push(self, **tensors):
        b = next(iter(tensors.values())).shape[0]
        if b == 0:
            return
        if not self.cols:
            self.cols = {k: v.new_empty((0, *v.shape[1:])) for k, v in tensors.items()}
        slots = self.free.nonzero().flatten()
        if slots.numel() < b:
            self._grow(max(1024, 2 * self.free.shape[0], self.n + b))
            slots = self.free.nonzero().flatten()
        slots = slots[:b]
        for k, v in tensors.items():
            self.cols[k][slots] = v
        self.free[slots] = False
        self.n += b

    def _lowest(self, count: int) -> torch.Tensor:
        score = self.cols["score"]
        idx = score.topk(min(count, self.n), largest=False).indices
        return idx[~self.free[idx]]  # (free slots hold +inf and are never among the lowest)

    def pop(self, count: int) -> dict[str, torch.Tensor]:
        idx = self._lowest(count)
        out = {k: v[idx] for k, v in self.cols.items()}
        self.cols["score"][idx] = math.inf
        self.free[idx] = True
        self.n -= idx.numel()
        return out

    def min_score(self) -> float:
        if self.n == 0:
            return math.inf
        return float(self.cols["score"].min())

    def peek_worst(self, count: int) -> dict[str, torch.Tensor]:
        idx = self._lowest(count)
        return {k: v[idx] for k, v in self.cols.items()}


# -- input splitting ---------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class _InputSearch:
    """What every input-split step reads."""

    graph: Graph
    spec: OutputSpec
    config: BaBConfig
    deadline: Deadline
    check: Checker
    reach: torch.Tensor  # (n,) first-layer reach of each flat input (``input_reach``)
    bounds: BoxConfig

    def boxes(self, lo: torch.Tensor, hi: torch.Tensor) -> Box:
        shape = self.graph.input_shape
        return Box(lo.reshape(-1, *shape), hi.reshape(-1, *shape))


def _box_config(config: BaBConfig) -> BoxConfig:
    crown = replace(BoxConfig().crown,
                    intermediate="crown" if config.intermediate == "crown" else "ibp")
    return BoxConfig(crown, config.input_alpha_iters, config.input_alpha_max_unstable,
                     config.input_alpha_lr)


def _columns(b: BoxBounds, slope_shapes: dict[str, tuple]) -> dict[str, torch.Tensor]:
    """A box's queue columns: its intermediate bounds (flat) and its slopes (float16, zero
    where not optimised)."""
    B = b.lower.shape[0]
    cols = {}
    for k, iv in b.intermediate.items():
        cols["l:" + k], cols["u:" + k] = iv.lower.reshape(B, -1), iv.upper.reshape(B, -1)
    for k, shape in slope_shapes.items():
        v = b.slopes.get(k)
        cols["s:" + k] = (torch.zeros((B, *shape), dtype=torch.float16) if v is None
                          else v.to(torch.float16))
    cols["has"] = b.optimized
    return cols


def _from_columns(s: _InputSearch, d: dict[str, torch.Tensor], repeat: int = 2):
    """(prior intermediate bounds, warm slopes, which boxes have them) of ``repeat`` copies of
    the popped rows ``d``, in the graph's dtype."""
    g = s.graph
    prior, warm = {}, {}
    for k, v in d.items():
        if k.startswith("l:"):
            name = k[2:]
            shape = g.input_shape if name == g.input_name else g.shapes[name]
            prior[name] = Interval(v.repeat(repeat, 1).reshape(-1, *shape),
                                   d["u:" + name].repeat(repeat, 1).reshape(-1, *shape))
        elif k.startswith("s:"):
            warm[k[2:]] = v.repeat(repeat, *[1] * (v.dim() - 1))
    return prior, warm or None, d["has"].repeat(repeat)


def _bound_boxes(s: _InputSearch, lo, hi, prior=None, warm=None, warm_has=None) -> BoxBounds:
    return bound_boxes(s.graph, s.boxes(lo, hi), s.spec, s.bounds, prior=prior, warm=warm,
                       warm_has=warm_has, deadline=s.deadline)


def _split_dims(s: _InputSearch, lb, A_x, lo, hi) -> torch.Tensor:
    if s.config.input_heuristic == "sb":
        return br.input_split_dims(s.spec, lb, A_x, lo, hi)
    return br.widest_input_dims(lo, hi, s.reach)


def _push(s: _InputSearch, q: _Queue, lo, hi, b: BoxBounds, slope_shapes) -> None:
    q.push(lo=lo, hi=hi, score=b.clauses.amin(-1),
           dim=_split_dims(s, b.lower, b.coefficients, lo, hi), **_columns(b, slope_shapes))


def _input_step(s: _InputSearch, q: _Queue, count: int, stats: dict, slope_shapes):
    """Pop ``count`` boxes, bisect each, bound the halves, push the open ones after trying
    their candidate points. Returns (a confirmed counterexample or None, whether boxes were
    pushed)."""
    d = q.pop(count)
    t = clock.now()
    kids = Box(d["lo"], d["hi"]).split(d["dim"])
    clo, chi = kids.lo, kids.hi
    b = _bound_boxes(s, clo, chi, *_from_columns(s, d))
    stats["bound_s"] = clock.now() - t  # (the batch size adapts to the bounding time)
    stats["steps"] += 1
    stats["domains"] += clo.shape[0]
    open_ = ~(b.clauses > 0).all(-1)
    if not bool(open_.any()):
        return None, False
    b = _select(b, open_)
    clo, chi = clo[open_], chi[open_]
    cex = _candidates(s.graph, s.spec, clo, chi, b.coefficients, s.check)
    if cex is not None:
        return cex, False
    _push(s, q, clo, chi, b, slope_shapes)
    stats["max_queue"] = max(stats["max_queue"], q.n)
    return None, True


def _select(b: BoxBounds, idx: torch.Tensor) -> BoxBounds:
    return BoxBounds(b.lower[idx], b.coefficients[idx], b.clauses[idx],
                     {k: v[idx] for k, v in b.intermediate.items()},
                     {k: v[idx] for k, v in b.slopes.items()}, b.optimized[idx])


def _max_boxes(s: _InputSearch, root: dict[str, torch.Tensor]) -> int:
    """The queue cap: ``max_domains`` and ``queue_mb`` of memory (one root row's columns)."""
    per_box = sum(v[0].numel() * v.element_size() for v in root.values()) + 24
    return min(s.config.max_domains, s.config.queue_mb * 2**20 // per_box)


def _attack_worst(s: _InputSearch, q: _Queue) -> Counterexample | None:
    """PGD on the 64 worst open boxes."""
    w = q.peek_worst(64)
    return _pgd_on(s.graph, s.spec, w["lo"], w["hi"], s.check, s.deadline)


def _next_batch(batch: int, dt: float, cap: int) -> int:
    """Keep one bounding call near a second at most (the deadline is also checked inside
    it): larger batches cost less per box."""
    if dt > 1.0 and batch > 16:
        return batch // 2
    return batch * 2 if dt < 0.25 and batch < cap else batch


@_timeout_on_expiry
def input_bab(graph: Graph, box: Box, spec: OutputSpec, config: BaBConfig, deadline: Deadline,
              check: Checker, *, stats: dict) -> BaBOutcome:
    """Input-split BaB of a batch-1 ``spec`` on the batch-1 ``box`` (in the graph's dtype),
    bounds by :func:`nncert.bounds.boxes.bound_boxes`: pop the worst boxes, bisect, bound the
    halves (the parent's bounds as prior and its slopes as warm start), push the open ones."""
    t0 = clock.now()
    s = _InputSearch(graph, spec, config, deadline, check, input_reach(graph),
                     _box_config(config))
    stats.update({"branching": "input", "domains": 1, "steps": 0, "max_queue": 1})
    lo, hi = box.lower.reshape(1, -1), box.upper.reshape(1, -1)
    b = _bound_boxes(s, lo, hi)
    if bool((b.clauses > 0).all()):
        return BaBOutcome("verified", lower=float(b.clauses.amin()), stats=stats)
    cex = _candidates(graph, spec, lo, hi, b.coefficients, check)
    if cex is not None:
        return BaBOutcome("falsified", cex, stats=stats)
    slope_shapes = {k: tuple(v.shape[1:]) for k, v in default_slopes(
        graph, b.intermediate, spec.C.shape[1], s.bounds.crown.relaxation).items()}
    q = _Queue()
    _push(s, q, lo, hi, b, slope_shapes)
    max_domains = _max_boxes(s, {k: v[:1] for k, v in q.cols.items()})
    attack_time, batch = 0.0, config.batch_size
    while q.n:
        stop = _out_of_budget(q, deadline, config, stats, max_domains)
        if stop is not None:
            return stop
        cex, pushed = _input_step(s, q, max(1, batch // 2), stats, slope_shapes)
        if cex is not None:
            stats["time_s"] = clock.now() - t0
            return BaBOutcome("falsified", cex, stats=stats)
        batch = _next_batch(batch, stats.pop("bound_s"), config.batch_size)
        if (pushed and config.attack_every and stats["steps"] % config.attack_every == 0 and q.n
                and attack_time < config.attack_share * (clock.now() - t0)):
            ta = clock.now()
            cex = _attack_worst(s, q)
            attack_time += clock.now() - ta
            if cex is not None:
                return BaBOutcome("falsified", cex, stats=stats)
    return BaBOutcome("verified", lower=0.0, stats=stats)


def choose_branching(graph: Graph, config: BaBConfig) -> str:
    """'input' or 'relu': ``config.branching`` unless 'auto', then input splitting for
    inputs of at most ``input_split_max_dim`` dimensions."""
    if config.branching != "auto":
        return config.branching
    return "input" if graph.num_inputs <= config.input_split_max_dim else "relu"
