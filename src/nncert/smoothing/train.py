"""Small, plain-torch training loops for the probabilistic certificates.

* :func:`train_gaussian` — Gaussian-noise data augmentation (Cohen et al.): the base classifier
  sees ``x + N(0, σ²I)`` so that the smoothed classifier is accurate.
* :func:`train_pixeldp` — trains a :class:`~nncert.smoothing.pixeldp.PixelDPNet` with its noise
  layer on, projecting the first layer back to sensitivity ≤ 1 after every step.

Inputs are in the model's input units (pixels / pixel_max in [0, 1]). Also here: the small CNN
used by the CLI and the benchmark, ONNX export, and :func:`load_images` (datasets via
``nncert.data.load_dataset`` when available).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, ModelError
from ..utils import one_line, open_output
from . import stats
from .pixeldp import PixelDPNet


# -- models -------------------------------------------------------------------------------
def small_cnn(input_shape: tuple[int, ...], num_classes: int = 10) -> nn.Sequential:
    """Two stride-2 4×4 convolutions (16, 32 channels) and two dense layers (100, K): the
    "small" CNN of Wong & Kolter, used by the benchmark (works for 8×8 and 28×28 inputs)."""
    if len(input_shape) != 3:
        raise ConfigError(f"small_cnn needs (C, H, W) inputs, got {tuple(input_shape)}")
    c, h, w = input_shape

    def down(s: int) -> int:
        return (s + 2 - 4) // 2 + 1

    h3, w3 = down(down(h)), down(down(w))
    return nn.Sequential(
        nn.Conv2d(c, 16, 4, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 4, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * h3 * w3, 100), nn.ReLU(), nn.Linear(100, num_classes),
    )


def small_mlp(input_shape: tuple[int, ...], num_classes: int = 10, hidden: int = 128) -> nn.Sequential:
    d = math.prod(input_shape)
    return nn.Sequential(nn.Flatten(), nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                         nn.ReLU(), nn.Linear(hidden, num_classes))


MODELS: dict[str, Callable[..., nn.Module]] = {"cnn": small_cnn, "mlp": small_mlp}


def export_onnx(model: nn.Module, input_shape: tuple[int, ...], path: str | Path) -> None:
    """Write ``model`` as ONNX with a dynamic batch dim (readable by ``nncert.load``); the file
    is replaced atomically (see ``nncert.utils.open_output``)."""
    import io
    import warnings

    model = model.cpu().eval()
    example = torch.zeros((1, *input_shape))
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), buf, dynamo=False, input_names=["input"],
                          output_names=["output"], dynamic_axes={"input": {0: "N"}})
    with open_output(path, "wb") as f:
        f.write(buf.getvalue())


def save_weights(model: nn.Module, path: str | Path) -> None:
    """Write ``model.state_dict()`` (tensors only: read back without unpickling code)."""
    with open_output(path, "wb") as f:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, f)


def load_architecture(path: str | Path, arch: str, input_shape: tuple[int, ...]) -> nn.Module:
    """Architecture ``arch`` (see :data:`MODELS`) for ``input_shape`` with the weights of a
    state-dict file, read with ``torch.load(weights_only=True)``: nothing in the file runs. The
    number of classes is the length of the last 1-D tensor (the output bias)."""
    from ..models.from_torch import load_weights

    if arch not in MODELS:
        raise ConfigError(f"unknown architecture {arch!r}; choose from {sorted(MODELS)}")
    weights = load_weights(path)
    biases = [v for v in weights.values() if v.dim() == 1]
    if not biases:
        raise ModelError(f"{path}: no 1-D tensor (output bias) in the state_dict")
    model = MODELS[arch](tuple(input_shape), int(biases[-1].numel()))
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise ModelError(f"{path}: the weights do not fit architecture {arch!r} for inputs "
                         f"{tuple(input_shape)}: {one_line(e)}") from None
    return model.eval()


# -- data ---------------------------------------------------------------------------------
def load_images(source: str | Path, count: int | None = None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``(images in [0, 1] of shape (N, C, H, W), labels (N,), name)`` from any source
    ``nncert.data.load_dataset`` reads ("digits", "digits:train", "digits:test", MNIST IDX files
    or folders, CIFAR-10 batches, ERAN CSVs): its raw pixels divided by ``pixel_max``."""
    from ..data import load_dataset

    ds = load_dataset(source, count=count)
    return ds.images / float(ds.pixel_max), ds.labels, str(ds.name)


