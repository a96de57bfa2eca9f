"""ReLU-split branch-and-bound over the bound engine, keyed by ReLU node names.

Search only — pop, split, bound, push:

* **pop** the ``relu_batch_size`` open subdomains with the worst lower bound of the margin;
* **split** one unstable neuron each: BaBSR scores (Bunel et al. 2020) from one CROWN pass of
  the worst open row with the parent's slopes; FSB (De Palma et al. 2021) bounds both children
  of the top-k candidates with one pass and keeps the one whose worse child is best;
* **bound** both children with :func:`nncert.bounds.open_rows.bound_open_rows`: the parent's
  intermediate bounds clipped by the split, the nodes after it re-bounded for a share of their
  unstable neurons (intersected with the parent's), every (child, open row) pair optimised as
  its own alpha/beta-CROWN problem warm-started from the parent (float32 search, float64
  bounds);
* **push** the children with a clause left open (one entry per open clause with
  ``clause_trees``), after trying their candidate points on the network and deciding those with
  few unstable neurons left by the graph MILP.

VERIFIED only when every subdomain was closed by sound bounds or an exact MILP (the splits
cover the input set); FALSIFIED only with a counterexample confirmed by ``check``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

import torch

from .. import clock
from ..bounds.alpha_crown import AlphaCrownConfig, search_copy
from ..bounds.core import Interval
from ..bounds.open_rows import OpenRowBounds, Pairs, bound_open_rows, evaluate, relu_coefficients
from ..bounds.subdomains import EngineConfig, Subdomains, kept_bounds, relu_inputs
from ..clock import Deadline
from ..models.graph import Graph
from ..specs.input_sets import InputSet
from ..specs.output import OutputSpec
from ..specs.problem import VerificationProblem
from . import branching as br
from .bab import BaBConfig, BaBOutcome, Checker, _Queue, _timeout_on_expiry, first_confirmed
from .graph_bab import _children

# A step's batch halves above STEP_SLOW_S seconds and doubles (up to ``relu_batch_size``)
# below STEP_FAST_S: steps of about a second let the batched products amortise the per-op
# overhead (on mnistfc 256x4, 256 domains per step bound 1.4x as many per second as 64), and
# the deadline is checked inside every step (before each alpha/beta iteration).
STEP_SLOW_S, STEP_FAST_S = 2.4, 0.8
# FSB scores a split by one CROWN pass with the parent's intermediate bounds, blind to the
# re-bounding of the layers after it; when that leads it to put more than this share of its
# splits into the last ReLU layer during its first ``fsb_restart_s``, the search restarts
# from the root with BaBSR (mnistfc 256x4 prop_10_0.05: 61% there, open at 720 s with FSB,
# verified in 101 s with BaBSR; oval21's conv nets: 2-5%, and FSB stays the better search).
LAST_LAYER_SHARE = 0.5


@dataclass(frozen=True, eq=False)
class _Ctx:
    """What every step reads: the float64 graph and its search copy, the set, the spec
    (open clauses only), the ReLU names in graph order and the config."""

    graph: Graph
    search: Graph | None
    xs: InputSet
    spec: OutputSpec
    names: list[str]
    z_of: dict[str, str]
    keep: list[str]
    config: BaBConfig

    def engine(self, iters: int, refine: bool) -> EngineConfig:
        return EngineConfig(AlphaCrownConfig(iterations=iters, lr=0.1, lr_beta=0.05,
                                             lr_decay=1.0), refine)

    @property
    def row_clause(self) -> torch.Tensor:
        out = torch.empty(self.spec.num_rows, dtype=torch.long)
        for k, cl in enumerate(self.spec.clauses):
            out[list(cl)] = k
        return out


# -- the queue's columns ---------------------------------------------------------------------
def _columns(ctx: _Ctx, doms: Subdomains, lb: torch.Tensor, open_: torch.Tensor) -> dict:
    """One row per subdomain: margin score, row bounds, open rows, splits, bounds, warm start
    (slopes in float16: in [0, 1], any value is sound; β in float32)."""
    cols = {"score": ctx.spec.clause_max(lb).amin(-1), "lb": lb, "open": open_}
    B = lb.shape[0]
    for r in ctx.names:
        cols[f"s:{r}"] = doms.splits[r].reshape(B, -1)
    for k in ctx.keep:
        iv = doms.intermediate[k]
        cols[f"l:{k}"], cols[f"u:{k}"] = iv.lower.reshape(B, -1), iv.upper.reshape(B, -1)
    for k, v in (doms.slopes or {}).items():
        cols[f"a:{k}"] = v.reshape(B, v.shape[1], -1).to(torch.float16)
    for k, v in (doms.betas or {}).items():
        cols[f"b:{k}"] = v.reshape(B, v.shape[1], -1).to(torch.float32)
    return cols


def _from_columns(ctx: _Ctx, d: dict) -> tuple[Subdomains, torch.Tensor, torch.Tensor]:
    """The popped rows as Subdomains (``lower``: their row bounds), row bounds, open rows."""
    g = ctx.graph
    dt = (ctx.search or g).dtype  # warm starts: any value is sound; kept in the search dtype
    B = d["lb"].shape[0]

    def shape(name):
        return g.input_shape if name == g.input_name else g.shapes[name]
    splits = {r: d[f"s:{r}"].reshape(B, *shape(ctx.z_of[r])) for r in ctx.names}
    inter = {k: Interval(d[f"l:{k}"].reshape(B, *shape(k)), d[f"u:{k}"].reshape(B, *shape(k)))
             for k in ctx.keep}
    R = d["lb"].shape[1]
    slopes = {k[2:]: v.to(dt).reshape(B, R, *shape(ctx.z_of[k[2:]]))
              for k, v in d.items() if k.startswith("a:")}
    betas = {k[2:]: v.to(dt).reshape(B, R, *shape(ctx.z_of[k[2:]]))
             for k, v in d.items() if k.startswith("b:")}
    return Subdomains(splits, inter, slopes or None, betas or None, d["lb"]), d["lb"], d["open"]


# -- split ------------------------------------------------------------------------------------
def _flat_layers(ctx: _Ctx, doms: Subdomains) -> list[tuple[torch.Tensor, torch.Tensor]]:
    B = doms.batch_size
    return [(doms.intermediate[ctx.z_of[r]].lower.reshape(B, -1),
             doms.intermediate[ctx.z_of[r]].upper.reshape(B, -1)) for r in ctx.names]


def _scores(ctx: _Ctx, doms: Subdomains, lb: torch.Tensor, open_: torch.Tensor):
    """BaBSR scores per ReLU (B, n) on each subdomain's worst open row (a heuristic: in the
    search dtype)."""
    B = lb.shape[0]
    worst = lb.masked_fill(~open_, math.inf).argmin(-1)
    g = ctx.search or ctx.graph
    dt = g.dtype
    rows = torch.arange(B)
    inter = {k: Interval(v.lower.to(dt), v.upper.to(dt)) for k, v in doms.intermediate.items()}
    slopes = None if doms.slopes is None else {
        k: v[rows, worst].unsqueeze(1).to(dt) for k, v in doms.slopes.items()}
    A = relu_coefficients(g, ctx.xs.to(dtype=dt), ctx.spec.C[0, worst].unsqueeze(1).to(dt),
                          ctx.spec.d[0, worst].unsqueeze(1).to(dt), inter, slopes)
    As = [A[r].reshape(B, 1, -1) if r in A else torch.zeros(B, 1, lo.shape[1], dtype=dt)
          for r, (lo, _) in zip(ctx.names, _flat_layers(ctx, doms))]
    return br.babsr_scores(_flat_layers(ctx, doms), As, torch.zeros(B, dtype=torch.long))


def _fsb(ctx: _Ctx, doms: Subdomains, open_: torch.Tensor, scores, deadline: Deadline):
    """Of each subdomain's top-k BaBSR candidates, the one whose worse child has the best
    bound after one CROWN pass with the parent's slopes (search dtype), every (child, open
    row) its own problem. (ReLU index, flat index) per subdomain, −1 when none."""
    vals, layer, idx = br.topk_candidates(scores, ctx.config.fsb_topk)  # (B, k)
    B, k = vals.shape
    dom, row = open_.nonzero(as_tuple=True)  # P (domain, row) pairs
    P = dom.numel()
    pd, pr = dom.repeat_interleave(k), row.repeat_interleave(k)
    pc = torch.arange(k).repeat(P)
    g = ctx.search or ctx.graph
    inter, empty = _split_one(ctx, doms, pd, layer[pd, pc], idx[pd, pc], g.dtype)
    slopes = None if doms.slopes is None else {
        n: v[pd, pr].unsqueeze(1).to(g.dtype).repeat(2, 1, *[1] * (v.dim() - 2))
        for n, v in doms.slopes.items()}
    n2 = 2 * P * k
    C = ctx.spec.C[0, pr].unsqueeze(1).repeat(2, 1, 1).to(g.dtype)
    d = ctx.spec.d[0, pr].unsqueeze(1).repeat(2, 1).to(g.dtype)
    xs = ctx.xs.to(dtype=g.dtype)[torch.zeros(n2, dtype=torch.long)]
    deadline.check()
    lower = evaluate(g, Pairs(xs, C, d, inter, {}, slopes, None), slopes, None)[:, 0]
    lower = torch.where(empty, torch.full_like(lower, math.inf), lower)
    full = torch.full((2, B, k, ctx.spec.num_rows), math.inf, dtype=lower.dtype)
    full[:, pd, pc, pr] = lower.reshape(2, P * k)
    m = ctx.spec.clause_max(full).amin(-1).amin(0)  # (B, k): the worse child's margin
    m = torch.where(vals > 0, m, torch.full_like(m, -math.inf))
    best = m.argmax(-1)
    rows = torch.arange(B)
    ok = vals[rows, best] > 0
    return torch.where(ok, layer[rows, best], torch.full_like(best, -1)), idx[rows, best]


def _split_one(ctx: _Ctx, doms: Subdomains, src: torch.Tensor, layer: torch.Tensor,
               idx: torch.Tensor, dt: torch.dtype):
    """Pre-activation bounds of the children (+ then −) of subdomains ``src`` split on neuron
    ``idx`` of ReLU ``layer``: the parent's, that neuron clipped at 0; and which are empty."""
    n = src.numel()
    sign = torch.cat([torch.ones(n), -torch.ones(n)])
    out, empty = {}, torch.zeros(2 * n, dtype=torch.bool)
    for kk, r in enumerate(ctx.names):
        z = ctx.z_of[r]
        iv = doms.intermediate[z]
        lo = iv.lower[src].reshape(n, -1).to(dt).repeat(2, 1)
        up = iv.upper[src].reshape(n, -1).to(dt).repeat(2, 1)
        hit = (layer == kk).repeat(2).nonzero().flatten()
        j = idx.repeat(2)[hit]
        pos, neg = hit[sign[hit] > 0], hit[sign[hit] < 0]
        jp, jn = j[sign[hit] > 0], j[sign[hit] < 0]
        lo[pos, jp] = lo[pos, jp].clamp(min=0)
        up[neg, jn] = up[neg, jn].clamp(max=0)
        empty |= (lo > up).any(-1)
        out[z] = Interval(lo.reshape(2 * n, *iv.lower.shape[1:]), up.reshape(2 * n, *iv.lower.shape[1:]))
    return out, empty


