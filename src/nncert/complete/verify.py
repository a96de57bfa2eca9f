"""``verify(problem, config)``: attack → incomplete bounds → BaB or MILP, returning a Result.

VERIFIED comes only from sound bounds on every leaf (or an exact MILP); FALSIFIED only with a
counterexample confirmed by :func:`nncert.attacks.confirm` (inside the set after rounding to the
model's dtype, violating the property on the concrete graph and, for ONNX files, onnxruntime).
Bounds are computed on a float64 copy of the network.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch

from .. import clock
from ..attacks import AttackConfig, attack, confirm
from ..bounds.core import Interval
from ..clock import Deadline, DeadlineExceededError
from ..errors import ConfigError
from ..models.graph import Graph
from ..result import Result, Verdict
from ..specs.input_sets import Box, LpBall
from ..specs.problem import VerificationProblem
from .bab import BaBConfig, BaBOutcome, choose_branching, input_bab
from .graph_bab import GraphBaBConfig, graph_relu_bab
from .milp import MilpConfig

COMPLETE = ("auto", "bab", "milp", "none")


@dataclass(frozen=True)
class VerifyConfig:
    """Which stages run and their budgets. ``timeout_s`` caps the whole call.

    ``complete``: 'auto' (input-split BaB for low-dimensional inputs; else MILP when the
    network has at most ``milp_max_unstable`` unstable ReLUs after the incomplete bounds, else
    ReLU-split BaB; graphs with LeakyReLU/Sigmoid/Tanh: activation-split BaB, recorded as
    "bab-activation"), 'bab', 'milp', or 'none' (attack and bounds only)."""

    timeout_s: float = 60.0
    attack: AttackConfig | None = field(default_factory=AttackConfig)
    attack_share: float = 0.1  # at most this share of the budget for the first attack
    bounds_method: str = "alpha-crown"  # generic fallback for graphs that are not ReLU chains
    complete: str = "auto"
    bab: BaBConfig = field(default_factory=BaBConfig)
    graph_bab: GraphBaBConfig = field(default_factory=GraphBaBConfig)  # BaB on other graphs
    milp: MilpConfig = field(default_factory=MilpConfig)
    milp_max_unstable: int = 0
    dtype: torch.dtype = torch.float64

    def __post_init__(self):
        if not self.timeout_s > 0:
            raise ConfigError(f"timeout must be > 0 seconds, got {self.timeout_s}")
        if self.complete not in COMPLETE:
            raise ConfigError(f"unknown complete method {self.complete!r}; choose from {COMPLETE}")


def _as_box(problem: VerificationProblem) -> Box | None:
    s = problem.input_set
    if isinstance(s, Box):
        return s
    if isinstance(s, LpBall) and s.p == math.inf:
        return s.box_hull()
    return None


def _result(verdict: Verdict, t0: float, how: str, cex=None, **stats) -> Result:
    stats.pop("method", None)
    return Result(verdict, how, clock.now() - t0, counterexample=cex, stats=stats)


def verify(problem: VerificationProblem, config: VerifyConfig = VerifyConfig(),
           onnx_path: str | None = None, deadline: Deadline | float | None = None) -> Result:
    """Decide a batch-1 problem. ``onnx_path``: re-check counterexamples on onnxruntime too."""
    return verify_all([problem], config, onnx_path, deadline)


def _end(config: VerifyConfig, deadline: Deadline | float | None) -> Deadline:
    """The earlier of ``config.timeout_s`` from now and ``deadline`` (a Deadline, or a
    :func:`nncert.clock.now` value)."""
    own = Deadline.after(config.timeout_s)
    if deadline is None:
        return own
    at = deadline.at if isinstance(deadline, Deadline) else float(deadline)
    return Deadline(min(at, own.at))


def verify_all(problems: list[VerificationProblem], config: VerifyConfig = VerifyConfig(),
               onnx_path: str | None = None, deadline: Deadline | float | None = None) -> Result:
    """Decide the conjunction of batch-1 problems on the same graph (e.g. a VNN-LIB file's
    disjuncts): FALSIFIED if any fails, VERIFIED if all hold.

    Time: the answer is TIMEOUT once ``config.timeout_s`` (or the earlier ``deadline``: a
    :class:`~nncert.clock.Deadline` or a :func:`nncert.clock.now` value) has passed; every
    long loop below checks the deadline, so the answer comes soon after it (no work of more
    than a fraction of a second runs between two checks on the benchmark networks)."""
    t0 = clock.now()
    end = _end(config, deadline)
    stats: dict = {"stages": []}
    try:
        return _verify_all(problems, config, onnx_path, end, t0, stats)
    except DeadlineExceededError:
        return _result(Verdict.TIMEOUT, t0, stats.get("method", "bab"), **stats)


def _verify_all(problems: list[VerificationProblem], config: VerifyConfig, onnx_path,
                end: Deadline, t0: float, stats: dict) -> Result:
    if not problems:
        return _result(Verdict.VERIFIED, t0, "empty")
    for p in problems:
        if p.batch_size != 1:
            raise ConfigError("verify takes batch-1 problems; index the batch first")
    model_graph: Graph = problems[0].graph
    g64 = model_graph.to(dtype=config.dtype)
    end.check()  # (before any stage)
    p64 = [VerificationProblem(g64, p.input_set.to(dtype=config.dtype),
                               p.output_spec.to(dtype=config.dtype), p.name) for p in problems]

    def check_for(i: int):
        def check(x: torch.Tensor):
            return confirm(p64[i], x.reshape(1, *model_graph.input_shape), onnx_path, model_graph)
        return check

    # 1. attack every disjunct first: sat instances should fall in seconds
    if config.attack is not None:
        stats["stages"].append("attack")
        budget = min(config.attack.timeout_s, config.attack_share * config.timeout_s)
        for p in p64:
            a_end = end.within(budget / len(p64))
            cex, m = attack(p, config.attack, onnx_path, model_graph, deadline=a_end)
            if cex is not None:
                return _result(Verdict.FALSIFIED, t0, "attack", cex, **stats)
    # 2./3. bounds and the complete stage, one disjunct at a time
    verdicts = []
    for i, p in enumerate(p64):
        out = _decide(p, config, end, check_for(i), stats)
        if out.status == "falsified":
            return _result(Verdict.FALSIFIED, t0, stats.get("method", "bab"), out.counterexample,
                           **stats)
        verdicts.append(out.status)
        if out.status != "verified":
            break
    if verdicts and all(v == "verified" for v in verdicts) and len(verdicts) == len(p64):
        return _result(Verdict.VERIFIED, t0, stats.get("method", "bounds"), **stats)
    if end.expired() or "timeout" in verdicts:
        return _result(Verdict.TIMEOUT, t0, stats.get("method", "bab"), **stats)
    return _result(Verdict.UNKNOWN, t0, stats.get("method", "bab"), **stats)


def _is_relu_chain(graph: Graph) -> bool:
    """A chain of affine ops and ReLUs with at least one ReLU (what ``relu_split`` decides)."""
    from ..bounds.subdomains import is_relu_chain
    from ..models import ops

    return (is_relu_chain(graph) and any(isinstance(n.op, ops.ReLU) for n in graph)
            and all(isinstance(n.op, (ops.AffineOp, ops.ReLU)) for n in graph))


def _engine_bounds(graph: Graph) -> bool:
    """Whether the bound engine's backward pass (what input splitting uses) takes every op."""
    from ..bounds.crown import BACKWARD

    return all(type(n.op) in BACKWARD for n in graph)


