"""Branch-and-bound over input boxes (input splitting) or ReLU phases (ReLU splitting).

Both loops are batched and best-first: each step pops the ``batch_size`` open subdomains with
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
dense network's dtype (float64 by default); ReLU splitting searches its alpha/beta parameters in
float32 and evaluates the final ones again in float64.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .. import clock
from ..bounds.clauses import clause_lowers, linear_constant
from ..clock import Deadline, DeadlineExceededError
from ..errors import ConfigError
from ..result import Counterexample
from ..specs.input_sets import Box
from ..specs.output import OutputSpec
from . import branching as br
from . import relu_net as rn

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
    input_split_max_dim: int = 16
    max_domains: int = 500_000
    batch_size: int = 1024  # input splitting: boxes per bounding call
    relu_batch_size: int = 64  # ReLU splitting: domains per step
    alpha_iters: int = 20  # alpha/beta steps per ReLU-split step (from the parent's warm start)
    root_alpha_iters: int = 50
    root_intermediate_alpha_iters: int = 20  # ReLU splitting: alpha-CROWN steps on every
    # layer's bounds at the root (shared by all subdomains; 0: plain CROWN)
    beta: bool = True
    attack_every: int = 5  # PGD on the worst open subdomains every this many steps ...
    attack_share: float = 0.1  # ... while it has used less than this share of the time
    milp_leaf_unstable: int = 16  # ReLU splitting: domains with at most this many unstable
    # ReLUs left are decided exactly by the MILP (0: never)
    intermediate: str = "crown"  # input splitting: "forward" (cheap) or "crown" (tighter)
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
    that answers TIMEOUT (with the stats so far) when the deadline passes anywhere inside."""
    @functools.wraps(search)
    def run(*args, **kwargs) -> BaBOutcome:
        stats: dict[str, Any] = {}
        try:
            return search(*args, **kwargs, stats=stats)
        except DeadlineExceededError:
            return BaBOutcome("timeout", stats=stats)
    return run


def _out_of_budget(q, deadline: Deadline, config: BaBConfig, stats: dict,
                   max_domains: int | None = None) -> BaBOutcome | None:
    """Raises past the deadline; UNKNOWN past the queue cap, else None (keep going)."""
    deadline.check()
    if q.n > (config.max_domains if max_domains is None else max_domains):
        stats["reason"] = "max_domains"
        return BaBOutcome("unknown", lower=q.min_score(), stats=stats)
    return None


def _margin_lb(spec: OutputSpec, lb: torch.Tensor) -> torch.Tensor:
    return spec.clause_max(lb).amin(-1)


def _clause_lower(spec: OutputSpec, lb, A_x, lo, hi) -> torch.Tensor:
    """(B, K) sound lower bounds of each clause (disjunctions through the λ-combination);
    ``lb`` must be the raw minima over the boxes of the linear bounds with coefficients
    ``A_x`` (see :func:`nncert.bounds.clauses.linear_constant`)."""
    xs = Box(lo, hi)
    return clause_lowers(spec, xs, A_x, linear_constant(xs, A_x, lb), lower=lb)


def _candidates(net: rn.ReluNet, spec: OutputSpec, lo, hi, A_x, check: Checker):
    """Evaluate box centers and per-row minimising vertices; confirm the violations."""
    B, n = lo.shape
    pts = [(lo + hi) / 2]
    if A_x is not None:
        for r in range(A_x.shape[1]):
            pts.append(torch.where(A_x[:, r] > 0, lo, hi))
    x = torch.stack(pts)  # (P, B, n)
    with torch.no_grad():
        y = net.forward(x.reshape(-1, n)).reshape(x.shape[0], B, -1)
        m = spec.expand(B).margin(y) if spec.batch_size == 1 else spec.margin(y)
    bad = (m <= 0).nonzero()
    order = m[bad[:, 0], bad[:, 1]].argsort() if bad.numel() else None
    tried = 0
    if order is not None:
        for j in order.tolist()[:16]:
            p, b = bad[j].tolist()
            cex = check(x[p, b].reshape(1, n))
            tried += 1
            if cex is not None:
                return cex
    return None


