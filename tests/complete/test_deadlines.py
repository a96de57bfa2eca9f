"""Deadlines are honoured: every long loop stops at its next check once the deadline has passed.

No wall clock here: ``nncert.clock.now`` is replaced by a fake clock. Most tests make the clock
jump past every deadline right after the n-th call of some unit of work (a backward pass, a PGD
step, a bound call, ...) and then assert that no further unit of that work *starts*: the next
deadline check came first. The end-to-end tests let the fake clock advance by one second per
read and count the reads after the deadline.
"""

from __future__ import annotations

import math

import pytest
import torch
from complete_fixtures import random_mlp

import nncert.bounds as nb
from nncert import clock
from nncert.attacks import AttackConfig, attack
from nncert.bounds import alpha_crown, crown
from nncert.bounds.alpha_crown import AlphaCrownConfig
from nncert.bounds.crown import CrownConfig
from nncert.clock import Deadline, DeadlineExceededError
from nncert.complete import VerifyConfig, bab, verify
from nncert.result import Verdict
from nncert.specs import Box, LpBall, OutputSpec, VerificationProblem

FAR = 1e6  # a deadline the fake clock only reaches when a test makes it jump


class FakeClock:
    """``clock.now`` replaced: time moves by ``tick`` per read, or jumps on ``expire()``."""

    def __init__(self, tick: float = 0.0):
        self.t, self.tick, self.values = 0.0, tick, []

    def __call__(self) -> float:
        self.t += self.tick
        self.values.append(self.t)
        return self.t

    def expire(self) -> None:
        self.t = 1e12

    @property
    def expired(self) -> bool:
        return self.t >= 1e12


@pytest.fixture
def fake(monkeypatch) -> FakeClock:
    fc = FakeClock()
    monkeypatch.setattr(clock, "now", fc)
    return fc


def expire_on_call(monkeypatch, fake: FakeClock, owner, name: str, n: int) -> dict:
    """Wrap ``owner.name`` so that the clock passes every deadline when its n-th call
    returns; the dict counts all calls and those that started after that."""
    orig = getattr(owner, name)
    calls = {"all": 0, "after": 0}

    def wrapped(*args, **kwargs):
        if fake.expired:
            calls["after"] += 1
        calls["all"] += 1
        out = orig(*args, **kwargs)
        if calls["all"] == n:
            fake.expire()
        return out

    monkeypatch.setattr(owner, name, wrapped)
    return calls


def count_expired_checks(monkeypatch) -> list:
    """Record every ``Deadline.check`` that finds its deadline passed."""
    orig = Deadline.check
    seen = []

    def check(self):
        try:
            orig(self)
        except DeadlineExceededError:
            seen.append(self.at)
            raise

    monkeypatch.setattr(Deadline, "check", check)
    return seen


def _hard(seed: int = 7, widths=(2, 32, 32, 32, 2), gap: float = 1e-6):
    """A net (twice: graph and forward function), its box and a threshold ``gap`` below the
    minimum on samples and vertices: BaB runs long (a large gap: the attack finds nothing)."""
    g = random_mlp(seed, widths, scale=2.0).to(dtype=torch.float64)
    net = g  # (flat inputs: the graph's own forward)
    n = widths[0]
    lo, hi = -torch.ones(1, n, dtype=torch.float64), torch.ones(1, n, dtype=torch.float64)
    x = torch.rand(20000, n, dtype=torch.float64) * 2 - 1
    corners = torch.cartesian_prod(*[torch.tensor([-1.0, 1.0], dtype=torch.float64)] * n)
    y = net.forward(torch.cat([x, corners.reshape(-1, n)]))
    m = y[:, 0] - y[:, 1]
    t = float(m.min()) - gap * max(1.0, float(m.max() - m.min()))
    spec = OutputSpec.conjunction(torch.tensor([[[1.0, -1.0]]], dtype=torch.float64),
                                  torch.tensor([-t], dtype=torch.float64))
    return g, net, lo, hi, spec


def _no_check(x):
    return None


# -- attack ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 30, 61, 62, 63, 80])
@pytest.mark.parametrize("ball", [False, True])
def test_attack_stops_at_the_next_check(monkeypatch, fake, n, ball):
    """Center, PGD steps, random search, later rounds; boxes and L2 balls: once the deadline
    has passed no forward pass of the search model starts, and the attack reports no
    counterexample (not an error)."""
    g, net, lo, hi, spec = _hard(gap=0.5)
    s = LpBall(torch.zeros(1, 2, dtype=torch.float64), 1.0, p=2) if ball else Box(lo, hi)
    model = type("M", (), {"forward": staticmethod(net.forward)})
    calls = expire_on_call(monkeypatch, fake, model, "forward", n)
    cex, m = attack(VerificationProblem(g, s, spec), AttackConfig(timeout_s=FAR, rounds=3),
                    deadline=Deadline(FAR), fn=lambda x: model.forward(x))
    assert cex is None and m > 0
    assert fake.expired and calls["all"] == n and calls["after"] == 0


