"""Dataset certification: a FALSIFIED point must be confirmed by the reference model too."""

import torch

from nncert.benchmarks.robustness import RobustnessConfig, certify_points
from nncert.models import zoo


def _rows(reference):
    g = zoo.random_graph("relu", 0)
    x = zoo.sample_inputs(g, 6)
    wrong = (g(x).argmax(1) + 1) % 3  # every label wrong: every point is a counterexample
    return list(certify_points(g, x, wrong, RobustnessConfig(eps=0.01), reference=reference)), g


def test_misclassified_points_are_falsified_when_the_reference_agrees():
    rows, g = _rows(None)
    assert all(r["verdict"] == "falsified" for r in rows)
    rows, _ = _rows(lambda x: g(x))  # the graph itself as reference
    assert all(r["verdict"] == "falsified" for r in rows)


def test_unconfirmed_counterexamples_become_unknown():
    g = zoo.random_graph("relu", 0)

    def reference(x):  # a model that always predicts the (wrong) label: nothing is confirmed
        return 10.0 * torch.nn.functional.one_hot((g(x).argmax(1) + 1) % 3, 3).float()

    rows, _ = _rows(reference)
    assert all(r["verdict"] == "unknown" for r in rows)


def test_points_outside_the_domain_are_refused():
    """A ball clipped to [0, 1] around a centre outside [0, 1] is not a ball around the point:
    certifying it gave wrong certificates (issue 12, finding 1)."""
    import pytest

    from nncert.errors import DataError

    g = zoo.random_graph("relu", 0)
    x = zoo.sample_inputs(g, 4).clamp(0, 1)
    labels = g(x).argmax(1)
    x[2, 0] = 1.5
    with pytest.raises(DataError, match="point 2"):
        list(certify_points(g, x, labels, RobustnessConfig(eps=0.01)))
    rows = list(certify_points(g, x, labels, RobustnessConfig(eps=0.01, clip=None)))
    assert len(rows) == 4


def test_a_certificate_for_a_misclassified_point_is_an_internal_error(monkeypatch):
    import pytest

    import nncert.benchmarks.robustness as rob
    from nncert.result import Result, Verdict

    g = zoo.random_graph("relu", 0)
    x = zoo.sample_inputs(g, 3).clamp(0, 1)
    wrong = (g(x).argmax(1) + 1) % 3
    monkeypatch.setattr(rob, "certify", lambda problem, *a: [
        Result(Verdict.VERIFIED, "fake", 0.0) for _ in range(problem.batch_size)])
    with pytest.raises(rob.InvariantError, match="VERIFIED"):
        list(certify_points(g, x, wrong, RobustnessConfig(eps=0.01)))


def test_normalization_checks_channels_and_values():
    import pytest

    from nncert.benchmarks.robustness import with_normalization
    from nncert.errors import ConfigError

    g = zoo.random_graph("relu", 0)
    c = g.input_shape[0]
    with pytest.raises(ConfigError, match=f"has {c + 2} values"):
        with_normalization(g, [0.1] * (c + 2), None)
    for std in ([0.0], [-1.0], [float("nan")]):
        with pytest.raises(ConfigError, match="std"):
            with_normalization(g, None, std)
    assert with_normalization(g, [0.5], [2.0]).input_shape == g.input_shape


def test_complete_method_decides_every_point_and_dominates_crown():
    """--method complete: every point of a tiny net is decided (verified or falsified with a
    strategy recorded); it verifies at least what CROWN verifies and never a point CROWN's
    attack-free bounds contradict."""
    from nncert.benchmarks.robustness import COMPLETE, summarize

    g = zoo.random_graph("relu", 1)
    x = zoo.sample_inputs(g, 8, seed=3)
    labels = g(x).argmax(1)
    crown = list(certify_points(g, x, labels, RobustnessConfig(eps=0.05, method="crown")))
    cfg = RobustnessConfig(eps=0.05, method=COMPLETE, batch_size=1, timeout_s=60.0)
    rows = list(certify_points(g, x, labels, cfg))
    assert all(r["verdict"] in ("verified", "falsified") for r in rows)
    assert all(r["strategy"] for r in rows)
    for c, r in zip(crown, rows):
        if c["verdict"] == "verified":
            assert r["verdict"] == "verified"
    summary = summarize(rows, cfg)
    assert sum(sum(per.values()) for per in summary["decided_by"].values()) == len(rows)
