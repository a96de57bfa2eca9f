"""VNN-LIB reader and writer (the VNN-COMP 2021–2024 subset of SMT-LIB 2).

A VNN-LIB file describes the **violation region**: the conjunction of its ``assert``\\ s over the
inputs ``X_i`` and outputs ``Y_j``. The instance is ``sat`` when some input satisfies it. Here it
is turned into the nncert form: one ``(Box, OutputSpec)`` pair per distinct input box, where the
spec is the **property** (the negation of the violation restricted to that box). The property
holds for the file iff it holds for every returned pair.

Mapping: the asserts are brought to disjunctive normal form, each disjunct being an input box
and a conjunction of output constraints ``a_i·y ≤ b_i``. A disjunct becomes one clause
``OR_i (a_i·y − b_i > 0)`` of the spec of its box (the negation of ``AND_i a_i·y ≤ b_i``).
Strict comparisons are read as non-strict (VNN-COMP convention).

Supported forms: ``(declare-const X_i Real)``/``Y_i``; asserts of ``<= >= < > =`` (chains
allowed) between numbers, variables and linear terms built with ``+ - * /`` (constant factors
and divisors); ``and``/``or`` nested in any way (output DNF, ACAS prop_6 input disjunctions,
2022+ disjuncts mixing input bounds and output constraints); ``;`` comments; numbers such as
``1e-3``, ``-0.5``, ``.5``; ``(check-sat)``, ``(get-model)``, ``(set-logic ..)`` etc. are ignored.
An input constraint must bound one input; a constraint may not mix inputs and outputs.
"""

from __future__ import annotations

import gzip
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ShapeError, SpecError
from ..models.graph import Graph
from ..tables import excerpt
from .input_sets import Box, InputSet
from .output import OutputSpec
from .problem import VerificationProblem

MAX_DISJUNCTS = 100_000  # guard against DNF blow-up (a product of many disjunctions)

_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_VAR_NAME = re.compile(r"([XY])_(\d+)")
_IGNORED = frozenset({"check-sat", "get-model", "set-logic", "set-info", "set-option", "exit"})
_COMPARISONS = frozenset({"<=", ">=", "<", ">", "="})
_TRUE, _FALSE = ("true",), ("false",)


# ---- s-expressions with line numbers ------------------------------------------------------------
class _Tok:
    __slots__ = ("text", "line")

    def __init__(self, text: str, line: int):
        self.text, self.line = text, line


class _Node:
    __slots__ = ("items", "line")

    def __init__(self, line: int):
        self.items: list[_Tok | _Node] = []
        self.line = line


class _Cmp:
    """A comparison of two plain tokens, ``(op a b)``: the bulk of every VNN-LIB file."""

    __slots__ = ("op", "a", "b", "line")

    def __init__(self, op: str, a: _Tok, b: _Tok, line: int):
        self.op, self.a, self.b, self.line = op, a, b, line


# The shapes that make up nearly every VNN-LIB file are matched whole (the general tokens follow
# them in the alternation): declarations, one-comparison asserts, and plain comparisons.
_OPS = r"(<=|>=|<|>|=)"
_ARG = r"([^\s();]+)"
_SCAN = re.compile(
    rf"\(\s*declare-const\s+{_ARG}\s+{_ARG}\s*\)"
    rf"|\(\s*assert\s*\(\s*{_OPS}\s+{_ARG}\s+{_ARG}\s*\)\s*\)"
    rf"|\(\s*{_OPS}\s+{_ARG}\s+{_ARG}\s*\)"
    r"|([()])|;[^\n]*|([^\s();]+)")
_DECL, _ASSERT, _CMP, _PAREN, _ATOM = 2, 5, 8, 9, 10  # Match.lastindex of each alternative


