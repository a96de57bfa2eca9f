"""nncert.tables: one CSV dialect, exact round trips, durable appends, clear errors."""

from __future__ import annotations

import pytest

from nncert.errors import DataError
from nncert.tables import append_row, excerpt, format_row, read_rows, write_rows

TRICKY = ["plain", "a,b", 'say "hi"', " spaced ", "line\nbreak", "semi;colon", "ünï"]


def test_fields_round_trip_exactly(tmp_path):
    p = tmp_path / "t.csv"
    write_rows(p, [TRICKY, ["x", "", "y"]], header=["h1", "h2"])
    rows = read_rows(p)
    assert [r.fields for r in rows] == [("h1", "h2"), tuple(TRICKY), ("x", "", "y")]
    assert [r.line for r in rows] == [1, 2, 4]  # the quoted newline spans two lines
    assert b"\r" not in p.read_bytes()


def test_append_writes_header_once_and_lf_only(tmp_path):
    p = tmp_path / "r.csv"
    append_row(p, ["a,1", "b"], header=["x", "y"])
    append_row(p, ["c", 'd"'], header=["x", "y"])
    assert p.read_text() == 'x,y\n"a,1",b\nc,"d"""\n'
    assert format_row(["a"]) == "a\n"


def test_torn_last_line_dropped_only_on_request(tmp_path):
    p = tmp_path / "r.csv"
    p.write_bytes(b"x,y\r\n1,2\r\n3,")
    assert [r.fields for r in read_rows(p, drop_torn=True)] == [("x", "y"), ("1", "2")]
    assert [r.fields for r in read_rows(p)][-1] == ("3", "")


def test_bom_and_blank_lines(tmp_path):
    p = tmp_path / "r.csv"
    p.write_bytes(b"\xef\xbb\xbfa,b\n\n ,\nc,d\n")
    assert [(r.line, r.fields) for r in read_rows(p)] == [(1, ("a", "b")), (4, ("c", "d"))]


@pytest.mark.parametrize("data,needle", [
    (b"a,b\n\x00\x01\x02", "binary file"),
    (b"a,b\n\xff\xfe\xfa", "not UTF-8"),
])
def test_binary_and_non_utf8_name_the_file(tmp_path, data, needle):
    p = tmp_path / "instances.csv"
    p.write_bytes(data)
    with pytest.raises(DataError, match=needle) as e:
        read_rows(p, "instances file")
    assert str(p) in str(e.value) and "\\x" not in str(e.value)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        read_rows(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="is a folder"):
        read_rows(tmp_path)


def test_excerpt_is_short_and_printable():
    e = excerpt("root:x:0:0:\x1b[31m" + "y" * 100, 20)
    assert len(e) <= 25 and "\x1b" not in e and e.endswith("...'")
