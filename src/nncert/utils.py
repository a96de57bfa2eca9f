"""Small utilities shared by library and CLI: progress bars and output files.

Output files promise three things: (1) a regular file is never seen half-written (a temporary
file in the same directory is renamed over it, with the mode ``open(path, "w")`` would give: the
old file's mode, or 0o666 minus the umask for a new one); (2) symlinks, devices and pipes are
written *through* (``--out /dev/stdout`` or a link to a file stays what it was); (3)
:func:`check_writable` says before any computation whether the path can be written at all.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar

from .errors import ConfigError, DataError

T = TypeVar("T")


def progress(items: Iterable[T], total: int | None = None, desc: str = "",
             enabled: bool = True) -> Iterator[T]:
    """A tqdm progress bar on stderr (silent when disabled or when stderr is not a terminal
    and NNCERT_PROGRESS is unset)."""
    from tqdm import tqdm

    show = enabled and (sys.stderr.isatty() or os.environ.get("NNCERT_PROGRESS") == "1")
    return iter(tqdm(items, total=total, desc=desc, file=sys.stderr, disable=not show,
                     dynamic_ncols=True, leave=False))


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def one_line(text: object, limit: int = 400) -> str:
    """``text`` (e.g. a torch or numpy exception) as one line without terminal colour codes:
    fit for a one-line error message."""
    flat = " ".join(_ANSI.sub("", str(text)).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


# -- checking an output path before computing -------------------------------------------------
def _nearest_existing(path: Path) -> Path:
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def check_writable(path: str | os.PathLike, what: str = "output") -> Path:
    """``path`` as a Path if a file can be written there; else a ConfigError naming the path
    and the reason (a directory, under a file, no permission). Writes nothing: missing parent
    folders are created only when the file is written. Call it before any long computation."""
    p = Path(path)
    if str(path) == "":
        raise ConfigError(f"{what}: empty path")
    if os.path.isdir(p):
        raise ConfigError(f"cannot write {what} {p}: it is a directory")
    if os.path.exists(p):  # follows links: a file, a device, a pipe
        if not os.access(p, os.W_OK):
            raise ConfigError(f"cannot write {what} {p}: permission denied")
        return p
    target = Path(os.path.realpath(p))  # a new file, or the target of a dangling link
    base = _nearest_existing(target.parent)
    if not base.is_dir():
        raise ConfigError(f"cannot write {what} {p}: {base} is not a directory")
    if not os.access(base, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write {what} {p}: no permission to create files in {base}")
    return p


# -- writing -----------------------------------------------------------------------------------
def sync(f: IO) -> None:
    """Flush ``f`` and, when it is a regular file, fsync it (pipes and terminals cannot)."""
    f.flush()
    try:
        if stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            os.fsync(f.fileno())
    except (OSError, ValueError):
        pass


def is_special(path: str | os.PathLike) -> bool:
    """Whether ``path`` exists (following links) and is not a regular file: a device, a pipe,
    a socket (``/dev/stdout`` when it is a pipe, whose resolved name does not exist)."""
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _is_stdout(path: Path) -> bool:
    try:
        a, b = os.stat(path), os.fstat(sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def open_through(path: str | os.PathLike, mode: str) -> tuple[IO, bool]:
    """``(file, owned)``: ``open(path, mode)``, or ``sys.stdout`` itself (not owned: do not close)
    when ``path`` is this process's standard output (``/dev/stdout``), so that what is written
    there and what is printed do not overwrite each other."""
    if _is_stdout(Path(path)) and mode.startswith(("w", "a")):
        sys.stdout.flush()
        return (sys.stdout.buffer if "b" in mode else sys.stdout), False
    return open(path, mode), True  # noqa: SIM115 - the caller closes it


def _temp_beside(target: Path) -> tuple[Path, int]:
    """A new file next to ``target``, created with mode 0o666 minus the umask (as ``open``)."""
    for _ in range(100):
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file beside {target}")


@contextmanager
def open_output(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Open ``path`` for writing (``mode`` "w" or "wb"). A regular file (or a new one) is
    replaced atomically when the block ends without error (on an error it keeps its old
    content); a symlink (``/dev/stdout``), device, pipe or other non-regular file is opened
    and written through, as ``open(path, mode)`` would."""
    p = Path(path)
    if p.is_symlink() or is_special(p):
        f, own = open_through(p, mode)
        try:
            yield f
            f.flush()
        finally:
            if own:
                f.close()
        return
    target = Path(os.path.realpath(p))
    target.parent.mkdir(parents=True, exist_ok=True)
    old_mode = stat.S_IMODE(target.stat().st_mode) if target.exists() else None
    try:
        tmp, fd = _temp_beside(target)
    except PermissionError:  # a writable file in a read-only folder: write it in place
        with open(target, mode) as f:
            yield f
        return
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            sync(f)
        if old_mode is not None:
            os.chmod(tmp, old_mode)
        os.replace(tmp, target)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` (see :func:`open_output`): never half-written."""
    with open_output(path, "w") as f:
        f.write(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=2) + "\n")


class JsonLines:
    """A JSON Lines file written record by record (flushed and fsynced), so a killed run keeps
    every record written before. ``append`` keeps an existing file's records."""

    def __init__(self, path: str | os.PathLike, append: bool = False):
        self.path = Path(path)
        Path(os.path.realpath(self.path)).parent.mkdir(parents=True, exist_ok=True)
        self._f, self._own = open_through(self.path, "a" if append else "w")

    def write(self, record: Any) -> None:
        self._f.write(json.dumps(record) + "\n")
        sync(self._f)

    def close(self) -> None:
        if self._own:
            self._f.close()
        else:
            self._f.flush()


def read_json_lines(path: str | os.PathLike) -> list[Any]:
    """The records of a JSON Lines file; a last line cut short by a kill is ignored."""
    records = []
    with open(path) as f:
        lines = f.read().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:
                break
            raise DataError(f"{path}:{i + 1}: not a JSON record ({e.msg})") from None
    return records


def save_png(fig, path: str | os.PathLike) -> None:
    """Write a matplotlib figure to ``path`` as PNG through :func:`open_output` (atomic for
    regular files, written through for links and devices) and close it, also on failure."""
    import matplotlib.pyplot as plt

    try:
        with open_output(path, "wb") as f:
            fig.savefig(f, format="png")
    finally:
        plt.close(fig)


#: glibc's mallopt parameters and the largest mmap threshold it accepts on 64-bit systems
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX = -1, -3, 32 * 2**20


def tune_allocator() -> bool:
    """On glibc (Linux): serve allocations up to 32 MB from the heap and keep up to 1 GB of
    freed memory for reuse (``mallopt`` M_MMAP_THRESHOLD and M_TRIM_THRESHOLD raised). Bound passes free
    and allocate tensors of a few MB thousands of times; by default each one is a fresh
    ``mmap`` whose pages the kernel must fault in and zero, which cost input splitting on
    ACAS Xu about a third of its time (bench/README.md). Memory freed stays with the process
    for its next allocation instead of going back to the system. Returns whether it applied
    (False elsewhere: other allocators are left alone). Idempotent; the CLI calls it once."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)
                    and libc.mallopt(_M_TRIM_THRESHOLD, 2**30))
    except (OSError, AttributeError):  # (not glibc: musl has no mallopt)
        return False


# -- peak memory of one task in a reused worker -----------------------------------------------
def reset_peak_memory() -> bool:
    """Start a new peak-RSS window for this process, so that :func:`peak_memory_mb` measures
    one task in a worker that runs many (Linux ≥ 4.0: ``5`` written to
    ``/proc/self/clear_refs``). Returns True only where the kernel did reset it (the peak
    read back no longer exceeds the resident set; some sandboxed kernels accept the write
    and ignore it); on False the peak covers the process's whole life."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    status = _proc_status_mb()
    if "VmHWM" not in status or "VmRSS" not in status:
        return False
    return status["VmHWM"] <= status["VmRSS"] + 4.0  # (RSS may move between the two reads)


def resident_memory_mb() -> float | None:
    """This process's resident set size now, in MiB (Linux ``VmRSS``); None where unknown."""
    return _proc_status_mb().get("VmRSS")


def _proc_status_mb() -> dict[str, float]:
    """The ``Vm*`` lines of ``/proc/self/status`` in MiB ({} where there is none)."""
    out: dict[str, float] = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Vm"):
                    key, _, rest = line.partition(":")
                    out[key] = int(rest.split()[0]) / 1024
    except (OSError, ValueError, IndexError):
        return {}
    return out


def peak_memory_mb() -> float | None:
    """The peak resident set size of this process in MiB: since the last
    :func:`reset_peak_memory` on Linux (``VmHWM``), else over its life; None if unknown."""
    peak = _proc_status_mb().get("VmHWM")
    if peak is not None:
        return peak
    try:
        import resource
    except ImportError:  # (Windows)
        return None
    scale = 1 if sys.platform == "darwin" else 1024  # macOS reports bytes, Linux kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale / 1024