def _input_split(p: VerificationProblem, config: VerifyConfig) -> bool:
    """Whether input-split BaB decides ``p``: a box (or L∞ ball) input, BaB allowed, the
    engine bounds every op, and input splitting chosen (``choose_branching``: few inputs)."""
    return (config.complete in ("auto", "bab") and _as_box(p) is not None
            and _engine_bounds(p.graph) and choose_branching(p.graph, config.bab) == "input")


def _run_input_bab(p: VerificationProblem, config: VerifyConfig, end: Deadline, check,
                   stats) -> BaBOutcome:
    """Input-split BaB on the graph (``bab.input_bab``), recorded as "bab-input"."""
    stats["method"] = "bab-input"
    stats["stages"].append("bab-input")
    out = input_bab(p.graph, _as_box(p), p.output_spec, config.bab,
                    end.within(config.bab.timeout_s), check)
    stats["bab"] = out.stats
    return out


def _decide(p: VerificationProblem, config: VerifyConfig, end: Deadline, check, stats
            ) -> BaBOutcome:
    if _input_split(p, config):
        return _run_input_bab(p, config, end, check, stats)
    box, chain = _as_box(p), _is_relu_chain(p.graph)
    if not chain or box is None:
        return _decide_generic(p, box, config, end, check, stats, chain=chain)
    return _decide_relu(p, config, end, check, stats)