def _refine_only(ctx: _Ctx, scores, layer: torch.Tensor) -> dict[str, torch.Tensor] | None:
    """Per pre-activation node, the children's neurons to re-bound: those of ReLUs after the
    new split's, and of those only the ``refine_share`` with the highest parent scores."""
    cfg = ctx.config
    out = {}
    for k, (r, sc) in enumerate(zip(ctx.names, scores)):
        mask = (layer < k).unsqueeze(-1).expand_as(sc)
        if cfg.refine_share < 1.0:
            mask = mask & br.top_share(sc, cfg.refine_share)
        out[ctx.z_of[r]] = mask.repeat(2, 1)
    return out


# -- bound, try, push ----------------------------------------------------------------------------
def _bound(ctx: _Ctx, kids: Subdomains, open_: torch.Tensor, only, deadline: Deadline
           ) -> OpenRowBounds:
    spec = ctx.spec
    return bound_open_rows(ctx.graph, ctx.xs, spec.C, spec.d, kids, open_,
                           ctx.engine(ctx.config.alpha_iters, ctx.config.refine_intermediate),
                           search_graph=ctx.search, refine_only=only,
                           use_beta=ctx.config.beta, deadline=deadline)


def _try_candidates(ctx: _Ctx, b: OpenRowBounds, check: Checker):
    """The set's center and, per bounded pair of a still-open child, the corner minimising its
    linear bound, run on the network; the worst 16 violations go to ``check``."""
    xs, A = ctx.xs, b.input_coefficients
    pts = [xs.center]
    if A is not None and A.numel():
        open_child = ~(ctx.spec.clause_max(b.lower) > 0).all(-1)
        a = A[open_child[b.dom], 0]
        if a.numel():
            pts.append(xs.project(torch.where(a > 0, xs.lower, xs.upper)))
    x = torch.cat(pts)
    with torch.no_grad():
        m = ctx.spec.expand(x.shape[0]).margin(ctx.graph.forward(x).flatten(1))
    return first_confirmed(x, m, check, 16)


