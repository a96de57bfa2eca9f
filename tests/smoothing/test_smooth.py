"""Randomized smoothing against closed forms: a linear base classifier has smoothed probability
pA = Φ(|w·x + b| / (σ‖w‖)) and true robust radius |w·x + b| / ‖w‖. Every test is seeded."""

from __future__ import annotations

import json
import math

import pytest
import torch
from scipy.stats import binom, norm

from nncert.errors import ConfigError, ShapeError
from nncert.models import ops
from nncert.models.graph import sequential
from nncert.smoothing import Smooth, SmoothCertificate, train_gaussian
from nncert.smoothing.smooth import true_linear_radius


def linear_graph(w: torch.Tensor, b: float, normalize: tuple[float, float] | None = None):
    """Two classes: logits (0, w·x + b); class 1 iff w·x + b > 0."""
    W = torch.stack([torch.zeros_like(w), w])
    layers: list[ops.Op] = [ops.Linear(W, torch.tensor([0.0, b]))]
    if normalize is not None:  # the graph sees raw pixels; (x - mean) / std comes first
        mean, std = normalize
        # fold: w·((x - mean)/std) + b = (w/std)·x + (b - w·1·mean/std); keep the node explicit
        layers.insert(0, ops.normalize([mean], [std], ndim=1))
    return sequential(layers, (w.numel(),))


def assert_rate_at_most(events: int, reps: int, alpha: float) -> None:
    """``events`` in ``reps`` seeded trials is consistent with a rate ≤ alpha: a one-sided
    binomial test at level 0.001 does not reject (the procedures are exact at level alpha, so a
    plain ``events / reps ≤ alpha`` would fail about half the time at the nominal rate)."""
    limit = binom.ppf(0.999, reps, alpha)
    assert events <= limit, f"{events}/{reps} events, more than {limit:.0f} (rate ≤ {alpha})"


W = torch.tensor([0.6, -0.8, 0.0])  # ‖w‖ = 1
B = 0.1


def test_certify_linear_never_exceeds_true_radius_beyond_alpha():
    """Over many seeded repetitions, a non-abstaining answer is wrong or its radius exceeds the
    true radius with frequency ≤ alpha (here the exact miss probability of the Clopper–Pearson
    bound is 0.047 at margin 0.6 and lower at 0.2)."""
    sigma, alpha, reps = 0.5, 0.05, 400
    g = linear_graph(W, B)
    smooth = Smooth(g, 2, sigma)
    for margin in (0.2, 0.6):  # pA = Φ(0.4) ≈ 0.655 and Φ(1.2) ≈ 0.885
        x = torch.tensor([(margin - B) / 0.6, 0.0, 0.3])
        true_r = true_linear_radius(W, B, x)
        assert true_r == pytest.approx(margin, rel=1e-6)
        bad = 0
        for rep in range(reps):
            cert = smooth.certify(x, n0=20, n=300, alpha=alpha, batch_size=300, seed=rep)
            if cert.prediction is not None and (cert.prediction != 1 or cert.radius > true_r):
                bad += 1
        assert_rate_at_most(bad, reps, alpha)


def test_certified_radius_approaches_true_radius_as_n_grows():
    sigma, alpha = 0.5, 0.001
    x = torch.tensor([1.0, 0.25, -2.0])  # w·x + b = 0.6 - 0.2 + 0.1 = 0.5
    true_r = true_linear_radius(W, B, x)
    assert true_r == pytest.approx(0.5)
    smooth = Smooth(linear_graph(W, B), 2, sigma)
    radii = []
    for n in (100, 1_000, 10_000, 200_000):
        certs = [smooth.certify(x, 100, n, alpha, batch_size=50_000, seed=s) for s in range(3)]
        assert all(c.prediction == 1 and c.radius <= true_r for c in certs)
        radii.append(sum(c.radius for c in certs) / len(certs))
    assert radii == sorted(radii)
    assert radii[-1] == pytest.approx(true_r, rel=0.02)
    # pA estimate consistent with the closed form Φ(margin / (σ‖w‖))
    pa = norm.cdf(0.5 / sigma)
    cert = smooth.certify(x, 100, 200_000, alpha, batch_size=50_000, seed=7)
    assert cert.counts[1] / cert.n == pytest.approx(pa, abs=0.005)