def _read_commands(text: str, path: str | None) -> list[_Node | tuple]:
    """Top-level commands of ``text``: ``_Node`` s-expressions whose tokens carry 1-based line
    numbers, except that simple top-level declarations and asserts come as tuples of strings and
    lines, ``("declare-const", name, line, sort, line, line)`` and
    ``("assert", op, a, line, b, line, line)``; plain comparisons inside expressions come as
    ``_Cmp``."""
    top: list[_Node | tuple] = []
    stack: list[_Node] = []
    line, pos = 1, 0
    for m in _SCAN.finditer(text):
        start = m.start()
        line += text.count("\n", pos, start)
        pos = start
        kind = m.lastindex
        if kind == _ATOM:
            if not stack:
                raise SpecError(f"unexpected {excerpt(m.group(_ATOM))} outside parentheses", line, path)
            stack[-1].items.append(_Tok(m.group(_ATOM), line))
        elif kind == _PAREN:
            if m.group(_PAREN) == "(":
                stack.append(_Node(line))
                continue
            if not stack:
                raise SpecError("unbalanced ')': no matching '('", line, path)
            node = stack.pop()
            (stack[-1].items if stack else top).append(node)
        elif kind is not None:
            _fast_match(m, kind, line, stack, top)
    if stack:
        raise SpecError("unbalanced '(': this expression is never closed", stack[0].line, path)
    return top


def _fast_match(m: re.Match, kind: int, line: int, stack: list[_Node], top: list) -> None:
    first = kind - 1  # group of the first of the two plain operands
    a, b = m.group(first, first + 1)
    la = lb = line
    if "\n" in m.group(0):
        text, s = m.string, m.start()
        la, lb = (line + text.count("\n", s, m.start(g)) for g in (first, first + 1))
    if not stack:  # the common case: plain strings, no objects
        if kind == _DECL:
            top.append(("declare-const", a, la, b, lb, line))
            return
        if kind == _ASSERT:
            top.append(("assert", m.group(first - 1), a, la, b, lb, line))
            return
    ta, tb = _Tok(a, la), _Tok(b, lb)
    if kind == _DECL:  # misplaced (a malformed file): keep the plain structure for the error
        item = _node(line, _Tok("declare-const", line), ta, tb)
    else:
        item = _Cmp(m.group(first - 1), ta, tb, line)
        if kind == _ASSERT:
            item = _node(line, _Tok("assert", line), item)
        elif not stack:
            item = _node(line, _Tok(item.op, line), ta, tb)
    (stack[-1].items if stack else top).append(item)


def _node(line: int, *items) -> _Node:
    node = _Node(line)
    node.items = list(items)
    return node


# ---- the parsed file ------------------------------------------------------------------------------
@dataclass
class _Var:
    kind: str  # "X" or "Y"
    index: int
    line: int


@dataclass
class _Group:
    """One distinct input box and the violation conjunctions (clauses) that share it."""

    lo: np.ndarray
    hi: np.ndarray
    clauses: list[list[tuple[dict[int, float], float]]]  # rows a·y ≤ b as ({j: a_j}, b)