def _pgd_on(net: rn.ReluNet, spec: OutputSpec, lo, hi, check: Checker, deadline: Deadline,
            restarts: int = 8, steps: int = 20):
    from ..attacks import pgd

    B = lo.shape[0]
    x, m = pgd(net.forward, lo, hi, spec.expand(B), restarts, steps, 0.25, deadline=deadline)
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


def _pack_layers(inter: list[rn.Layer]) -> torch.Tensor:
    """Per-layer bounds as one (B, 2·Σn) tensor (a queue column)."""
    return torch.cat([torch.cat([zl, u], -1) for zl, u in inter], -1)


def _unpack_layers(flat: torch.Tensor, widths: list[int]) -> list[rn.Layer]:
    out, i = [], 0
    for w in widths:
        out.append((flat[:, i:i + w], flat[:, i + w:i + 2 * w]))
        i += 2 * w
    return out


# -- input splitting ---------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class _InputSearch:
    """What every input-split step reads."""

    net: rn.ReluNet
    spec: OutputSpec
    config: BaBConfig
    deadline: Deadline
    check: Checker
    reach: torch.Tensor  # (n,) column sums of |W0|: the first-layer reach of each input

    @property
    def c0(self) -> torch.Tensor:
        return self.spec.C[:1]

    @property
    def d0(self) -> torch.Tensor:
        return self.spec.d[:1]


def _box_intermediate(s: _InputSearch, lo, hi, prior):
    """Intermediate bounds of the boxes, sound on each (``prior``: bounds sound on a superset,
    e.g. the parent box's, which prune most backward passes)."""
    cfg, net, dl = s.config, s.net, s.deadline
    if cfg.intermediate == "crown" and prior is not None:
        return rn.crown_intermediate(net, lo, hi, fwd=prior, deadline=dl)
    inter = rn.forward_bounds(net, lo, hi, prior=prior, deadline=dl)
    if cfg.intermediate == "crown":
        inter = rn.crown_intermediate(net, lo, hi, fwd=inter, deadline=dl)
    return inter


def _box_alpha(s: _InputSearch, inter, lo, hi, lb, A_x, cl, warm):
    """A few alpha steps on the open boxes with few unstable ReLUs (their lower slopes then
    decide the bound), warm-started from the parents' slopes where they have them. Returns
    (lb, A_x, cl, slopes (B, R, Σn) float16, (B,) whether optimised); every bound stays the
    better of CROWN's and alpha's (both sound)."""
    cfg, R, widths = s.config, s.c0.shape[1], s.net.widths
    B = lo.shape[0]
    alpha = torch.zeros(B, R, sum(widths), dtype=torch.float16)
    has = torch.zeros(B, dtype=torch.bool)
    if cfg.input_alpha_iters <= 0:
        return lb, A_x, cl, alpha, has
    unstable = sum(((zl < 0) & (u > 0)).sum(-1) for zl, u in inter)
    sel = (~(cl > 0).all(-1) & (unstable <= cfg.input_alpha_max_unstable)).nonzero().flatten()
    if not sel.numel():
        return lb, A_x, cl, alpha, has
    k = sel.numel()
    sinter = [(zl[sel], u[sel]) for zl, u in inter]
    start = torch.cat(rn.init_alphas(sinter, R), -1)
    if warm is not None:  # the parent's optimised slopes, where it has them
        wa, wh = warm[0][sel], warm[1][sel]
        start = torch.where(wh[:, None, None], wa.to(start.dtype), start)
    lbs, As, als, _ = rn.optimize_spec_bound(
        s.net, s.c0.expand(k, -1, -1), s.d0.expand(k, -1), sinter, lo[sel], hi[sel],
        iters=cfg.input_alpha_iters, deadline=s.deadline, lr_alpha=cfg.input_alpha_lr,
        alphas=list(start.split(widths, -1)))
    lb, A_x = lb.clone(), A_x.clone()
    lb[sel], A_x[sel] = lbs, As
    # (the parent's slopes may suit a child worse than CROWN's: keep the better)
    cl[sel] = torch.maximum(cl[sel], _clause_lower(s.spec, lbs, As, lo[sel], hi[sel]))
    alpha[sel] = torch.cat(als, -1).to(torch.float16)
    has[sel] = True
    return lb, A_x, cl, alpha, has


