"""Falsification: find an input inside the set whose output violates the property.

* ``pgd``: projected gradient descent on a margin loss derived from the OutputSpec, batched over
  many restarts and many input boxes at once. Restarts are *targeted*: restart ``i`` attacks
  clause ``i mod K`` (the violation of clause k is ``max_{rows in k} (C·y + d) ≤ 0``), which
  avoids the stalls of a single min-over-clauses loss on near-one-hot outputs. Steps follow the
  sign of the gradient with a step size decaying from a fraction of the box width, and the
  iterate is projected back onto the set after every step.
* ``random_search``: uniform samples of the set (plus its vertices' neighbourhoods for boxes).
* ``attack(problem, config)``: both, in that order, under a time budget. ``pgd`` and
  ``random_search`` check their deadline before every step / chunk and raise
  :class:`~nncert.clock.DeadlineExceededError` past it; ``attack`` then returns "nothing found".
* ``confirm(problem, x, onnx_path)``: the only way a counterexample leaves this module: the
  point is rounded into the set in the model's dtype, run on the concrete Graph in that dtype
  and, for ONNX models, on onnxruntime; it is returned only when it violates the property
  on both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import clock
from .clock import NEVER, Deadline, DeadlineExceededError
from .models.graph import Graph
from .result import Counterexample
from .specs.input_sets import Box, InputSet
from .specs.output import OutputSpec
from .specs.problem import VerificationProblem


@dataclass(frozen=True)
class AttackConfig:
    """Budgets of the falsifier. ``timeout_s`` caps the whole attack."""

    restarts: int = 32
    steps: int = 60
    step_size: float = 0.25  # initial step, as a fraction of the box half-width
    samples: int = 2048
    seed: int = 0
    timeout_s: float = 10.0
    rounds: int = 3  # PGD rounds with fresh restarts, until timeout


# -- losses ---------------------------------------------------------------------------------
def clause_values(spec: OutputSpec, y: torch.Tensor) -> torch.Tensor:
    """Per clause, max over its rows of C·y + d: y (N, B, n_out) → (N, B, K)."""
    return spec.clause_max(spec.values(y))


def _spec_for(spec: OutputSpec, dtype) -> OutputSpec:
    return OutputSpec(spec.C.to(dtype), spec.d.to(dtype), spec.clauses)


# -- projection ---------------------------------------------------------------------------------
def _box_bounds(input_set: InputSet) -> tuple[torch.Tensor, torch.Tensor]:
    return input_set.lower, input_set.upper


def into_set(input_set: InputSet, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``x`` (…, B, *shape) rounded to ``dtype`` and nudged to lie inside the set's box hull in
    the set's own precision (exact comparison), then projected for balls."""
    lo, hi = input_set.lower, input_set.upper
    xp = input_set.project(x.to(lo.dtype))
    out = xp.to(dtype)
    for _ in range(4):
        back = out.to(lo.dtype)
        below, above = back < lo, back > hi
        if not bool((below | above).any()):
            break
        out = torch.where(below, torch.nextafter(out, torch.full_like(out, math.inf)), out)
        out = torch.where(above, torch.nextafter(out, torch.full_like(out, -math.inf)), out)
    return out


# -- confirmation ---------------------------------------------------------------------------------
def confirm(problem: VerificationProblem, x: torch.Tensor, onnx_path: str | None = None,
            model_graph: Graph | None = None) -> Counterexample | None:
    """A Counterexample when ``x`` (batch 1 or no batch dim) — rounded into the set in the
    model's dtype — violates the property on the concrete graph (model dtype) and, given
    ``onnx_path``, on onnxruntime; else None. ``problem`` must have batch size 1."""
    graph = model_graph if model_graph is not None else problem.graph
    dt = graph.dtype
    if x.dim() == len(problem.input_set.shape):
        x = x.unsqueeze(0)
    x = x[:1].detach()
    xr = into_set(problem.input_set, x, dt)
    if not bool(problem.input_set.contains(xr.to(problem.input_set.lower.dtype)).all()):
        return None
    spec64 = _spec_for(problem.output_spec, torch.float64)
    with torch.no_grad():
        y = graph.forward(xr.to(graph.device))
    if not bool(torch.isfinite(y).all()):
        return None
    if bool(spec64.holds(y.reshape(1, -1).double().cpu()).any()):
        return None
    if onnx_path is not None:
        from .models.onnx_runtime import run_onnx

        y_ort = run_onnx(onnx_path, xr.cpu()).reshape(1, -1)
        if not bool(torch.isfinite(y_ort).all()) or bool(spec64.holds(y_ort.double()).any()):
            return None
        y = y_ort
    return Counterexample(xr[0].detach().cpu(), y.reshape(-1).detach().cpu())