class _Parser:
    def __init__(self, path: str | None, num_inputs: int | None, num_outputs: int | None):
        self.path = path
        self.sizes = {"X": num_inputs, "Y": num_outputs}
        self.vars: dict[str, _Var] = {}
        self.common: list[tuple] = []  # atoms of asserts that are single conjunctions
        self.disjunctions: list[list[list[tuple]]] = []  # DNFs of the other asserts
        self.empty = False  # some assert is unsatisfiable: the violation region is empty

    def error(self, msg: str, line: int | None) -> SpecError:
        return SpecError(msg, line, self.path)

    # -- commands ----------------------------------------------------------------------------------
    def command(self, node: _Node | tuple) -> None:
        if isinstance(node, tuple):
            if node[0] == "declare-const":
                _, name, ln, sort, ls, _ = node
                self.declare(_Tok(name, ln), _Tok(sort, ls))
                return
            _, op, a, la, b, lb, line = node
            bound = self.simple_bound(op, a, b, line)
            if bound is not None:
                self.common.append(bound)
            else:
                self.assertion(self.dnf(_Cmp(op, _Tok(a, la), _Tok(b, lb), line)))
            return
        head = node.items[0] if node.items else None
        if not isinstance(head, _Tok):
            raise self.error("expected a command such as (assert ...) or (declare-const ...)", node.line)
        if head.text == "declare-const":
            items = node.items
            if len(items) != 3 or not all(isinstance(t, _Tok) for t in items):
                raise self.error("declare-const takes a name and a sort: (declare-const X_0 Real)",
                                 node.line)
            self.declare(items[1], items[2])
        elif head.text == "assert":
            if len(node.items) != 2:
                raise self.error("assert takes exactly one formula", node.line)
            self.assertion(self.dnf(node.items[1]))
        elif head.text not in _IGNORED:
            raise self.error(f"unknown command {excerpt(head.text)}", head.line)

    def simple_bound(self, op: str, a: str, b: str, line: int) -> tuple | None:
        """The input bound of ``(op X_i number)`` or ``(op number X_i)``, else None (fast path)."""
        if op == "=":
            return None
        var = self.vars.get(a)
        if var is not None and var.kind == "X" and _NUMBER.fullmatch(b):
            return ("x", var.index, op[0] == "<", float(b), line)
        var = self.vars.get(b)
        if var is not None and var.kind == "X" and _NUMBER.fullmatch(a):
            return ("x", var.index, op[0] == ">", float(a), line)
        return None

    def declare(self, name: _Tok, sort: _Tok) -> None:
        m = _VAR_NAME.fullmatch(name.text)
        if m is None:
            raise self.error(f"unsupported variable name {excerpt(name.text)} (VNN-LIB uses X_i for inputs "
                             "and Y_i for outputs)", name.line)
        if sort.text != "Real":
            raise self.error(f"variable {name.text} has sort {excerpt(sort.text)}; only Real is supported",
                             sort.line)
        if name.text in self.vars:
            raise self.error(f"variable {name.text} is declared twice (first at line "
                             f"{self.vars[name.text].line})", name.line)
        kind, index = m.group(1), int(m.group(2))
        size = self.sizes[kind]
        if size is not None and index >= size:
            what = "inputs" if kind == "X" else "outputs"
            raise self.error(f"variable {name.text} is beyond the model's {size} {what} (the file "
                             f"declares index {index}, the model has indices 0..{size - 1})", name.line)
        self.vars[name.text] = _Var(kind, index, name.line)

    def assertion(self, dnf: list[list[tuple]]) -> None:
        if not dnf:
            self.empty = True
        elif len(dnf) == 1:
            self.common.extend(dnf[0])
        else:
            self.disjunctions.append(dnf)

    # -- formulas → DNF (a list of conjunctions of atoms) ---------------------------------------------
    def dnf(self, f: _Tok | _Node | _Cmp) -> list[list[tuple]]:
        if isinstance(f, _Cmp):
            bound = self.simple_bound(f.op, f.a.text, f.b.text, f.line)
            if bound is not None:
                return [[bound]]
            return self.atoms_dnf(self.comparison(f.op, [f.a, f.b], f.line))
        if isinstance(f, _Tok):
            if f.text == "true":
                return [[]]
            if f.text == "false":
                return []
            raise self.error(f"expected a formula, got {excerpt(f.text)}", f.line)
        head = f.items[0] if f.items else None
        if not isinstance(head, _Tok):
            raise self.error("expected a formula such as (<= X_0 1.0), (and ...) or (or ...)", f.line)
        if head.text == "or":
            return [c for g in f.items[1:] for c in self.dnf(g)]
        if head.text == "and":
            parts = [self.dnf(g) for g in f.items[1:]]
            if not all(parts):
                return []
            out = [[a for p in parts if len(p) == 1 for a in p[0]]]
            for p in parts:
                if len(p) > 1:
                    out = self.product(out, p, f.line)
            return out
        if head.text in _COMPARISONS:
            if len(f.items) < 3:
                raise self.error(f"{excerpt(head.text)} needs at least two operands", head.line)
            return self.atoms_dnf(self.comparison(head.text, f.items[1:], f.line))
        raise self.error(f"unknown function {excerpt(head.text)} in a formula", head.line)

    def product(self, a: list[list[tuple]], b: list[list[tuple]], line: int) -> list[list[tuple]]:
        if len(a) * len(b) > MAX_DISJUNCTS:
            raise self.error(f"the formula expands to more than {MAX_DISJUNCTS} disjuncts", line)
        return [x + y for x in a for y in b]

    @staticmethod
    def atoms_dnf(atoms: list[tuple]) -> list[list[tuple]]:
        return [] if _FALSE in atoms else [[a for a in atoms if a is not _TRUE]]

    def comparison(self, op: str, operands: list, line: int) -> list[tuple]:
        terms = [self.linear(t) for t in operands]
        atoms = []
        for (lhs, rhs) in zip(terms, terms[1:]):
            if op in ("<=", "<", "="):
                atoms.append(self.atom(_sub(lhs, rhs), line))
            if op in (">=", ">", "="):
                atoms.append(self.atom(_sub(rhs, lhs), line))
        return atoms

    def atom(self, expr: tuple[dict[str, float], float], line: int) -> tuple:
        """``Σ c_v·v + const ≤ 0`` → an input bound ``("x", i, is_upper, value)``, an output row
        ``("y", {j: a_j}, b)`` meaning a·y ≤ b, or a constant _TRUE / _FALSE."""
        coefs = {k: c for k, c in expr[0].items() if c != 0.0}
        const = expr[1]
        if not coefs:
            return _TRUE if const <= 0 else _FALSE
        kinds = {self.vars[k].kind for k in coefs}
        if kinds == {"Y"}:
            return ("y", {self.vars[k].index: c for k, c in coefs.items()}, -const)
        if len(kinds) > 1:
            raise self.error("a constraint mixes inputs and outputs (" + ", ".join(sorted(coefs))
                             + "); not supported", line)
        if len(coefs) > 1:
            raise self.error("a constraint on several inputs (" + ", ".join(sorted(coefs))
                             + ") is not a box bound; not supported", line)
        (name, c), = coefs.items()
        return ("x", self.vars[name].index, c > 0, -const / c, line)

    # -- linear terms: ({variable name: coefficient}, constant) ---------------------------------------
    def linear(self, t: _Tok | _Node | _Cmp) -> tuple[dict[str, float], float]:
        if isinstance(t, _Tok):
            return self.leaf(t)
        if isinstance(t, _Cmp):
            raise self.error(f"a comparison ({t.op!r}) cannot be used as a term", t.line)
        head = t.items[0] if t.items else None
        if not isinstance(head, _Tok) or head.text not in ("+", "-", "*", "/"):
            name = head.text if isinstance(head, _Tok) else "(...)"
            raise self.error(f"unknown function {excerpt(name)} in a term (supported: + - * /)", t.line)
        args = [self.linear(a) for a in t.items[1:]]
        if not args:
            raise self.error(f"{excerpt(head.text)} needs at least one operand", head.line)
        if head.text == "+":
            out = args[0]
            for a in args[1:]:
                out = _add(out, a, 1.0)
            return out
        if head.text == "-":
            if len(args) == 1:
                return _scale(args[0], -1.0)
            out = args[0]
            for a in args[1:]:
                out = _add(out, a, -1.0)
            return out
        return self.product_term(head, args)

    def product_term(self, head: _Tok, args: list[tuple[dict[str, float], float]]):
        if head.text == "/":
            if any(a[0] for a in args[1:]) or any(a[1] == 0 for a in args[1:]):
                raise self.error("'/' needs constant, non-zero divisors", head.line)
            return _scale(args[0], 1.0 / math.prod(a[1] for a in args[1:]))
        linear = [a for a in args if a[0]]
        if len(linear) > 1:
            raise self.error("nonlinear term: '*' of two variables", head.line)
        factor = math.prod(a[1] for a in args if not a[0])
        return _scale(linear[0], factor) if linear else ({}, factor)

    def leaf(self, t: _Tok) -> tuple[dict[str, float], float]:
        text = t.text
        if text in self.vars:
            return {text: 1.0}, 0.0
        if _NUMBER.fullmatch(text):
            return {}, float(text)
        if text[0] in "+-.0123456789":
            raise self.error(f"bad number {excerpt(text)}", t.line)
        raise self.error(f"undeclared variable {excerpt(text)}", t.line)

    # -- after the last command ------------------------------------------------------------------------
    def check_counts(self) -> tuple[int, int]:
        counts = []
        for kind, what in (("X", "inputs"), ("Y", "outputs")):
            decls = [v for v in self.vars.values() if v.kind == kind]
            n = max((v.index for v in decls), default=-1) + 1
            size = self.sizes[kind]
            if n == 0:
                raise self.error(f"the file declares no {what} ({kind}_0, {kind}_1, ...)", None)
            if size is not None and n != size:
                last = max(decls, key=lambda v: v.index) if decls else None
                where = f"the last is {kind}_{last.index}" if last else "none"
                raise self.error(f"the file declares {n} {what} ({where}) but the model has {size}",
                                 last.line if last else None)
            counts.append(n)
        return counts[0], counts[1]

    def groups(self, n_in: int) -> list[_Group]:
        if self.empty:
            return []
        base_lo, base_hi = [-math.inf] * n_in, [math.inf] * n_in
        common_rows = self.apply(self.common, base_lo, base_hi)
        self.check_not_inverted(self.common, np.array(base_lo), np.array(base_hi))
        disjuncts: list[list[tuple]] = [[]]
        for d in self.disjunctions:
            disjuncts = self.product(disjuncts, d, None)
        groups: dict[tuple[bytes, bytes], _Group] = {}
        first_empty = None
        for conj in disjuncts:
            lo, hi = list(base_lo), list(base_hi)
            rows = common_rows + self.apply(conj, lo, hi)
            lo_a, hi_a = np.array(lo), np.array(hi)
            if (lo_a > hi_a).any():
                # one combination of disjuncts with no input: skipped while others remain
                first_empty = first_empty or (self.common + conj, lo_a, hi_a)
                continue
            self.check_bounded(lo_a, hi_a)
            key = (lo_a.tobytes(), hi_a.tobytes())
            if key not in groups:
                groups[key] = _Group(lo_a, hi_a, [])
            groups[key].clauses.append(rows)
        if not groups and first_empty is not None:
            self.check_not_inverted(*first_empty)
        return list(groups.values())

    @staticmethod
    def apply(atoms: list[tuple], lo: list[float], hi: list[float]) -> list[tuple]:
        """Tighten lo/hi with the input bounds among ``atoms``; return the output rows."""
        rows = []
        for a in atoms:
            if a[0] == "x":
                _, i, upper, v, _ = a
                if upper:
                    hi[i] = min(hi[i], v)
                else:
                    lo[i] = max(lo[i], v)
            else:
                rows.append((a[1], a[2]))
        return rows

    def check_not_inverted(self, atoms: list[tuple], lo: np.ndarray, hi: np.ndarray) -> None:
        """An input box with lower > upper is a malformed file, not an empty (unsat) property."""
        bad = np.flatnonzero(lo > hi)
        if not bad.size:
            return
        i = int(bad[0])
        lines = sorted({a[4] for a in atoms if a[0] == "x" and a[1] == i})
        where = ", ".join(str(n) for n in lines)
        raise self.error(f"input X_{i} has lower bound {lo[i]:g} above its upper bound {hi[i]:g} "
                         f"(bounds on lines {where}): an inverted input box", lines[-1] if lines else None)

    def check_bounded(self, lo: np.ndarray, hi: np.ndarray) -> None:
        bad = np.flatnonzero(~np.isfinite(lo) | ~np.isfinite(hi))
        if bad.size:
            i = int(bad[0])
            side = "lower" if not np.isfinite(lo[i]) else "upper"
            var = self.vars.get(f"X_{i}")
            raise self.error(f"input X_{i} has no finite {side} bound"
                             + ("" if var else " (it is never declared)"), var.line if var else None)


