"""BatchNorm in certified training (Shi et al. 2021): the live graph computes the module in
training mode (batch statistics) and in eval mode (running statistics), the robust loss bounds
the adversarial loss of the very function its step trains, attacks leave the statistics alone,
and the exported model is the eval-mode network."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nncert.errors import ConfigError, ModelError
from nncert.models import load
from nncert.training import IBP, Constant, CrownIBP, Step, build
from nncert.training.architectures import live_batchnorm
from nncert.training.loop import TrainConfig, fit
from nncert.training.losses import SABR, ball, margin_bounds, pgd_ce

CASES = [("fc", (1, 6, 6)), ("cnn", (1, 8, 8)), ("resnet2b", (3, 8, 8))]


def _bns(m):
    return [x for x in m.modules() if isinstance(x, nn.modules.batchnorm._BatchNorm)]


def _setup(arch, shape, seed=0, n=16):
    m = build(arch, shape, 4, seed=seed, batchnorm=True)
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand((n, *shape), generator=gen)
    y = torch.randint(0, 4, (n,), generator=gen)
    return m, x, y


@pytest.mark.parametrize("arch,shape", CASES)
def test_live_graph_computes_the_module_in_both_modes(arch, shape):
    m, x, _ = _setup(arch, shape)
    assert len(_bns(m)) >= 3
    _, bn = live_batchnorm(m, shape)
    m.train()
    y_train = m(x)  # records this batch's statistics
    torch.testing.assert_close(bn.graph()(x), y_train, atol=1e-5, rtol=1e-5)
    m.eval()
    with torch.no_grad():
        torch.testing.assert_close(bn.graph()(x), m(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(load(m, shape)(x), m(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch,shape", CASES)
@pytest.mark.parametrize("make", [IBP, CrownIBP])
def test_robust_loss_bounds_the_attack_on_the_function_of_its_step(arch, shape, make):
    m, x, y = _setup(arch, shape, seed=1)
    graph, bn = live_batchnorm(m, shape)
    eps = 0.03
    for mode in ("train", "eval"):
        m.train(mode == "train")
        rob, _ = make(Constant(eps))(Step(m, graph, 0.0, batchnorm=bn), x, y)
        fixed = bn.graph()  # the map that step's bounds used
        xa = pgd_ce(fixed, x, y, eps, 20, eps / 4, (0.0, 1.0), torch.Generator().manual_seed(0))
        assert float(rob.detach()) >= float(F.cross_entropy(fixed(xa), y).detach()) - 1e-5, mode


def test_bounds_refuse_a_step_whose_batch_statistics_are_not_fixed():
    m, x, y = _setup("fc", (1, 6, 6))
    graph, bn = live_batchnorm(m, (1, 6, 6))
    with pytest.raises(ModelError, match="with_batch_statistics"):
        margin_bounds(Step(m, graph, 0.0, batchnorm=bn), ball(x, 0.01, (0.0, 1.0)), y, "interval")


def test_gradients_reach_batchnorm_and_attacks_leave_statistics_alone():
    m, x, y = _setup("cnn", (1, 8, 8), seed=2)
    graph, bn = live_batchnorm(m, (1, 8, 8))
    m.train()
    m(x)
    before = [(b.running_mean.clone(), b.running_var.clone(), int(b.num_batches_tracked))
              for b in _bns(m)]
    pgd_ce(m, x + 0.3, y, 0.05, 5, 0.01, (0.0, 1.0))
    for b, (mean, var, n) in zip(_bns(m), before):
        assert torch.equal(b.running_mean, mean) and torch.equal(b.running_var, var)
        assert int(b.num_batches_tracked) == n
    loss, _ = SABR(Constant(0.05), steps=3)(Step(m, graph, 0.0, batchnorm=bn), x, y)
    loss.backward()
    for b in _bns(m):
        assert b.weight.grad is not None and b.weight.grad.abs().sum() > 0
        assert b.bias.grad is not None


def test_training_with_batchnorm_beats_its_start_and_exports_the_eval_network():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(200, 1, 6, 6, generator=gen)
    y = (x[:, 0, :3].mean((1, 2)) > x[:, 0, 3:].mean((1, 2))).long()
    m = build("fc", (1, 6, 6), 2, seed=0, batchnorm=True)
    hist = fit(m, IBP(Constant(0.01)), x, y, TrainConfig(epochs=8, batch_size=33, lr=1e-2,
                                                         progress=False))
    assert hist.losses()[-1] < hist.losses()[0]
    assert not m.training
    with torch.no_grad():
        torch.testing.assert_close(load(m, (1, 6, 6))(x), m(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match="at least 2"):
        fit(build("fc", (1, 6, 6), 2, batchnorm=True), IBP(Constant(0.01)), x[:1], y[:1],
            TrainConfig(epochs=1, progress=False))