# -- search ---------------------------------------------------------------------------------------
def pgd(fn, lo: torch.Tensor, hi: torch.Tensor, spec: OutputSpec, restarts: int, steps: int,
        step_size: float = 0.25, generator: torch.Generator | None = None,
        x_init: torch.Tensor | None = None, deadline: Deadline = NEVER):
    """Targeted sign-PGD over boxes ``[lo, hi]`` (B, n) flat, for ``fn`` mapping (N, n) → (N, m).

    ``spec`` has batch B (one spec per box). Returns (best x (B, n), best margin (B,)) where the
    margin is ``min_k max_{rows in k}(C·y + d)`` (≤ 0: violation)."""
    B, n = lo.shape
    K = len(spec.clauses)
    R = max(restarts, 1)
    u = torch.rand((R, B, n), generator=generator, dtype=lo.dtype).to(lo.device)
    x = lo + u * (hi - lo)
    if x_init is not None:
        x[0] = x_init.reshape(B, n)
    # restart r attacks clause r mod K
    target = torch.arange(R, device=lo.device) % K
    half = (hi - lo) / 2
    best_x = x[0].clone()
    best_m = torch.full((B,), math.inf, dtype=lo.dtype, device=lo.device)
    for t in range(steps + 1):
        deadline.check()
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            y = fn(x.reshape(R * B, n)).reshape(R, B, -1)
            cv = clause_values(spec, y)  # (R, B, K)
            margin = cv.amin(-1)
            loss = cv.gather(-1, target.view(R, 1, 1).expand(R, B, 1)).squeeze(-1)
            (g,) = torch.autograd.grad(loss.sum(), x)
        with torch.no_grad():
            m, idx = margin.min(0)
            better = m < best_m
            if bool(better.any()):
                best_m = torch.where(better, m, best_m)
                best_x = torch.where(better.unsqueeze(-1), x[idx, torch.arange(B)], best_x)
            if bool((best_m <= 0).all()) or t == steps:
                break
            frac = step_size * (1 - t / (steps + 1)) + 0.01
            x = x - frac * half * g.sign()
            x = torch.maximum(torch.minimum(x, hi), lo)
    return best_x.detach(), best_m.detach()