def _milp_leaves(ctx: _Ctx, b: OpenRowBounds, kids: Subdomains, cproved: torch.Tensor,
                 deadline: Deadline, check: Checker, stats: dict):
    """Decide the children with at most ``milp_leaf_unstable`` unstable ReLUs left by the graph
    MILP (with their splits and bounds); returns (mask of children still open, confirmed
    counterexample or None)."""
    nb = kids.batch_size
    keep = torch.ones(nb, dtype=torch.bool)
    if ctx.config.milp_leaf_unstable <= 0:
        return keep, None
    from .milp_graph import milp_decide

    count = sum(((lo < 0) & (up > 0)).flatten(1).sum(-1)
                for lo, up in ((b.intermediate[ctx.z_of[r]].lower,
                                b.intermediate[ctx.z_of[r]].upper) for r in ctx.names))
    small = ((count <= ctx.config.milp_leaf_unstable) & ~cproved.all(-1)).nonzero().flatten()
    for i in small.tolist():
        deadline.check()
        bounds = {k: v[i:i + 1] for k, v in b.intermediate.items()}
        skip = {k for k in range(cproved.shape[1]) if bool(cproved[i, k])}
        out = milp_decide(ctx.graph, ctx.xs.lower, ctx.xs.upper, ctx.spec, bounds, deadline, 1,
                          skip, {r: s[i] for r, s in kids.splits.items()})
        stats["milp_leaves"] = stats.get("milp_leaves", 0) + 1
        deadline.check()
        if out.status == "verified":
            keep[i] = False
        elif out.status == "candidate":
            cex = check(out.x.reshape(1, -1))
            if cex is not None:
                return keep, cex
    return keep, None


