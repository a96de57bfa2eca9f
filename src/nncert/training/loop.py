"""The one training loop: epochs of shuffled mini-batches, one optimiser and learning-rate
schedule, weights-only checkpoints, resume, Ctrl-C safety and a progress bar.

Reproducibility: the data order comes from a CPU generator seeded with ``seed`` and the loss's
randomness (noise, PGD starts) from a generator on the data's device seeded with ``seed``; both
states are saved in each checkpoint, so a resumed run continues where the last finished epoch
left off. Checkpoints hold tensors, numbers and strings only (``torch.save`` of a dict of state
dicts), read back with ``torch.load(weights_only=True)``: nothing in them runs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, ModelError
from ..utils import open_output
from .architectures import live_batchnorm
from .crop_flip import crop_flip
from .losses import Loss, Step

OPTIMIZERS = ("adam", "sgd")
PRECISIONS = ("float32", "bfloat16")
LR_SCHEDULES = ("cosine", "constant", "step")


@dataclass(frozen=True)
class TrainConfig:
    """How to train. ``lr_schedule``: "cosine" (per step to 0), "constant", or "step" (×
    ``lr_gamma`` at each epoch in ``lr_milestones``). ``grad_clip`` bounds the gradient norm
    (0: off; certified training commonly uses 10). ``crop_pad`` > 0 / ``flip``: each batch
    is replaced by random crops of its copy zero-padded by ``crop_pad`` pixels / by random
    left–right mirror images (:func:`nncert.training.crop_flip.crop_flip`; the standard
    CIFAR-10 augmentation). ``precision`` "bfloat16" computes each batch's loss (attack,
    bounds, forward passes) under bfloat16 autocast (a DM-medium SABR batch ran 1.36× faster
    on a CPU with AVX512-BF16, 4.7–13× slower on ones without: :func:`native_bfloat16`);
    weights, gradients, the optimiser, checkpoints and the per-epoch evaluation stay float32.
    It changes only how the weights are found: certificates of the trained model are computed
    afterwards in the model's own precision.
    ``checkpoint``: written after every epoch and on Ctrl-C."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    lr_schedule: str = "cosine"
    lr_milestones: tuple[int, ...] = ()
    lr_gamma: float = 0.1
    grad_clip: float = 0.0
    crop_pad: int = 0
    flip: bool = False
    precision: str = "float32"
    seed: int = 0
    device: str = "cpu"
    checkpoint: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError(f"epochs and batch size must be ≥ 1, got {self.epochs}, {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"learning rate must be a finite number > 0, got {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; choose from {', '.join(OPTIMIZERS)}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"unknown lr schedule {self.lr_schedule!r}; choose from "
                              f"{', '.join(LR_SCHEDULES)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown training precision {self.precision!r}; choose from "
                              f"{', '.join(PRECISIONS)}")
        if self.grad_clip < 0 or self.weight_decay < 0 or self.crop_pad < 0:
            raise ConfigError("grad_clip, weight_decay and crop_pad must be ≥ 0")


@dataclass
class History:
    """One row per finished epoch: epoch, loss, the loss's logged means, lr, seconds, and what
    ``on_epoch`` added (e.g. accuracies)."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    def losses(self) -> list[float]:
        return [r["loss"] for r in self.rows]


def native_bfloat16(device: str | torch.device) -> bool:
    """Whether ``device`` computes bfloat16 in hardware: a CUDA device that supports it, or a
    CPU with AVX512-BF16 or AMX. Elsewhere autocast emulates bfloat16, and
    ``precision="bfloat16"`` is slower than float32, not faster (a DM-medium SABR probe on an
    AVX2-only CPU: 4.7× slower; on another, 13×)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        cpu = torch.cpu
        return bool(getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
                    or getattr(cpu, "_is_amx_tile_supported", lambda: False)())
    return True  # other backends: no probe; assume the user chose it knowingly


def _optimizer(model: nn.Module, cfg: TrainConfig):
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9,
                               weight_decay=cfg.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def _scheduler(opt, cfg: TrainConfig, steps_per_epoch: int):
    """A per-step LR schedule."""
    if cfg.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * steps_per_epoch)
    if cfg.lr_schedule == "step":
        steps = [m * steps_per_epoch for m in cfg.lr_milestones]
        return torch.optim.lr_scheduler.MultiStepLR(opt, steps, gamma=cfg.lr_gamma)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)


# -- checkpoints -----------------------------------------------------------------------------
def save_checkpoint(path, model, opt, sched, epoch: int, gens, history: History,
                    complete: bool = True) -> None:
    """Write a weights-only checkpoint atomically (see the module docstring)."""
    state = {"model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
             "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
             "epoch": int(epoch), "complete": bool(complete),
             "rng": [g.get_state().cpu() for g in gens],
             "history": [{k: v for k, v in r.items() if isinstance(v, (int, float, str))}
                         for r in history.rows]}
    with open_output(path, "wb") as f:
        torch.save(state, f)


def load_checkpoint(path) -> dict[str, Any]:
    """A checkpoint written by :func:`save_checkpoint`, read with ``weights_only=True``."""
    from ..models.from_torch import read_torch_file

    obj = read_torch_file(path, advice="Pass a checkpoint written by nncert train")
    if not isinstance(obj, dict) or not {"model", "optimizer", "epoch", "rng"} <= set(obj):
        raise ModelError(f"{path} is not an nncert training checkpoint (needs model, optimizer, "
                         "epoch and rng entries)")
    return obj


