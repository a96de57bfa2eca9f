"""VNN-LIB reader/writer: every supported form, the property semantics, round trips, errors."""

from __future__ import annotations

import csv
import gzip
import re
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import BENCHMARKS, requires_shared
from nncert.errors import SpecError
from nncert.models.graph import sequential
from nncert.models.ops import Flatten, Linear
from nncert.specs import Box, OutputSpec
from nncert.specs.vnnlib import load_vnnlib, parse_vnnlib, write_vnnlib


def decls(n_in: int, n_out: int) -> str:
    xs = "\n".join(f"(declare-const X_{i} Real)" for i in range(n_in))
    ys = "\n".join(f"(declare-const Y_{j} Real)" for j in range(n_out))
    return xs + "\n" + ys + "\n"


def bounds(lo, hi) -> str:
    return "".join(f"(assert (>= X_{i} {a}))\n(assert (<= X_{i} {b}))\n"
                   for i, (a, b) in enumerate(zip(lo, hi)))


def violated(spec: OutputSpec, y) -> bool:
    """Whether output ``y`` lies in the violation region of the (batch-1) spec."""
    return not bool(spec.holds(torch.as_tensor([y], dtype=spec.C.dtype))[0])


# ---- forms ---------------------------------------------------------------------------------------
def test_box_and_top_level_output_asserts_form_one_clause():
    text = decls(2, 3) + bounds([0, -1], [1, 1]) + "(assert (>= Y_0 3.5))\n(assert (<= Y_1 Y_2))\n"
    [(box, spec)] = parse_vnnlib(text)
    assert box.lo.tolist() == [[0.0, -1.0]] and box.hi.tolist() == [[1.0, 1.0]]
    assert spec.clauses == ((0, 1),)
    # property: NOT (y0 ≥ 3.5 AND y1 ≤ y2)  ⇔  y0 < 3.5 OR y1 > y2
    assert spec.C[0].tolist() == [[-1.0, 0.0, 0.0], [0.0, 1.0, -1.0]]
    assert spec.d[0].tolist() == [3.5, 0.0]
    assert violated(spec, [4.0, 0.0, 1.0]) and not violated(spec, [3.0, 0.0, 1.0])
    assert not violated(spec, [4.0, 2.0, 1.0])


def test_output_dnf_gives_one_single_row_clause_per_disjunct():
    text = decls(1, 3) + bounds([0], [1]) + """
    (assert (or
        (and (>= Y_0 Y_2))
        (and (>= Y_1 Y_2))
    ))"""
    [(box, spec)] = parse_vnnlib(text)
    assert spec.clauses == ((0,), (1,))
    robust = OutputSpec.robustness([2], 3, dtype=torch.float64)
    torch.testing.assert_close(spec.C, robust.C)
    torch.testing.assert_close(spec.d, robust.d)


def test_input_disjunction_gives_one_box_each():
    text = decls(2, 2) + """
    (assert (or
        (and (<= X_0 1) (>= X_0 0) (<= X_1 1) (>= X_1 0))
        (and (<= X_0 5) (>= X_0 4) (<= X_1 1) (>= X_1 0))))
    (assert (or (and (<= Y_1 Y_0)) (and (<= Y_0 -1))))"""
    pairs = parse_vnnlib(text)
    assert [p[0].lo[0, 0].item() for p in pairs] == [0.0, 4.0]
    for _, spec in pairs:
        assert spec.clauses == ((0,), (1,))
        assert spec.C[0].tolist() == [[-1.0, 1.0], [1.0, 0.0]]
        assert spec.d[0].tolist() == [0.0, 1.0]


def test_mixed_disjuncts_are_grouped_by_box():
    """2022+ form: each disjunct has its own input bounds and output constraints."""
    text = decls(1, 2) + """
    (assert (or
        (and (>= X_0 0) (<= X_0 1) (<= Y_0 Y_1))
        (and (>= X_0 2) (<= X_0 3) (<= Y_1 Y_0) (>= Y_0 7))
        (and (>= X_0 0) (<= X_0 1) (>= Y_0 5))
    ))"""
    (b1, s1), (b2, s2) = parse_vnnlib(text)
    assert (b1.lo.item(), b1.hi.item(), b2.lo.item(), b2.hi.item()) == (0, 1, 2, 3)
    assert s1.clauses == ((0,), (1,))
    assert s2.clauses == ((0, 1),)
    assert violated(s1, [6.0, 0.0]) and not violated(s1, [4.0, 0.0])
    assert violated(s2, [8.0, 1.0]) and not violated(s2, [6.0, 1.0])