def _push(ctx: _Ctx, q: _Queue, kids: Subdomains, b: OpenRowBounds, keep: torch.Tensor,
          cproved: torch.Tensor) -> None:
    """The open children (``keep``) into the queue: one entry per open clause with
    ``clause_trees`` (its rows open, the others +inf), else one with every open row."""
    i = keep.nonzero().flatten()
    if not i.numel():
        return
    state = Subdomains(kids.splits, b.intermediate, b.slopes, b.betas, b.lower).select(i)
    rc = ctx.row_clause
    if ctx.config.clause_trees:
        ent, cl = (~cproved[i]).nonzero(as_tuple=True)
        open_ = rc.unsqueeze(0) == cl.unsqueeze(1)
        state = state.select(ent)
        lb = state.lower.masked_fill(~open_, math.inf)
    else:
        open_ = ~cproved[i][:, rc]
        lb = state.lower
    q.push(**_columns(ctx, state, lb, open_))


def _step(ctx: _Ctx, q: _Queue, batch: int, deadline: Deadline, check: Checker, stats: dict):
    """Pop, split, bound, push; returns a confirmed counterexample or None."""
    doms, lb, open_ = _from_columns(ctx, q.pop(batch))
    scores = _scores(ctx, doms, lb, open_)
    if ctx.config.heuristic == "fsb":
        layer, idx = _fsb(ctx, doms, open_, scores, deadline)
    else:
        layer, idx = br.flat_argmax(scores)
    go = layer >= 0
    if not bool(go.all()):  # no unstable neuron left: exact on its region, cannot split
        stats["stuck"] = stats.get("stuck", 0) + int((~go).sum())
        left = float(ctx.spec.clause_max(lb[~go]).amin())  # open for good: kept in open_lower
        stats["stuck_lower"] = min(stats.get("stuck_lower", math.inf), left)
        j = go.nonzero().flatten()
        doms, open_, layer, idx = doms.select(j), open_[j], layer[j], idx[j]
        scores = [s[j] for s in scores]
        if not j.numel():
            return None
    counts = torch.bincount(layer, minlength=len(ctx.names)).tolist()
    before = stats.get("split_layers") or [0] * len(counts)
    stats["split_layers"] = [a + n for a, n in zip(before, counts)]  # splits per ReLU layer
    kids = _children(ctx.graph, doms, ctx.names, layer, idx)
    b = _bound(ctx, kids, open_.repeat(2, 1), _refine_only(ctx, scores, layer), deadline)
    stats["domains"] += kids.batch_size
    stats["pairs"] += b.dom.numel()
    cproved = ctx.spec.clause_max(b.lower) > 0
    deadline.check()
    cex = _try_candidates(ctx, b, check)
    if cex is not None:
        return cex
    keep, cex = _milp_leaves(ctx, b, kids, cproved, deadline, check, stats)
    if cex is not None:
        return cex
    _push(ctx, q, kids, b, keep & ~cproved.all(-1), cproved)
    return None


