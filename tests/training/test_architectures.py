"""The literature's architectures: sizes, and the live graph / ONNX round trip compute them."""

from __future__ import annotations

import pytest
import torch

from nncert.errors import ConfigError
from nncert.models import load
from nncert.models.to_onnx import to_onnx
from nncert.training import ARCHITECTURES, build, live_graph

SHAPES = {"mnist": (1, 28, 28), "cifar": (3, 32, 32)}


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
@pytest.mark.parametrize("data", sorted(SHAPES))
def test_every_architecture_builds_and_its_graphs_compute_it(arch, data):
    shape = SHAPES[data]
    m = build(arch, shape, 10, mean=[0.5] * shape[0], std=[0.25] * shape[0], seed=0)
    x = torch.rand(2, *shape)
    with torch.no_grad():
        y = m(x)
        assert y.shape == (2, 10)
        assert torch.allclose(live_graph(m, shape)(x), y, atol=1e-5)
        assert torch.allclose(load(m, shape)(x), y, atol=1e-5)


def test_known_parameter_counts():
    def count(arch, shape):
        return sum(p.numel() for p in build(arch, shape).parameters())

    assert count("convsmall", (1, 28, 28)) == 89_606  # ERAN's ConvSmall for MNIST
    assert count("fc3x100", (1, 28, 28)) == 784 * 100 + 100 + 2 * (100 * 100 + 100) + 1010
    convs = 16 * 3 * 16 + 16 + 32 * 16 * 16 + 32  # 32×32 → 15×15 → 12×12
    assert count("dm-small", (3, 32, 32)) == convs + 32 * 12 * 12 * 100 + 100 + 1010


def test_residual_blocks_are_add_nodes_and_train_through_the_bounds():
    from nncert.training import IBP, Constant, Step

    assert sum(p.numel() for p in build("resnet2b", (3, 32, 32)).parameters()) == 112_006
    m = build("resnet4b", (3, 16, 16), seed=0)
    g = live_graph(m, (3, 16, 16))
    adds = [n for n in g.nodes if type(n.op).__name__ == "Add"]
    assert len(adds) == 4 and sum("shortcut" in n.name for n in g.nodes) == 2
    x, y = torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    loss, _ = IBP(Constant(0.01))(Step(m, g, 0.0, torch.Generator().manual_seed(0)), x, y)
    loss.backward()
    for name, p in m.named_parameters():  # body, shortcut and dense weights all get gradients
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_onnx_round_trip(tmp_path):
    m = build("convmed", (1, 28, 28), mean=[0.1307], std=[0.3081], seed=1)
    path = to_onnx(load(m, (1, 28, 28)), tmp_path / "m.onnx")
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(load(str(path))(x), m(x), atol=1e-5)


def test_bad_architecture_requests():
    with pytest.raises(ConfigError, match="unknown architecture"):
        build("resnet999", (1, 28, 28))
    with pytest.raises(ConfigError, match="does not fit"):
        build("convsmall", (1, 8, 8))
    with pytest.raises(ConfigError, match="std"):
        build("fc", (1, 8, 8), mean=[0.0], std=[0.0])