def test_top_level_and_and_single_constraint_disjuncts():
    text = decls(2, 3) + """
    (assert (and (<= X_0 1) (>= X_0 0) (and (<= X_1 2) (>= X_1 1))))
    (assert (or (<= Y_0 Y_1) (<= Y_0 Y_2)))"""
    [(box, spec)] = parse_vnnlib(text)
    assert box.lo.tolist() == [[0.0, 1.0]] and box.hi.tolist() == [[1.0, 2.0]]
    assert spec.clauses == ((0,), (1,))
    assert not violated(spec, [3.0, 1.0, 2.0]) and violated(spec, [1.5, 1.0, 2.0])


def test_nested_or_inside_and_is_distributed():
    text = decls(1, 3) + bounds([0], [1]) + \
        "(assert (and (<= Y_0 0) (or (<= Y_1 0) (<= Y_2 0))))"
    [(_, spec)] = parse_vnnlib(text)
    assert spec.clauses == ((0, 1), (2, 3))
    for y in ([-1, -1, 5], [-1, 5, -1], [1, -1, -1], [-1, 1, 1]):
        expect = y[0] <= 0 and (y[1] <= 0 or y[2] <= 0)
        assert violated(spec, [float(v) for v in y]) == expect


def test_comments_numbers_strict_and_reversed_comparisons():
    text = """; header comment
    (declare-const X_0 Real) ; trailing comment
    (declare-const X_1 Real)
    (declare-const X_2 Real)
    (declare-const Y_0 Real)
    (assert (> X_0 -0.5)) (assert (< X_0 .5))
    (assert (>= 1e-3 X_1)) ; number first: an upper bound
    (assert (<= -1E+2 X_1))
    (assert (and (>= X_2 +2) ; inside an expression
                 (<= X_2 2.5e0)))
    (assert (< Y_0 ; split over lines
               0.25))
    (check-sat)
    """
    [(box, spec)] = parse_vnnlib(text)
    assert box.lo.tolist() == [[-0.5, -100.0, 2.0]]
    assert box.hi.tolist() == [[0.5, 0.001, 2.5]]
    assert spec.C.tolist() == [[[1.0]]] and spec.d.tolist() == [[-0.25]]


def test_linear_terms_equalities_and_chains():
    text = decls(2, 3) + """
    (assert (= X_0 0.5))
    (assert (<= -1 X_1 (/ 3 2)))
    (assert (<= (+ Y_0 (* 2 Y_1) (* Y_2 -3)) (- Y_2 0.5)))
    (assert (>= (- Y_0) (* 0.5 (+ Y_1 1))))
    """
    [(box, spec)] = parse_vnnlib(text)
    assert box.lo.tolist() == [[0.5, -1.0]] and box.hi.tolist() == [[0.5, 1.5]]
    # violation rows: y0 + 2y1 − 4y2 + 0.5 ≤ 0 and 0.5·y1 + y0 + 0.5 ≤ 0
    assert spec.C[0].tolist() == [[1.0, 2.0, -4.0], [1.0, 0.5, 0.0]]
    assert spec.d[0].tolist() == [0.5, 0.5]


def test_empty_input_box_drops_its_disjunct():
    text = decls(1, 1) + """
    (assert (or (and (>= X_0 1) (<= X_0 0) (<= Y_0 0))
                (and (>= X_0 0) (<= X_0 1) (<= Y_0 1))))"""
    [(box, spec)] = parse_vnnlib(text)
    assert box.lo.item() == 0 and spec.d.tolist() == [[-1.0]]


def test_inverted_input_box_is_malformed_not_unsat():
    """lower > upper on an input is a broken file: an error naming the lines, never 'unsat'."""
    with pytest.raises(SpecError, match=r"X_0 has lower bound 1 above its upper bound 0.*lines"):
        parse_vnnlib(decls(1, 1) + "(assert (>= X_0 1))\n(assert (<= X_0 0))\n(assert (<= Y_0 0))")
    every_disjunct_empty = decls(1, 1) + """
    (assert (or (and (>= X_0 1) (<= X_0 0) (<= Y_0 0))
                (and (>= X_0 3) (<= X_0 2) (<= Y_0 1))))"""
    with pytest.raises(SpecError, match="inverted input box"):
        parse_vnnlib(every_disjunct_empty)


