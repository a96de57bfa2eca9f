"""torch loader: Sequential walk and fx tracing, parity with the module in eval mode."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nncert.errors import ModelError, UnsupportedOpError
from nncert.models import load, ops
from nncert.models.from_torch import from_torch, from_torch_file, load_weights


def parity(module: nn.Module, shape, n=100, rtol=1e-5, **kw):
    module.eval()
    g = from_torch(module, shape, **kw)
    x = torch.rand(n, *shape) * 2 - 1
    with torch.no_grad():
        ref = module(x)
    out = g(x)
    assert out.shape == ref.shape
    err = float((out - ref).abs().max() / ref.abs().max().clamp(min=1e-12))
    assert err <= rtol, err
    return g


def _randomise_bn(m: nn.Module):
    for mod in m.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            mod.running_mean.uniform_(-1, 1)
            mod.running_var.uniform_(0.5, 2)
            with torch.no_grad():
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.5, 0.5)
    return m


def test_sequential_mlp():
    m = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 8), nn.LeakyReLU(0.1), nn.Linear(8, 8),
                      nn.Sigmoid(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3))
    g = parity(m, (5,))
    assert g.op_kinds() == ["LeakyReLU", "Linear", "ReLU", "Sigmoid", "Tanh"] and len(g) == 9


def test_sequential_cnn_with_nested_sequential_and_batchnorm():
    m = nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=1, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Sequential(nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2), nn.ReLU(), nn.Dropout(0.5)),
        nn.AvgPool2d(2), nn.Conv2d(6, 4, 2, dilation=1), nn.MaxPool2d(2, 1), nn.Identity(),
        nn.Flatten(), nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2),
    )
    _randomise_bn(m)
    g = parity(m, (3, 12, 12))
    assert "ElementwiseAffine" not in g.op_kinds()  # both BatchNorms folded
    g0 = parity(m, (3, 12, 12), simplify=False)
    assert g0.op_kinds().count("ElementwiseAffine") == 1 and len(g0) > len(g)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_sequential_unflatten_and_same_padding():
    m = nn.Sequential(nn.Linear(4, 32), nn.Unflatten(1, (2, 4, 4)), nn.Conv2d(2, 3, 4, padding="same"),
                      nn.ReLU(), nn.Conv2d(3, 2, 3, padding="valid"), nn.Flatten(), nn.Linear(8, 2))
    g = parity(m, (4,))
    assert "Pad" in g.op_kinds() and "Reshape" in g.op_kinds()


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.1, 0.2, 0.3]))
        self.std = torch.tensor([0.5, 0.4, 0.3])
        self.c1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(2 * 4 * 4 * 4, 5)

    def forward(self, x):
        x = (x - self.mean.view(1, 3, 1, 1)) / self.std.view(1, 3, 1, 1)
        y = F.relu(self.bn(self.c1(x)))
        z = torch.relu(self.c2(y)) + y
        w = torch.cat([z, y - z], dim=1)
        w = F.leaky_relu(w, negative_slope=0.1).reshape(x.size(0), -1)
        return -self.fc(w) * 2 + 1


def test_fx_residual_cnn():
    g = parity(_randomise_bn(_Residual()), (3, 4, 4))
    kinds = g.op_kinds()
    assert {"Add", "Sub", "Concat", "Conv2d", "Flatten", "Linear", "ElementwiseAffine"} <= set(kinds)
    assert g.nodes[0].op.kind == "ElementwiseAffine"  # normalisation stays at the front
    assert not any(isinstance(n.op, ops.ElementwiseAffine) for n in g.nodes[1:])


class _Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 6)
        self.b = nn.Linear(6, 6)
        self.head = nn.Sequential(nn.Tanh(), nn.Linear(12, 3))

    def forward(self, x):
        x = x.flatten(1)
        h = torch.sigmoid(self.a(x))
        r = h - self.b(h)
        s = 0.5 * r + h / 4.0
        v = torch.cat((s, 1.0 - h), 1).view(-1, 2, 6).permute(0, 2, 1).contiguous()
        return self.head(v.reshape(x.shape[0], 12))


def test_fx_functions_and_methods():
    g = parity(_Mlp(), (2, 3))
    assert {"Transpose", "Sigmoid", "Tanh", "Sub", "Add", "Concat"} <= set(g.op_kinds())


class _Bad(nn.Module):
    def __init__(self, what):
        super().__init__()
        self.what = what
        self.fc = nn.Linear(4, 4)
        self.gelu = nn.GELU()

    def forward(self, x):
        x = self.fc(x)
        return self.gelu(x) if self.what == "module" else torch.exp(x)


@pytest.mark.parametrize("what,op", [("module", "GELU"), ("function", "exp")])
def test_unsupported_names_op_and_fx_node(what, op):
    with pytest.raises(UnsupportedOpError) as e:
        from_torch(_Bad(what), (4,))
    msg = str(e.value)
    assert f"'{op}'" in msg and "torch loader" in msg and "Linear" in msg
    assert e.value.node in ("gelu", "exp")


def test_unsupported_module_in_sequential():
    with pytest.raises(UnsupportedOpError, match="Softmax"):
        from_torch(nn.Sequential(nn.Linear(3, 3), nn.Softmax(dim=1)), (3,))


def test_product_of_tensors_unsupported():
    class M(nn.Module):
        def forward(self, x):
            return x * x

    with pytest.raises(UnsupportedOpError, match="mul"):
        from_torch(M(), (3,))


def test_reshape_across_batch_rejected():
    class M(nn.Module):
        def forward(self, x):
            return torch.relu(x.view(-1))

    with pytest.raises(ModelError, match="batch"):
        from_torch(M(), (3,))


def test_float64_module():
    m = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    g = from_torch(m, (3,))
    assert g.dtype == torch.float64
    x = torch.rand(5, 3, dtype=torch.float64)
    torch.testing.assert_close(g(x), m(x))


def test_input_shape_validation():
    with pytest.raises(ModelError, match="input_shape"):
        from_torch(nn.ReLU(), ())
    with pytest.raises(ModelError, match="input_shape"):
        load(nn.ReLU())


def test_torch_files_are_never_unpickled(tmp_path):
    """A .pt model file is read with weights_only=True: a pickled module is refused, a state
    dict needs its architecture; each is a one-line ModelError saying what to do instead."""
    m = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    p = tmp_path / "m.pt"
    torch.save(m, p)
    with pytest.raises(ModelError, match="does not unpickle"):
        from_torch_file(p)
    with pytest.raises(ModelError, match="ONNX"):
        load(p, input_shape=(3,))
    torch.save(m.state_dict(), tmp_path / "sd.pt")
    with pytest.raises(ModelError, match="state_dict"):
        from_torch_file(tmp_path / "sd.pt")
    with pytest.raises(ModelError, match="not found"):
        from_torch_file(tmp_path / "missing.pt")
    (tmp_path / "text.pt").write_text("not a torch file\nsecond line")
    with pytest.raises(ModelError, match="not a") as e:
        from_torch_file(tmp_path / "text.pt")
    assert "\n" not in str(e.value)


class _Payload:
    """Unpickling this runs code: it would create the file named by ``marker``."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_in_a_model_file_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    p = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(2), "x": _Payload(str(marker))}, p)
    with pytest.raises(ModelError, match="does not unpickle"):
        load(p, input_shape=(2,))
    with pytest.raises(ModelError):
        load_weights(p)
    assert not marker.exists()


def test_load_weights_reads_state_dicts(tmp_path):
    m = nn.Sequential(nn.Linear(3, 2))
    torch.save(m.state_dict(), tmp_path / "a.pt")
    torch.save({"state_dict": m.state_dict(), "epoch": 3}, tmp_path / "b.pt")
    for name in ("a.pt", "b.pt"):
        sd = load_weights(tmp_path / name)
        assert set(sd) == {"0.weight", "0.bias"}
    torch.save([1, 2], tmp_path / "c.pt")
    with pytest.raises(ModelError, match="not a state_dict"):
        load_weights(tmp_path / "c.pt")


def test_load_dispatches_modules():
    m = nn.Sequential(nn.Linear(3, 2))
    assert load(m, input_shape=(3,)).op_kinds() == ["Linear"]