@pytest.mark.parametrize("fake_tick", [0.0, 1.0])
def test_random_search_chunks_grow_only_while_quick(fake, fake_tick):
    """Chunks start at 64 samples and double while a chunk takes under 0.05 s of the FAKE
    clock: each forward pass advances it by ``fake_tick`` (no real time is read)."""
    from nncert.attacks import random_search

    g, net, lo, hi, spec = _hard(gap=0.5)
    sizes = []

    def fn(x):
        sizes.append(x.shape[0])
        fake.t += fake_tick
        return net.forward(x)

    random_search(fn, lo, hi, spec, 1000, torch.Generator().manual_seed(0))
    growing, fixed = [64, 128, 256, 512, 40], [64] * 15 + [40]
    assert sum(sizes) == 1000
    assert sizes == (growing if fake_tick == 0.0 else fixed)


def test_attack_with_an_expired_deadline_does_nothing(fake):
    g, net, lo, hi, spec = _hard()
    fake.t = 10.0
    seen = []
    cex, m = attack(VerificationProblem(g, Box(lo, hi), spec), deadline=Deadline(5.0),
                    fn=lambda x: seen.append(x) or net.forward(x))
    assert cex is None and m == math.inf and not seen


# -- alpha iterations --------------------------------------------------------------------------
@pytest.mark.parametrize("intermediate", [False, True])
@pytest.mark.parametrize("n", [2, 5])
def test_alpha_crown_iterations_stop_at_the_next_check(monkeypatch, fake, n, intermediate):
    """alpha-CROWN's Adam loop (on the output, or on every layer's bounds) through
    compute_bounds: no backward pass after the deadline, and no bounds come back."""
    g = random_mlp(3, (4, 24, 24, 24, 3), scale=2.0).to(dtype=torch.float64)
    x = torch.zeros(1, 4, dtype=torch.float64)
    spec = OutputSpec.conjunction(torch.tensor([[[1.0, -1.0, 0.0], [0.0, 1.0, -1.0]]],
                                               dtype=torch.float64))
    p = VerificationProblem(g, LpBall(x, 1.0), spec)
    cfg = AlphaCrownConfig(iterations=40, early_stop=False, optimize_intermediate=intermediate)
    calls = expire_on_call(monkeypatch, fake, alpha_crown, "backward_bounds", n)
    with pytest.raises(DeadlineExceededError):
        nb.compute_bounds(p, "alpha-crown", cfg, deadline=Deadline(FAR))
    assert calls["all"] == n and calls["after"] == 0


def test_optimize_bounds_with_splits_stops_at_the_next_check(monkeypatch, fake):
    """The beta-CROWN entry point (split constraints, several subdomains)."""
    from nncert.bounds.crown import intermediate_bounds
    from nncert.models import zoo

    g = zoo.mlp(4, "relu", widths=(3, 16, 16, 2)).to(dtype=torch.float64)
    xs = LpBall(zoo.sample_inputs(g, 2, 4).to(torch.float64), 0.5)
    values = intermediate_bounds(g, xs)
    splits = {"n0": torch.tensor([[1] + [0] * 15, [-1] + [0] * 15], dtype=torch.int8)}
    C = torch.tensor([[[1.0, -1.0]]], dtype=torch.float64).expand(2, -1, -1)
    calls = expire_on_call(monkeypatch, fake, alpha_crown, "backward_bounds", 3)
    with pytest.raises(DeadlineExceededError):
        alpha_crown.optimize_bounds(g, xs, C, None, values,
                                    AlphaCrownConfig(iterations=30, early_stop=False), splits,
                                    deadline=Deadline(FAR))
    assert calls["all"] == 3 and calls["after"] == 0


# -- CROWN intermediate passes -------------------------------------------------------------------
@pytest.mark.parametrize("method", ["crown", "deeppoly"])
@pytest.mark.parametrize("n", [1, 4])
def test_crown_intermediate_passes_stop_at_the_next_check(monkeypatch, fake, method, n):
    """The registry's CROWN: intermediate bounds in passes of a few rows (as on a big conv
    net); past the deadline no further pass starts."""
    g = random_mlp(5, (6, 32, 32, 32, 2), scale=2.0).to(dtype=torch.float64)
    p = VerificationProblem(g, LpBall(torch.zeros(1, 6, dtype=torch.float64), 1.0),
                            OutputSpec.conjunction(torch.tensor([[[1.0, -1.0]]],
                                                                dtype=torch.float64)))
    calls = expire_on_call(monkeypatch, fake, crown, "backward_bounds", n)
    with pytest.raises(DeadlineExceededError):
        nb.compute_bounds(p, method, CrownConfig(chunk_rows=4), deadline=Deadline(FAR))
    assert calls["all"] == n and calls["after"] == 0


