"""The op vocabulary of the graph IR.

Every op is an immutable value (a frozen dataclass of tensors and ints) acting on *batched*
tensors: the first dimension is always the batch and is never part of a shape stored here.

Families, by what bound methods need from them:

* :class:`AffineOp` (one input): ``forward(x) = linear(x) + bias``. Gives ``linear``,
  ``transpose`` (the adjoint of ``linear``, all that backward substitution needs),
  ``abs_linear`` (the linear map with absolute-value coefficients, for interval radii) and
  ``bias``.
* :class:`LinearMultiOp` (several inputs, linear jointly): Add, Sub, Concat.
* :class:`Activation` (elementwise): ReLU, LeakyReLU, Sigmoid, Tanh, with traits that let
  generic code pick a sound rule (``monotone``, ``piecewise_linear``).
* :class:`MaxPool2d`: monotone in every input, not elementwise.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

Shape = tuple[int, ...]


class Op:
    """Base of all ops. ``forward`` evaluates the op concretely on batched inputs."""

    n_inputs: ClassVar[int] = 1

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Op:
        """A copy with every floating tensor field moved to ``device``/``dtype``."""
        if not dataclasses.is_dataclass(self):
            return self
        changes = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor):
                changes[f.name] = v.to(device=device, dtype=dtype if v.is_floating_point() else None)
        return dataclasses.replace(self, **changes) if changes else self  # type: ignore[type-var]

    def tensors(self) -> list[torch.Tensor]:
        if not dataclasses.is_dataclass(self):
            return []
        return [
            getattr(self, f.name)
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
            if isinstance(getattr(self, f.name), torch.Tensor)
        ]

    @property
    def kind(self) -> str:
        return type(self).__name__


def _vjp_transpose(fn, y: torch.Tensor, in_shape: Shape) -> torch.Tensor:
    """Adjoint of the linear map ``fn`` applied to ``y`` (N, *out) → (N, *in), by autograd.

    Keeps the autograd graph when ``y`` requires grad (alpha-CROWN differentiates through it).
    """
    x = torch.zeros((y.shape[0], *in_shape), dtype=y.dtype, device=y.device, requires_grad=True)
    with torch.enable_grad():
        out = fn(x)
        (g,) = torch.autograd.grad(out, x, grad_outputs=y, create_graph=y.requires_grad)
    return g


class AffineOp(Op):
    """One-input affine op: ``forward(x) = linear(x) + bias(in_shape)``."""

    #: True when every coefficient of the linear part is ≥ 0 (then abs_linear == linear).
    nonnegative: ClassVar[bool] = False

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        b = self.bias(tuple(x.shape[1:]), x)
        out = self.linear(x)
        return out if b is None else out + b

    def bias(self, in_shape: Shape, like: torch.Tensor) -> torch.Tensor | None:
        """The constant part, broadcastable to the output shape (no batch dim); None if zero.

        ``like`` gives the dtype and device for ops that build it on the fly.
        """
        return None

    def abs_linear(self, x: torch.Tensor) -> torch.Tensor:
        """The linear part with every coefficient replaced by its absolute value."""
        if self.nonnegative:
            return self.linear(x)
        raise NotImplementedError(type(self).__name__)

    def transpose(self, y: torch.Tensor, in_shape: Shape) -> torch.Tensor:
        """Adjoint of ``linear``: (N, *out_shape) → (N, *in_shape), i.e. ``y ↦ yᵀ·W``."""
        return _vjp_transpose(self.linear, y, in_shape)



@dataclass(frozen=True, eq=False)
class Linear(AffineOp):
    """``y = x·Wᵀ + b`` on inputs of shape (N, in_features)."""

    weight: torch.Tensor  # (out, in)
    bias_: torch.Tensor | None = None  # (out,)

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.T

    def bias(self, in_shape: Shape, like: torch.Tensor) -> torch.Tensor | None:
        return self.bias_

    def abs_linear(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.abs().T

    def transpose(self, y: torch.Tensor, in_shape: Shape) -> torch.Tensor:
        return y @ self.weight


@dataclass(frozen=True, eq=False)
class Conv2d(AffineOp):
    """2-D convolution on (N, C, H, W); symmetric zero padding ``(ph, pw)``.

    Asymmetric ONNX padding is expressed as a :class:`Pad` op in front of this one.
    """

    weight: torch.Tensor  # (C_out, C_in/groups, kh, kw)
    bias_: torch.Tensor | None = None  # (C_out,)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, None, self.stride, self.padding, self.dilation, self.groups)

    def bias(self, in_shape: Shape, like: torch.Tensor) -> torch.Tensor | None:
        return None if self.bias_ is None else self.bias_.view(-1, 1, 1)

    def abs_linear(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.abs()
        return F.conv2d(x, w, None, self.stride, self.padding, self.dilation, self.groups)

    def transpose(self, y: torch.Tensor, in_shape: Shape) -> torch.Tensor:
        _, h_in, w_in = in_shape
        kh, kw = self.weight.shape[2:]
        out_pad = []
        for size, out, k, s, p, d in zip(
            (h_in, w_in), y.shape[2:], (kh, kw), self.stride, self.padding, self.dilation
        ):
            out_pad.append(size - ((out - 1) * s - 2 * p + d * (k - 1) + 1))
        if any(op < 0 or op >= max(s, d) for op, s, d in zip(out_pad, self.stride, self.dilation)):
            return _vjp_transpose(self.linear, y, in_shape)
        return F.conv_transpose2d(
            y, self.weight, None, self.stride, self.padding, tuple(out_pad), self.groups,
            self.dilation,
        )


@dataclass(frozen=True, eq=False)
class ElementwiseAffine(AffineOp):
    """``y = x * scale + shift``, elementwise; scale/shift broadcast to the input shape.

    Covers input normalisation (``Normalize``), Sub/Add/Mul/Div by constants and BatchNorm in
    inference mode. The output shape always equals the input shape.
    """

    scale: torch.Tensor | None = None
    shift: torch.Tensor | None = None

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.scale is None else x * self.scale

    def bias(self, in_shape: Shape, like: torch.Tensor) -> torch.Tensor | None:
        return self.shift

    def abs_linear(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.scale is None else x * self.scale.abs()

    def transpose(self, y: torch.Tensor, in_shape: Shape) -> torch.Tensor:
        return self.linear(y)


def normalize(mean, std, ndim: int = 3) -> ElementwiseAffine:
    """The op for ``(x - mean) / std`` with per-channel (or scalar) mean and std.

    ``ndim`` is the rank of the input without batch (3 for images: the constants are laid out
    as (C, 1, 1); 1 for flat vectors).
    """
    mean_t = torch.as_tensor(mean, dtype=torch.get_default_dtype()).flatten()
    std_t = torch.as_tensor(std, dtype=torch.get_default_dtype()).flatten()
    view = (-1,) + (1,) * (ndim - 1) if ndim > 1 else (-1,)
    if mean_t.numel() == 1 and std_t.numel() == 1:
        view = (1,)
    if bool((std_t <= 0).any()):
        raise ValueError(f"std must be positive, got {std_t.tolist()}")
    return ElementwiseAffine(scale=(1.0 / std_t).reshape(view), shift=(-mean_t / std_t).reshape(view))


@dataclass(frozen=True, eq=False)
class Flatten(AffineOp):
    """(N, *shape) → (N, prod(shape))."""

    nonnegative: ClassVar[bool] = True

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1)

    def transpose(self, y: torch.Tensor, in_shape: Shape) -> torch.Tensor:
        return y.reshape(y.shape[0], *in_shape)


@dataclass(frozen=True, eq=False)
class Reshape(AffineOp):
    """(N, *in_shape) → (N, *shape); ``shape`` excludes the batch dim."""

    shape: Shape = ()
    nonnegative: ClassVar[bool] = True

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)

    def transpose(self, y: torch.Tensor, in_shape: Shape) -> torch.Tensor:
        return y.reshape(y.shape[0], *in_shape)


@dataclass(frozen=True, eq=False)
class Transpose(AffineOp):
    """Permutes the non-batch dims: ``perm`` indexes them from 0."""

    perm: tuple[int, ...] = ()
    nonnegative: ClassVar[bool] = True

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, *(p + 1 for p in self.perm))

    def transpose(self, y: torch.Tensor, in_shape: Shape) -> torch.Tensor:
        inv = [0] * len(self.perm)
        for i, p in enumerate(self.perm):
            inv[p] = i
        return y.permute(0, *(p + 1 for p in inv))


@dataclass(frozen=True, eq=False)
class Pad(AffineOp):
    """Padding of the trailing dims; ``pads`` in ``torch.nn.functional.pad`` order.

    ``mode`` is 'constant' (with ``value``), 'reflect' or 'replicate'; all are affine.
    """

    pads: tuple[int, ...] = ()
    mode: str = "constant"
    value: float = 0.0
    nonnegative: ClassVar[bool] = True

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "constant":
            return F.pad(x, self.pads, mode="constant", value=0.0)
        return F.pad(x, self.pads, mode=self.mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if self.mode == "constant":
            return F.pad(x, self.pads, mode="constant", value=self.value)
        return F.pad(x, self.pads, mode=self.mode)

    def bias(self, in_shape: Shape, like: torch.Tensor) -> torch.Tensor | None:
        if self.mode != "constant" or self.value == 0.0:
            return None
        zeros = torch.zeros((1, *in_shape), dtype=like.dtype, device=like.device)
        return self.forward(zeros)[0]


@dataclass(frozen=True, eq=False)
class AvgPool2d(AffineOp):
    """Average pooling on (N, C, H, W) (floor mode)."""

    kernel: tuple[int, int] = (2, 2)
    stride: tuple[int, int] = (2, 2)
    padding: tuple[int, int] = (0, 0)
    count_include_pad: bool = True
    nonnegative: ClassVar[bool] = True

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, self.kernel, self.stride, self.padding,
                            count_include_pad=self.count_include_pad)



AFFINE_OPS: tuple[type[AffineOp], ...] = (
    Linear, Conv2d, ElementwiseAffine, Flatten, Reshape, Transpose, Pad, AvgPool2d,
)


class LinearMultiOp(Op):
    """A linear op of several inputs (no constant part)."""

    def transpose_multi(self, y: torch.Tensor, in_shapes: list[Shape]) -> list[torch.Tensor]:
        """Adjoint: (N, *out) → one (N, *in_shape_i) per input."""
        raise NotImplementedError

    def abs_forward(self, *xs: torch.Tensor) -> torch.Tensor:
        """The op with absolute-value coefficients (for interval radii)."""
        raise NotImplementedError


@dataclass(frozen=True, eq=False)
class Add(LinearMultiOp):
    """Sum of two same-shaped inputs (residual connections)."""

    n_inputs: ClassVar[int] = 2

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return a + b

    def abs_forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b

    def transpose_multi(self, y, in_shapes):
        return [y, y]


@dataclass(frozen=True, eq=False)
class Sub(LinearMultiOp):
    """Difference of two same-shaped inputs."""

    n_inputs: ClassVar[int] = 2

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return a - b

    def abs_forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b

    def transpose_multi(self, y, in_shapes):
        return [y, -y]


@dataclass(frozen=True, eq=False)
class Concat(LinearMultiOp):
    """Concatenation along non-batch dim ``axis`` (0 = first dim after the batch)."""

    axis: int = 0
    n_inputs: ClassVar[int] = -1  # any number

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=self.axis + 1)

    def abs_forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.forward(*xs)

    def transpose_multi(self, y, in_shapes):
        sizes = [s[self.axis] for s in in_shapes]
        return list(torch.split(y, sizes, dim=self.axis + 1))


class Activation(Op):
    """An elementwise nonlinearity with declared traits.

    ``monotone``: non-decreasing everywhere (so intervals map endpoint to endpoint).
    ``piecewise_linear``: made of linear pieces (exact MILP encodings exist).
    """

    monotone: ClassVar[bool] = True
    piecewise_linear: ClassVar[bool] = False

    def fn(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.fn(x)


@dataclass(frozen=True, eq=False)
class ReLU(Activation):
    piecewise_linear: ClassVar[bool] = True

    def fn(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)


@dataclass(frozen=True, eq=False)
class LeakyReLU(Activation):
    negative_slope: float = 0.01
    piecewise_linear: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.negative_slope <= 1.0:
            raise ValueError("LeakyReLU slope must lie in [0, 1] (monotone and convex)")

    def fn(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, self.negative_slope)


@dataclass(frozen=True, eq=False)
class Sigmoid(Activation):
    def fn(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x)


@dataclass(frozen=True, eq=False)
class Tanh(Activation):
    def fn(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x)


@dataclass(frozen=True, eq=False)
class MaxPool2d(Op):
    """Max pooling on (N, C, H, W) (floor mode, padding with -inf). Monotone in every input."""

    kernel: tuple[int, int] = (2, 2)
    stride: tuple[int, int] = (2, 2)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    monotone: ClassVar[bool] = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return F.max_pool2d(x, self.kernel, self.stride, self.padding, self.dilation)


ALL_OPS: tuple[type[Op], ...] = (
    *AFFINE_OPS, Add, Sub, Concat, ReLU, LeakyReLU, Sigmoid, Tanh, MaxPool2d,
)