def _root(p: VerificationProblem, config: VerifyConfig, end: Deadline):
    """Root bounds of a ReLU chain on the engine: CROWN intermediate bounds, alpha on the
    rows; when that does not prove the property, every ReLU input's bounds optimised by
    alpha-CROWN too (intersected: both sound on the set) and the rows bounded again."""
    from ..bounds.alpha_crown import AlphaCrownConfig, optimized_intermediate_bounds
    from ..bounds.crown import intermediate_bounds
    from .relu_split import root_bounds

    inter = intermediate_bounds(p.graph, p.input_set, deadline=end)
    root = root_bounds(p, inter, config.bab, end)
    iters = config.bab.root_intermediate_alpha_iters
    if bool(p.output_spec.proved(root.lower).all()) or iters <= 0:
        return root
    opt = optimized_intermediate_bounds(
        p.graph, p.input_set,
        AlphaCrownConfig(iterations=iters, search_dtype=config.bab.search_dtype), end)
    both = {k: v.intersect(Interval(opt[k].lower.detach(), opt[k].upper.detach()))
            if k in opt else v for k, v in inter.items()}
    again = root_bounds(p, both, config.bab, end)
    return replace(again, lower=torch.maximum(root.lower, again.lower))


def _decide_relu(p: VerificationProblem, config: VerifyConfig, end: Deadline, check, stats
                 ) -> BaBOutcome:
    """Bounds, then MILP or ReLU-split BaB on the engine (``relu_split``)."""
    from .relu_split import relu_bab

    spec = p.output_spec
    stats["stages"].append("alpha-crown")
    root = _root(p, config, end)
    stats["lower"] = float(spec.clause_max(root.lower).amin())
    if bool(spec.proved(root.lower).all()):
        stats["method"] = "alpha-crown"
        return BaBOutcome("verified")
    if config.complete == "none":
        return BaBOutcome("unknown")
    unstable = sum(int(((iv.lower < 0) & (iv.upper > 0)).sum())
                   for k, iv in root.intermediate.items() if k in _relu_inputs(p.graph))
    stats["unstable"] = unstable
    if config.complete == "milp" or (config.complete == "auto"
                                     and unstable <= config.milp_max_unstable):
        b = _Bounds(root.lower, root.intermediate)
        out = _graph_milp(p, _as_box(p), b, config, end, check, stats)
        if out.status in ("verified", "timeout", "falsified") or config.complete == "milp":
            return out
    stats["method"] = "bab-relu"
    stats["stages"].append("bab-relu")
    out = relu_bab(p, root, config.bab, end.within(config.bab.timeout_s), check)
    stats["bab"] = out.stats
    return out


@dataclass(frozen=True)
class _Bounds:
    """Root bounds as ``_graph_milp`` reads them."""

    lower: torch.Tensor
    intermediate: dict


def _relu_inputs(graph: Graph) -> set[str]:
    from ..bounds.subdomains import relu_inputs

    return set(relu_inputs(graph).values())


def _decide_generic(p, box, config: VerifyConfig, end: Deadline, check, stats, chain: bool = False
                    ) -> BaBOutcome:
    """Graphs outside the dense ReLU form: registry bounds, then activation-split BaB over the
    graph (graphs with ReLUs or general activations and high-dimensional inputs) or
    input-split BaB on boxes."""
    from ..bounds import compute_bounds

    method = config.bounds_method
    try:
        b = compute_bounds(p, method, _search_config(method, config), deadline=end)
    except DeadlineExceededError:
        raise
    except Exception as e:  # method not available for this graph: intervals, said in stats
        stats["fallback"] = f"{method} unavailable ({type(e).__name__}: {e}); interval bounds"
        method = "interval"
        b = compute_bounds(p, method, deadline=end)
    stats["stages"].append(method)
    stats["method"] = method
    if bool(p.output_spec.proved(b.lower).all()):
        return BaBOutcome("verified")
    if config.complete == "none":
        return BaBOutcome("unknown")
    if config.complete == "milp":
        return _graph_milp(p, box, b, config, end, check, stats)
    if not chain and _use_graph_bab(p, config):
        return _graph_bab(p, b, config, end, check, stats)
    if box is None or not _engine_bounds(p.graph):
        return BaBOutcome("unknown")
    return _run_input_bab(p, config, end, check, stats)


def _search_config(method: str, config: VerifyConfig):
    """alpha-CROWN's steps in the graph search's dtype (None for the other methods: their
    defaults)."""
    if method != "alpha-crown":
        return None
    from ..bounds.alpha_crown import AlphaCrownConfig

    return AlphaCrownConfig(search_dtype=config.graph_bab.search_dtype)


