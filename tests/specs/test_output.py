"""OutputSpec: margin / holds / proved / disproved against a direct reading of
AND over clauses of OR over rows (C_i·y + d_i > 0), and the constructors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nncert.errors import ShapeError, SpecError
from nncert.specs import OutputSpec


@st.composite
def spec_case(draw):
    n_out, B = draw(st.integers(1, 5)), draw(st.integers(1, 3))
    sizes = draw(st.lists(st.integers(1, 3), min_size=1, max_size=4))
    R = sum(sizes)
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    C = torch.randn(B, R, n_out, generator=g, dtype=torch.float64)
    d = torch.randn(B, R, generator=g, dtype=torch.float64)
    perm = torch.randperm(R, generator=g).tolist()  # rows of a clause need not be contiguous
    starts = [sum(sizes[:k]) for k in range(len(sizes))]
    clauses = tuple(tuple(perm[s:s + n]) for s, n in zip(starts, sizes))
    y = torch.randn(draw(st.integers(1, 4)), B, n_out, generator=g, dtype=torch.float64)
    return OutputSpec(C, d, clauses), y, g


def holds_directly(spec: OutputSpec, y: torch.Tensor, b: int) -> bool:
    vals = [float(spec.C[b, i] @ y + spec.d[b, i]) for i in range(spec.num_rows)]
    return all(any(vals[i] > 0 for i in cl) for cl in spec.clauses)


@settings(max_examples=80, deadline=None)
@given(spec_case())
def test_margin_and_holds_match_the_definition(case):
    spec, y, _ = case
    vals = spec.values(y)
    assert vals.shape == (y.shape[0], spec.batch_size, spec.num_rows)
    margin = spec.margin(y)
    for s in range(y.shape[0]):
        for b in range(spec.batch_size):
            expect = min(max(float(vals[s, b, i]) for i in cl) for cl in spec.clauses)
            assert float(margin[s, b]) == pytest.approx(expect)
            assert bool(spec.holds(y)[s, b]) == holds_directly(spec, y[s, b], b)


@settings(max_examples=80, deadline=None)
@given(spec_case())
def test_proved_and_disproved_are_sound(case):
    """With sound bounds (lower ≤ values ≤ upper at every y in the set), proved ⇒ every y holds
    and disproved ⇒ no y holds."""
    spec, y, g = case
    vals = spec.values(y)
    lower = vals.amin(0) - torch.rand(vals.shape[1:], generator=g, dtype=vals.dtype)
    upper = vals.amax(0) + torch.rand(vals.shape[1:], generator=g, dtype=vals.dtype)
    holds = spec.holds(y)
    proved, disproved = spec.proved(lower), spec.disproved(upper)
    assert bool((~proved | holds.all(0)).all())
    assert bool((~disproved | ~holds.any(0)).all())
    assert not bool((proved & disproved).any())
    # with exact bounds at a single point, proved/disproved decide holds exactly
    assert torch.equal(spec.proved(vals[0]), holds[0])
    assert torch.equal(spec.disproved(vals[0]), ~holds[0])


def test_robustness_rows_and_margin():
    spec = OutputSpec.robustness([2, 0], 3)
    assert spec.clauses == ((0,), (1,))
    assert spec.C[0].tolist() == [[-1.0, 0.0, 1.0], [0.0, -1.0, 1.0]]
    assert spec.C[1].tolist() == [[1.0, -1.0, 0.0], [1.0, 0.0, -1.0]]
    y = torch.tensor([[0.0, 1.0, 3.0], [0.0, 1.0, 3.0]])
    torch.testing.assert_close(spec.margin(y), torch.tensor([2.0, -3.0]))
    assert spec.holds(y).tolist() == [True, False]
    tie = torch.tensor([[3.0, 1.0, 3.0], [3.0, 1.0, 3.0]])
    assert spec.holds(tie).tolist() == [False, False]  # a tie is not robust
    with pytest.raises(SpecError, match="labels"):
        OutputSpec.robustness([3], 3)


@settings(max_examples=50, deadline=None)
@given(st.integers(2, 10), st.data())
def test_robustness_holds_iff_label_is_the_strict_argmax(K, data):
    label = data.draw(st.integers(0, K - 1))
    y = torch.tensor(data.draw(st.lists(st.integers(-3, 3), min_size=K, max_size=K)),
                     dtype=torch.float32)
    spec = OutputSpec.robustness([label], K)
    others = torch.cat([y[:label], y[label + 1:]])
    assert bool(spec.holds(y[None])[0]) == bool((y[label] > others).all())


def test_constructors_and_batch_helpers():
    conj = OutputSpec.conjunction(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0.0, -1.0]))
    assert conj.clauses == ((0,), (1,)) and conj.batch_size == 1
    assert conj.holds(torch.tensor([[1.0, 2.0], [1.0, 0.5]])).tolist() == [True, False]
    ident = OutputSpec.identity(3, batch=2)
    assert ident.C.shape == (2, 3, 3) and ident.d.abs().sum() == 0
    big = conj.expand(4)
    assert big.batch_size == 4 and big[2].batch_size == 1 and big[1:3].batch_size == 2
    rep = OutputSpec.robustness([0, 1], 2).repeat(3)
    assert rep.batch_size == 6 and torch.equal(rep.C[2], rep.C[0])
    assert conj.to(dtype=torch.float64).C.dtype == torch.float64


def test_invalid_specs_are_rejected():
    C, d = torch.zeros(1, 2, 3), torch.zeros(1, 2)
    with pytest.raises(SpecError):
        OutputSpec(C, d, ((0,),))  # row 1 in no clause
    with pytest.raises(SpecError):
        OutputSpec(C, d, ((0, 1), ()))  # empty clause
    with pytest.raises(SpecError):
        OutputSpec(C, d, ((0, 1), (1,)))  # row 1 twice
    with pytest.raises(ShapeError):
        OutputSpec(C, torch.zeros(1, 3), ((0, 1),))
    with pytest.raises(ShapeError):
        OutputSpec(torch.zeros(2, 3), torch.zeros(2), ((0, 1),))