def _bound_boxes(s: _InputSearch, lo, hi, prior=None, warm=None):
    """Bounds of the boxes: row bounds, input coefficients, clause bounds, packed
    intermediate bounds and the slopes to warm-start their children from. ``warm``: the
    parents' (slopes, optimised) pair."""
    inter = _box_intermediate(s, lo, hi, prior)
    s.deadline.check()
    B = lo.shape[0]
    lb, A_x, _ = rn.spec_bound(s.net, s.c0.expand(B, -1, -1), s.d0.expand(B, -1), inter, lo, hi)
    cl = _clause_lower(s.spec, lb, A_x, lo, hi)
    lb, A_x, cl, alpha, has = _box_alpha(s, inter, lo, hi, lb, A_x, cl, warm)
    return lb, A_x, cl, _pack_layers(inter), alpha, has


def _split_dims(s: _InputSearch, lb, A_x, lo, hi) -> torch.Tensor:
    if s.config.input_heuristic == "sb":
        return br.input_split_dims(s.spec, lb, A_x, lo, hi)
    return br.widest_input_dims(lo, hi, s.reach)


def _input_step(s: _InputSearch, q: _Queue, count: int, stats: dict):
    """Pop ``count`` boxes, bisect each, bound the halves, push the open ones after trying
    their candidate points. Returns (a confirmed counterexample or None, whether boxes were
    pushed)."""
    d = q.pop(count)
    t = clock.now()
    kids = Box(d["lo"], d["hi"]).split(d["dim"])
    clo, chi = kids.lo, kids.hi
    prior = _unpack_layers(d["inter"].repeat(2, 1), s.net.widths)
    res = _bound_boxes(s, clo, chi, prior, (d["alpha"].repeat(2, 1, 1), d["has"].repeat(2)))
    stats["bound_s"] = clock.now() - t  # (the batch size adapts to the bounding time)
    stats["steps"] += 1
    stats["domains"] += clo.shape[0]
    open_ = ~(res[2] > 0).all(-1)
    if not bool(open_.any()):
        return None, False
    clo, chi, lb, A_x, cl, inter, alpha, has = (t[open_] for t in (clo, chi, *res))
    cex = _candidates(s.net, s.spec, clo, chi, A_x, s.check)
    if cex is not None:
        return cex, False
    q.push(lo=clo, hi=chi, score=cl.amin(-1), dim=_split_dims(s, lb, A_x, clo, chi),
           inter=inter, alpha=alpha, has=has)
    stats["max_queue"] = max(stats["max_queue"], q.n)
    return None, True