def test_crown_passes_grow_and_shrink_with_their_duration(monkeypatch, fake):
    """Passes start small, double while quick, halve when slow (fake time per pass)."""
    g = random_mlp(5, (6, 256, 2), scale=2.0).to(dtype=torch.float64)
    p = VerificationProblem(g, LpBall(torch.zeros(1, 6, dtype=torch.float64), 1.0),
                            OutputSpec.conjunction(torch.tensor([[[1.0, -1.0]]],
                                                                dtype=torch.float64)))
    sizes = []
    orig = crown.backward_bounds

    def timed(graph, s, C, *args, **kwargs):
        sizes.append(C.shape[0])
        fake.t += 0.01 if len(sizes) < 3 else 1.0  # two quick passes, then slow ones
        return orig(graph, s, C, *args, **kwargs)

    monkeypatch.setattr(crown, "backward_bounds", timed)
    ref = nb.compute_bounds(p, "crown", CrownConfig(intersect_ibp=False, unstable_only=False))
    assert sizes[:4] == [16, 32, 64, 32]
    monkeypatch.setattr(crown, "backward_bounds", orig)
    whole = nb.compute_bounds(p, "crown", CrownConfig(intersect_ibp=False, unstable_only=False,
                                                      chunk_rows=10_000))
    assert torch.allclose(ref.lower, whole.lower, atol=1e-9)


# -- branch and bound ----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["relu", "sigmoid"])
@pytest.mark.parametrize("n", [1, 2, 7, 25, 120])
def test_input_bab_stops_at_the_next_check(monkeypatch, fake, n, kind):
    """Input splitting on the engine — intermediate passes, rows, alpha steps, PGD: no
    backward pass starts after the deadline (ReLU chain and a Sigmoid MLP)."""
    g, net, lo, hi, spec = _hard()
    if kind == "sigmoid":
        g, net, lo, hi, spec = _sigmoid_hard()
    calls = expire_on_call(monkeypatch, fake, crown, "_backward", n)
    out = bab.input_bab(g, Box(lo, hi), spec, bab.BaBConfig(), Deadline(FAR), _no_check)
    assert out.status == "timeout"
    assert calls["after"] == 0


def _sigmoid_hard():
    """A Sigmoid MLP on [-1, 1]^6 and a threshold just below the sampled minimum."""
    from nncert.models.zoo import mlp

    g = mlp(5, "sigmoid").to(dtype=torch.float64)
    lo, hi = -torch.ones(1, 6, dtype=torch.float64), torch.ones(1, 6, dtype=torch.float64)
    y = g(torch.rand(20000, 6, dtype=torch.float64) * 2 - 1)
    t = float((y[:, 0] - y[:, 1]).min()) - 1e-6
    spec = OutputSpec.conjunction(torch.tensor([[[1.0, -1.0, 0.0]]], dtype=torch.float64),
                                  torch.tensor([-t], dtype=torch.float64))
    return g, g, lo, hi, spec


@pytest.mark.parametrize("heuristic", ["fsb", "babsr"])
@pytest.mark.parametrize("n", [1, 4, 30, 120])
def test_relu_bab_stops_at_the_next_check(monkeypatch, fake, heuristic, n):
    """ReLU BaB on the engine — branching scores, FSB, children's refinement, alpha/beta and
    their float64 evaluation: no backward pass of any of them starts after the deadline."""
    from nncert.complete import relu_split
    from nncert.specs import Box, VerificationProblem

    g, net, lo, hi, spec = _hard()
    p = VerificationProblem(g, Box(lo, hi), spec)
    cfg = bab.BaBConfig(heuristic=heuristic, milp_leaf_unstable=0, attack_every=0)
    root = relu_split.root_bounds(p, crown.intermediate_bounds(g, p.input_set), cfg,
                                  Deadline(FAR))
    calls = expire_on_call(monkeypatch, fake, crown, "_backward", n)
    out = relu_split.relu_bab(p, root, cfg, Deadline(FAR), _no_check)
    assert out.status == "timeout"
    assert calls["after"] == 0