def _sub(a, b):
    return _add(a, b, -1.0)


def _add(a, b, sign: float):
    coefs = dict(a[0])
    for k, c in b[0].items():
        coefs[k] = coefs.get(k, 0.0) + sign * c
    return coefs, a[1] + sign * b[1]


def _scale(a, factor: float):
    return {k: c * factor for k, c in a[0].items()}, a[1] * factor


# ---- public API ------------------------------------------------------------------------------------
def _read_text(source: str | Path) -> tuple[str, str | None]:
    if isinstance(source, str) and "(" in source:
        return source, None
    path = Path(source)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise SpecError(f"cannot read VNN-LIB file: {e.strerror or e}", path=str(path)) from e
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    try:
        return raw.decode("utf-8"), str(path)
    except UnicodeDecodeError as e:
        raise SpecError(f"not a text file (byte {e.start} is not UTF-8)", path=str(path)) from e


def parse_vnnlib(
    text_or_path: str | Path,
    num_inputs: int | None = None,
    num_outputs: int | None = None,
    *,
    input_shape: tuple[int, ...] | None = None,
    dtype: torch.dtype = torch.float64,
) -> list[tuple[Box, OutputSpec]]:
    """Parse VNN-LIB text (a string containing '(') or a file (a Path or a path string; ``.gz``
    allowed) into ``[(Box, OutputSpec), ...]``, one pair per distinct input box.

    The property holds iff every pair's spec holds on its box; an empty list means the violation
    region is empty (nothing to prove). Boxes are batch 1, shaped ``(1, *input_shape)`` (flat
    ``(1, n)`` without it; ``X_i`` is the i-th row-major element). With ``num_inputs`` /
    ``num_outputs`` the declared variables must match these sizes exactly. Raises SpecError with
    the 1-based line of the offending token.
    """
    text, path = _read_text(text_or_path)
    parser = _Parser(path, num_inputs, num_outputs)
    for node in _read_commands(text, path):
        parser.command(node)
    n_in, n_out = parser.check_counts()
    shape = (n_in,) if input_shape is None else tuple(int(s) for s in input_shape)
    if math.prod(shape) != n_in:
        raise ShapeError("VNN-LIB inputs vs input shape", (n_in,), (math.prod(shape),))
    return [_to_pair(g, shape, n_out, dtype) for g in parser.groups(n_in)]