def test_noise_goes_before_normalisation():
    """A Graph that starts with (x - mean)/std: noise is in pixel units, so the certified radius
    tracks the pixel-space radius of the composed linear classifier."""
    mean, std, sigma = 0.5, 0.25, 0.25
    w = torch.tensor([1.0, 1.0])  # in normalised space; pixel-space weight = w / std
    g = linear_graph(w, 0.0, normalize=(mean, std))
    x = torch.tensor([0.7, 0.6])  # normalised: (0.8, 0.4) → w·z = 1.2
    true_r = 1.2 / float(torch.linalg.vector_norm(w / std))  # ≈ 0.2121 in pixels
    cert = Smooth(g, 2, sigma).certify(x, 100, 200_000, 0.001, batch_size=50_000, seed=0)
    assert cert.prediction == 1
    assert cert.radius <= true_r
    assert cert.radius == pytest.approx(true_r, rel=0.03)


def test_exact_tie_two_classes():
    """x on the decision boundary: pA = pB = 1/2. PREDICT must abstain and CERTIFY must abstain
    except with probability ≤ alpha."""
    alpha, reps = 0.05, 400
    x = torch.tensor([-B / 0.6, 0.0, 0.0])  # w·x + b = 0
    smooth = Smooth(linear_graph(W, B), 2, 0.5)
    answered = sum(smooth.predict(x, 200, alpha, 200, seed=r).prediction is not None
                   for r in range(reps))
    certified = sum(smooth.certify(x, 20, 200, alpha, 200, seed=r).prediction is not None
                    for r in range(reps))
    assert_rate_at_most(answered, reps, alpha)
    assert_rate_at_most(certified, reps, alpha)


def test_three_way_tie_and_near_tie():
    """Three classes, logits u_c·x with unit vectors 120° apart: at x = 0 each class has
    probability exactly 1/3. PREDICT answers (necessarily wrongly: g has no unique top class)
    with frequency ≤ alpha. At a near tie (top class slightly ahead), PREDICT returns a class
    other than the true top one with frequency ≤ alpha."""
    alpha, reps = 0.05, 300
    ang = torch.tensor([0.0, 2 * math.pi / 3, 4 * math.pi / 3])
    U = torch.stack([torch.cos(ang), torch.sin(ang)], 1)
    g = sequential([ops.Linear(U, torch.zeros(3))], (2,))
    smooth = Smooth(g, 3, 1.0)
    x0 = torch.zeros(2)
    answered = sum(smooth.predict(x0, 300, alpha, 300, seed=r).prediction is not None
                   for r in range(reps))
    assert_rate_at_most(answered, reps, alpha)
    certified = sum(smooth.certify(x0, 30, 300, alpha, 300, seed=r).prediction is not None
                    for r in range(reps))
    assert_rate_at_most(certified, reps, alpha)
    near = torch.tensor([0.15, 0.0])  # class 0 slightly ahead
    wrong = 0
    for r in range(reps):
        p = smooth.predict(near, 300, alpha, 300, seed=r)
        wrong += p.prediction is not None and p.prediction != 0
    assert_rate_at_most(wrong, reps, alpha)


def test_module_and_graph_agree_and_seed_reproduces():
    lin = torch.nn.Linear(3, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.stack([torch.zeros(3), W]))
        lin.bias.copy_(torch.tensor([0.0, B]))
    x = torch.tensor([0.3, 0.1, 0.0])
    a = Smooth(lin, 2, 0.5).certify(x, 50, 2000, 0.01, 500, seed=3)
    b = Smooth(linear_graph(W, B), None, 0.5).certify(x, 50, 2000, 0.01, 512, seed=3)
    c = Smooth(lin, None, 0.5, seed=3).certify(x, 50, 2000, 0.01, 500)
    assert a.counts0 == b.counts0 == c.counts0
    assert a.counts == c.counts and sum(b.counts) == 2000
    assert a.prediction == c.prediction and a.radius == c.radius


class CountingModel(torch.nn.Module):
    def __init__(self, out_shape=(2,)):
        super().__init__()
        self.lin = torch.nn.Linear(4, 2)
        self.out_shape = out_shape
        self.batches: list[int] = []

    def forward(self, x):
        self.batches.append(x.shape[0])
        y = self.lin(x)
        return y if self.out_shape == (2,) else y.reshape(x.shape[0], *self.out_shape)


