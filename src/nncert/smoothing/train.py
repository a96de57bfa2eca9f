"""Training for the probabilistic certificates, through the one loop of ``nncert.training``.

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


# -- training (the one loop of nncert.training) ----------------------------------------------
def _config(epochs: int, batch_size: int, lr: float, seed: int, device, progress: bool):
    from ..training.loop import TrainConfig

    epochs = stats.check_count(epochs, "epochs")
    batch_size = stats.check_count(batch_size, "batch_size")
    stats.check_positive(lr, "lr")
    return TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                       device=str(torch.device(device)), progress=progress)


def train_gaussian(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, sigma: float, *,
                   epochs: int = 10, batch_size: int = 128, lr: float = 1e-3, seed: int = 0,
                   device: torch.device | str = "cpu", progress: bool = False) -> list[float]:
    """Train ``model`` in place on ``images + N(0, σ²)`` (σ = 0: plain training) with
    :func:`nncert.training.fit` and the :class:`~nncert.training.GaussianNoise` loss (Adam,
    cosine LR). Returns the mean training loss per epoch; leaves the model in eval mode."""
    from ..training.loop import fit
    from ..training.losses import GaussianNoise

    loss = GaussianNoise(sigma)
    config = _config(epochs, batch_size, lr, seed, device, progress)
    return fit(model, loss, images, labels, config).losses()


class _PixelDPNoise:
    """Cross-entropy of the PixelDP network with its noise layer on (as at inference)."""

    name = "pixeldp"
    needs_graph = False

    def __init__(self, net: PixelDPNet):
        self.net = net

    def __call__(self, step, x: torch.Tensor, y: torch.Tensor):
        loss = F.cross_entropy(self.net(x, noise=True, generator=step.generator), y)
        return loss, {}


def train_pixeldp(net: PixelDPNet, images: torch.Tensor, labels: torch.Tensor, *, epochs: int = 10,
                  batch_size: int = 128, lr: float = 1e-3, seed: int = 0,
                  device: torch.device | str = "cpu", progress: bool = False) -> list[float]:
    """Train a PixelDP network with its noise layer on (as at inference), keeping the first
    layer's sensitivity ≤ 1 (a projection after every step of :func:`nncert.training.fit`);
    ends with an exact :meth:`PixelDPNet.finalize_`."""
    from ..training.loop import fit

    images = images.reshape(len(images), *net.input_shape)
    net.project_(iterations=20)
    config = _config(epochs, batch_size, lr, seed, device, progress)
    history = fit(net, _PixelDPNoise(net), images, labels, config, after_step=net.project_)
    net.finalize_()
    return history.losses()


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