def test_disjunct_without_output_constraint_can_never_hold():
    text = decls(1, 1) + bounds([0], [1])
    [(_, spec)] = parse_vnnlib(text)
    assert spec.clauses == ((0,),) and violated(spec, [123.0])


def test_input_shape_dtype_and_paths(tmp_path: Path):
    text = decls(4, 2) + bounds([0, 0.1, 0.2, 0.3], [1, 1.1, 1.2, 1.3]) + "(assert (<= Y_0 Y_1))"
    f = tmp_path / "p.vnnlib"
    f.write_text(text)
    g = tmp_path / "p.vnnlib.gz"
    g.write_bytes(gzip.compress(text.encode()))
    for source in (f, str(f), g, text):
        [(box, spec)] = parse_vnnlib(source, 4, 2, input_shape=(1, 2, 2), dtype=torch.float32)
        assert box.lo.shape == (1, 1, 2, 2) and box.lo.dtype == torch.float32
        assert box.hi[0, 0, 1, 0].item() == pytest.approx(1.2)
        assert spec.C.dtype == torch.float32


# ---- round trip ----------------------------------------------------------------------------------
@st.composite
def box_and_spec(draw):
    n_in, n_out = draw(st.integers(1, 6)), draw(st.integers(1, 5))
    floats = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
    lo = torch.tensor(draw(st.lists(floats, min_size=n_in, max_size=n_in)), dtype=torch.float64)
    width = torch.tensor(draw(st.lists(st.floats(0, 10), min_size=n_in, max_size=n_in)),
                         dtype=torch.float64)
    sizes = draw(st.lists(st.integers(1, 3), min_size=1, max_size=4))
    coef = st.sampled_from([0.0, 1.0, -1.0, 0.5, -2.25, 3e-7]) | floats
    R = sum(sizes)
    C = torch.tensor(draw(st.lists(st.lists(coef, min_size=n_out, max_size=n_out),
                                   min_size=R, max_size=R)), dtype=torch.float64)
    d = torch.tensor(draw(st.lists(coef, min_size=R, max_size=R)), dtype=torch.float64)
    zero = (C == 0).all(dim=1)  # a row without outputs is a constant; the parser simplifies it
    C[zero, 0] = 1.0
    starts = [sum(sizes[:k]) for k in range(len(sizes))]
    clauses = tuple(tuple(range(s, s + n)) for s, n in zip(starts, sizes))
    return Box(lo[None], (lo + width)[None]), OutputSpec(C[None], d[None], clauses)


@settings(max_examples=60, deadline=None)
@given(box_and_spec())
def test_round_trip(pair):
    box, spec = pair
    [(box2, spec2)] = parse_vnnlib(write_vnnlib(box, spec))
    assert torch.equal(box2.lo, box.lo) and torch.equal(box2.hi, box.hi)
    assert spec2.clauses == spec.clauses
    assert torch.equal(spec2.C, spec.C) and torch.equal(spec2.d, spec.d)


def test_round_trip_of_shared_style_files(tmp_path: Path):
    text = decls(3, 3) + bounds([0, 0, 0], [1, 1, 1]) + \
        "(assert (or (and (<= Y_2 Y_0) (<= Y_2 Y_1)) (and (>= Y_0 3.25))))"
    [(box, spec)] = parse_vnnlib(text)
    out = tmp_path / "w.vnnlib"
    written = write_vnnlib(box, spec, out)
    assert out.read_text() == written and "(<= Y_2 Y_0)" in written and "(>= Y_0 3.25)" in written
    [(box2, spec2)] = parse_vnnlib(out)
    assert torch.equal(spec2.C, spec.C) and torch.equal(spec2.d, spec.d)