def _graph_milp(p: VerificationProblem, box, b, config: VerifyConfig, end: Deadline, check,
                stats) -> BaBOutcome:
    """The exact MILP over the graph (``milp_graph``; an op without an exact encoding is an
    error naming it), big-M constants from the bounds just computed (or CROWN's)."""
    from ..models import ops
    from .milp_graph import check_encodable, graph_bounds, milp_decide

    check_encodable(p.graph)
    if box is None:
        return BaBOutcome("unknown", stats={"reason": "MILP needs a box or L-inf input set"})
    stats["method"] = "milp"
    stats["stages"].append("milp")
    lo, hi = box.lower, box.upper
    needed = {n.inputs[0] for n in p.graph if isinstance(n.op, (ops.ReLU, ops.LeakyReLU, ops.MaxPool2d))}
    bounds = b.intermediate if needed <= set(b.intermediate) else graph_bounds(p.graph, lo, hi)
    proved = {k for k, cl in enumerate(p.output_spec.clauses) if float(b.lower[0, list(cl)].max()) > 0}
    out = milp_decide(p.graph, lo, hi, p.output_spec, bounds, end.within(config.milp.timeout_s),
                      config.milp.threads, proved)
    if out.status == "candidate":
        cex = check(out.x)
        return BaBOutcome("falsified", cex) if cex is not None else BaBOutcome(
            "unknown", stats={"reason": "MILP solution not confirmed"})
    return BaBOutcome(out.status)


def _use_graph_bab(p: VerificationProblem, config: VerifyConfig) -> bool:
    """Activation-split BaB over the graph: a graph with ReLUs or branchable general
    activations (LeakyReLU, Sigmoid, Tanh) whose ops the subdomain engine supports, an input
    of more than ``input_split_max_dim`` dimensions, BaB allowed."""
    from ..bounds.activation_splits import BRANCHABLE
    from ..bounds.crown import BACKWARD
    from ..models import ops

    g = p.graph
    return (config.complete in ("auto", "bab") and config.bab.branching != "input"
            and math.prod(g.input_shape) > config.bab.input_split_max_dim
            and any(isinstance(n.op, (ops.ReLU, *BRANCHABLE)) for n in g)
            and all(type(n.op) in BACKWARD for n in g))


def _optimized_root(p: VerificationProblem, inter, iters: int, deadline: Deadline,
                    search_dtype: str | None = None) -> dict:
    """``inter`` intersected with alpha-CROWN-optimised bounds of every node (both sound on
    the input set, so their intersection is). On a 784-100-100-10 Sigmoid MLP it lifts the
    activation search's root bounds from −0.90 to −0.54 and −1.23 to −1.06 for about 1.3 s;
    on cifar10_resnet resnet_2b prop_35 the ReLU search's from −1.13 to −0.95 (the open
    tree's worst bound after 120 s: −0.016 instead of −0.076; verified in 145 s, where the
    CROWN root timed out at 300 s)."""
    from ..bounds.alpha_crown import AlphaCrownConfig, optimized_intermediate_bounds

    opt = optimized_intermediate_bounds(
        p.graph, p.input_set, AlphaCrownConfig(iterations=iters, search_dtype=search_dtype),
        deadline)
    return {k: v.intersect(opt[k]) if k in opt else v for k, v in inter.items()}


def _graph_bab(p: VerificationProblem, b, config: VerifyConfig, end: Deadline, check, stats
               ) -> BaBOutcome:
    """The search over the graph from alpha-CROWN-optimised root bounds. On a ReLU graph it
    first searches ``root_intermediate_after_s`` seconds from CROWN's: the optimisation costs
    about 38 s on cifar10_resnet's resnet_2b, where 8 instances need 3–18 s without it, while
    the hardest ones need it (prop_35: verified in 145 s, a timeout at 300 s without)."""
    from ..bounds.activation_splits import activation_inputs

    # general activations (LeakyReLU, Sigmoid, Tanh) split at points: "bab-activation"
    how = "bab-activation" if activation_inputs(p.graph) else "bab-relu-graph"
    stats["method"] = how
    stats["stages"].append(how)
    inter = b.intermediate if b.method in ("crown", "alpha-crown") else None
    iters, budget = config.bab.root_intermediate_alpha_iters, end.within(config.bab.timeout_s)
    if inter is not None and iters > 0:
        first = config.bab.root_intermediate_after_s if how == "bab-relu-graph" else 0.0
        if first > 0:
            out = graph_relu_bab(p, config.graph_bab, budget.within(first), check,
                                 root_intermediate=inter)
            if out.status in ("verified", "falsified") or budget.expired():
                stats["bab"] = out.stats
                return out
            stats["bab_crown_root"] = out.stats  # the first search's, from CROWN's bounds
        inter = _optimized_root(p, inter, iters, budget, config.graph_bab.search_dtype)
    out = graph_relu_bab(p, config.graph_bab, budget, check, root_intermediate=inter)
    stats["bab"] = out.stats
    return out