# -- MILP ----------------------------------------------------------------------------------------
def test_milp_with_an_expired_deadline_builds_nothing(monkeypatch, fake):
    from nncert.complete import milp_graph

    g, net, lo, hi, spec = _hard(widths=(2, 8, 8, 2))
    monkeypatch.setattr(milp_graph, "encode", lambda *a, **k: pytest.fail("built a model"))
    fake.t = 10.0
    out = milp_graph.milp_decide(g, lo, hi, spec, crown.intermediate_bounds(g, Box(lo, hi)),
                                 Deadline(5.0))
    assert out.status == "timeout"


@pytest.fixture
def recording_highs(monkeypatch):
    """highspy.Highs recording its options and runs; ``on_row`` is called at every addRow."""
    highspy = pytest.importorskip("highspy")
    log = {"options": {}, "runs": 0, "rows": 0, "on_row": None}

    class Recording(highspy.Highs):
        def setOptionValue(self, key, value):  # noqa: N802 - highspy's name
            log["options"][key] = value
            return super().setOptionValue(key, value)

        def addRow(self, *args):  # noqa: N802 - highspy's name
            log["rows"] += 1
            if log["on_row"] is not None:
                log["on_row"](log["rows"])
            return super().addRow(*args)

        def run(self):
            log["runs"] += 1
            return super().run()

    monkeypatch.setattr(highspy, "Highs", Recording)
    return log


def test_milp_time_limit_is_the_time_remaining(fake, recording_highs):
    from nncert.complete import milp_graph

    g, net, lo, hi, spec = _hard(widths=(2, 8, 8, 2))
    fake.t = 100.0
    out = milp_graph.milp_decide(g, lo, hi, spec, crown.intermediate_bounds(g, Box(lo, hi)),
                                 Deadline(107.5))
    assert out.status in ("verified", "candidate")
    assert recording_highs["options"]["time_limit"] == pytest.approx(7.5)


# -- verify(), end to end ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def wide_problem():
    """ReLU splitting (40 inputs) on a property that the attack cannot break and the root
    bounds cannot prove: the threshold lies half way from the root alpha-CROWN bound of
    the margin's minimum to the attack's best margin (calibrated on the real clock, without
    any timing assertion; at 5% ReLU BaB on the engine proves it in one step)."""
    g = random_mlp(3, (40, 64, 64, 64, 2), scale=2.0)
    box = Box(-torch.ones(1, 40), torch.ones(1, 40))
    C = torch.tensor([[[1.0, -1.0]]])
    p0 = VerificationProblem(g, box, OutputSpec.conjunction(C, torch.tensor([0.0])))
    _, best = attack(p0, AttackConfig(timeout_s=FAR), fn=g.to(dtype=torch.float64).forward)
    root = verify(p0, VerifyConfig(timeout_s=FAR, attack=None, complete="none")).stats["lower"]
    assert root < best
    t = root + 0.5 * (best - root)
    return VerificationProblem(g, box, OutputSpec.conjunction(C, torch.tensor([-t])))


@pytest.mark.parametrize("attack_on", [False, True])
@pytest.mark.parametrize("reads", [1, 3, 10, 40, 150, 600, 3000])
def test_verify_times_out_right_after_the_deadline(monkeypatch, wide_problem, attack_on, reads):
    """The fake clock advances one second per read and the deadline comes after ``reads``
    reads, in any stage (densifying, attack, root bounds, alpha, BaB). The answer is TIMEOUT
    (never UNKNOWN, nor a verdict from unfinished bounds), and exactly one check finds the
    deadline passed (two with the attack: its own stop, then the next stage's)."""
    fc = FakeClock(tick=1.0)
    monkeypatch.setattr(clock, "now", fc)
    expired = count_expired_checks(monkeypatch)
    cfg = VerifyConfig(timeout_s=FAR, attack=AttackConfig(timeout_s=FAR) if attack_on else None,
                       attack_share=1.0)
    r = verify(wide_problem, cfg, deadline=Deadline(reads + 0.5))
    assert r.verdict is Verdict.TIMEOUT
    late = [v for v in fc.values if v > reads + 0.5]
    assert 1 <= len(expired) <= (2 if attack_on else 1)
    # no loop went on: besides the expired checks, the only reads after the deadline are the
    # unit of work in progress timing itself (two reads) and the Result's timing read
    assert len(late) <= len(expired) + 3
    if reads >= 3000:
        assert "bab-relu" in r.stats["stages"]


def test_verify_accepts_a_float_deadline_on_the_same_clock(monkeypatch, wide_problem):
    fc = FakeClock(tick=1.0)
    monkeypatch.setattr(clock, "now", fc)
    expired = count_expired_checks(monkeypatch)
    r = verify(wide_problem, VerifyConfig(timeout_s=FAR, attack=None), deadline=30.5)
    assert r.verdict is Verdict.TIMEOUT and expired == [30.5]
