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
