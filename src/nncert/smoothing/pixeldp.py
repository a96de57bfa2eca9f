"""PixelDP (Lecuyer, Atlidakis, Geambasu, Hsu & Jana, IEEE S&P 2019).

A PixelDP network is ``body(first(x) + Z)``: a first layer ``first`` (Linear, Conv2d or the
identity) whose *sensitivity* ``Δ_{p,q} = max ||first(x) - first(x')||_q / ||x - x'||_p`` is
bounded by constraining its operator norm, followed by a noise layer ``Z`` and the rest of the
network. With noise calibrated to (ε, δ) and a construction attack bound ``L``,

* Gaussian mechanism (q = 2): ``σ = sqrt(2 ln(1.25/δ)) · Δ_{p,2} · L / ε`` (valid for ε ≤ 1),
* Laplace mechanism (q = 1, δ = 0): scale ``b = Δ_{1,1} · L / ε``,

the randomized scores ``A(x) = softmax(body(first(x) + Z))`` are (ε, δ)-DP with respect to
p-norm changes of size L, hence (Lemma 1) ``E[A(x)] ≤ e^ε E[A(x')] + δ`` for ||x - x'||_p ≤ L, and
(Proposition 1) the argmax of the expected scores cannot change within L when

    E[A_k(x)] > e^{2ε} · max_{i≠k} E[A_i(x)] + (1 + e^ε) · δ.

Certification estimates the expected scores by Monte Carlo with ``n`` noise draws and uses
Hoeffding bounds, simultaneous over the K classes (a union bound), at confidence 1 - alpha: the
condition is checked on the lower bound of the top class and the upper bounds of the others.
For a fixed noise scale the same draws give (ε(L), δ)-DP for *every* L, with
``ε(L) = Δ L / σ · sqrt(2 ln(1.25/δ))`` (Gaussian, while ε(L) ≤ 1) or ``ε(L) = Δ L / b`` (Laplace);
the certified size is the largest L for which the condition holds. The sensitivity used in
certification is computed *exactly* from the stored first layer (not assumed), so a model whose
constraint was not enforced still gets a sound (smaller) size.

Supported (attack norm, mechanism): (l2, gaussian), (l1, gaussian), (l1, laplace). ``Δ_{2,1}``
(L2 attacks with Laplace noise) has no tight computable bound and is refused.

Save format (``save_pixeldp`` / ``load_pixeldp``): one ``torch.save`` file (``.pt``) holding a dict
``{"format": "nncert-pixeldp", "version": 1, "arch": name, "input_shape": [...],
"num_classes": K, "config": {epsilon, delta, L, norm, mechanism}, "state_dict": {...}}``, loaded
with ``weights_only=True``; the architecture is rebuilt from ``arch`` (see ``ARCHS``).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, ModelError, NncertError, ShapeError
from ..utils import one_line, open_output
from . import stats

NORMS = ("l2", "l1")
MECHANISMS = ("gaussian", "laplace")
FORMAT = "nncert-pixeldp"


# -- noise calibration --------------------------------------------------------------------
def gaussian_sigma(epsilon: float, delta: float, L: float, sensitivity: float = 1.0) -> float:
    """Standard deviation of the Gaussian mechanism: ``sqrt(2 ln(1.25/δ)) · Δ · L / ε``."""
    epsilon = stats.check_positive(epsilon, "epsilon")
    if epsilon > 1.0:
        raise ConfigError(f"the Gaussian mechanism's bound needs epsilon ≤ 1, got {epsilon}")
    stats.check_alpha(delta, "delta")
    L = stats.check_positive(L, "L")
    sensitivity = stats.check_positive(sensitivity, "sensitivity")
    return math.sqrt(2.0 * math.log(1.25 / delta)) * sensitivity * L / epsilon


def laplace_scale(epsilon: float, L: float, sensitivity: float = 1.0) -> float:
    """Scale ``b`` of the Laplace mechanism (pure ε-DP): ``Δ_{p,1} · L / ε``."""
    epsilon = stats.check_positive(epsilon, "epsilon")
    L = stats.check_positive(L, "L")
    sensitivity = stats.check_positive(sensitivity, "sensitivity")
    return sensitivity * L / epsilon


@dataclass(frozen=True)
class PixelDPConfig:
    """The DP budget the noise layer is calibrated to (with the first layer's Δ ≤ 1).

    ``L`` is the construction attack bound in the ``norm`` metric, in the model's input units.
    """

    epsilon: float = 1.0
    delta: float = 0.05
    L: float = 0.1
    norm: str = "l2"
    mechanism: str = "gaussian"

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise ConfigError(f"norm must be one of {NORMS}, got {self.norm!r}")
        if self.mechanism not in MECHANISMS:
            raise ConfigError(f"mechanism must be one of {MECHANISMS}, got {self.mechanism!r}")
        if self.norm == "l2" and self.mechanism == "laplace":
            raise ConfigError("L2 attacks need the Gaussian mechanism (Δ_{2,1} has no tight bound); "
                              "use --mechanism gaussian, or --norm l1 with Laplace")
        stats.check_positive(self.epsilon, "epsilon")
        stats.check_positive(self.L, "L")
        if self.mechanism == "gaussian":
            stats.check_alpha(self.delta, "delta")
            if self.epsilon > 1.0:
                raise ConfigError(f"the Gaussian mechanism's bound needs epsilon ≤ 1, got {self.epsilon}")
        elif self.delta != 0.0:
            object.__setattr__(self, "delta", 0.0)  # Laplace is pure ε-DP

    @property
    def p(self) -> int:
        return 2 if self.norm == "l2" else 1

    @property
    def q(self) -> int:
        return 2 if self.mechanism == "gaussian" else 1

    @property
    def noise_scale(self) -> float:
        """σ (Gaussian standard deviation) or b (Laplace scale) for sensitivity 1."""
        if self.mechanism == "gaussian":
            return gaussian_sigma(self.epsilon, self.delta, self.L)
        return laplace_scale(self.epsilon, self.L)

    def epsilon_at(self, size: float, sensitivity: float, noise_scale: float | None = None) -> float:
        """The ε that noise of ``noise_scale`` gives for changes of ``size`` through a layer of
        the given sensitivity (inverse of the calibration formula)."""
        s = self.noise_scale if noise_scale is None else noise_scale
        eps = sensitivity * size / s
        if self.mechanism == "gaussian":
            eps *= math.sqrt(2.0 * math.log(1.25 / self.delta))
        return eps

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- sensitivity of the first layer --------------------------------------------------------
def operator_matrix(first: nn.Module | None, input_shape: tuple[int, ...]) -> torch.Tensor:
    """The first layer's linear part as a (D, m) float64 matrix: row ``j`` is the image of the
    ``j``-th input basis vector (so Δ_{1,q} is the largest row q-norm and Δ_{2,2} the spectral
    norm). The bias does not matter for sensitivity."""
    D = math.prod(input_shape)
    if first is None or isinstance(first, nn.Identity):
        return torch.eye(D, dtype=torch.float64)
    w = first.weight.detach().to(torch.float64)
    if isinstance(first, nn.Linear):
        if len(input_shape) != 1:
            raise ShapeError("Linear first layer input", (w.shape[1],), tuple(input_shape))
        return w.T.cpu()
    if isinstance(first, nn.Conv2d):
        eye = torch.eye(D, dtype=torch.float64, device=w.device).view(D, *input_shape)
        pad = first.padding
        if isinstance(pad, str):
            raise ConfigError("PixelDP first Conv2d needs numeric padding")
        out = F.conv2d(eye, w, None, first.stride, pad, first.dilation, first.groups)
        return out.reshape(D, -1).cpu()
    raise ConfigError(f"PixelDP first layer must be Linear, Conv2d or None, got {type(first).__name__}")


def sensitivity(first: nn.Module | None, input_shape: tuple[int, ...], p: int, q: int) -> float:
    """The exact ``Δ_{p,q}`` of the first layer (p = 1: largest row q-norm; p = q = 2: spectral
    norm from the eigenvalues of the Gram matrix, in float64)."""
    J = operator_matrix(first, input_shape)
    if p == 1:
        return float(torch.linalg.vector_norm(J, ord=q, dim=1).max())
    if p == 2 and q == 2:
        G = J @ J.T if J.shape[0] <= J.shape[1] else J.T @ J
        return float(torch.linalg.eigvalsh(G).max().clamp_min(0.0).sqrt())
    raise ConfigError(f"Δ_{{{p},{q}}} is not supported")


# -- the network ---------------------------------------------------------------------------
class PixelDPNet(nn.Module):
    """``body(first(x) + noise)`` with noise calibrated by ``config`` (Δ ≤ 1 enforced by
    :meth:`project_` during training and :meth:`finalize_` after)."""

    def __init__(self, first: nn.Module | None, body: nn.Module, input_shape: tuple[int, ...],
                 num_classes: int, config: PixelDPConfig, arch: str | None = None):
        super().__init__()
        self.first = first if first is not None else nn.Identity()
        self.body = body
        self.input_shape = tuple(int(s) for s in input_shape)
        self.num_classes = int(num_classes)
        self.config = config
        self.arch = arch
        self._u: torch.Tensor | None = None  # power-iteration vector for project_

    @property
    def noise_scale(self) -> float:
        return self.config.noise_scale

    def _first_or_none(self) -> nn.Module | None:
        return None if isinstance(self.first, nn.Identity) else self.first

    def noise_like(self, h: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        s = self.noise_scale
        if self.config.mechanism == "gaussian":
            return torch.empty_like(h).normal_(0.0, s, generator=generator)
        e1 = torch.empty_like(h).exponential_(1.0, generator=generator)
        e2 = torch.empty_like(h).exponential_(1.0, generator=generator)
        return (e1 - e2).mul_(s)  # difference of two Exp(1) is Laplace(0, 1)

    def forward(self, x: torch.Tensor, noise: bool = True,
                generator: torch.Generator | None = None) -> torch.Tensor:
        h = self.first(x)
        if noise:
            h = h + self.noise_like(h, generator)
        return self.body(h)

    def sensitivity(self) -> float:
        """The exact Δ_{p,q} of the first layer for this config's norm and mechanism (cached
        until the weight changes)."""
        first = self._first_or_none()
        key = None if first is None else (first.weight.data_ptr(), first.weight._version)
        cached = getattr(self, "_sens_cache", None)
        if cached is not None and key is not None and cached[0] == key:
            return cached[1]
        value = sensitivity(first, self.input_shape, self.config.p, self.config.q)
        self._sens_cache = (key, value)
        return value

    @torch.no_grad()
    def project_(self, iterations: int = 2) -> None:
        """Rescale the first layer so its sensitivity is ≤ 1 (cheap: exact row norms for L1,
        a few warm-started power iterations for L2). Call after every optimizer step."""
        first = self._first_or_none()
        if first is None:
            return
        if self.config.p == 1:
            delta = self.sensitivity()
        else:
            J = operator_matrix(first, self.input_shape).to(torch.float32)
            if self._u is None or self._u.shape[0] != J.shape[1]:
                self._u = torch.randn(J.shape[1], generator=torch.Generator().manual_seed(0))
            u = self._u
            for _ in range(iterations):
                v = J @ u
                v = v / v.norm().clamp_min(1e-12)
                u = J.T @ v
                delta = float(u.norm())
                u = u / max(delta, 1e-12)
            self._u = u
        if delta > 1.0:
            first.weight.div_(delta)

    @torch.no_grad()
    def finalize_(self) -> float:
        """Rescale so the *exact* sensitivity is ≤ 1; returns it."""
        first = self._first_or_none()
        delta = self.sensitivity()
        if first is not None and delta > 1.0:
            first.weight.div_(delta * (1.0 + 1e-6))
            delta = self.sensitivity()
        return delta


# -- architectures (rebuilt by load_pixeldp) -------------------------------------------------
def _cnn(input_shape: tuple[int, ...], num_classes: int, config: PixelDPConfig) -> PixelDPNet:
    c, h, w = input_shape
    first = nn.Conv2d(c, 16, 4, stride=2, padding=1)
    h2, w2 = (h + 2 - 4) // 2 + 1, (w + 2 - 4) // 2 + 1
    h3, w3 = (h2 + 2 - 4) // 2 + 1, (w2 + 2 - 4) // 2 + 1
    body = nn.Sequential(nn.ReLU(), nn.Conv2d(16, 32, 4, stride=2, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(32 * h3 * w3, 100), nn.ReLU(),
                         nn.Linear(100, num_classes))
    return PixelDPNet(first, body, input_shape, num_classes, config, arch="cnn")


def _mlp(input_shape: tuple[int, ...], num_classes: int, config: PixelDPConfig) -> PixelDPNet:
    d = math.prod(input_shape)
    first = nn.Linear(d, 128)
    body = nn.Sequential(nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, num_classes))
    net = PixelDPNet(first, body, (d,), num_classes, config, arch="mlp")
    return net


def _input_noise(input_shape: tuple[int, ...], num_classes: int, config: PixelDPConfig) -> PixelDPNet:
    """Noise directly on the input (first layer = identity, Δ = 1), then a small CNN/MLP."""
    if len(input_shape) == 3:
        inner = _cnn(input_shape, num_classes, config)
        body: nn.Module = nn.Sequential(inner.first, inner.body)
    else:
        d = math.prod(input_shape)
        body = nn.Sequential(nn.Linear(d, 128), nn.ReLU(), nn.Linear(128, num_classes))
    return PixelDPNet(None, body, input_shape, num_classes, config, arch="input-noise")


ARCHS = {"cnn": _cnn, "mlp": _mlp, "input-noise": _input_noise}


def build_pixeldp(arch: str, input_shape: tuple[int, ...], num_classes: int,
                  config: PixelDPConfig) -> PixelDPNet:
    """A fresh PixelDP network of a named architecture (``ARCHS``). ``mlp`` flattens its input:
    feed it (N, D) tensors (``images.flatten(1)``)."""
    if arch not in ARCHS:
        raise ConfigError(f"unknown PixelDP architecture {arch!r}; choose from {sorted(ARCHS)}")
    if arch == "cnn" and len(input_shape) != 3:
        raise ConfigError(f"the cnn architecture needs (C, H, W) inputs, got {tuple(input_shape)}")
    return ARCHS[arch](tuple(input_shape), num_classes, config)


def save_pixeldp(net: PixelDPNet, path: str | Path) -> None:
    """Write ``net`` in nncert's PixelDP format (see the module docstring)."""
    if net.arch not in ARCHS:
        raise ConfigError("only networks built by build_pixeldp can be saved (arch not recorded)")
    payload = {
        "format": FORMAT, "version": 1, "arch": net.arch, "input_shape": list(net.input_shape),
        "num_classes": net.num_classes, "config": net.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
    }
    with open_output(path, "wb") as f:
        torch.save(payload, f)