# ---- errors --------------------------------------------------------------------------------------
@pytest.mark.parametrize("body, line, message", [
    ("(assert (<= X_0 1)))\n", 4, "unbalanced ')'"),
    ("(assert (<= X_0 1)\n(assert (>= X_0 0))\n", 4, "never closed"),
    ("(assert (<= (exp X_0) 1))\n", 4, "unknown function 'exp'"),
    ("\n(assert (xor (<= X_0 1)))\n", 5, "unknown function 'xor'"),
    ("(assert (<= X_0 1))\n(assert (>= X_7 0))\n", 5, "undeclared variable 'X_7'"),
    ("(assert (<= X_0 1.2.3))\n", 4, "bad number '1.2.3'"),
    ("(assert (<= X_0 1))\n(assert (>= X_0 0))\n(assert (<= X_0\n nan))\n", 7, "undeclared variable 'nan'"),
    ("(assert (<= X_0 1))\n", 1, "X_0 has no finite lower bound"),
    ("(foo)\n", 4, "unknown command 'foo'"),
    ("(assert (<= X_0 Y_0))\n", 4, "mixes inputs and outputs"),
    ("(assert (<= (* Y_0 Y_1) 0))\n", 4, "nonlinear"),
    ("(declare-const X_0 Real)\n", 4, "declared twice"),
    ("(declare-const Z_0 Real)\n", 4, "unsupported variable name 'Z_0'"),
    ("(declare-const X_9 Int)\n", 4, "only Real"),
    ("X_0\n", 4, "outside parentheses"),
    ("(assert (<= X_0))\n", 4, "at least two operands"),
])
def test_malformed_files_name_the_line(tmp_path: Path, body: str, line: int, message: str):
    text = "(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n" + body
    f = tmp_path / "bad.vnnlib"
    f.write_text(text)
    with pytest.raises(SpecError, match=re.escape(message)) as e:
        parse_vnnlib(f)
    assert e.value.line == line
    assert e.value.path == str(f)
    assert str(e.value).startswith(f"{f}:{line}:")


def test_constraint_on_two_inputs_is_rejected():
    with pytest.raises(SpecError, match="several inputs"):
        parse_vnnlib(decls(2, 1) + "(assert (<= X_0 X_1))")


def test_variable_beyond_model_size_names_variable_line_and_sizes():
    text = decls(3, 2) + bounds([0] * 3, [1] * 3) + "(assert (<= Y_0 Y_1))"
    with pytest.raises(SpecError) as e:
        parse_vnnlib(text, num_inputs=2, num_outputs=2)
    assert e.value.line == 3 and "X_2" in str(e.value) and "2 inputs" in str(e.value)
    with pytest.raises(SpecError) as e:
        parse_vnnlib(text, num_inputs=3, num_outputs=1)
    assert e.value.line == 5 and "Y_1" in str(e.value) and "1 outputs" in str(e.value)


def test_fewer_declared_variables_than_the_model_is_an_error():
    text = decls(2, 2) + bounds([0] * 2, [1] * 2) + "(assert (<= Y_0 Y_1))"
    with pytest.raises(SpecError, match=r"declares 2 inputs .*X_1.* model has 3") as e:
        parse_vnnlib(text, num_inputs=3, num_outputs=2)
    assert e.value.line == 2
    with pytest.raises(SpecError, match=r"declares 2 outputs .*model has 10"):
        parse_vnnlib(text, num_inputs=2, num_outputs=10)


def test_file_without_inputs_or_outputs_is_an_error():
    with pytest.raises(SpecError, match="declares no inputs"):
        parse_vnnlib("; nothing here\n(check-sat)")
    with pytest.raises(SpecError, match="declares no outputs"):
        parse_vnnlib("(declare-const X_0 Real)(assert (<= X_0 1))(assert (>= X_0 0))")


def test_comparison_used_as_a_term_is_an_error():
    with pytest.raises(SpecError, match="cannot be used as a term") as e:
        parse_vnnlib(decls(1, 1) + "\n(assert (<= (+ (<= Y_0 1) 1) 0))")
    assert e.value.line == 4


def test_missing_file_is_a_spec_error(tmp_path: Path):
    with pytest.raises(SpecError, match="cannot read"):
        parse_vnnlib(tmp_path / "nope.vnnlib")


# ---- load_vnnlib -----------------------------------------------------------------------------------
def tiny_graph(dtype=torch.float32):
    w = torch.arange(12, dtype=dtype).reshape(3, 4) / 10
    return sequential([Flatten(), Linear(w, torch.zeros(3, dtype=dtype))], (1, 2, 2))


