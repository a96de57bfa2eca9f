"""PNG strips: the marks follow the proved and violating parts, the file is a PNG of the
announced size."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import torch

from nncert.models import ops
from nncert.models.graph import sequential
from nncert.semantic.segments import certify_segment_exact
from nncert.semantic.strip import save_strip, segment_row, strip_size, transform_row
from nncert.semantic.transforms import TransformConfig, apply_transform, certify_transform
from nncert.specs import OutputSpec

D = torch.float64


def png_size(path) -> tuple[int, int]:
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _crafted():
    """y = (t − 0.6, 0) on the segment 0 → 1: label 0 fails on [0, 0.6], holds after."""
    net = sequential([ops.Linear(torch.tensor([[1.0], [0.0]], dtype=D),
                                 torch.tensor([-0.6, 0.0], dtype=D))], (1,))
    return net, OutputSpec.robustness([0], 2, dtype=D)


def test_segment_row_marks_follow_the_exact_pieces(tmp_path):
    net, spec = _crafted()
    a, b = torch.zeros(1, dtype=D), torch.ones(1, dtype=D)
    rep = certify_segment_exact(net, a, b, spec)

    def image_at(t):
        return (a + t[:, None] * (b - a)).reshape(-1, 1, 1, 1).expand(-1, 1, 4, 4)

    def fails(t):
        return ~spec.expand(t.numel()).holds(net(a + t[:, None] * (b - a)))

    row = segment_row(rep, image_at, fails, 11, "crafted")
    want = ["violated" if t <= 0.6 + 1e-12 else "robust" for t in torch.linspace(0, 1, 11).tolist()]
    assert row.states == want
    torch.testing.assert_close(row.proved, torch.tensor([[0.6, 1.0]], dtype=D))
    save_strip(tmp_path / "s.png", [row, row])
    assert png_size(tmp_path / "s.png") == strip_size(2, 11)


def test_undecided_parts_are_grey():
    net, spec = _crafted()
    from nncert.semantic.segments import SegmentReport

    empty = SegmentReport(certify_segment_exact(net, torch.zeros(1), torch.ones(1), spec).result,
                          0.0, 1.0)  # nothing proved either way
    row = segment_row(empty, lambda t: torch.zeros(t.numel(), 1, 2, 2),
                      lambda t: torch.zeros(t.numel(), dtype=torch.bool), 4, "")
    assert row.states == ["unknown"] * 4


@pytest.mark.parametrize("name,lo,hi", [("rotate", [-20.0], [20.0]),
                                        ("translate", [-1.0, -1.0], [1.0, 1.0])])
def test_transform_row_marks_and_png(tmp_path, name, lo, hi):
    torch.manual_seed(0)
    net = sequential([ops.Flatten(), ops.Linear(torch.randn(3, 36), torch.zeros(3))], (1, 6, 6))
    image = torch.rand(1, 6, 6)
    label = int(net(image.unsqueeze(0)).argmax())
    rep = certify_transform(net, image, label, name, lo, hi,
                            TransformConfig(method="crown", initial_pieces=4, max_pieces=64))

    def image_at(p):
        return apply_transform(image.double(), name, p)

    def fails(p):
        return net(image_at(p).float()).argmax(1) != label

    row = transform_row(rep, lo, hi, image_at, fails, 8, "t")
    bad = fails(torch.tensor(lo, dtype=D) + torch.linspace(0, 1, 8, dtype=D)[:, None]
                * (torch.tensor(hi, dtype=D) - torch.tensor(lo, dtype=D)))
    for state, b in zip(row.states, bad.tolist()):
        assert state != "robust" or not b  # a proved parameter is never misclassified
        assert (state == "violated") == (b and state != "robust")
    save_strip(tmp_path / "t.png", [row])
    assert png_size(tmp_path / "t.png") == strip_size(1, 8)
