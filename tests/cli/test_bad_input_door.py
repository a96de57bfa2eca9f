"""Bad config files and --threads values through the real CLI: one line, exit 2, nothing written."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from badinput import assert_clean_error, files_under, run_nncert  # noqa: E402

CASES = [
    ("[verify]\nout = 'r.json'\nbogus = 1\n", ["verify", "--config", "{f}"], "unknown key 'bogus'"),
    ("[verify\n", ["--config", "{f}", "verify"], "not valid TOML"),
    ("[verify]\neps = 'x'\n", ["verify", "--config", "{f}"], "[verify] eps"),
    ("", ["--threads", "-2", "verify"], "--threads: must be ≥ 0"),
    ("", ["verify", "--threads", "many"], "--threads: expected an integer"),
    ("", ["config", "show", "nope"], "unknown command 'nope'"),
]


@pytest.mark.parametrize("text, argv, needle", CASES, ids=[c[2] for c in CASES])
def test_bad_config_and_threads_are_one_line(tmp_path, text, argv, needle):
    conf = tmp_path / "run.toml"
    conf.write_text(text)
    before = files_under(tmp_path)
    run = run_nncert(*[a.replace("{f}", str(conf)) for a in argv], cwd=tmp_path)
    assert_clean_error(run, needle)
    assert files_under(tmp_path) == before
