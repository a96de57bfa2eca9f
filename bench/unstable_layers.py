"""How loose are a ReLU chain's intermediate bounds on one VNN-COMP instance, layer by layer?

For each ReLU input it prints the neurons the bounds leave unstable (CROWN, then with every
layer's bounds alpha-optimised as the ReLU-split search's root does) and how many of them PGD
shows to be truly unstable (a point of the input box where the neuron is positive and one where
it is negative: a lower bound of the true count). With ``--milp L:S,...`` it then tightens the
bounds of layer L (2 = the second ReLU input) by HiGHS, one MILP per bound of each unstable
neuron with ``S`` seconds each (the MILP's dual bound: sound when HiGHS's tolerances are), the
earlier layers' unstable ReLUs exact (binary), and bounds the later layers again by CROWN from
there; the root's alpha-CROWN bound of the property follows each stage. A diagnostic of why
the ReLU-split search stalls (issue 13); nothing here is used by ``verify``.

    python bench/unstable_layers.py ../shared/benchmarks/mnistfc onnx/mnist-net_256x6.onnx \\
        vnnlib/prop_0_0.03.vnnlib --milp 2:1,3:2
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from nncert.bounds.alpha_crown import AlphaCrownConfig, optimized_intermediate_bounds
from nncert.bounds.core import Interval
from nncert.bounds.crown import intermediate_bounds
from nncert.bounds.subdomains import relu_inputs
from nncert.clock import NEVER
from nncert.complete import milp_graph as mg
from nncert.complete.bab import BaBConfig
from nncert.complete.relu_split import root_bounds
from nncert.complete.vnncomp import load_instance


def unstable(iv: Interval) -> torch.Tensor:
    return ((iv.lower < 0) & (iv.upper > 0)).reshape(-1)


def truly_unstable(problem, node: str, idx: torch.Tensor, restarts: int = 8,
                   steps: int = 100) -> int:
    """How many of the neurons ``idx`` of ``node`` PGD drives both above and below 0."""
    g, shape = problem.graph, problem.graph.input_shape
    lo = problem.input_set.lower.reshape(1, -1)
    hi = problem.input_set.upper.reshape(1, -1)
    k = idx.numel()
    gen = torch.Generator().manual_seed(0)
    reached = []
    for sign in (1.0, -1.0):
        x = lo + (hi - lo) * torch.rand(restarts * k, lo.shape[1], generator=gen, dtype=lo.dtype)
        best = torch.full((k,), -math.inf, dtype=lo.dtype)
        for _ in range(steps):
            x.requires_grad_(True)
            z = g.forward_all(x.reshape(-1, *shape))[node].reshape(restarts, k, -1)
            v = sign * z[:, torch.arange(k), idx]
            best = torch.maximum(best, v.detach().amax(0))
            (grad,) = torch.autograd.grad(v.sum(), x)
            with torch.no_grad():
                x = (x + 0.05 * (hi - lo) * grad.sign()).clamp(lo, hi)
        reached.append(best > 0)
    return int((reached[0] & reached[1]).sum())


def milp_tighten(problem, inter: dict[str, Interval], node: str, seconds: float) -> Interval:
    """``node``'s bounds tightened by one HiGHS MILP per bound of each unstable neuron over the
    graph up to ``node`` (the MILP's dual bound, less 1e-6; each stops at ``seconds``)."""
    import highspy

    g = problem.graph
    m = mg.Model()
    x = m.add_vars(problem.input_set.lower.reshape(-1).numpy(),
                   problem.input_set.upper.reshape(-1).numpy())
    ctx = mg._Ctx(m, g, inter, {})
    values = {g.input_name: m.fresh(x)}
    for n in g:
        values[n.name] = mg.ENCODERS[type(n.op)](ctx, n, [values[s] for s in n.inputs])
        if n.name == node:
            break
    h = mg.new_highs()
    h.addVars(m.n, np.concatenate(m.lb), np.concatenate(m.ub))
    ints = np.flatnonzero(np.concatenate(m.integer)).astype(np.int32)
    h.changeColsIntegrality(len(ints), ints, np.full(len(ints), highspy.HighsVarType.kInteger))
    A, rlo, rhi = m.matrix()
    A = mg._widen(A, m.n).tocsr()
    inf = highspy.kHighsInf
    h.addRows(A.shape[0], np.where(np.isinf(rlo), -inf, rlo), np.where(np.isinf(rhi), inf, rhi),
              A.nnz, A.indptr[:-1].astype(np.int32), A.indices.astype(np.int32), A.data)
    h.setOptionValue("time_limit", float(seconds))
    h.setOptionValue("threads", 1)
    e = values[node]
    M = mg._widen(e.M, m.n).tocsr()
    iv = inter[node]
    lo, up = iv.lower.reshape(-1).clone(), iv.upper.reshape(-1).clone()
    cols = np.arange(m.n, dtype=np.int32)
    for j in unstable(iv).nonzero().flatten().tolist():
        row = M[j].toarray().ravel()
        for sign in (1.0, -1.0):
            h.changeColsCost(m.n, cols, sign * row)
            h.run()
            dual = h.getInfo().mip_dual_bound
            if not math.isfinite(dual):
                continue
            b = dual + sign * e.c[j]
            if sign > 0:
                lo[j] = max(float(lo[j]), b - 1e-6)
            else:
                up[j] = min(float(up[j]), -b + 1e-6)
            if not (lo[j] < 0 < up[j]):
                break
    return Interval(lo.reshape(iv.lower.shape), up.reshape(iv.upper.shape))


def report(problem, inter, names, tag: str, t: float) -> None:
    root = root_bounds(problem, inter, BaBConfig(), NEVER)
    counts = [int(unstable(inter[z]).sum()) for z in names]
    lower = float(problem.output_spec.clause_max(root.lower).amin())
    print(f"{tag:28s} {t:7.1f} s  unstable per layer {counts}  root bound {lower:.3f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root")
    ap.add_argument("onnx")
    ap.add_argument("vnnlib")
    ap.add_argument("--milp", default="", help="L:S,... tighten layer L with S s per MILP")
    args = ap.parse_args()
    torch.set_num_threads(1)
    _, problems = load_instance(Path(args.root) / args.onnx, Path(args.root) / args.vnnlib)
    p = replace(problems[0], graph=problems[0].graph.to(dtype=torch.float64))
    names = list(relu_inputs(p.graph).values())
    t0 = time.perf_counter()
    inter = intermediate_bounds(p.graph, p.input_set)
    report(p, inter, names, "CROWN", time.perf_counter() - t0)
    t0 = time.perf_counter()
    opt = optimized_intermediate_bounds(p.graph, p.input_set,
                                        AlphaCrownConfig(iterations=20, search_dtype="float32"))
    inter = {k: v.intersect(Interval(opt[k].lower.detach(), opt[k].upper.detach()))
             if k in opt else v for k, v in inter.items()}
    report(p, inter, names, "alpha-optimised layers", time.perf_counter() - t0)
    for k, z in enumerate(names, start=1):
        idx = unstable(inter[z]).nonzero().flatten()
        print(f"  layer {k}: {idx.numel()} unstable by the bounds, "
              f"{truly_unstable(p, z, idx)} shown unstable by PGD", flush=True)
    order = [n.name for n in p.graph]
    for item in filter(None, args.milp.split(",")):
        layer, seconds = item.split(":")
        z = names[int(layer) - 1]
        t0 = time.perf_counter()
        tight = milp_tighten(p, inter, z, float(seconds))
        given = {k: (tight if k == z else inter[k]) for k in order[:order.index(z) + 1]}
        given[p.graph.input_name] = inter[p.graph.input_name]
        again = intermediate_bounds(p.graph, p.input_set, given=given)
        inter = {k: v.intersect(again[k]) if k in again else v for k, v in inter.items()}
        report(p, inter, names, f"MILP on layer {layer} ({seconds} s each)",
               time.perf_counter() - t0)


if __name__ == "__main__":
    main()