def test_load_vnnlib_builds_problems_and_rounds_outward(tmp_path: Path):
    f = tmp_path / "q.vnnlib"
    f.write_text(decls(4, 3) + bounds([0.1] * 4, [0.3] * 4)
                 + "(assert (or (and (>= X_0 0.1) (<= Y_0 0.1)) (and (>= X_0 0.2) (<= Y_1 Y_2))))")
    probs = load_vnnlib(f, tiny_graph())
    assert [p.name for p in probs] == ["q.vnnlib[0]", "q.vnnlib[1]"]
    p = probs[0]
    assert p.input_set.lower.shape == (1, 1, 2, 2) and p.input_set.lower.dtype == torch.float32
    assert p.input_set.lower[0, 0, 0, 0].double() <= 0.1 <= p.input_set.upper[0, 0, 0, 0].double()
    assert p.input_set.upper[0, 0, 0, 0].double() >= 0.3
    assert p.output_spec.d.dtype == torch.float32 and p.output_spec.d[0, 0].double() <= -0.1


def test_load_vnnlib_size_mismatch_is_a_spec_error(tmp_path: Path):
    f = tmp_path / "big.vnnlib"
    f.write_text(decls(5, 3) + bounds([0] * 5, [1] * 5) + "(assert (<= Y_0 Y_1))")
    with pytest.raises(SpecError, match="X_4.*4 inputs"):
        load_vnnlib(f, tiny_graph())
    f.write_text(decls(4, 3) + bounds([0] * 4, [1] * 4) + "(assert (<= Y_0 Y_5))")
    with pytest.raises(SpecError, match="undeclared variable 'Y_5'"):
        load_vnnlib(f, tiny_graph())


# ---- the shared benchmark files ------------------------------------------------------------------
SIZES = {"acasxu": (5, 5), "mnistfc": (784, 10)}


def shared_files():
    if not BENCHMARKS.is_dir():
        return []
    out = []
    for bench in SIZES:
        with open(BENCHMARKS / bench / "instances.csv") as fh:
            names = sorted({row[1] for row in csv.reader(fh) if row})
        out += [(bench, BENCHMARKS / bench / n) for n in names]
    return out


@requires_shared
def test_every_shared_vnnlib_parses():
    files = shared_files()
    assert len(files) == 10 + 30
    for bench, path in files:
        n_in, n_out = SIZES[bench]
        pairs = parse_vnnlib(path, n_in, n_out)
        assert pairs, path
        for box, spec in pairs:
            assert box.lo.shape == (1, n_in) and spec.num_outputs == n_out


@requires_shared
def test_shared_acasxu_structures():
    vnn = BENCHMARKS / "acasxu" / "vnnlib"
    p6 = parse_vnnlib(vnn / "prop_6.vnnlib", 5, 5)
    assert len(p6) == 2 and all(s.clauses == ((0,), (1,), (2,), (3,)) for _, s in p6)
    assert p6[0][0].lo[0, 1] > 0 > p6[1][0].hi[0, 1]  # the two X_1 ranges of property 6
    [(_, s7)] = parse_vnnlib(vnn / "prop_7.vnnlib", 5, 5)
    assert s7.clauses == ((0, 1, 2), (3, 4, 5))
    [(b1, s1)] = parse_vnnlib(vnn / "prop_1.vnnlib", 5, 5)
    assert b1.lo[0, 0].item() == 0.6 and b1.hi[0, 4].item() == -0.45
    assert s1.C.tolist() == [[[-1.0, 0, 0, 0, 0]]] and s1.d.item() == pytest.approx(3.991125645861615)


@requires_shared
def test_shared_mnistfc_is_robustness_at_the_commented_label():
    for path in sorted((BENCHMARKS / "mnistfc" / "vnnlib").glob("*.vnnlib")):
        label = int(re.search(r"label: (\d+)", path.read_text()).group(1))
        eps = float(path.stem.split("_")[-1])
        [(box, spec)] = parse_vnnlib(path, 784, 10, input_shape=(1, 28, 28))
        robust = OutputSpec.robustness([label], 10, dtype=torch.float64)
        assert spec.clauses == robust.clauses and len(spec.clauses) == 9
        assert torch.equal(spec.C, robust.C) and torch.equal(spec.d, robust.d)
        assert box.lo.min() >= 0 and box.hi.max() <= 1
        assert float((box.hi - box.lo).max()) <= 2 * eps + 1e-6
