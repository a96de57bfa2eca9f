"""Output files: atomic for regular files, written through for links and devices, the user's
umask kept, and a writability check that runs before any computation and writes nothing."""

from __future__ import annotations

import os
import stat
import sys

import pytest

from nncert.errors import ConfigError
from nncert.utils import (
    JsonLines,
    check_writable,
    open_output,
    read_json_lines,
    write_atomic,
)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_new_file_gets_the_umask_mode(tmp_path):
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "a.txt", "x")
        os.umask(0o077)
        write_atomic(tmp_path / "b.txt", "y")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a.txt") == 0o644
    assert _mode(tmp_path / "b.txt") == 0o600
    assert (tmp_path / "a.txt").read_text() == "x"


def test_existing_file_keeps_its_mode_and_no_temp_is_left(tmp_path):
    p = tmp_path / "r.json"
    p.write_text("old")
    os.chmod(p, 0o640)
    write_atomic(p, "new")
    assert p.read_text() == "new" and _mode(p) == 0o640
    assert sorted(os.listdir(tmp_path)) == ["r.json"]


def test_symlink_is_written_through(tmp_path):
    real = tmp_path / "real.txt"
    real.write_text("old")
    link = tmp_path / "link.txt"
    link.symlink_to(real)
    write_atomic(link, "new")
    assert link.is_symlink() and real.read_text() == "new"


def test_dangling_symlink_creates_its_target(tmp_path):
    link = tmp_path / "link.txt"
    link.symlink_to(tmp_path / "target.txt")
    write_atomic(link, "hi")
    assert link.is_symlink() and (tmp_path / "target.txt").read_text() == "hi"


def test_device_is_written_through_not_replaced():
    before = os.stat("/dev/null")
    write_atomic("/dev/null", "discarded")
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and after.st_ino == before.st_ino


def test_fifo_is_written_through(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    r = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        write_atomic(fifo, "through the pipe")
        assert os.read(r, 100) == b"through the pipe"
    finally:
        os.close(r)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_failed_write_keeps_the_old_file(tmp_path):
    p = tmp_path / "r.txt"
    p.write_text("old")
    with pytest.raises(RuntimeError), open_output(p) as f:
        f.write("half")
        raise RuntimeError("boom")
    assert p.read_text() == "old" and sorted(os.listdir(tmp_path)) == ["r.txt"]


def test_missing_parent_folders_are_created_on_write_only(tmp_path):
    p = tmp_path / "a" / "b" / "r.txt"
    assert check_writable(p) == p
    assert not (tmp_path / "a").exists()
    write_atomic(p, "x")
    assert p.read_text() == "x"


@pytest.mark.parametrize("case,needle", [
    ("dir", "is a directory"), ("under-file", "not a directory"), ("under-file-deep", "not a directory"),
    ("empty", "empty"),
])
def test_check_writable_rejects(tmp_path, case, needle):
    (tmp_path / "file").write_text("x")
    path = {"dir": tmp_path, "under-file": tmp_path / "file" / "out.json",
            "under-file-deep": tmp_path / "file" / "a" / "out.json", "empty": ""}[case]
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(ConfigError, match=needle):
        check_writable(path, "--out")
    assert sorted(os.listdir(tmp_path)) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_check_writable_rejects_read_only(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "f.txt").write_text("x")
    os.chmod(ro / "f.txt", 0o444)
    os.chmod(ro, 0o555)
    try:
        with pytest.raises(ConfigError, match="permission"):
            check_writable(ro / "new.txt")
        with pytest.raises(ConfigError, match="permission"):
            check_writable(ro / "f.txt")
    finally:
        os.chmod(ro, 0o755)


def test_check_writable_accepts_devices_and_links(tmp_path):
    check_writable("/dev/null")
    link = tmp_path / "l"
    link.symlink_to(tmp_path / "t")
    check_writable(link)


def test_json_lines_keep_records_and_skip_a_cut_last_line(tmp_path):
    p = tmp_path / "rows.jsonl"
    w = JsonLines(p)
    w.write({"a": 1})
    w.write({"a": 2})
    w.close()
    with open(p, "a") as f:
        f.write('{"a": ')  # a kill in the middle of a record
    assert read_json_lines(p) == [{"a": 1}, {"a": 2}]
    w = JsonLines(p, append=False)
    w.write({"b": 1})
    w.close()
    assert read_json_lines(p) == [{"b": 1}]


def test_one_line_strips_colour_and_newlines():
    from nncert.utils import one_line

    text = "\x1b[31mError(s) in loading:\x1b[0m\n\tMissing key(s): 'a'\n\n  Unexpected: 'b'"
    assert one_line(text) == "Error(s) in loading: Missing key(s): 'a' Unexpected: 'b'"
    assert len(one_line("x" * 1000)) == 400


def test_tune_allocator_applies_on_glibc_and_is_idempotent():
    import platform

    from nncert.utils import tune_allocator

    first, second = tune_allocator(), tune_allocator()
    assert first == second
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert first is True


_PEAK_PROBE = """
import json, numpy
from nncert.utils import peak_memory_mb, reset_peak_memory, resident_memory_mb
out = {"reset": reset_peak_memory(), "rss0": resident_memory_mb()}
block = numpy.ones(64 * 2**20 // 8)  # 64 MiB, fresh pages, touched
out["rss1"], out["during"] = resident_memory_mb(), peak_memory_mb()
del block
out["reset_after"] = reset_peak_memory()
out["after"], out["rss2"] = peak_memory_mb(), resident_memory_mb()
print(json.dumps(out))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-task peak memory: Linux")
def test_peak_memory_sees_an_allocation_and_resets_after_it():
    # In a fresh interpreter: a test worker's allocator settings (tune_allocator keeps freed
    # memory resident) would serve the block from pages already counted.
    import json
    import subprocess

    run = subprocess.run([sys.executable, "-c", _PEAK_PROBE], capture_output=True, text=True,
                         check=True)
    got = json.loads(run.stdout)
    assert got["during"] >= got["rss1"] - 1  # the peak is never below what is resident
    if not got["reset"]:
        pytest.skip("this kernel does not reset the peak (VmHWM) on clear_refs")
    assert got["rss1"] >= got["rss0"] + 60, got
    assert got["during"] >= got["rss0"] + 60
    assert got["reset_after"]
    assert got["after"] <= got["rss2"] + 4 < got["during"] - 50