def test_batches_are_bounded_and_cover_n():
    m = CountingModel()
    cert = Smooth(m, 2, 0.3, seed=0).certify(torch.zeros(4), 13, 1000, 0.01, batch_size=64)
    sampling = m.batches[1:]  # the first call is the one-point output check
    assert m.batches[0] == 1
    assert max(sampling) <= 64 and sum(sampling) == 1013
    assert sum(cert.counts0) == 13 and sum(cert.counts) == 1000


def test_result_is_json_serialisable():
    cert = Smooth(linear_graph(W, B), 2, 0.5, seed=0).certify(torch.ones(3), 10, 100, 0.01)
    assert isinstance(cert, SmoothCertificate)
    d = json.loads(json.dumps(cert.to_dict()))
    assert set(d) >= {"prediction", "radius", "pa_lower", "counts", "alpha", "n0", "n", "time_s"}
    with pytest.raises(AttributeError):
        cert.radius = 2.0  # frozen
    p = Smooth(linear_graph(W, B), 2, 0.5, seed=0).predict(torch.ones(3), 100, 0.01)
    json.dumps(p.to_dict())


@pytest.mark.parametrize("kwargs,exc", [
    ({"sigma": 0.0}, ConfigError), ({"sigma": -1.0}, ConfigError),
    ({"sigma": float("inf")}, ConfigError),
    ({"alpha": 0.0}, ConfigError), ({"alpha": 1.0}, ConfigError), ({"alpha": -0.1}, ConfigError),
    ({"n0": 0}, ConfigError), ({"n": 0}, ConfigError), ({"batch_size": 0}, ConfigError),
    ({"x": torch.zeros(5)}, ShapeError),
])
def test_bad_input_is_rejected_before_sampling(kwargs, exc):
    m = CountingModel()
    args = {"sigma": 0.5, "alpha": 0.01, "n0": 10, "n": 100, "batch_size": 10, "x": torch.zeros(4)}
    args.update(kwargs)
    with pytest.raises(exc):
        s = Smooth(m, 2, args["sigma"], seed=0)
        s.certify(args["x"], args["n0"], args["n"], args["alpha"], args["batch_size"])
    assert all(b == 1 for b in m.batches)  # at most the one-point check ran, no noisy batch


@pytest.mark.parametrize("out_shape", [(1, 2), (2, 1, 1)])
def test_non_score_vector_output_is_a_shape_error(out_shape):
    m = CountingModel(out_shape)
    with pytest.raises(ShapeError):
        Smooth(m, None, 0.5).certify(torch.zeros(4), 10, 100, 0.01, 10)
    assert m.batches == [1]
    g = sequential([ops.Linear(torch.eye(4), torch.zeros(4)), ops.Reshape((2, 2))], (4,))
    with pytest.raises(ShapeError):
        Smooth(g, 2, 0.5)
    with pytest.raises(ShapeError):  # declared class count disagrees with the model
        Smooth(linear_graph(W, B), 3, 0.5)


def test_gaussian_training_makes_smoothed_classifier_accurate():
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(100, 2, generator=g) * 0.3 + 1, torch.randn(100, 2, generator=g) * 0.3 - 1])
    y = torch.cat([torch.zeros(100), torch.ones(100)]).long()
    model = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    losses = train_gaussian(model, x, y, sigma=0.5, epochs=10, batch_size=50, lr=1e-2, seed=0)
    assert losses[-1] < losses[0]
    smooth = Smooth(model, 2, 0.5, seed=0)
    certs = smooth.certify_batch(torch.tensor([[1.0, 1.0], [-1.0, -1.0]]), 50, 2000, 0.001, 2000, seed=0)
    assert [c.prediction for c in certs] == [0, 1]
    assert all(c.radius > 0.5 for c in certs)


def test_parallel_workers_give_identical_counts():
    """Per-batch seeds: the counts depend on seed and batch size only, not on the worker
    count; torch's thread count is restored afterwards."""
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 5))
    x = torch.rand(3, 4)
    threads = torch.get_num_threads()
    runs = [Smooth(m, 5, 0.7, workers=w).certify(x, 37, 1001, 0.01, batch_size=64, seed=4)
            for w in (1, 2, 3, None)]  # None: both schedules timed on the first batches
    assert all(r.counts0 == runs[0].counts0 and r.counts == runs[0].counts for r in runs)
    assert torch.get_num_threads() == threads
    with pytest.raises(ConfigError):
        Smooth(m, 5, 0.7, workers=0)
