"""Models of a robustness suite: a file under the root, or a small network trained here.

A trained model is naturally trained (plain cross-entropy, :func:`nncert.smoothing.train.
train_gaussian` with σ = 0) from a fixed seed, exported to ONNX and cached under the models
folder by a hash of its specification: a rerun, a resumed run or another executor uses the same
file, so their rows agree.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError
from .suites import ModelSpec


def resolve(root: Path, rel: str, what: str) -> Path:
    """``root / rel`` (an absolute ``rel`` as is); ConfigError naming ``what`` when missing."""
    p = Path(rel) if Path(rel).is_absolute() else root / rel
    if not p.exists():
        raise ConfigError(f"{what}: {p} not found (relative paths resolve against the root "
                          f"folder {root}; pass --root or --shared)")
    return p


def data_source(root: Path, source: str, what: str) -> str:
    """A dataset source: ``digits[:split]`` as is, else a path under the root."""
    if source == "digits" or source.startswith("digits:"):
        return source
    return str(resolve(root, source, what))


def architecture(spec: ModelSpec, input_shape: tuple[int, ...], classes: int) -> nn.Module:
    """The network of ``spec.train``: ``mlp`` (fully connected ReLU layers of ``spec.hidden``)
    or ``cnn-small`` (Conv-Small: two stride-2 convolutions of 16 and 32 channels, a dense
    layer of 100)."""
    from ..smoothing.train import small_cnn

    if spec.train == "cnn-small":
        return small_cnn(input_shape, classes)
    widths = (math.prod(input_shape), *spec.hidden)
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(widths[-1], classes))


def cached_path(spec: ModelSpec, models_dir: Path) -> Path:
    digest = hashlib.sha256(json.dumps(asdict(spec), sort_keys=True).encode()).hexdigest()[:12]
    return models_dir / f"{spec.name}-{digest}.onnx"


def prepare_model(spec: ModelSpec, root: Path, models_dir: Path, log=None) -> Path:
    """The ONNX file of ``spec``: its path under ``root``, or the cached trained network
    (trained now when not cached yet)."""
    if spec.path is not None:
        return resolve(root, spec.path, f"model {spec.name!r}")
    out = cached_path(spec, models_dir)
    if out.exists():
        return out
    from ..data import load_dataset
    from ..smoothing.train import export_onnx, train_gaussian

    data = load_dataset(data_source(root, spec.data, f"model {spec.name!r} training data"),
                        count=spec.count)
    x = data.images / data.pixel_max
    torch.manual_seed(spec.seed)
    model = architecture(spec, tuple(x.shape[1:]), int(data.labels.max()) + 1)
    print(f"nncert: training model {spec.name!r} ({spec.train}, {len(x)} images, "
          f"{spec.epochs} epochs)", file=log or sys.stderr)
    train_gaussian(model, x, data.labels, 0.0, epochs=spec.epochs, batch_size=spec.batch,
                   lr=spec.lr, seed=spec.seed)
    models_dir.mkdir(parents=True, exist_ok=True)
    export_onnx(model, tuple(x.shape[1:]), out)
    return out


__all__ = ["architecture", "cached_path", "data_source", "prepare_model", "resolve"]