def _restore(ckpt, model, opt, sched, gens, history: History, sched_total: int) -> int:
    try:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        if hasattr(sched, "T_max"):  # more (or fewer) epochs than the first run: anneal to the new end
            sched.T_max = sched_total
        for g, s in zip(gens, ckpt["rng"]):
            g.set_state(s.to(torch.uint8).cpu())
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        raise ModelError(f"checkpoint does not fit this model/optimizer: {str(e)[:200]}") from None
    history.rows.extend(dict(r) for r in ckpt.get("history", []))
    return int(ckpt["epoch"])


# -- the loop ----------------------------------------------------------------------------------
def fit(model: nn.Module, loss: Loss, images: torch.Tensor, labels: torch.Tensor,
        config: TrainConfig = TrainConfig(), *, resume: str | Path | None = None,
        on_epoch: Callable[[int, nn.Module], dict[str, Any]] | None = None,
        after_step: Callable[[], None] | None = None,
        after_epoch: Callable[[History], None] | None = None) -> History:
    """Train ``model`` in place with ``loss`` on ``images`` (N, *shape) in [0, 1] and
    ``labels`` (N,). ``on_epoch(epoch, model)`` may return more columns for the epoch's row
    (the model is in eval mode during the call); ``after_step`` runs after every optimiser
    step (e.g. a projection); ``after_epoch(history)`` after each epoch's row is complete
    (e.g. to write a log). On Ctrl-C the current weights are saved to the checkpoint
    (marked incomplete: resuming reruns that epoch) and KeyboardInterrupt is re-raised.
    Leaves the model in eval mode."""
    if len(images) != len(labels) or len(images) == 0:
        raise ConfigError(f"need as many labels as images (≥ 1), got {len(images)} and {len(labels)}")
    if len(images) < 2 and any(isinstance(m, nn.modules.batchnorm._BatchNorm)
                               for m in model.modules()):
        raise ConfigError("a network with BatchNorm needs at least 2 training images")
    device = torch.device(config.device)
    model.to(device).train()
    images, labels = images.to(device), labels.to(device)
    graph, bn = live_batchnorm(model, images.shape[1:]) if loss.needs_graph else (None, None)
    steps_per_epoch = math.ceil(len(images) / config.batch_size)
    opt = _optimizer(model, config)
    sched = _scheduler(opt, config, steps_per_epoch)
    gens = (torch.Generator().manual_seed(config.seed),
            torch.Generator(device=device).manual_seed(config.seed))
    history = History()
    start = 0 if resume is None else _restore(load_checkpoint(resume), model, opt, sched, gens,
                                              history, config.epochs * steps_per_epoch)
    done, mid_epoch = start, False
    try:
        for epoch in range(start, config.epochs):
            mid_epoch = True
            row = _epoch(model, (graph, bn), loss, images, labels, config, opt, sched, gens,
                         epoch, steps_per_epoch, after_step)
            done, mid_epoch = epoch + 1, False
            history.rows.append(row)
            if on_epoch is not None:
                model.eval()
                row.update(on_epoch(done, model))
                model.train()
            if config.checkpoint:
                save_checkpoint(config.checkpoint, model, opt, sched, done, gens, history)
            if after_epoch is not None:
                after_epoch(history)
    except KeyboardInterrupt:
        if config.checkpoint:
            save_checkpoint(config.checkpoint, model, opt, sched, done, gens, history,
                            complete=not mid_epoch)
        model.eval()
        raise
    model.eval()
    return history


def _bar(total: int, desc: str, enabled: bool):
    """A tqdm bar on stderr showing the running losses (silent unless stderr is a terminal or
    NNCERT_PROGRESS=1, as every nncert progress bar)."""
    import os
    import sys

    from tqdm import tqdm

    show = enabled and (sys.stderr.isatty() or os.environ.get("NNCERT_PROGRESS") == "1")
    return tqdm(total=total, desc=desc, file=sys.stderr, disable=not show, dynamic_ncols=True,
                leave=False)


def _epoch(model, graphs, loss: Loss, images, labels, cfg: TrainConfig, opt, sched, gens,
           epoch: int, steps_per_epoch: int, after_step) -> dict[str, Any]:
    """One pass over the data; returns the epoch's row (mean loss and mean logs). ``graphs``:
    the live graph and its LiveBatchNorm (or Nones). With BatchNorm a last batch of one image
    is skipped (its statistics are undefined)."""
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    t0 = time.perf_counter()
    perm = torch.randperm(len(images), generator=gens[0]).to(images.device)
    sums: dict[str, float] = {}
    seen = 0
    bar = _bar(steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}", cfg.progress)
    for i in range(steps_per_epoch):
        idx = perm[i * cfg.batch_size:(i + 1) * cfg.batch_size]
        if has_bn and len(idx) < 2:
            bar.update(1)
            continue
        step = Step(model, graphs[0], epoch + i / steps_per_epoch, gens[1], batchnorm=graphs[1])
        x = images[idx]
        if cfg.crop_pad > 0 or cfg.flip:
            x = crop_flip(x, cfg.crop_pad, cfg.flip, gens[0])
        with torch.autocast(images.device.type, dtype=torch.bfloat16,
                            enabled=cfg.precision == "bfloat16"):
            value, logs = loss(step, x, labels[idx])
        opt.zero_grad(set_to_none=True)
        value.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        if after_step is not None:
            after_step()
        n = len(idx)
        seen += n
        for k, v in {"loss": float(value.detach()), **logs}.items():
            sums[k] = sums.get(k, 0.0) + v * n
        bar.update(1)
        if i % 10 == 0 or i == steps_per_epoch - 1:
            bar.set_postfix({k: f"{v / seen:.3g}" for k, v in sums.items()}, refresh=False)
    bar.close()
    row: dict[str, Any] = {"epoch": epoch + 1}
    row.update({k: v / seen for k, v in sums.items()})
    row["lr"] = opt.param_groups[0]["lr"]
    row["seconds"] = time.perf_counter() - t0
    return row
