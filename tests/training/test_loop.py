"""The training loop: determinism, checkpoints, resume, Ctrl-C, and the IBP property on digits."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nncert.bounds import certify
from nncert.data import load_dataset
from nncert.errors import ConfigError, ModelError
from nncert.models import load
from nncert.result import Verdict
from nncert.specs.problem import robustness_problem
from nncert.training import (
    IBP,
    PGD,
    Constant,
    Natural,
    Ramp,
    TrainConfig,
    build,
    fit,
    live_graph,
    load_checkpoint,
)


@pytest.fixture(scope="module")
def digits():
    tr, te = load_dataset("digits:train"), load_dataset("digits:test")
    return tr.images / 16, tr.labels, te.images / 16, te.labels


def _cfg(**kw):
    return TrainConfig(**{"epochs": 1, "batch_size": 100, "lr": 3e-3, "progress": False, **kw})


def test_live_graph_uses_the_parameters_themselves():
    m = build("cnn", (1, 8, 8), seed=0, mean=[0.5], std=[0.25])
    g = live_graph(m, (1, 8, 8))
    x = torch.rand(3, 1, 8, 8)
    assert torch.allclose(g(x), m(x), atol=1e-5)
    weights = [n.op.weight for n in g if hasattr(n.op, "weight")]
    assert all(any(w is p for p in m.parameters()) for w in weights)
    with torch.no_grad():
        m[-1].bias.add_(1.0)
    assert torch.allclose(g(x), m(x), atol=1e-5)
    # BatchNorm is supported (tests/training/test_batchnorm.py), but not without running stats
    with pytest.raises(ConfigError, match="BatchNorm without running statistics"):
        live_graph(nn.Sequential(nn.Flatten(), nn.Linear(4, 3),
                                 nn.BatchNorm1d(3, track_running_stats=False)).eval(), (4,))


@pytest.mark.parametrize("loss", [IBP(Constant(0.02)), PGD(Constant(0.02), steps=2)])
def test_same_seed_same_weights_after_one_epoch(digits, loss):
    x, y = digits[0][:400], digits[1][:400]
    ws = []
    for _ in range(2):
        m = build("fc", (1, 8, 8), seed=1)
        fit(m, loss, x, y, _cfg(seed=5))
        ws.append(torch.cat([p.detach().flatten() for p in m.parameters()]))
    assert torch.equal(ws[0], ws[1])
    m = build("fc", (1, 8, 8), seed=1)
    fit(m, loss, x, y, _cfg(seed=6))
    assert not torch.equal(ws[0], torch.cat([p.detach().flatten() for p in m.parameters()]))


def test_resume_continues_exactly_and_checkpoints_are_weights_only(digits, tmp_path):
    x, y = digits[0][:300], digits[1][:300]
    loss = PGD(Ramp(0.0, 0.05, 0.0, 2.0), steps=2)
    full = build("fc", (1, 8, 8), seed=2)
    h_full = fit(full, loss, x, y, _cfg(epochs=3))
    ck = tmp_path / "ck.pt"
    part = build("fc", (1, 8, 8), seed=2)
    with pytest.raises(KeyboardInterrupt):
        fit(part, loss, x, y, _cfg(epochs=3, checkpoint=str(ck)), on_epoch=_stop_after(1))
    assert load_checkpoint(ck)["epoch"] == 1 and load_checkpoint(ck)["complete"]
    resumed = build("fc", (1, 8, 8), seed=99)
    h = fit(resumed, loss, x, y, _cfg(epochs=3, checkpoint=str(ck)), resume=ck)
    for a, b in zip(full.parameters(), resumed.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    assert [r["epoch"] for r in h.rows] == [1, 2, 3]
    assert h.losses() == pytest.approx(h_full.losses(), rel=1e-5)
    obj = torch.load(ck, weights_only=True)
    assert set(obj["model"]) == set(full.state_dict())


def _stop_after(n):
    def on_epoch(epoch, model):
        if epoch >= n:
            raise KeyboardInterrupt
        return {}
    return on_epoch


def test_ctrl_c_saves_the_last_checkpoint(digits, tmp_path):
    x, y = digits[0][:200], digits[1][:200]
    calls = []

    class Interrupting(Natural):
        def __call__(self, step, xb, yb):
            calls.append(1)
            if len(calls) == 3:
                raise KeyboardInterrupt
            return super().__call__(step, xb, yb)

    ck = tmp_path / "ck.pt"
    m = build("fc", (1, 8, 8), seed=0)
    with pytest.raises(KeyboardInterrupt):
        fit(m, Interrupting(), x, y, _cfg(epochs=2, batch_size=50, checkpoint=str(ck)))
    c = load_checkpoint(ck)
    assert c["epoch"] == 0 and c["complete"] is False
    assert torch.equal(c["model"]["1.weight"], m[1].weight.detach())


def test_checkpoint_that_is_not_one(tmp_path):
    p = tmp_path / "w.pt"
    torch.save({"a": torch.zeros(2)}, p)
    with pytest.raises(ModelError, match="not an nncert training checkpoint"):
        load_checkpoint(p)
    q = tmp_path / "m.pt"
    torch.save(nn.Linear(2, 2), q)
    with pytest.raises(ModelError, match="pickled"):
        load_checkpoint(q)


def test_bad_train_config():
    for kw in ({"epochs": 0}, {"lr": -1.0}, {"optimizer": "lion"}, {"lr_schedule": "poly"},
               {"precision": "float16"}):
        with pytest.raises(ConfigError):
            TrainConfig(**kw)


def test_bfloat16_training_keeps_float32_weights_and_learns(digits):
    """bfloat16 autocast changes the batches' arithmetic only: the weights stay float32, the
    run is reproducible, and it trains a net about as accurate and certifiable as float32."""
    x, y, xt, yt = digits
    eps, out = 0.05, {}
    for precision in ("float32", "bfloat16", "bfloat16"):
        m = build("cnn", (1, 8, 8), seed=0, batchnorm=True)
        loss = IBP(Ramp(0.0, eps, 0.0, 3.0), kappa=Ramp(1.0, 0.5, 0.0, 3.0))
        fit(m, loss, x, y, _cfg(epochs=6, batch_size=64, precision=precision))
        assert all(p.dtype == torch.float32 for p in m.parameters())
        w = torch.cat([p.detach().flatten() for p in m.parameters()])
        acc = float((m(xt).argmax(1) == yt).float().mean())
        out.setdefault(precision, []).append((w, acc, _certified(m, xt, yt, eps)))
    (w32, acc32, cert32), = out["float32"]
    (wa, acc_a, cert_a), (wb, _, _) = out["bfloat16"]
    assert torch.equal(wa, wb)
    assert not torch.equal(wa, w32)
    assert acc_a >= acc32 - 0.1 and cert_a >= cert32 - 0.1, out


def _certified(model, x, y, eps):
    g = load(model, (1, 8, 8))
    res = certify(robustness_problem(g, x, y, eps), "interval")
    return sum(r.verdict == Verdict.VERIFIED for r in res) / len(res)


def test_ibp_training_certifies_far_more_than_natural_training(digits):
    """A digits-sized run: IBP-trained certified accuracy at ε far above the natural model's."""
    x, y, xt, yt = digits
    eps = 0.05
    out = {}
    for name, loss in (("natural", Natural()),
                       ("ibp", IBP(Ramp(0.0, eps, 0.0, 3.0), kappa=Ramp(1.0, 0.5, 0.0, 3.0)))):
        m = build("fc", (1, 8, 8), seed=0)
        fit(m, loss, x, y, _cfg(epochs=6, batch_size=64))
        out[name] = _certified(m, xt, yt, eps)
    assert out["ibp"] >= out["natural"] + 0.25, out