def random_search(fn, lo: torch.Tensor, hi: torch.Tensor, spec: OutputSpec, samples: int,
                  generator: torch.Generator | None = None, chunk: int = 4096,
                  deadline: Deadline = NEVER):
    """Uniform samples and box vertices; returns (best x (B, n), best margin (B,)). Samples are
    evaluated in chunks of at most ``chunk`` rows, starting at 64 and doubling while a chunk
    takes under 0.05 s (a big network gets small chunks between two deadline checks)."""
    B, n = lo.shape
    best_x, best_m = (lo + hi) / 2, torch.full((B,), math.inf, dtype=lo.dtype, device=lo.device)
    done, cap = 0, max(1, chunk // max(B, 1))
    step = min(cap, 64)
    while done < samples:
        deadline.check()
        t = clock.now()
        k = max(1, min(step, samples - done))
        u = torch.rand((k, B, n), generator=generator, dtype=lo.dtype).to(lo.device)
        if done == 0 and k >= 2:
            u[1] = (u[1] > 0.5).to(lo.dtype)  # random vertices
        x = lo + u * (hi - lo)
        with torch.no_grad():
            y = fn(x.reshape(k * B, n)).reshape(k, B, -1)
            m = spec.margin(y)
        mm, idx = m.min(0)
        better = mm < best_m
        best_m = torch.where(better, mm, best_m)
        best_x = torch.where(better.unsqueeze(-1), x[idx, torch.arange(B)], best_x)
        done += k
        if clock.now() - t < 0.05:
            step = min(cap, 2 * step)
    return best_x, best_m


def attack(problem: VerificationProblem, config: AttackConfig = AttackConfig(),
           onnx_path: str | None = None, model_graph: Graph | None = None,
           deadline: Deadline = NEVER, fn=None) -> tuple[Counterexample | None, float]:
    """Search a counterexample of a batch-1 problem. Returns (confirmed cex or None, the best
    margin found on the search model). ``fn`` (flat (N, n) → (N, m)) replaces the graph for
    the search (e.g. a float64 dense copy); confirmation always uses ``model_graph``. Stops
    (nothing found) at ``deadline`` or after ``config.timeout_s``, whichever comes first."""
    best = [math.inf]
    try:
        return _attack(problem, config, onnx_path, model_graph,
                       deadline.within(config.timeout_s), fn, best)
    except DeadlineExceededError:
        return None, best[0]


def _attack(problem: VerificationProblem, config: AttackConfig, onnx_path, model_graph,
            t_end: Deadline, fn, best: list[float]) -> tuple[Counterexample | None, float]:
    """:func:`attack` with its deadline; ``best[0]`` tracks the best margin so far."""
    t_end.check()
    gen = torch.Generator().manual_seed(config.seed)
    graph = problem.graph
    shape = problem.input_set.shape
    dt = torch.float64 if fn is not None else graph.dtype
    if fn is None:
        def fn(x):
            return graph.forward(x.reshape(x.shape[0], *shape))
    lo = problem.input_set.lower.reshape(1, -1).to(dt)
    hi = problem.input_set.upper.reshape(1, -1).to(dt)
    spec = _spec_for(problem.output_spec, dt)
    is_box = isinstance(problem.input_set, Box) or getattr(problem.input_set, "p", None) == math.inf
    best_m = math.inf

    def check(x):
        return confirm(problem, x.reshape(1, *shape), onnx_path, model_graph)

    # the center first: cheap and often enough
    x0 = (lo + hi) / 2
    with torch.no_grad():
        m0 = float(spec.margin(fn(x0).reshape(1, 1, -1)).min())
    best_m = best[0] = min(best_m, m0)
    if m0 <= 0 and (cex := check(x0)) is not None:
        return cex, best_m
    for r in range(config.rounds):
        t_end.check()
        if is_box:
            x, m = pgd(fn, lo, hi, spec, config.restarts, config.steps, config.step_size, gen,
                       deadline=t_end)
        else:
            x, m = _pgd_set(fn, problem.input_set, spec, config, gen, t_end)
        best_m = best[0] = min(best_m, float(m.min()))
        if float(m.min()) <= 0 and (cex := check(x)) is not None:
            return cex, best_m
        if r == 0 and is_box:
            x, m = random_search(fn, lo, hi, spec, config.samples, gen, deadline=t_end)
            best_m = best[0] = min(best_m, float(m.min()))
            if float(m.min()) <= 0 and (cex := check(x)) is not None:
                return cex, best_m
    return None, best_m


def _pgd_set(fn, input_set: InputSet, spec: OutputSpec, config: AttackConfig, gen, t_end):
    """PGD for non-box sets (L2 balls): gradient steps and the set's own projection."""
    shape = input_set.shape
    n = math.prod(shape)
    R = max(config.restarts, 1)
    dt = spec.C.dtype
    x = input_set.sample(R, gen).to(dt)  # (R, 1, *shape)
    radius = float((input_set.upper - input_set.lower).max()) / 2 or 1.0
    best_x, best_m = x[0].reshape(1, n), torch.tensor([math.inf], dtype=dt)
    for t in range(config.steps + 1):
        t_end.check()
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            y = fn(x.reshape(R, n)).reshape(R, 1, -1)
            m = spec.margin(y)
            (g,) = torch.autograd.grad(m.sum(), x)
        with torch.no_grad():
            mm, i = m.min(0)
            if float(mm) < float(best_m):
                best_m, best_x = mm.reshape(1), x[i].reshape(1, n)
            if float(best_m) <= 0:
                break
            gn = g.flatten(2).norm(dim=-1).clamp_min(1e-30).reshape(R, 1, *([1] * len(shape)))
            step = config.step_size * radius * (1 - t / (config.steps + 1))
            x = input_set.project((x - step * g / gn).to(input_set.lower.dtype)).to(dt)
    return best_x, best_m