def _to_pair(g: _Group, shape, n_out: int, dtype) -> tuple[Box, OutputSpec]:
    box = Box(torch.tensor(g.lo, dtype=dtype).reshape(1, *shape),
              torch.tensor(g.hi, dtype=dtype).reshape(1, *shape))
    # a disjunct without output constraints is violated whenever x is in the box: its clause is
    # the always-false row 0·y + 0 > 0
    raw = [clause or [({}, 0.0)] for clause in g.clauses]
    rows = [r for clause in raw for r in clause]
    C = np.zeros((1, len(rows), n_out))
    d = np.zeros((1, len(rows)))
    for r, (coefs, b) in enumerate(rows):
        for j, a in coefs.items():
            C[0, r, j] = a
        d[0, r] = -b  # violation a·y ≤ b  ⇔  property a·y − b > 0
    C, d = torch.tensor(C, dtype=dtype), torch.tensor(d, dtype=dtype)
    clauses, start = [], 0
    for clause in raw:
        clauses.append(tuple(range(start, start + len(clause))))
        start += len(clause)
    return box, OutputSpec(C, d, tuple(clauses))


def _round(t: torch.Tensor, dtype: torch.dtype, up: bool) -> torch.Tensor:
    """``t`` (float64) in ``dtype``, rounded outward (towards +inf when ``up``)."""
    out = t.to(dtype)
    if dtype == torch.float64 or not out.is_floating_point():
        return out
    back = out.double()
    wrong = back < t if up else back > t
    away = torch.full_like(out, math.inf if up else -math.inf)
    return torch.where(wrong, torch.nextafter(out, away), out)


