"""Input-split BaB on the bound engine (``bab.input_bab`` over ``bounds/boxes.py``): sound on
graphs of every kind the engine bounds (ReLU chains, residual DAGs, Sigmoid/Tanh, a small
convolution), never VERIFIED where sampling finds a violation, every counterexample real."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nncert.attacks import confirm
from nncert.clock import Deadline
from nncert.complete import bab
from nncert.models import ops
from nncert.models.graph import sequential
from nncert.models.zoo import mlp, reshape_net, residual
from nncert.specs import Box, OutputSpec, VerificationProblem


def _tiny_conv(seed: int):
    """Conv (1→2 channels) → ReLU → MaxPool → Flatten → Linear on a 1×4×4 image (16 inputs)."""
    g = torch.Generator().manual_seed(seed)
    conv = ops.Conv2d(torch.randn(2, 1, 3, 3, generator=g) / 3, torch.randn(2, generator=g) * 0.1,
                      padding=(1, 1))
    lin = ops.Linear(torch.randn(3, 8, generator=g) / 8**0.5, torch.randn(3, generator=g) * 0.1)
    return sequential([conv, ops.ReLU(), ops.MaxPool2d((2, 2), (2, 2)), ops.Flatten(), lin],
                      (1, 4, 4))


GRAPHS = {
    "relu": lambda s: mlp(s, "relu", (3, 10, 10, 3)),
    "residual": residual,
    "sigmoid": lambda s: mlp(s, "sigmoid", (3, 8, 8, 3)),
    "tanh-reshape": reshape_net,
    "conv": _tiny_conv,
}


def _problem(kind: str, seed: int, q: float):
    """The graph on [−1, 1]^n (float64) and ``y0 − y1 > t``, t the ``q`` quantile of the
    sampled margins (so both answers occur); with the samples' minimum margin."""
    g = GRAPHS[kind](seed).to(dtype=torch.float64)
    shape = g.input_shape
    lo, hi = -torch.ones(1, *shape, dtype=torch.float64), torch.ones(1, *shape, dtype=torch.float64)
    x = torch.rand(4000, *shape, generator=torch.Generator().manual_seed(seed),
                   dtype=torch.float64) * 2 - 1
    with torch.no_grad():
        y = g(x)
    margin = y[:, 0] - y[:, 1]
    t = float(torch.quantile(margin, q))
    C = torch.zeros(1, 1, g.num_outputs, dtype=torch.float64)
    C[0, 0, 0], C[0, 0, 1] = 1.0, -1.0
    spec = OutputSpec.conjunction(C, torch.tensor([[-t]], dtype=torch.float64))
    return VerificationProblem(g, Box(lo, hi), spec), float((margin - t).min())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(sorted(GRAPHS)), seed=st.integers(0, 1000),
       q=st.floats(0.0, 0.3))
def test_input_bab_is_sound_on_every_graph_kind(kind, seed, q):
    p, sampled_min = _problem(kind, seed, q)
    g = p.graph

    def check(x):
        return confirm(p, x.reshape(1, *g.input_shape), None, g)

    cfg = bab.BaBConfig(max_domains=3000, batch_size=64)
    out = bab.input_bab(g, p.input_set, p.output_spec, cfg, Deadline.after(60), check)
    if sampled_min <= -1e-9:
        assert out.status != "verified"
    if out.status == "falsified":
        cex = out.counterexample
        x = cex.x.reshape(1, *g.input_shape).to(torch.float64)
        assert bool(p.input_set.contains(x, atol=1e-9).all())
        with torch.no_grad():
            y = g(x)
        assert float(y[0, 0] - y[0, 1] + p.output_spec.d[0, 0]) <= 1e-9


def test_input_bab_decides_a_residual_graph_both_ways():
    """A property of the residual DAG that holds (a threshold well below the samples) is
    VERIFIED; one violated at the samples' minimum is FALSIFIED with a real counterexample."""
    p, _ = _problem("residual", 3, 0.0)
    g = p.graph
    spec = p.output_spec
    lo_spec = OutputSpec.conjunction(spec.C, spec.d + 5.0)
    cfg = bab.BaBConfig(max_domains=20000)

    def check(x):
        return confirm(p, x.reshape(1, *g.input_shape), None, g)

    assert bab.input_bab(g, p.input_set, lo_spec, cfg, Deadline.after(60), check).status \
        == "verified"
    hi_spec = OutputSpec.conjunction(spec.C, spec.d - 0.05)
    out = bab.input_bab(g, p.input_set, hi_spec, cfg, Deadline.after(60),
                        lambda x: confirm(VerificationProblem(g, p.input_set, hi_spec),
                                          x.reshape(1, *g.input_shape), None, g))
    assert out.status == "falsified"
