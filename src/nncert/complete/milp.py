"""Exact MILP encoding of ReLU networks (big-M with per-neuron bounds), solved by HiGHS.

For each ReLU with pre-activation bounds ``l < 0 < u``: ``a ≥ z, a ≥ 0, a ≤ u·δ,
a ≤ z − l·(1 − δ), δ ∈ {0, 1}``; stable neurons are linear. Each clause of the property is one
MILP: minimise ``t`` subject to ``C_r·y + d_r ≤ t`` for the clause's rows, with HiGHS's
objective cutoff at 0, so the search stops as soon as the minimum is provably > 0 (clause
proved: the solve reports no solution below the cutoff) or a solution with ``t ≤ 0`` appears
(a candidate counterexample, which the caller re-checks concretely).

Deadline: building the model checks it after every layer, HiGHS gets the time remaining as its
``time_limit``, and past the deadline the answer is "timeout".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .. import clock
from ..clock import NEVER, Deadline, DeadlineExceededError
from ..specs.output import OutputSpec
from . import relu_net as rn


@dataclass(frozen=True)
class MilpConfig:
    timeout_s: float = 60.0
    threads: int = 1
    bounds: str = "alpha"  # intermediate bounds: "crown" or "alpha" (CROWN + alpha on the output)


@dataclass
class MilpOutcome:
    status: str  # "verified" | "candidate" | "timeout" | "unknown"
    x: torch.Tensor | None = None  # candidate input (1, n) when status == "candidate"
    stats: dict | None = None


def _build(net: rn.ReluNet, lo: np.ndarray, hi: np.ndarray, inter: list[rn.Layer],
           deadline: Deadline = NEVER):
    """Variables and constraints shared by every clause; returns (highs, x_idx, out_expr)."""
    import highspy

    from .milp_graph import new_highs

    h = new_highs()
    inf = highspy.kHighsInf
    nvar = 0

    def add_vars(lb, ub, integer=False):
        nonlocal nvar
        k = len(lb)
        h.addVars(k, np.asarray(lb, dtype=np.float64), np.asarray(ub, dtype=np.float64))
        idx = np.arange(nvar, nvar + k)
        if integer:
            h.changeColsIntegrality(k, idx.astype(np.int32),
                                    np.full(k, highspy.HighsVarType.kInteger))
        nvar += k
        return idx

    x_idx = add_vars(lo, hi)
    # current layer's input as affine expressions over variables: (coef matrix rows, const)
    prev_idx = x_idx  # variables of the previous layer (-1: a neuron fixed at 0)
    n_bin = 0
    for k in range(net.num_relu_layers):
        deadline.check()
        W = net.Ws[k].double().numpy()
        b = net.bs[k].double().numpy()
        lk = inter[k][0].reshape(-1).double().numpy()
        uk = inter[k][1].reshape(-1).double().numpy()
        n = W.shape[0]
        a_idx = np.full(n, -1)
        for i in range(n):
            li, ui = lk[i], uk[i]
            if ui <= 0:
                continue  # a = 0
            row = W[i]
            nz = np.flatnonzero((row != 0) & (prev_idx >= 0))
            cols = prev_idx[nz]
            vals = row[nz]
            (ai,) = add_vars([max(li, 0.0)], [ui])
            a_idx[i] = ai
            if li >= 0:  # a = z
                h.addRow(b[i], b[i], len(cols) + 1, np.concatenate([[ai], cols]).astype(np.int32),
                         np.concatenate([[1.0], -vals]))
                continue
            (di,) = add_vars([0.0], [1.0], integer=True)
            n_bin += 1
            idx = np.concatenate([[ai], cols]).astype(np.int32)
            # a - z >= 0  →  a - W a_prev >= b
            h.addRow(b[i], inf, len(idx), idx, np.concatenate([[1.0], -vals]))
            # a - z - l δ <= -l  →  a - W a_prev - l δ <= b - l
            idx2 = np.concatenate([idx, [di]]).astype(np.int32)
            h.addRow(-inf, b[i] - li, len(idx2), idx2, np.concatenate([[1.0], -vals, [-li]]))
            # a - u δ <= 0
            h.addRow(-inf, 0.0, 2, np.array([ai, di], dtype=np.int32), np.array([1.0, -ui]))
        prev_idx = a_idx
    return h, x_idx, prev_idx, n_bin, add_vars


def milp_verify(net: rn.ReluNet, lo: torch.Tensor, hi: torch.Tensor, spec: OutputSpec,
                inter: list[rn.Layer], config: MilpConfig, deadline: Deadline,
                skip_clauses: set[int] | None = None) -> MilpOutcome:
    """Decide the property on the box [lo, hi] (1, n) exactly (up to HiGHS tolerances);
    "timeout" once ``deadline`` has passed."""
    stats = {"clauses": 0, "binaries": 0}
    try:
        return _milp_verify(net, lo, hi, spec, inter, config, deadline, skip_clauses, stats)
    except DeadlineExceededError:
        return MilpOutcome("timeout", stats=stats)


def _milp_verify(net, lo, hi, spec: OutputSpec, inter, config: MilpConfig, deadline: Deadline,
                 skip_clauses, stats: dict) -> MilpOutcome:
    import highspy

    t0 = clock.now()
    lo_np = lo.reshape(-1).double().numpy()
    hi_np = hi.reshape(-1).double().numpy()
    WL = net.Ws[-1].double().numpy()
    bL = net.bs[-1].double().numpy()
    C = spec.C[0].double().numpy()
    d = spec.d[0].double().numpy()
    inf = highspy.kHighsInf
    for k, clause in enumerate(spec.clauses):
        if skip_clauses and k in skip_clauses:
            continue
        deadline.check()
        h, x_idx, last_idx, n_bin, add_vars = _build(net, lo_np, hi_np, inter, deadline)
        stats["binaries"] = n_bin
        (t_idx,) = add_vars([-inf], [inf])
        for r in clause:
            # C_r (WL a + bL) + d_r <= t  →  (C_r WL) a - t <= -(C_r bL + d_r)
            coef = C[r] @ WL
            nz = np.flatnonzero((coef != 0) & (last_idx >= 0))
            idx = np.concatenate([last_idx[nz], [t_idx]]).astype(np.int32)
            h.addRow(-inf, -(C[r] @ bL + d[r]), len(idx), idx, np.concatenate([coef[nz], [-1.0]]))
        h.changeColCost(int(t_idx), 1.0)
        deadline.check()
        h.setOptionValue("time_limit", float(max(deadline.remaining(), 0.01)))
        h.setOptionValue("threads", int(config.threads))
        h.setOptionValue("objective_bound", 0.0)
        h.setOptionValue("mip_max_improving_sols", 1)
        h.run()
        ms = h.getModelStatus()
        stats["clauses"] += 1
        sol = h.getSolution()
        has_sol = (sol.value_valid and h.getInfo().primal_solution_status >= 2
                   and ms != highspy.HighsModelStatus.kInfeasible)
        if has_sol:
            vals = np.asarray(sol.col_value)
            tval = vals[t_idx]
            if tval <= 0:
                x = torch.tensor(vals[x_idx], dtype=torch.float64).reshape(1, -1)
                stats["time_s"] = clock.now() - t0
                return MilpOutcome("candidate", x, stats)
        if ms == highspy.HighsModelStatus.kInfeasible or (
            ms == highspy.HighsModelStatus.kOptimal and has_sol and vals[t_idx] > 0
        ) or ms == highspy.HighsModelStatus.kObjectiveBound:
            continue  # clause proved: no point has t ≤ 0
        if ms == highspy.HighsModelStatus.kTimeLimit:
            return MilpOutcome("timeout", stats=stats)
        return MilpOutcome("unknown", stats={**stats, "highs_status": str(ms)})
    stats["time_s"] = clock.now() - t0
    return MilpOutcome("verified", stats=stats)


def milp_bounds(net: rn.ReluNet, lo: torch.Tensor, hi: torch.Tensor, spec: OutputSpec,
                config: MilpConfig):
    """Intermediate bounds for the encoding, and the clauses already proved by them."""
    inter = rn.crown_intermediate(net, lo, hi, fwd=rn.forward_bounds(net, lo, hi))
    C, d = spec.C[:1], spec.d[:1]
    if config.bounds == "alpha":
        lb, *_ = rn.optimize_spec_bound(net, C, d, inter, lo, hi, iters=30)
    else:
        lb, _, _ = rn.spec_bound(net, C, d, inter, lo, hi)
    proved = {k for k, cl in enumerate(spec.clauses) if float(lb[0, list(cl)].max()) > 0}
    return inter, proved, lb


__all__ = ["MilpConfig", "MilpOutcome", "milp_bounds", "milp_verify"]