def load_vnnlib(path: str | Path, graph: Graph) -> list[VerificationProblem]:
    """VNN-LIB file → ``[VerificationProblem, ...]`` for ``graph`` (one per distinct input box).

    The declared X/Y counts must equal ``graph.num_inputs``/``graph.num_outputs``. Boxes take
    the graph's input shape, dtype and device; when the dtype is narrower than float64 the box is
    rounded outward and the spec's offsets downward, so a proof for the stored problem is a proof
    for the file.
    """
    path = Path(path)
    pairs = parse_vnnlib(path, graph.num_inputs, graph.num_outputs, input_shape=graph.input_shape)
    dt, dev = graph.dtype, graph.device
    problems = []
    for k, (box, spec) in enumerate(pairs):
        box = Box(_round(box.lo, dt, False).to(dev), _round(box.hi, dt, True).to(dev))
        spec = OutputSpec(spec.C.to(dt).to(dev), _round(spec.d, dt, False).to(dev), spec.clauses)
        name = path.name if len(pairs) == 1 else f"{path.name}[{k}]"
        problems.append(VerificationProblem(graph, box, spec, name))
    return problems


# ---- writer ----------------------------------------------------------------------------------------
def _num(v: float) -> str:
    return repr(float(v))


def _violation_atom(row: list[float], d: float) -> str:
    """The violation of property row ``row·y + d > 0``, i.e. ``row·y + d ≤ 0``, as VNN-LIB."""
    nz = [(j, c) for j, c in enumerate(row) if c != 0.0]
    if len(nz) == 2 and d == 0.0 and sorted(c for _, c in nz) == [-1.0, 1.0]:
        (p, cp), (q, _) = nz if nz[0][1] == 1.0 else nz[::-1]
        return f"(<= Y_{p} Y_{q})"
    if len(nz) == 1 and nz[0][1] in (1.0, -1.0):
        j, c = nz[0]
        return f"(<= Y_{j} {_num(-d)})" if c == 1.0 else f"(>= Y_{j} {_num(d)})"
    terms = [f"(* {_num(c)} Y_{j})" for j, c in nz]
    lin = "0.0" if not terms else terms[0] if len(terms) == 1 else "(+ " + " ".join(terms) + ")"
    return f"(<= {lin} {_num(-d)})"


