"""Benchmark suites as small TOML files: what to run, on what, with which budget.

Two kinds (``kind``):

* ``robustness``: models × data points × ε × methods, one instance each (the SoK protocol:
  uniformly sampled test images, a per-instance timeout, optionally the largest certified
  radius per image by binary search);
* ``vnncomp``: a VNN-COMP instance list (instances.csv) under a root folder.

Relative paths in a suite resolve against the root folder the runner is given (``--root`` /
``--shared``; default: the suite file's own folder). Nothing is copied. Every mistake is a
ConfigError naming the file (and the line, where the TOML parser or a search of the text finds
it): a malformed file, an unknown key, an unknown method, a value of the wrong type.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

#: where the suites shipped with nncert live
PACKAGED = Path(__file__).resolve().parent / "suites"
KINDS = ("robustness", "vnncomp")
#: methods beyond the bound methods of ``nncert.bounds.METHODS``
EXTRA_METHODS = ("complete", "pgd", "smooth")
SAMPLES = ("first", "uniform")
ARCHS = ("mlp", "cnn-small")

_TOP = {"name", "description", "kind", "timeout", "eps", "p", "methods", "data", "models",
        "smooth", "radius", "instances", "root", "threads"}
_DATA = {"source", "count", "sample", "seed"}
_MODEL = {"name", "path", "train", "hidden", "epochs", "data", "count", "seed", "lr", "batch"}
_SMOOTH = {"sigma", "n0", "n", "alpha", "batch"}
_RADIUS = {"hi", "steps"}


@dataclass(frozen=True)
class DataSpec:
    """``count`` points of ``source`` (a dataset path under the root, or ``digits:test``),
    the first ones or a uniform sample drawn with ``seed``."""

    source: str
    count: int | None = None
    sample: str = "first"
    seed: int = 0


@dataclass(frozen=True)
class ModelSpec:
    """A model file under the root (``path``), or one trained here (``train``: an architecture
    of :data:`ARCHS`, naturally trained on ``data``) and cached beside the results."""

    name: str
    path: str | None = None
    train: str | None = None
    hidden: tuple[int, ...] = ()
    epochs: int = 10
    data: str = "digits:train"
    count: int | None = None
    seed: int = 0
    lr: float = 1e-3
    batch: int = 128


@dataclass(frozen=True)
class SmoothSpec:
    sigma: float = 0.25
    n0: int = 100
    n: int = 1000
    alpha: float = 0.001
    batch: int = 1000


@dataclass(frozen=True)
class Suite:
    """One suite. ``timeout``: seconds per instance (a vnncomp suite: None keeps each
    instance's own). ``radius``: (upper end, bisection steps) of the largest-radius search for
    bound methods, or None."""

    name: str
    kind: str
    source: Path
    description: str = ""
    timeout: float | None = 60.0
    threads: int = 1
    eps: tuple[float, ...] = ()
    p: float = math.inf
    methods: tuple[str, ...] = ()
    data: DataSpec | None = None
    models: tuple[ModelSpec, ...] = ()
    smooth: SmoothSpec = field(default_factory=SmoothSpec)
    radius: tuple[float, int] | None = None
    instances: str | None = None
    root: str = "."


# -- reading --------------------------------------------------------------------------------
def packaged_suites() -> list[Path]:
    """The suite files shipped with nncert, by name."""
    return sorted(PACKAGED.glob("*.toml"))


def find_suite(name_or_path: str) -> Path:
    """A suite file: a path to a .toml file, or the name of a packaged suite."""
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        if not p.is_file():
            raise ConfigError(f"suite file {p} not found")
        return p
    for q in packaged_suites():
        if q.stem == name_or_path:
            return q
    names = ", ".join(q.stem for q in packaged_suites())
    raise ConfigError(f"no suite named {name_or_path!r} (packaged suites: {names}; or give a "
                      ".toml file)")


def load_suite(name_or_path: str | Path) -> Suite:
    """Read and check a suite file (see the module docstring for the errors)."""
    path = find_suite(str(name_or_path))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read suite file {path}: {e}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: malformed TOML: {e}") from None
    return _Checker(path, text).suite(raw)


class _Checker:
    """Turns the parsed TOML into a Suite; every error names the file and, when the offending
    token can be found in the text, its line."""

    def __init__(self, path: Path, text: str):
        self.path, self.lines = path, text.splitlines()

    def fail(self, message: str, token: str | None = None) -> ConfigError:
        return ConfigError(f"{self._where(token)}: {message}")

    def _where(self, token: str | None) -> str:
        if token:
            pat = re.compile(r"(^|[^\w-])" + re.escape(token) + r"($|[^\w-])")
            for i, line in enumerate(self.lines, 1):
                if pat.search(line.split("#", 1)[0]):
                    return f"{self.path}:{i}"
        return str(self.path)

    def keys(self, table: dict, allowed: set[str], what: str) -> None:
        for k in table:
            if k not in allowed:
                raise self.fail(f"unknown key {k!r} in {what} (allowed: {', '.join(sorted(allowed))})", k)

    def typed(self, table: dict, key: str, kinds: tuple, what: str, default: Any = None) -> Any:
        v = table.get(key, default)
        if key in table and (not isinstance(v, kinds) or isinstance(v, bool) and bool not in kinds):
            names = "/".join(k.__name__ for k in kinds)
            raise self.fail(f"{what}{key} must be {names}, got {v!r}", key)
        return v

    def positive(self, table: dict, key: str, what: str, default: Any, integer: bool = False):
        v = self.typed(table, key, (int,) if integer else (int, float), what, default)
        if v is not None and not (v > 0 and math.isfinite(v)):
            raise self.fail(f"{what}{key} must be > 0, got {v!r}", key)
        return v

    def suite(self, raw: dict) -> Suite:
        self.keys(raw, _TOP, "the suite")
        name = self.typed(raw, "name", (str,), "", self.path.stem)
        kind = self.typed(raw, "kind", (str,), "", "vnncomp" if "instances" in raw else "robustness")
        if kind not in KINDS:
            raise self.fail(f"unknown kind {kind!r}; choose from {', '.join(KINDS)}", kind)
        common = dict(name=name, kind=kind, source=self.path,
                      description=self.typed(raw, "description", (str,), "", ""),
                      threads=self.positive(raw, "threads", "", 1, integer=True),
                      root=self.typed(raw, "root", (str,), "", "."))
        if kind == "vnncomp":
            return self._vnncomp(raw, common)
        return self._robustness(raw, common)

    def _vnncomp(self, raw: dict, common: dict) -> Suite:
        extra = set(raw) - {"name", "description", "kind", "timeout", "instances", "root", "threads"}
        if extra:
            key = sorted(extra)[0]
            raise self.fail(f"key {key!r} does not apply to a vnncomp suite", key)
        instances = self.typed(raw, "instances", (str,), "", None)
        if not instances:
            raise self.fail("a vnncomp suite needs instances = \"path/to/instances.csv\"")
        return Suite(**common, timeout=self.positive(raw, "timeout", "", None),
                     instances=instances)

    def _robustness(self, raw: dict, common: dict) -> Suite:
        for key in ("instances",):
            if key in raw:
                raise self.fail(f"key {key!r} needs kind = \"vnncomp\"", key)
        return Suite(**common, timeout=self.positive(raw, "timeout", "", 60.0),
                     eps=self._eps(raw), p=self._p(raw), methods=self._methods(raw),
                     data=self._data(raw), models=self._models(raw), smooth=self._smooth(raw),
                     radius=self._radius(raw))

    def _eps(self, raw: dict) -> tuple[float, ...]:
        eps = raw.get("eps")
        if not isinstance(eps, list) or not eps:
            raise self.fail("eps must be a non-empty list of radii, e.g. eps = [0.01, 0.02]", "eps")
        for e in eps:
            if isinstance(e, bool) or not isinstance(e, (int, float)) or not (e >= 0 and math.isfinite(e)):
                raise self.fail(f"every eps must be a finite number ≥ 0, got {e!r}", "eps")
        if len({f"{float(e):g}" for e in eps}) != len(eps):
            raise self.fail("an eps is listed twice", "eps")
        return tuple(float(e) for e in eps)

    def _p(self, raw: dict) -> float:
        p = raw.get("p", "inf")
        if p in ("inf", math.inf):
            return math.inf
        if p in (2, 2.0, "2"):
            return 2.0
        raise self.fail(f"p must be \"inf\" or 2, got {p!r}", "p")

    def _methods(self, raw: dict) -> tuple[str, ...]:
        from ..bounds import METHODS

        methods = raw.get("methods")
        if not isinstance(methods, list) or not methods:
            raise self.fail("methods must be a non-empty list, e.g. methods = [\"crown\"]", "methods")
        known = [*METHODS, *EXTRA_METHODS]
        for m in methods:
            if m not in known:
                raise self.fail(f"unknown method {m!r}; choose from {', '.join(known)}",
                                m if isinstance(m, str) else "methods")
        if len(set(methods)) != len(methods):
            raise self.fail("a method is listed twice", "methods")
        return tuple(methods)

    def _data(self, raw: dict) -> DataSpec:
        d = raw.get("data")
        if not isinstance(d, dict):
            raise self.fail("a robustness suite needs a [data] table with source = ...", "data")
        self.keys(d, _DATA, "[data]")
        source = self.typed(d, "source", (str,), "data.", None)
        if not source:
            raise self.fail("[data] needs source = \"digits:test\" or a dataset path", "data")
        sample = self.typed(d, "sample", (str,), "data.", "first")
        if sample not in SAMPLES:
            raise self.fail(f"data.sample must be one of {', '.join(SAMPLES)}, got {sample!r}", "sample")
        return DataSpec(source, self.positive(d, "count", "data.", None, integer=True), sample,
                        self.typed(d, "seed", (int,), "data.", 0))

    def _models(self, raw: dict) -> tuple[ModelSpec, ...]:
        models = raw.get("models")
        if not isinstance(models, list) or not models:
            raise self.fail("a robustness suite needs at least one [[models]] table", "models")
        out = [self._model(m) for m in models]
        names = [m.name for m in out]
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup is not None:
            raise self.fail(f"two models are named {dup!r}", dup)
        return tuple(out)

    def _model(self, m: Any) -> ModelSpec:
        if not isinstance(m, dict):
            raise self.fail("each [[models]] entry must be a table", "models")
        self.keys(m, _MODEL, "[[models]]")
        name = self.typed(m, "name", (str,), "models.", None)
        if not name or not re.fullmatch(r"[\w.-]+", name):
            raise self.fail(f"each model needs a name of letters, digits, '.', '_' or '-', got {name!r}",
                            name or "models")
        path = self.typed(m, "path", (str,), "models.", None)
        train = self.typed(m, "train", (str,), "models.", None)
        if (path is None) == (train is None):
            raise self.fail(f"model {name!r} needs exactly one of path = ... or train = ...", name)
        if train is not None and train not in ARCHS:
            raise self.fail(f"model {name!r}: unknown architecture {train!r}; choose from "
                            f"{', '.join(ARCHS)}", train)
        hidden = m.get("hidden", [])
        if not isinstance(hidden, list) or not all(isinstance(h, int) and h > 0 for h in hidden):
            raise self.fail(f"model {name!r}: hidden must be a list of positive widths", "hidden")
        return ModelSpec(name, path, train, tuple(hidden),
                         self.positive(m, "epochs", "models.", 10, integer=True),
                         self.typed(m, "data", (str,), "models.", "digits:train"),
                         self.positive(m, "count", "models.", None, integer=True),
                         self.typed(m, "seed", (int,), "models.", 0),
                         float(self.positive(m, "lr", "models.", 1e-3)),
                         self.positive(m, "batch", "models.", 128, integer=True))

    def _smooth(self, raw: dict) -> SmoothSpec:
        s = raw.get("smooth", {})
        if not isinstance(s, dict):
            raise self.fail("smooth must be a table", "smooth")
        self.keys(s, _SMOOTH, "[smooth]")
        alpha = self.positive(s, "alpha", "smooth.", 0.001)
        if alpha >= 1:
            raise self.fail(f"smooth.alpha must be in (0, 1), got {alpha}", "alpha")
        return SmoothSpec(float(self.positive(s, "sigma", "smooth.", 0.25)),
                          self.positive(s, "n0", "smooth.", 100, integer=True),
                          self.positive(s, "n", "smooth.", 1000, integer=True), float(alpha),
                          self.positive(s, "batch", "smooth.", 1000, integer=True))

    def _radius(self, raw: dict) -> tuple[float, int] | None:
        r = raw.get("radius")
        if r is None:
            return None
        if not isinstance(r, dict):
            raise self.fail("radius must be a table: radius = { hi = 0.1, steps = 8 }", "radius")
        self.keys(r, _RADIUS, "radius")
        return (float(self.positive(r, "hi", "radius.", 0.1)),
                self.positive(r, "steps", "radius.", 8, integer=True))


__all__ = ["ARCHS", "DataSpec", "EXTRA_METHODS", "KINDS", "ModelSpec", "PACKAGED", "SmoothSpec",
           "Suite", "find_suite", "load_suite", "packaged_suites"]
