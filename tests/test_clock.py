"""nncert.clock: Deadline arithmetic and checks on a fake clock (no wall-clock assertion)."""

from __future__ import annotations

import math

import pytest

from nncert import clock
from nncert.clock import NEVER, Deadline, DeadlineExceededError


class FakeClock:
    """A replacement for ``clock.now``: time ``t`` moves only when the test says so (or by
    ``tick`` at every read); ``reads`` counts the reads."""

    def __init__(self, t: float = 100.0, tick: float = 0.0):
        self.t, self.tick, self.reads = t, tick, 0

    def __call__(self) -> float:
        self.reads += 1
        self.t += self.tick
        return self.t


@pytest.fixture
def fake(monkeypatch) -> FakeClock:
    fc = FakeClock()
    monkeypatch.setattr(clock, "now", fc)
    return fc


def test_deadline_after_remaining_expired(fake):
    d = Deadline.after(5.0)
    assert d.at == 105.0 and d.remaining() == 5.0 and not d.expired()
    d.check()
    fake.t = 104.999
    assert not d.expired()
    d.check()
    fake.t = 105.0
    assert d.expired() and d.remaining() == 0.0
    with pytest.raises(DeadlineExceededError):
        d.check()


def test_within_is_the_earlier_deadline(fake):
    d = Deadline.after(10.0)
    assert d.within(3.0).at == 103.0
    assert d.within(30.0).at == 110.0
    fake.t = 108.0
    assert d.within(1.0).at == 109.0 and d.within(5.0) == d
    assert NEVER.within(2.0).at == 110.0


def test_never_does_not_expire_nor_read_the_clock(fake):
    fake.t = 1e300
    before = fake.reads
    for _ in range(10):
        NEVER.check()
    assert fake.reads == before
    assert NEVER.at == math.inf and not NEVER.expired()


def test_one_check_reads_the_clock_once(fake):
    d = Deadline.after(1.0)
    before = fake.reads
    d.check()
    assert fake.reads == before + 1


def test_the_clock_is_monotonic_seconds():
    """The real clock (no fake): successive reads never go back."""
    a = clock.now()
    b = clock.now()
    assert b >= a


def test_since_process_start_is_a_duration():
    """Seconds since this (test) process started: not negative, finite, never decreasing."""
    a = clock.since_process_start()
    b = clock.since_process_start()
    assert 0.0 <= a <= b < math.inf