def _max_boxes(s: _InputSearch, n: int) -> int:
    """The queue cap: ``max_domains`` and ``queue_mb`` of memory."""
    R, n_all = s.c0.shape[1], sum(s.net.widths)
    per_box = 2 * n * 8 + 2 * n_all * 8 + R * n_all * 2 + 17  # bytes held in the queue
    return min(s.config.max_domains, s.config.queue_mb * 2**20 // per_box)


def _attack_worst(s: _InputSearch, q: _Queue) -> Counterexample | None:
    """PGD on the 64 worst open boxes."""
    w = q.peek_worst(64)
    return _pgd_on(s.net, s.spec, w["lo"], w["hi"], s.check, s.deadline)


@_timeout_on_expiry
def input_bab(net: rn.ReluNet, lo: torch.Tensor, hi: torch.Tensor, spec: OutputSpec,
              config: BaBConfig, deadline: Deadline, check: Checker, *,
              stats: dict) -> BaBOutcome:
    """Input-split BaB on the box [lo, hi] (1, n) for a batch-1 spec (all in net's dtype):
    pop the worst boxes, bisect, bound the halves, push the open ones."""
    t0 = clock.now()
    s = _InputSearch(net, spec, config, deadline, check, net.Ws[0].abs().sum(0))
    stats.update({"branching": "input", "domains": 1, "steps": 0, "max_queue": 1})
    lb, A_x, cl, inter, alpha, has = _bound_boxes(s, lo, hi)
    if bool((cl > 0).all()):
        return BaBOutcome("verified", lower=float(cl.amin()), stats=stats)
    cex = _candidates(net, spec, lo, hi, A_x, check)
    if cex is not None:
        return BaBOutcome("falsified", cex, stats=stats)
    max_domains = _max_boxes(s, lo.shape[1])
    q = _Queue()
    q.push(lo=lo, hi=hi, score=cl.amin(-1), dim=_split_dims(s, lb, A_x, lo, hi), inter=inter,
           alpha=alpha, has=has)
    attack_time, batch = 0.0, config.batch_size
    while q.n:
        stop = _out_of_budget(q, deadline, config, stats, max_domains)
        if stop is not None:
            return stop
        cex, pushed = _input_step(s, q, max(1, batch // 2), stats)
        if cex is not None:
            stats["time_s"] = clock.now() - t0
            return BaBOutcome("falsified", cex, stats=stats)
        # keep one bounding call well under a second so that the deadline is honoured
        dt = stats.pop("bound_s")
        batch = batch // 2 if dt > 0.5 and batch > 16 else (
            batch * 2 if dt < 0.1 and batch < config.batch_size else batch)
        if (pushed and config.attack_every and stats["steps"] % config.attack_every == 0 and q.n
                and attack_time < config.attack_share * (clock.now() - t0)):
            ta = clock.now()
            cex = _attack_worst(s, q)
            attack_time += clock.now() - ta
            if cex is not None:
                return BaBOutcome("falsified", cex, stats=stats)
    return BaBOutcome("verified", lower=0.0, stats=stats)


def choose_branching(net: rn.ReluNet | None, config: BaBConfig) -> str:
    if config.branching != "auto":
        return config.branching
    if net is None:
        return "input"
    return "input" if net.num_inputs <= config.input_split_max_dim else "relu"


@_timeout_on_expiry
def generic_input_bab(problem, box, method: str, config: BaBConfig, deadline: Deadline,
                      check: Checker, *, stats: dict) -> BaBOutcome:
    """Input-split BaB with any registry bound method (for graphs outside the dense ReLU form):
    bisects the widest side (relative to the original box) of each open box. The number of
    boxes bounded per step starts at 2 and adapts so that a step takes 0.1–0.5 s."""
    from ..bounds import compute_bounds
    from ..specs.input_sets import Box
    from ..specs.problem import VerificationProblem

    g, spec = problem.graph, problem.output_spec
    shape = problem.input_set.shape
    lo0, hi0 = box.lower.reshape(1, -1), box.upper.reshape(1, -1)
    scale = (hi0 - lo0).clamp_min(1e-12)
    q = _Queue()
    q.push(lo=lo0, hi=hi0, score=torch.full((1,), -math.inf, dtype=lo0.dtype))
    stats.update({"branching": "input", "method": method, "domains": 1, "steps": 0})
    batch, max_batch = 2, max(2, min(config.batch_size, 1024))
    while q.n:
        deadline.check()
        if q.n > config.max_domains:
            return BaBOutcome("unknown", stats=stats)
        t_step = clock.now()
        d = q.pop(batch // 2)
        dims = ((d["hi"] - d["lo"]) / scale).argmax(-1)
        kids = Box(d["lo"], d["hi"]).split(dims)
        B = kids.lo.shape[0]
        sub = VerificationProblem(g, Box(kids.lo.reshape(B, *shape), kids.hi.reshape(B, *shape)),
                                  spec.expand(B))
        lb = compute_bounds(sub, method, deadline=deadline).lower
        dt = clock.now() - t_step
        if dt > 0.5 and batch > 2:
            batch //= 2
        elif dt < 0.1 and batch < max_batch:
            batch *= 2
        stats["steps"] += 1
        stats["domains"] += B
        open_ = ~spec.expand(B).proved(lb)
        if not bool(open_.any()):
            continue
        clo, chi = kids.lo[open_], kids.hi[open_]
        cex = _centers(g, spec, shape, clo, chi, check)
        if cex is not None:
            return BaBOutcome("falsified", cex, stats=stats)
        q.push(lo=clo, hi=chi, score=_margin_lb(spec.expand(int(open_.sum())), lb[open_]))
    return BaBOutcome("verified", stats=stats)


def _centers(g, spec: OutputSpec, shape, clo, chi, check: Checker) -> Counterexample | None:
    """The boxes' centers run on the graph; the worst four violations confirmed."""
    centers = (clo + chi) / 2
    with torch.no_grad():
        y = g.forward(centers.reshape(-1, *shape)).reshape(centers.shape[0], -1)
    return first_confirmed(centers, spec.expand(centers.shape[0]).margin(y), check, 4)