def load_pixeldp(path: str | Path, device: torch.device | str = "cpu") -> PixelDPNet:
    """Read a network written by :func:`save_pixeldp` (``torch.load(weights_only=True)``: no
    code in the file runs). Any defect is a one-line ModelError naming the file."""
    from ..models.from_torch import read_torch_file

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"PixelDP model file not found: {path}")
    payload = read_torch_file(path, "A PixelDP model file is written by `nncert pixeldp train`")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelError(f"{path}: not an nncert PixelDP model (written by `nncert pixeldp train`)")
    try:
        config = PixelDPConfig(**payload["config"])
        net = build_pixeldp(payload["arch"], tuple(payload["input_shape"]), payload["num_classes"],
                            config)
        net.load_state_dict(payload["state_dict"])
    except NncertError as e:
        raise ModelError(f"{path}: {e}") from None
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ModelError(f"{path}: a damaged PixelDP model file ({type(e).__name__}: "
                         f"{one_line(e, 300)})") from None
    return net.to(device).eval()


# -- certification -------------------------------------------------------------------------
@dataclass(frozen=True)
class PixelDPCertificate:
    """PixelDP's prediction (argmax of the Monte-Carlo expected scores) and certified size: the
    largest ``norm``-ball radius on which the robustness condition holds at confidence
    1 - alpha (0 when it holds for no L > 0)."""

    prediction: int
    size: float
    norm: str
    mechanism: str
    expected_scores: tuple[float, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    epsilon: float  # ε(size): the DP budget the noise gives at the certified size
    delta: float
    sensitivity: float
    noise_scale: float
    alpha: float
    n: int
    time_s: float

    @property
    def certified(self) -> bool:
        return self.size > 0.0

    def certified_at(self, L: float) -> bool:
        return self.size >= L and self.size > 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["expected_scores"] = list(self.expected_scores)
        d["lower"], d["upper"] = list(self.lower), list(self.upper)
        d["certified"] = self.certified
        d["time_s"] = round(self.time_s, 6)
        return d


def max_certified_epsilon(lower_top: float, upper_other: float, delta: float,
                          eps_cap: float = math.inf) -> float:
    """The largest ε ≤ eps_cap with ``lower_top > e^{2ε}·upper_other + (1 + e^ε)·δ`` (the
    robustness condition), or 0 when it fails for every ε > 0."""
    def margin(eps: float) -> float:
        return lower_top - math.exp(2 * eps) * upper_other - (1 + math.exp(eps)) * delta

    if margin(0.0) <= 0.0:
        return 0.0
    if delta == 0.0:
        eps = 0.5 * math.log(lower_top / upper_other) if upper_other > 0 else math.inf
        return min(eps, eps_cap)
    if math.isfinite(eps_cap) and margin(eps_cap) > 0.0:
        return eps_cap
    lo, hi = 0.0, eps_cap if math.isfinite(eps_cap) else 1.0
    while not math.isfinite(eps_cap) and margin(hi) > 0.0:
        hi *= 2.0
    for _ in range(100):  # keep lo feasible
        mid = 0.5 * (lo + hi)
        if margin(mid) > 0.0:
            lo = mid
        else:
            hi = mid
    return lo


def expected_scores(net: PixelDPNet, x: torch.Tensor, n: int, batch_size: int = 1000,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Monte-Carlo mean of the softmax scores over ``n`` noise draws (K,), float64."""
    total = torch.zeros(net.num_classes, dtype=torch.float64, device=x.device)
    remaining = n
    with torch.inference_mode():
        while remaining > 0:
            b = min(batch_size, remaining)
            xb = x.unsqueeze(0).expand(b, *x.shape)
            total += torch.softmax(net(xb, noise=True, generator=generator), dim=1).sum(0).double()
            remaining -= b
    return total / n


def certify(net: PixelDPNet, x: torch.Tensor, n: int = 1000, alpha: float = 0.05,
            batch_size: int = 1000, *, seed: int | None = None,
            generator: torch.Generator | None = None) -> PixelDPCertificate:
    """PixelDP prediction and certified size for one input ``x`` (no batch dim)."""
    alpha = stats.check_alpha(alpha)
    n = stats.check_count(n, "n")
    batch_size = stats.check_count(batch_size, "batch_size")
    param = next(net.parameters())
    x = torch.as_tensor(x).detach().to(device=param.device, dtype=param.dtype)
    if tuple(x.shape) != net.input_shape:
        raise ShapeError("PixelDP input (one point, no batch dim)", net.input_shape, tuple(x.shape))
    net.eval()
    if generator is None:
        generator = torch.Generator(device=param.device)
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(int(seed))
    t0 = time.perf_counter()
    delta_s = net.sensitivity()
    scores = expected_scores(net, x, n, batch_size, generator).cpu()
    t = stats.hoeffding_halfwidth(n, alpha, num_bounds=net.num_classes)
    lower = (scores - t).clamp(0.0, 1.0)
    upper = (scores + t).clamp(0.0, 1.0)
    k = int(scores.argmax())
    other = float(torch.cat([upper[:k], upper[k + 1:]]).max())
    cfg = net.config
    s = net.noise_scale
    if cfg.mechanism == "gaussian":
        c = math.sqrt(2.0 * math.log(1.25 / cfg.delta))
        eps = max_certified_epsilon(float(lower[k]), other, cfg.delta, eps_cap=1.0)
        size = eps * s / (c * delta_s) if delta_s > 0 else math.inf
    else:
        eps = max_certified_epsilon(float(lower[k]), other, 0.0)
        size = eps * s / delta_s if delta_s > 0 else math.inf
    return PixelDPCertificate(
        prediction=k, size=float(size), norm=cfg.norm, mechanism=cfg.mechanism,
        expected_scores=tuple(scores.tolist()), lower=tuple(lower.tolist()),
        upper=tuple(upper.tolist()), epsilon=float(eps), delta=cfg.delta, sensitivity=delta_s,
        noise_scale=s, alpha=alpha, n=n, time_s=time.perf_counter() - t0)


__all__ = [
    "ARCHS", "PixelDPCertificate", "PixelDPConfig", "PixelDPNet", "build_pixeldp", "certify",
    "expected_scores", "gaussian_sigma", "laplace_scale", "load_pixeldp", "max_certified_epsilon",
    "operator_matrix", "save_pixeldp", "sensitivity",
]
