"""Randomized smoothing (Cohen, Rosenfeld & Kolter, ICML 2019).

The smoothed classifier ``g(x) = argmax_c P(f(x + ε) = c)``, ``ε ~ N(0, σ² I)``, is robust in L2
around ``x`` with radius ``σ · Φ⁻¹(pA)``. :class:`Smooth` estimates it by Monte Carlo:

* :meth:`Smooth.predict` — PREDICT: returns the top class unless a two-sided binomial test
  cannot separate the top two counts at level alpha (then abstains). The returned class differs
  from ``g(x)`` with probability ≤ alpha.
* :meth:`Smooth.certify` — CERTIFY: guesses the class from ``n0`` samples, estimates its
  probability from ``n`` fresh samples, takes the one-sided Clopper–Pearson lower bound
  ``pA_lower`` and returns radius ``σ · Φ⁻¹(pA_lower)``, abstaining when ``pA_lower ≤ 1/2``. With
  probability ≥ 1 - alpha a non-abstaining answer is ``g(x)`` and ``g`` is constant on the
  L2 ball of that radius.

Noise is added in the model's *input* space. When a Graph starts with a normalisation node its
input is in pixel units ([0, 1]) and the noise goes before normalisation, as in Cohen et al.
Noise is drawn on the model's device from seedable ``torch.Generator``s, one per batch (seeded
from the Smooth's generator, so results depend on the seed and batch size only); counts
accumulate on the device with ``torch.bincount``; memory is bounded by ``batch_size`` per worker.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import ConfigError, ShapeError
from ..models.graph import Graph
from ..utils import one_line
from . import stats


class _Answer:
    """What the two smoothing answers share: abstention and a JSON-ready dict."""

    prediction: int | None
    time_s: float

    @property
    def abstained(self) -> bool:
        return self.prediction is None

    def to_dict(self) -> dict[str, Any]:
        d = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
        d.update(abstained=self.abstained, time_s=round(self.time_s, 6))
        return d


@dataclass(frozen=True)
class SmoothPrediction(_Answer):
    """The outcome of :meth:`Smooth.predict`. ``prediction`` is None when it abstained."""

    prediction: int | None
    counts: tuple[int, ...]
    pvalue: float
    alpha: float
    n: int
    sigma: float
    time_s: float


@dataclass(frozen=True)
class SmoothCertificate(_Answer):
    """The outcome of :meth:`Smooth.certify`.

    ``prediction`` is None when it abstained (then ``radius`` is 0). ``counts0`` are the
    selection counts (``n0`` samples), ``counts`` the estimation counts (``n`` samples);
    ``pa_lower`` is the one-sided Clopper–Pearson lower bound of the selected class's probability.
    """

    prediction: int | None
    radius: float
    pa_lower: float
    counts: tuple[int, ...]
    counts0: tuple[int, ...]
    alpha: float
    n0: int
    n: int
    sigma: float
    time_s: float


def _model_device_dtype(model: Graph | torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    if isinstance(model, Graph):
        return model.device, model.dtype
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.device, t.dtype
    return torch.device("cpu"), torch.get_default_dtype()


class Smooth:
    """A Gaussian-smoothed classifier around a base classifier.

    ``model`` is an :class:`nncert.Graph` or a ``torch.nn.Module`` mapping a batch (N, *shape) to
    class scores (N, num_classes); a module is put in eval mode. ``num_classes`` may be None to
    take it from the model's output. ``seed`` seeds the noise generator (None: a random seed);
    ``predict``/``certify`` also take a ``seed`` to make one point's answer reproducible on its own.
    ``workers`` (CPU only): batches evaluated at once, each single-threaded (1: one batch at a
    time with torch's usual threading; None: whichever of the two is faster, by timing). The
    counts are identical for every value.
    """

    def __init__(self, model: Graph | torch.nn.Module, num_classes: int | None, sigma: float,
                 *, seed: int | None = None, device: torch.device | str | None = None,
                 workers: int | None = None):
        self.sigma = stats.check_positive(sigma, "sigma")
        if not isinstance(model, (Graph, torch.nn.Module)):
            raise ConfigError(
                f"the base classifier must be an nncert.Graph or a torch.nn.Module, "
                f"got {type(model).__name__}")
        if device is not None:
            model = model.to(torch.device(device))
        if isinstance(model, torch.nn.Module):
            model.eval()
        self.model = model
        self.device, self.dtype = _model_device_dtype(model)
        if workers is not None:
            workers = stats.check_count(workers, "workers")
        #: batches evaluated at once on the CPU (None: chosen by timing, see sample_counts)
        self.workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self._pool_size = 0
        self._buffers: dict[tuple, torch.Tensor] = {}
        self._plans: dict[int, tuple[int, int]] = {}  # batch size → (workers, runs until re-timing)
        self.input_shape: tuple[int, ...] | None = None
        if isinstance(model, Graph):
            self.input_shape = model.input_shape
            out = model.output_shape
            if len(out) != 1 or out[0] < 2:
                raise ShapeError("base classifier output (class scores, batch dim excluded)",
                                 (num_classes or 2,), out)
            if num_classes is not None and out[0] != num_classes:
                raise ShapeError("base classifier output (class scores, batch dim excluded)",
                                 (num_classes,), out)
            num_classes = out[0]
        if num_classes is not None:
            num_classes = stats.check_count(num_classes, "num_classes", 2)
        self.num_classes: int | None = num_classes
        self._checked_shapes: set[tuple[int, ...]] = set()
        self.generator = torch.Generator(device=self.device)
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(int(seed))

    # -- checks ------------------------------------------------------------------------------
    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` on the model's device and dtype, its shape checked, the output checked to be
        a class-score vector: all before any noise is drawn."""
        if not isinstance(x, torch.Tensor):
            x = torch.as_tensor(x)
        x = x.detach().to(device=self.device, dtype=self.dtype)
        if self.input_shape is not None and tuple(x.shape) != self.input_shape:
            raise ShapeError("smoothing input (one point, no batch dim)", self.input_shape,
                             tuple(x.shape))
        shape = tuple(x.shape)
        if shape not in self._checked_shapes:
            with torch.inference_mode():
                try:
                    out = self.model(x.unsqueeze(0))
                except (RuntimeError, ValueError) as e:
                    raise ShapeError(f"base classifier does not run on this input ({one_line(e)})",
                                     shape, shape) from e
            got = tuple(out.shape)
            if len(got) != 2 or got[0] != 1 or got[1] < 2:
                raise ShapeError("base classifier output on one point (1, num_classes)",
                                 (1, self.num_classes or 2), got)
            if self.num_classes is None:
                self.num_classes = got[1]
            elif got[1] != self.num_classes:
                raise ShapeError("base classifier output on one point (1, num_classes)",
                                 (1, self.num_classes), got)
            self._checked_shapes.add(shape)
        return x

    @staticmethod
    def _check_sampling(n: int, batch_size: int, name: str = "n") -> tuple[int, int]:
        return stats.check_count(n, name), stats.check_count(batch_size, "batch_size")

    # -- sampling ----------------------------------------------------------------------------
    def _max_workers(self) -> int:
        if self.device.type != "cpu":
            return 1
        return self.workers if self.workers is not None else torch.get_num_threads()

    def _pool_for(self, workers: int) -> ThreadPoolExecutor:
        if self._pool is None or self._pool_size != workers:
            if self._pool is not None:
                self._pool.shutdown(wait=False)
            self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nncert-smooth")
            self._pool_size = workers
        return self._pool

    def _buffer(self, shape: tuple[int, ...]) -> torch.Tensor:
        """A noise buffer owned by the calling thread (kept across calls: no page faults)."""
        key = (threading.get_ident(), shape)
        buf = self._buffers.get(key)
        if buf is None:
            if len(self._buffers) > 16:
                self._buffers.clear()
            buf = self._buffers[key] = torch.empty(shape, dtype=self.dtype, device=self.device)
        return buf

    def _run(self, run: Callable[[int], torch.Tensor], batches: list[int], workers: int
             ) -> torch.Tensor:
        """Sum of ``run(i)`` over ``batches``: one at a time with torch's threading, or in
        whole rounds of ``workers`` single-threaded batches (a last partial round would leave
        cores idle, so it runs one at a time)."""
        total = torch.zeros(self.num_classes, dtype=torch.long, device=self.device)
        parallel = len(batches) - len(batches) % workers if workers > 1 else 0
        if parallel:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                for c in self._pool_for(workers).map(run, batches[:parallel]):
                    total += c
            finally:
                torch.set_num_threads(threads)
        for i in batches[parallel:]:
            total += run(i)
        return total

    def sample_counts(self, x: torch.Tensor, num: int, batch_size: int,
                      on_batch: Callable[[int], None] | None = None) -> torch.Tensor:
        """Class counts (num_classes,) of the base classifier on ``num`` noisy copies of ``x``
        (already prepared). Batches of at most ``batch_size``; counts stay on the device.

        Batch ``i`` draws its noise from its own generator, seeded by the i-th of a list of
        seeds taken from :attr:`generator`; so the counts depend on the seed and the batch size
        only, not on how the batches were scheduled. On a multi-core CPU there are two
        schedules — one batch at a time over torch's intra-op threads, or ``workers`` whole
        batches at once, each single-threaded (a small model's forward pass often scales
        poorly over intra-op threads). With ``workers=None`` the first batches of a long run
        time both and the faster one is kept for this batch size (re-timed every 32 runs)."""
        assert self.num_classes is not None
        sizes = [batch_size] * (num // batch_size) + ([num % batch_size] if num % batch_size else [])
        seeds = torch.randint(0, 2**62, (len(sizes),), generator=self.generator,
                              device=self.device).tolist()
        lock = threading.Lock()

        def run(i: int) -> torch.Tensor:
            with torch.inference_mode():
                buf = self._buffer((sizes[0], *x.shape))
                gen = torch.Generator(device=self.device)
                gen.manual_seed(seeds[i])
                batch = buf[:sizes[i]].normal_(0.0, self.sigma, generator=gen).add_(x)
                c = torch.bincount(self.model(batch).argmax(dim=1), minlength=self.num_classes)
                if on_batch is not None:
                    with lock:
                        on_batch(sizes[i])
                return c

        w = max(1, min(self._max_workers(), len(sizes)))
        todo = list(range(len(sizes)))
        if w == 1 or self.workers is not None:
            return self._run(run, todo, w)
        counts = torch.zeros(self.num_classes, dtype=torch.long, device=self.device)
        plan = self._plans.get(batch_size)
        if (plan is None or plan[1] <= 0) and len(sizes) >= 3 * w + 1:
            counts += self._run(run, todo[:1], 1)  # warm-up (buffers, caches), untimed
            t = time.perf_counter()
            counts += self._run(run, todo[1:1 + w], 1)
            t_one = time.perf_counter() - t
            counts += self._run(run, todo[1 + w:1 + 2 * w], w)  # warm-up of the workers
            t = time.perf_counter()
            counts += self._run(run, todo[1 + 2 * w:1 + 3 * w], w)
            t_par = time.perf_counter() - t
            plan = (w if t_par < t_one else 1, 32)
            todo = todo[1 + 3 * w:]
        elif plan is None:
            plan = (1, 0)
        self._plans[batch_size] = (plan[0], plan[1] - 1)
        return counts + self._run(run, todo, plan[0])

    def _reseed(self, seed: int | None) -> None:
        if seed is not None:
            self.generator.manual_seed(int(seed))

    # -- the two procedures ------------------------------------------------------------------
    def predict(self, x: torch.Tensor, n: int, alpha: float, batch_size: int = 1000,
                *, seed: int | None = None) -> SmoothPrediction:
        """Cohen et al.'s PREDICT: top class among ``n`` noisy samples, or abstain (None) when
        the two-sided binomial test of the top two counts has p-value > alpha."""
        alpha = stats.check_alpha(alpha)
        n, batch_size = self._check_sampling(n, batch_size)
        x = self._prepare(x)
        self._reseed(seed)
        t0 = time.perf_counter()
        with torch.inference_mode():
            counts_t = self.sample_counts(x, n, batch_size)
        counts = tuple(int(c) for c in counts_t.cpu().tolist())
        top2 = sorted(range(len(counts)), key=lambda c: (-counts[c], c))[:2]
        n_a, n_b = counts[top2[0]], counts[top2[1]]
        pvalue = stats.binomial_pvalue(n_a, n_a + n_b, 0.5)
        prediction = top2[0] if pvalue <= alpha else None
        return SmoothPrediction(prediction, counts, pvalue, alpha, n, self.sigma,
                                time.perf_counter() - t0)

    def certify(self, x: torch.Tensor, n0: int, n: int, alpha: float, batch_size: int = 1000,
                *, seed: int | None = None) -> SmoothCertificate:
        """Cohen et al.'s CERTIFY: select with ``n0`` samples, estimate with ``n``, return the
        prediction and the L2 radius ``sigma · Φ⁻¹(pA_lower)`` (abstain when pA_lower ≤ 1/2)."""
        alpha = stats.check_alpha(alpha)
        n0, batch_size = self._check_sampling(n0, batch_size, "n0")
        n = stats.check_count(n, "n")
        x = self._prepare(x)
        self._reseed(seed)
        t0 = time.perf_counter()
        with torch.inference_mode():
            counts0_t = self.sample_counts(x, n0, batch_size)
            c_hat = int(torch.argmax(counts0_t))
            counts_t = self.sample_counts(x, n, batch_size)
        counts0 = tuple(int(c) for c in counts0_t.cpu().tolist())
        counts = tuple(int(c) for c in counts_t.cpu().tolist())
        pa_lower = stats.clopper_pearson_lower(counts[c_hat], n, alpha)
        if pa_lower <= 0.5:
            prediction, radius = None, 0.0
        else:
            prediction, radius = c_hat, stats.smoothing_radius(pa_lower, self.sigma)
        return SmoothCertificate(prediction, radius, pa_lower, counts, counts0, alpha, n0, n,
                                 self.sigma, time.perf_counter() - t0)

    def certify_batch(self, xs: torch.Tensor, n0: int, n: int, alpha: float,
                      batch_size: int = 1000, *, seed: int | None = None) -> list[SmoothCertificate]:
        """:meth:`certify` for each point of a batch ``xs`` (N, *shape); point ``i`` uses seed
        ``seed + i`` when a seed is given, so its answer does not depend on the others."""
        return [self.certify(x, n0, n, alpha, batch_size,
                             seed=None if seed is None else seed + i) for i, x in enumerate(xs)]

    def predict_batch(self, xs: torch.Tensor, n: int, alpha: float, batch_size: int = 1000,
                      *, seed: int | None = None) -> list[SmoothPrediction]:
        """:meth:`predict` for each point of a batch ``xs`` (N, *shape)."""
        return [self.predict(x, n, alpha, batch_size, seed=None if seed is None else seed + i)
                for i, x in enumerate(xs)]

    def __repr__(self) -> str:
        return f"Smooth(sigma={self.sigma}, num_classes={self.num_classes}, device={self.device})"


def true_linear_radius(w: torch.Tensor, b: float, x: torch.Tensor) -> float:
    """The exact L2 robust radius ``|w·x + b| / ||w||`` of the two-class linear classifier
    ``sign(w·x + b)`` (also its smoothed classifier's radius; used by tests and docs)."""
    return abs(float(w.flatten() @ x.flatten()) + b) / float(torch.linalg.vector_norm(w))


__all__ = ["Smooth", "SmoothCertificate", "SmoothPrediction", "true_linear_radius"]
