"""The embedded demo: train a small ReLU network on scikit-learn's digits in seconds, then
certify it at a few radii with several bound methods."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..data import load_dataset
from ..models import load
from ..models.graph import Graph
from ..smoothing.train import train_gaussian
from .robustness import RobustnessConfig, certify_points, prepare_inputs, summarize


@dataclass(frozen=True)
class DemoConfig:
    epochs: int = 60
    hidden: tuple[int, ...] = (64, 32)
    seed: int = 0
    eps: tuple[float, ...] = (0.005, 0.01, 0.02, 0.05)
    methods: tuple[str, ...] = ("interval", "zonotope", "deeppoly", "crown", "alpha-crown")
    count: int = 100


def train_digits_mlp(config: DemoConfig) -> tuple[Graph, float]:
    """A ReLU MLP trained on the digits training split (pixels in [0,1]), and its test accuracy."""
    torch.manual_seed(config.seed)
    train, test = load_dataset("digits:train"), load_dataset("digits:test")
    x = train.images.flatten(1) / train.pixel_max
    widths = (x.shape[1], *config.hidden)
    layers: list[torch.nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers, torch.nn.Linear(widths[-1], 10))
    train_gaussian(model, x, train.labels, sigma=0.02, epochs=config.epochs, batch_size=128,
                   lr=3e-3, seed=config.seed)
    graph = load(model, input_shape=(x.shape[1],))
    with torch.no_grad():
        xt = test.images.flatten(1) / test.pixel_max
        acc = float((graph(xt).argmax(1) == test.labels).float().mean())
    return graph, acc


def run_demo(config: DemoConfig, available: list[str]) -> tuple[list[dict], float, float]:
    """Rows of (method, eps, certified, ...) for every method in ``available``; training time
    and test accuracy."""
    t0 = time.perf_counter()
    graph, acc = train_digits_mlp(config)
    train_s = time.perf_counter() - t0
    test = load_dataset("digits:test", count=config.count)
    x = prepare_inputs(test.images, graph, test.pixel_max)
    rows = []
    for eps in config.eps:
        for method in available:
            rc = RobustnessConfig(eps=eps, method=method, batch_size=config.count)
            results = list(certify_points(graph, x, test.labels, rc))
            rows.append(summarize(results, rc))
    return rows, train_s, acc