def write_vnnlib(box: InputSet, spec: OutputSpec, path: str | Path | None = None) -> str:
    """The VNN-LIB text (violation form) of one box and one property spec, both batch 1; written
    to ``path`` when given. ``parse_vnnlib`` of the result gives back the same box and spec
    (a row with no output coefficient is a constant: it is simplified away, same property)."""
    lo, hi = box.lower, box.upper
    if lo.shape[0] != 1 or spec.batch_size != 1:
        raise ShapeError("write_vnnlib takes batch-1 sets and specs", (1,),
                         (lo.shape[0], spec.batch_size))
    if getattr(box, "p", math.inf) != math.inf:
        raise SpecError("VNN-LIB can only express boxes; got an L2 ball")
    lo, hi = lo.reshape(-1).tolist(), hi.reshape(-1).tolist()
    n_out = spec.num_outputs
    out = ["; written by nncert: the violation region (instance is sat iff it is non-empty)", ""]
    out += [f"(declare-const X_{i} Real)" for i in range(len(lo))] + [""]
    out += [f"(declare-const Y_{j} Real)" for j in range(n_out)] + [""]
    for i, (a, b) in enumerate(zip(lo, hi)):
        out.append(f"(assert (<= X_{i} {_num(b)}))\n(assert (>= X_{i} {_num(a)}))")
    C, d = spec.C[0].tolist(), spec.d[0].tolist()
    out += ["", "(assert (or"]
    for clause in spec.clauses:
        out.append("    (and " + " ".join(_violation_atom(C[i], d[i]) for i in clause) + ")")
    out.append("))")
    text = "\n".join(out) + "\n"
    if path is not None:
        Path(path).write_text(text)
    return text