# -- training loops ----------------------------------------------------------------------
def _loop(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, epochs: int,
          batch_size: int, lr: float, seed: int, device: torch.device | str,
          forward: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
          after_step: Callable[[], None] | None, progress: bool) -> list[float]:
    epochs = stats.check_count(epochs, "epochs")
    batch_size = stats.check_count(batch_size, "batch_size")
    stats.check_positive(lr, "lr")
    if len(images) != len(labels) or len(images) == 0:
        raise ConfigError(f"need as many labels as images (≥ 1), got {len(images)} and {len(labels)}")
    device = torch.device(device)
    model.to(device).train()
    images, labels = images.to(device), labels.to(device)
    gen = torch.Generator(device=device).manual_seed(seed)
    order_gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    total_steps = epochs * math.ceil(len(images) / batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
    history = []
    steps = range(epochs)
    if progress:
        import os
        import sys

        from tqdm import tqdm

        show = sys.stderr.isatty() or os.environ.get("NNCERT_PROGRESS") == "1"
        steps = tqdm(steps, total=epochs, desc="train", leave=False, dynamic_ncols=True,
                     file=sys.stderr, disable=not show)
    for _ in steps:
        perm = torch.randperm(len(images), generator=order_gen).to(device)
        total, seen = 0.0, 0
        for start in range(0, len(images), batch_size):
            idx = perm[start:start + batch_size]
            logits = forward(images[idx], gen)
            loss = F.cross_entropy(logits, labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if after_step is not None:
                after_step()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
        history.append(total / seen)
    model.eval()
    return history


def train_gaussian(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, sigma: float, *,
                   epochs: int = 10, batch_size: int = 128, lr: float = 1e-3, seed: int = 0,
                   device: torch.device | str = "cpu", progress: bool = False) -> list[float]:
    """Train ``model`` in place on ``images + N(0, σ²)`` (σ = 0: plain training). Returns the
    mean training loss per epoch; leaves the model in eval mode."""
    if not (sigma >= 0 and math.isfinite(sigma)):
        raise ConfigError(f"sigma must be ≥ 0, got {sigma!r}")

    def forward(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if sigma > 0:
            x = x + torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype) * sigma
        return model(x)

    return _loop(model, images, labels, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                 device=device, forward=forward, after_step=None, progress=progress)


def train_pixeldp(net: PixelDPNet, images: torch.Tensor, labels: torch.Tensor, *, epochs: int = 10,
                  batch_size: int = 128, lr: float = 1e-3, seed: int = 0,
                  device: torch.device | str = "cpu", progress: bool = False) -> list[float]:
    """Train a PixelDP network with its noise layer on (as at inference), keeping the first
    layer's sensitivity ≤ 1; ends with an exact :meth:`PixelDPNet.finalize_`."""
    images = images.reshape(len(images), *net.input_shape)
    net.project_(iterations=20)

    def forward(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return net(x, noise=True, generator=g)

    history = _loop(net, images, labels, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                    device=device, forward=forward, after_step=net.project_, progress=progress)
    net.finalize_()
    return history


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, sigma: float = 0.0,
             seed: int = 0, batch_size: int = 1000) -> float:
    """Clean (σ = 0) or noisy top-1 accuracy of a plain classifier."""
    model.eval()
    g = torch.Generator().manual_seed(seed)
    correct = 0
    for s in range(0, len(images), batch_size):
        x = images[s:s + batch_size]
        if sigma > 0:
            x = x + torch.randn(x.shape, generator=g) * sigma
        correct += int((model(x).argmax(1) == labels[s:s + batch_size]).sum())
    return correct / max(len(images), 1)
