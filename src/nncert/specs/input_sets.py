"""Input sets. Every set is batched (first dim B: one set per batch element) and owns its
concretisation, so bound methods never ask which set they have.

``concretize(A)`` returns the sound minimum and maximum of ``A·x`` over the set, for linear
functionals ``A`` of shape (B, R, *shape); results are (B, R).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import ConfigError, NumericalError, ShapeError
from ..models.ops import Shape


def _check_finite(name: str, t: torch.Tensor) -> None:
    if not bool(torch.isfinite(t).all()):
        raise NumericalError(f"{name} contains NaN or infinite values")


def _derived(cls, **fields):
    """An instance built from fields of an already validated set (indexing, moving, splitting,
    hulls): skips re-validation, which dominated the cost of per-row indexing in bound methods."""
    obj = object.__new__(cls)
    for k, v in fields.items():
        object.__setattr__(obj, k, v)
    return obj


def _flat_dot(A: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B, R, *s) · (B, *s) → (B, R)."""
    B, R = A.shape[:2]
    return torch.einsum("brn,bn->br", A.reshape(B, R, -1), x.reshape(x.shape[0], -1).expand(B, -1))


class InputSet:
    """Common interface of input sets (see module docstring)."""

    @property
    def lower(self) -> torch.Tensor:
        """Elementwise lower bound of the set (its box hull), (B, *shape)."""
        raise NotImplementedError

    @property
    def upper(self) -> torch.Tensor:
        raise NotImplementedError

    @property
    def batch_size(self) -> int:
        return self.lower.shape[0]

    @property
    def shape(self) -> Shape:
        return tuple(self.lower.shape[1:])

    @property
    def center(self) -> torch.Tensor:
        """A point inside the set, (B, *shape)."""
        return (self.lower + self.upper) / 2

    def concretize(self, A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` points of each set, (n, B, *shape), all inside the set."""
        raise NotImplementedError

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """A point of the set near ``x`` (exact projection for boxes and unclipped balls)."""
        raise NotImplementedError

    def contains(self, x: torch.Tensor, atol: float = 0.0) -> torch.Tensor:
        """Whether each x (…, B, *shape) lies in its set; bool of shape x.shape[:-len(shape)]."""
        raise NotImplementedError

    def __getitem__(self, idx) -> InputSet:
        raise NotImplementedError

    def to(self, device=None, dtype=None) -> InputSet:
        raise NotImplementedError

    def check_shape(self, shape: Shape) -> None:
        if self.shape != tuple(shape):
            raise ShapeError("input set vs model input", tuple(shape), self.shape)


@dataclass(frozen=True, eq=False)
class Box(InputSet):
    """The axis-aligned box ``lower ≤ x ≤ upper`` (per batch element)."""

    lo: torch.Tensor
    hi: torch.Tensor

    def __post_init__(self) -> None:
        if self.lo.shape != self.hi.shape:
            raise ShapeError("box upper bound vs lower bound", tuple(self.lo.shape),
                             tuple(self.hi.shape))
        _check_finite("box lower bound", self.lo)
        _check_finite("box upper bound", self.hi)
        if bool((self.lo > self.hi).any()):
            raise ConfigError("box has a lower bound above its upper bound")

    @property
    def lower(self) -> torch.Tensor:
        return self.lo

    @property
    def upper(self) -> torch.Tensor:
        return self.hi

    def concretize(self, A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c, r = (self.hi + self.lo) / 2, (self.hi - self.lo) / 2
        mid = _flat_dot(A, c)
        rad = _flat_dot(A.abs(), r)
        return mid - rad, mid + rad

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        u = torch.rand((n, *self.lo.shape), generator=generator, dtype=self.lo.dtype,
                       device="cpu").to(self.lo.device)
        return self.lo + u * (self.hi - self.lo)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return torch.maximum(torch.minimum(x, self.hi), self.lo)

    def contains(self, x: torch.Tensor, atol: float = 0.0) -> torch.Tensor:
        inside = (x >= self.lo - atol) & (x <= self.hi + atol)
        return inside.flatten(start_dim=x.dim() - len(self.shape)).all(dim=-1)

    def __getitem__(self, idx) -> Box:
        lo, hi = self.lo[idx], self.hi[idx]
        if lo.dim() == len(self.shape):
            lo, hi = lo.unsqueeze(0), hi.unsqueeze(0)
        return _derived(Box, lo=lo, hi=hi)

    def to(self, device=None, dtype=None) -> Box:
        return _derived(Box, lo=self.lo.to(device=device, dtype=dtype),
                        hi=self.hi.to(device=device, dtype=dtype))

    def split(self, dim: torch.Tensor) -> Box:
        """Bisect each box along its flat coordinate ``dim[b]``: returns 2B boxes
        (all left halves, then all right halves). Their union is this box."""
        B = self.batch_size
        lo, hi = self.lo.reshape(B, -1), self.hi.reshape(B, -1)
        rows = torch.arange(B, device=lo.device)
        mid = (lo[rows, dim] + hi[rows, dim]) / 2
        hi_left, lo_right = hi.clone(), lo.clone()
        hi_left[rows, dim], lo_right[rows, dim] = mid, mid
        new_lo = torch.cat([lo, lo_right]).reshape(2 * B, *self.shape)
        new_hi = torch.cat([hi_left, hi]).reshape(2 * B, *self.shape)
        return _derived(Box, lo=new_lo, hi=new_hi)


@dataclass(frozen=True, eq=False)
class LpBall(InputSet):
    """``{x : ||x − center||_p ≤ eps} ∩ [clip_lower, clip_upper]`` for p ∈ {inf, 2}.

    ``eps`` is a float or a (B,) tensor. ``clip_*`` are floats, tensors broadcastable to the
    center, or None (no clipping). For p = inf the set is a box; for p = 2 with clipping the
    concretisation takes the tighter of the ball's and the box hull's bounds (both are sound).
    """

    center_: torch.Tensor
    eps: float | torch.Tensor
    p: float = math.inf
    clip_lower: float | torch.Tensor | None = None
    clip_upper: float | torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.p not in (math.inf, 2):
            raise ConfigError(f"LpBall supports p = inf and p = 2, got p = {self.p}")
        eps = torch.as_tensor(self.eps, dtype=self.center_.dtype)
        _check_finite("ball center", self.center_)
        _check_finite("epsilon", eps)
        if bool((eps < 0).any()):
            raise ConfigError(f"epsilon must be ≥ 0, got {self.eps}")

    def _eps(self) -> torch.Tensor:
        """eps as a (B, 1, ..., 1) tensor that broadcasts against the center."""
        e = torch.as_tensor(self.eps, dtype=self.center_.dtype, device=self.center_.device)
        if e.dim() == 0:
            e = e.expand(self.center_.shape[0])
        return e.reshape(-1, *([1] * (self.center_.dim() - 1)))

    def _clip(self, x: torch.Tensor) -> torch.Tensor:
        if self.clip_lower is not None:
            x = torch.maximum(x, torch.as_tensor(self.clip_lower, dtype=x.dtype, device=x.device))
        if self.clip_upper is not None:
            x = torch.minimum(x, torch.as_tensor(self.clip_upper, dtype=x.dtype, device=x.device))
        return x

    @property
    def center(self) -> torch.Tensor:
        return self._clip(self.center_)

    @property
    def lower(self) -> torch.Tensor:
        return self._clip(self.center_ - self._eps())

    @property
    def upper(self) -> torch.Tensor:
        return self._clip(self.center_ + self._eps())

    def box_hull(self) -> Box:
        return _derived(Box, lo=self.lower, hi=self.upper)

    def concretize(self, A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        box_lo, box_hi = self.box_hull().concretize(A)
        if self.p == math.inf:
            return box_lo, box_hi
        B, R = A.shape[:2]
        mid = _flat_dot(A, self.center_)
        rad = A.reshape(B, R, -1).norm(dim=-1) * self._eps().reshape(-1, 1)
        return torch.maximum(mid - rad, box_lo), torch.minimum(mid + rad, box_hi)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        shape = (n, *self.center_.shape)
        if self.p == math.inf:
            return self.box_hull().sample(n, generator)
        d = math.prod(self.shape)
        g = torch.randn(shape, generator=generator, dtype=self.center_.dtype).to(self.center_.device)
        g = g / g.flatten(2).norm(dim=-1).clamp_min(1e-30).reshape(n, -1, *([1] * len(self.shape)))
        r = torch.rand((n, self.batch_size), generator=generator, dtype=self.center_.dtype)
        r = r.to(self.center_.device) ** (1.0 / d)
        pts = self.center_ + g * r.reshape(n, -1, *([1] * len(self.shape))) * self._eps()
        return self._clip(pts)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == math.inf:
            return self.box_hull().project(x)
        delta = x - self.center_
        norm = delta.flatten(start_dim=x.dim() - len(self.shape)).norm(dim=-1)
        factor = torch.clamp(self._eps().flatten() / norm.clamp_min(1e-30), max=1.0)
        delta = delta * factor.reshape(*factor.shape, *([1] * len(self.shape)))
        return self._clip(self.center_ + delta)

    def contains(self, x: torch.Tensor, atol: float = 0.0) -> torch.Tensor:
        in_box = self.box_hull().contains(x, atol)
        if self.p == math.inf:
            return in_box
        norm = (x - self.center_).flatten(start_dim=x.dim() - len(self.shape)).norm(dim=-1)
        return in_box & (norm <= self._eps().flatten() + atol)

    def __getitem__(self, idx) -> LpBall:
        c = self.center_[idx]
        eps = self.eps
        if isinstance(eps, torch.Tensor) and eps.dim() > 0:
            eps = eps[idx]
        if c.dim() == len(self.shape):
            c = c.unsqueeze(0)
            if isinstance(eps, torch.Tensor) and eps.dim() == 0:
                eps = eps.reshape(1)
        return _derived(LpBall, center_=c, eps=eps, p=self.p, clip_lower=self.clip_lower,
                        clip_upper=self.clip_upper)

    def to(self, device=None, dtype=None) -> LpBall:
        def mv(v):
            return v.to(device=device, dtype=dtype) if isinstance(v, torch.Tensor) else v

        return _derived(LpBall, center_=mv(self.center_), eps=mv(self.eps), p=self.p,
                        clip_lower=mv(self.clip_lower), clip_upper=mv(self.clip_upper))


@dataclass(frozen=True, eq=False)
class Segment(InputSet):
    """The line segment ``{start + t·(end − start) : t ∈ [t_lo, t_hi]}`` (per batch element).

    ``start`` and ``end`` are (B, *shape); ``t_lo``/``t_hi`` are floats or (B,) tensors in
    [0, 1] (default the whole segment). ``concretize`` is exact (a linear functional is
    extreme at an end of the segment); ``lower``/``upper`` are the box hull. Bound methods
    that only read the box hull (interval, zonotope) lose the 1-D structure: for them build
    the graph over the parameter t instead (``nncert.semantic.segments.segment_problem``).
    """

    start: torch.Tensor
    end: torch.Tensor
    t_lo: float | torch.Tensor = 0.0
    t_hi: float | torch.Tensor = 1.0

    def __post_init__(self) -> None:
        if self.start.shape != self.end.shape:
            raise ShapeError("segment end vs start", tuple(self.start.shape),
                             tuple(self.end.shape))
        _check_finite("segment start", self.start)
        _check_finite("segment end", self.end)
        lo, hi = self._t()
        _check_finite("segment parameter range", torch.cat([lo, hi]))
        if bool((lo < 0).any() | (hi > 1).any() | (lo > hi).any()):
            raise ConfigError("segment parameter range must satisfy 0 ≤ t_lo ≤ t_hi ≤ 1")

    def _t(self) -> tuple[torch.Tensor, torch.Tensor]:
        """t_lo, t_hi as (B,) tensors."""
        B, kw = self.start.shape[0], {"dtype": self.start.dtype, "device": self.start.device}
        lo, hi = torch.as_tensor(self.t_lo).to(**kw), torch.as_tensor(self.t_hi).to(**kw)
        return lo.expand(B) if lo.dim() == 0 else lo, hi.expand(B) if hi.dim() == 0 else hi

    @property
    def shape(self) -> Shape:
        return tuple(self.start.shape[1:])

    @property
    def batch_size(self) -> int:
        return self.start.shape[0]

    def _view(self, t: torch.Tensor) -> torch.Tensor:
        return t.reshape(*t.shape, *([1] * len(self.shape)))

    def point(self, t: torch.Tensor) -> torch.Tensor:
        """``start + t·(end − start)`` for parameters t of shape (…, B) → (…, B, *shape)."""
        return self.start + self._view(t.to(self.start.dtype)) * (self.end - self.start)

    def endpoints(self) -> tuple[torch.Tensor, torch.Tensor]:
        lo, hi = self._t()
        return self.point(lo), self.point(hi)

    @property
    def lower(self) -> torch.Tensor:
        a, b = self.endpoints()
        return torch.minimum(a, b)

    @property
    def upper(self) -> torch.Tensor:
        a, b = self.endpoints()
        return torch.maximum(a, b)

    @property
    def center(self) -> torch.Tensor:
        lo, hi = self._t()
        return self.point((lo + hi) / 2)

    def concretize(self, A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = self.endpoints()
        va, vb = _flat_dot(A, a), _flat_dot(A, b)
        return torch.minimum(va, vb), torch.maximum(va, vb)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        lo, hi = self._t()
        u = torch.rand((n, self.batch_size), generator=generator, dtype=self.start.dtype)
        return self.point(lo + u.to(self.start.device) * (hi - lo))

    def project(self, x: torch.Tensor) -> torch.Tensor:
        d = (self.end - self.start).flatten(1)
        rel = (x - self.start).flatten(start_dim=x.dim() - len(self.shape))
        t = (rel * d).sum(-1) / (d * d).sum(-1).clamp_min(1e-30)
        lo, hi = self._t()
        return self.point(torch.maximum(torch.minimum(t, hi), lo))

    def contains(self, x: torch.Tensor, atol: float = 0.0) -> torch.Tensor:
        dist = (x - self.project(x)).flatten(start_dim=x.dim() - len(self.shape)).abs()
        return dist.amax(dim=-1) <= atol + 1e-12

    def __getitem__(self, idx) -> Segment:
        lo, hi = self._t()
        s, e, lo, hi = self.start[idx], self.end[idx], lo[idx], hi[idx]
        if s.dim() == len(self.shape):
            s, e, lo, hi = s.unsqueeze(0), e.unsqueeze(0), lo.reshape(1), hi.reshape(1)
        return _derived(Segment, start=s, end=e, t_lo=lo, t_hi=hi)

    def to(self, device=None, dtype=None) -> Segment:
        lo, hi = self._t()
        kw = {"device": device, "dtype": dtype}
        return _derived(Segment, start=self.start.to(**kw), end=self.end.to(**kw),
                        t_lo=lo.to(**kw), t_hi=hi.to(**kw))


@dataclass(frozen=True, eq=False)
class AffineBand(InputSet):
    """``{offset + Σ_k u_k·gens[:, k] + e : u ∈ [0, 1]^K, e_lo ≤ e ≤ e_hi}`` (per batch
    element): points that depend affinely on K parameters, up to an error interval per
    coordinate. This is how DeepG (Balunović et al., NeurIPS 2019) hands a transform's images
    to a linear bound method: pixels linear in the (normalised) transform parameters, so the
    bound keeps that every pixel moves with the same parameter, which a box forgets.

    ``offset``, ``e_lo``, ``e_hi`` are (B, *shape), ``gens`` (B, K, *shape). ``concretize`` is
    exact (a linear functional separates over u and e); ``lower``/``upper`` are the box hull.
    ``contains`` is exact (K = 1 by intervals, K > 1 by one small LP per point).
    """

    offset: torch.Tensor
    gens: torch.Tensor
    e_lo: torch.Tensor
    e_hi: torch.Tensor

    def __post_init__(self) -> None:
        B, shape = self.offset.shape[0], tuple(self.offset.shape)
        for name, t in (("band error lower bound", self.e_lo), ("band error upper bound", self.e_hi)):
            if tuple(t.shape) != shape:
                raise ShapeError(f"{name} vs band offset", shape, tuple(t.shape))
        if self.gens.dim() != self.offset.dim() + 1 or self.gens.shape[0] != B or tuple(
                self.gens.shape[2:]) != shape[1:]:
            raise ShapeError("band generators (B, K, *shape)", (B, 1, *shape[1:]),
                             tuple(self.gens.shape))
        for name, t in (("band offset", self.offset), ("band generators", self.gens),
                        ("band error lower bound", self.e_lo),
                        ("band error upper bound", self.e_hi)):
            _check_finite(name, t)
        if bool((self.e_lo > self.e_hi).any()):
            raise ConfigError("band has an error lower bound above its upper bound")

    @property
    def num_params(self) -> int:
        return self.gens.shape[1]

    def point(self, u: torch.Tensor, e: torch.Tensor | None = None) -> torch.Tensor:
        """``offset + Σ_k u_k·gens_k + e`` for u (…, B, K) (e default: the error's middle)."""
        lin = torch.einsum("...bk,bkn->...bn", u.to(self.gens.dtype), self.gens.flatten(2))
        e = (self.e_lo + self.e_hi) / 2 if e is None else e
        return self.offset + lin.reshape(*lin.shape[:-1], *self.shape) + e

    def _gen_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        zero = torch.zeros_like(self.gens)
        return (torch.minimum(self.gens, zero).sum(1), torch.maximum(self.gens, zero).sum(1))

    @property
    def lower(self) -> torch.Tensor:
        return self.offset + self._gen_range()[0] + self.e_lo

    @property
    def upper(self) -> torch.Tensor:
        return self.offset + self._gen_range()[1] + self.e_hi

    @property
    def center(self) -> torch.Tensor:
        return self.point(torch.full((self.batch_size, self.num_params), 0.5,
                                     dtype=self.gens.dtype, device=self.gens.device))

    def concretize(self, A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, R = A.shape[:2]
        Af = A.reshape(B, R, -1)
        ag = torch.einsum("brn,bkn->brk", Af, self.gens.flatten(2).expand(B, -1, -1))
        zero = torch.zeros_like(ag)
        err_lo, err_hi = _derived(Box, lo=self.e_lo, hi=self.e_hi).concretize(A)
        base = _flat_dot(A, self.offset)
        return (base + torch.minimum(ag, zero).sum(-1) + err_lo,
                base + torch.maximum(ag, zero).sum(-1) + err_hi)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        kw = {"generator": generator, "dtype": self.gens.dtype}
        u = torch.rand((n, self.batch_size, self.num_params), **kw).to(self.gens.device)
        r = torch.rand((n, *self.e_lo.shape), **kw).to(self.gens.device)
        return self.point(u, self.e_lo + r * (self.e_hi - self.e_lo))

    def _params(self, x: torch.Tensor) -> torch.Tensor:
        """Least-squares parameters of ``x − offset − mid(e)`` on the generators, clamped to
        [0, 1]: (…, B, K)."""
        d = x.dim() - len(self.shape)
        r = (x - self.offset - (self.e_lo + self.e_hi) / 2).flatten(start_dim=d)
        G = self.gens.flatten(2)  # (B, K, n)
        gram = G @ G.transpose(1, 2) + 1e-12 * torch.eye(self.num_params, dtype=G.dtype,
                                                         device=G.device)
        rhs = torch.einsum("...bn,bkn->...bk", r, G)
        u = torch.linalg.solve(gram.expand(*rhs.shape[:-1], -1, -1), rhs.unsqueeze(-1))
        return u.squeeze(-1).clamp(0.0, 1.0)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        base = self.point(self._params(x), torch.zeros_like(self.e_lo))
        return base + torch.maximum(torch.minimum(x - base, self.e_hi), self.e_lo)

    def contains(self, x: torch.Tensor, atol: float = 0.0) -> torch.Tensor:
        d = x.dim() - len(self.shape)
        if self.num_params != 1:
            return self._contains_lp(x, atol)
        # K = 1: e_lo − atol ≤ x − offset − u·g ≤ e_hi + atol for one u ∈ [0, 1], per coordinate
        r = (x - self.offset).flatten(start_dim=d)
        g = self.gens[:, 0].flatten(1)
        lo_c, hi_c = r - self.e_hi.flatten(1) - atol, r - self.e_lo.flatten(1) + atol  # ≤ u·g ≤
        pos, neg = g > 0, g < 0
        inf = torch.full_like(r, math.inf)
        gs = torch.where(g == 0, torch.ones_like(g), g)
        u_min = torch.where(pos, lo_c / gs, torch.where(neg, hi_c / gs, -inf)).amax(-1)
        u_max = torch.where(pos, hi_c / gs, torch.where(neg, lo_c / gs, inf)).amin(-1)
        flat_ok = ((g != 0) | ((lo_c <= 0) & (hi_c >= 0))).all(-1)
        tol = 1e-12
        return flat_ok & (u_min <= u_max + tol) & (u_min <= 1 + tol) & (u_max >= -tol)

    def _contains_lp(self, x: torch.Tensor, atol: float) -> torch.Tensor:
        """K > 1: one feasibility LP per point (scipy's HiGHS): is there u ∈ [0, 1]^K with
        e_lo − atol ≤ x − offset − G·u ≤ e_hi + atol?"""
        from scipy.optimize import linprog

        d = x.dim() - len(self.shape)
        r = (x - self.offset).flatten(start_dim=d).double().cpu()
        lead = r.shape[:-2]
        r = r.reshape(-1, self.batch_size, r.shape[-1])
        G = self.gens.flatten(2).double().cpu()
        lo = self.e_lo.flatten(1).double().cpu() - atol
        hi = self.e_hi.flatten(1).double().cpu() + atol
        out = torch.zeros(r.shape[:2], dtype=torch.bool)
        for i in range(r.shape[0]):
            for b in range(self.batch_size):
                A = torch.cat([G[b].T, -G[b].T]).numpy()  # G·u ≤ r − lo, −G·u ≤ hi − r
                rhs = torch.cat([r[i, b] - lo[b], hi[b] - r[i, b]]).numpy() + 1e-12
                res = linprog([0.0] * self.num_params, A_ub=A, b_ub=rhs,
                              bounds=[(0, 1)] * self.num_params, method="highs")
                out[i, b] = res.status == 0
        return out.reshape(*lead, self.batch_size).to(x.device)

    def __getitem__(self, idx) -> AffineBand:
        o, g, lo, hi = self.offset[idx], self.gens[idx], self.e_lo[idx], self.e_hi[idx]
        if o.dim() == len(self.shape):
            o, g, lo, hi = o.unsqueeze(0), g.unsqueeze(0), lo.unsqueeze(0), hi.unsqueeze(0)
        return _derived(AffineBand, offset=o, gens=g, e_lo=lo, e_hi=hi)

    def to(self, device=None, dtype=None) -> AffineBand:
        kw = {"device": device, "dtype": dtype}
        return _derived(AffineBand, offset=self.offset.to(**kw), gens=self.gens.to(**kw),
                        e_lo=self.e_lo.to(**kw), e_hi=self.e_hi.to(**kw))