# -- the search -------------------------------------------------------------------------------
def _open_clauses(spec: OutputSpec, lb: torch.Tensor):
    """The spec restricted to the clauses ``lb`` (1, R) leaves open, and their rows."""
    open_cl = [k for k, cl in enumerate(spec.clauses) if not float(lb[0, list(cl)].max()) > 0]
    rows = [i for k in open_cl for i in spec.clauses[k]]
    pos = {r: j for j, r in enumerate(rows)}
    sub = OutputSpec(spec.C[:, rows], spec.d[:, rows],
                     tuple(tuple(pos[i] for i in spec.clauses[k]) for k in open_cl))
    return sub, rows


def _context(problem: VerificationProblem, spec: OutputSpec, config: BaBConfig) -> _Ctx:
    g = problem.graph
    sdt = getattr(torch, config.search_dtype)
    search = None if sdt == g.dtype else search_copy(g, sdt)  # the root's copy, if made
    z_of = relu_inputs(g)
    keep = sorted(kept_bounds(g) - {g.input_name})
    return _Ctx(g, search, problem.input_set, spec, list(z_of), z_of, keep, config)


def _max_domains(q: _Queue, config: BaBConfig) -> int:
    """The queue cap: ``max_domains`` and ``queue_mb`` of memory."""
    per = sum(v[:1].numel() * v.element_size() for v in q.cols.values()) or 1
    return min(config.max_domains, config.queue_mb * 2**20 // per)


@_timeout_on_expiry
def relu_bab(problem: VerificationProblem, root: OpenRowBounds, config: BaBConfig,
             deadline: Deadline, check: Checker, *, stats: dict) -> BaBOutcome:
    """ReLU-split BaB on a batch-1 problem from its root bounds ``root`` (a batch-1
    :func:`bound_open_rows` result over the whole set: sound intermediate bounds, row bounds,
    slopes). See the module docstring."""
    spec = problem.output_spec
    stats.update({"branching": "relu", "domains": 1, "steps": 0, "max_queue": 1, "pairs": 0,
                  "root_lower": float(spec.clause_max(root.lower).amin())})
    if bool(spec.proved(root.lower).all()):
        return BaBOutcome("verified", lower=stats["root_lower"], stats=stats)
    sub, rows = _open_clauses(spec, root.lower)
    stats["open_clauses"] = len(sub.clauses)
    ctx = _context(problem, sub, config)
    q, t0 = _root_queue(ctx, root, rows), clock.now()
    if config.heuristic == "fsb" and deadline.remaining() > config.fsb_restart_s:
        out = _search(ctx, q, deadline, check, stats, pause_at=t0 + config.fsb_restart_s)
        if out is not None and out.status != "unknown":
            return out
        if out is not None or _last_layer_bias(stats):  # restart from the root with BaBSR
            _end_fsb_phase(stats, clock.now() - t0)
            ctx = replace(ctx, config=replace(config, heuristic="babsr"))
            q = _root_queue(ctx, root, rows)
    return _search(ctx, q, deadline, check, stats)


def _last_layer_bias(stats: dict) -> bool:
    """Whether FSB put more than LAST_LAYER_SHARE of its splits into the last ReLU layer."""
    counts = stats.get("split_layers") or [0]
    return counts[-1] > LAST_LAYER_SHARE * max(sum(counts), 1)


def _end_fsb_phase(stats: dict, seconds: float) -> None:
    """Move the FSB search's figures into ``stats["fsb_phase"]`` before the BaBSR restart
    (which starts with no subdomain stuck)."""
    stats["fsb_phase"] = {"seconds": round(seconds, 2), "domains": stats["domains"],
                          "open_lower": stats.get("open_lower"),
                          "split_layers": stats.pop("split_layers", None),
                          "stuck": stats.pop("stuck", 0)}
    stats.pop("stuck_lower", None)


def _root_queue(ctx: _Ctx, root: OpenRowBounds, rows: list[int]) -> _Queue:
    """A queue holding the root subdomain (its open ``rows``, no split)."""
    slopes = {k: v[:, rows] for k, v in root.slopes.items()}
    zero = {r: torch.zeros(1, *ctx.graph.shapes[z], dtype=torch.int8) for r, z in ctx.z_of.items()}
    betas = {r: torch.zeros(1, len(rows), *ctx.graph.shapes[z], dtype=ctx.graph.dtype)
             for r, z in ctx.z_of.items()}  # (every column present from the first push)
    doms = Subdomains(zero, root.intermediate, slopes or None, betas, root.lower[:, rows])
    q = _Queue()
    q.push(**_columns(ctx, doms, root.lower[:, rows], torch.ones(1, len(rows), dtype=torch.bool)))
    return q


def _search(ctx: _Ctx, q: _Queue, deadline: Deadline, check: Checker, stats: dict,
            pause_at: float = math.inf) -> BaBOutcome | None:
    """Steps until ``q`` is empty (VERIFIED, or UNKNOWN with stuck subdomains), a
    counterexample, the queue cap (UNKNOWN) or the deadline; None when ``pause_at`` (a
    :func:`clock.now` time) passes first: checked between steps, so ``q`` then holds every
    open subdomain and the search can go on from it."""
    cap, batch = _max_domains(q, ctx.config), ctx.config.relu_batch_size
    stats["open_lower"] = min(q.min_score(), stats.get("stuck_lower", math.inf))
    while q.n:
        deadline.check()
        if clock.now() >= pause_at:
            return None
        if q.n > cap:
            return BaBOutcome("unknown", lower=stats["open_lower"],
                              stats={**stats, "reason": "max_domains"})
        t = clock.now()
        cex = _step(ctx, q, batch, deadline, check, stats)
        if cex is not None:
            return BaBOutcome("falsified", cex, stats=stats)
        dt = clock.now() - t
        batch = batch // 2 if dt > STEP_SLOW_S and batch > 4 else (
            batch * 2 if dt < STEP_FAST_S and batch < ctx.config.relu_batch_size else batch)
        stats["steps"] += 1
        stats["max_queue"] = max(stats["max_queue"], q.n)
        stats["open_lower"] = min(q.min_score(), stats.get("stuck_lower", math.inf))
        stats["open"] = q.n
    if stats.get("stuck"):
        return BaBOutcome("unknown", lower=stats["open_lower"],
                          stats={**stats, "reason": "unsplittable domain left open"})
    return BaBOutcome("verified", lower=0.0, stats=stats)


def root_bounds(problem: VerificationProblem, inter: Mapping[str, Interval], config: BaBConfig,
                deadline: Deadline) -> OpenRowBounds:
    """alpha-CROWN bounds of every row on the whole set (``root_alpha_iters`` steps) from
    intermediate bounds ``inter`` sound on it."""
    g, spec = problem.graph, problem.output_spec
    zero = {r: torch.zeros(1, *g.shapes[z], dtype=torch.int8) for r, z in relu_inputs(g).items()}
    doms = Subdomains(zero, dict(inter))
    cfg = EngineConfig(AlphaCrownConfig(iterations=config.root_alpha_iters, lr_decay=1.0))
    return bound_open_rows(g, problem.input_set, spec.C, spec.d, doms,
                           torch.ones(1, spec.num_rows, dtype=torch.bool), cfg, deadline=deadline)
