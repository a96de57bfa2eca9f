"""Run settings from a TOML file, for every subcommand, and ``nncert config show``.

The mechanism is generic over argparse, so a subcommand gets it by being registered:

* ``--config run.toml`` (before or after the subcommand) reads the table named after the
  subcommand (``[verify]``; ``[vnncomp.run]`` for an action, whose ``[vnncomp]`` keys apply to
  every action that has that option). Keys are the long option names without ``--``
  (``timeout``, ``cex-dir``; ``cex_dir`` works too). The values become command-line tokens put
  in front of the user's own, so the same argument types check them and **flags on the command
  line override the file**. An unknown key or a bad value is one error line naming the file,
  the table, the key and the valid keys.
* ``--threads N`` (before or after the subcommand, or ``threads = N`` at the top of the file)
  sets the torch threads of this process and OMP/MKL threads of child processes (see
  :func:`apply_threads`).
* ``nncert config show COMMAND [ACTION] [--config F] [flags]`` prints the effective settings
  as TOML, which ``--config`` reads back.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import tomllib

from ..errors import ConfigError

#: options every subcommand takes, handled here before argparse sees the command line
GLOBAL_OPTIONS = ("--config", "--threads")
_MARK = "nncert_global"  # attribute set on the help-only copies of GLOBAL_OPTIONS


# -- the command line --------------------------------------------------------------------------
def threads_value(text: str) -> int:
    """``--threads``: an integer ≥ 0 (0: every core)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0 (0: every core), got {text}")
    return n


def add_global_options(parser: argparse.ArgumentParser, mark: bool = False) -> None:
    """``--config`` and ``--threads`` on ``parser`` (``mark``: a help-only copy on a
    subcommand; :func:`prepare` takes the values off the command line first)."""
    own = {s for a in parser._actions for s in a.option_strings}
    if "--config" not in own:
        a = parser.add_argument("--config", metavar="FILE", default=None,
                                help="read settings from this TOML file (the table named after "
                                     "the command); flags given here override it")
        setattr(a, _MARK, mark)
    if "--threads" not in own:
        a = parser.add_argument("--threads", metavar="N", type=threads_value, default=None,
                                help="torch/OpenMP threads (0: every core; default: "
                                     "NNCERT_THREADS, else OMP_NUM_THREADS, else 1: fastest "
                                     "for the benchmarks' networks, see docs/guide.md#threads)")
        setattr(a, _MARK, mark)


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            return dict(a.choices)
    return {}


def leaf_parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
                 ) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every (command path, parser) below ``parser``, the parsers with subcommands included."""
    out = []
    for name, p in _subparsers(parser).items():
        out.append(((*path, name), p))
        out.extend(leaf_parsers(p, (*path, name)))
    return out


def _option(parser: argparse.ArgumentParser, flag: str) -> argparse.Action | None:
    for a in parser._actions:
        if flag in a.option_strings:
            return a
    return None


def _owns(parser: argparse.ArgumentParser, flag: str) -> bool:
    """The parser has ``flag`` as an option of its own (not a help-only global copy)."""
    a = _option(parser, flag)
    return a is not None and not getattr(a, _MARK, False)


def _take(argv: list[str], i: int, flag: str) -> tuple[str, int]:
    """The value of ``flag`` at ``argv[i]`` (``--flag V`` or ``--flag=V``) and the next index."""
    tok = argv[i]
    if tok.startswith(flag + "="):
        return tok[len(flag) + 1:], i + 1
    if i + 1 >= len(argv):
        raise _UsageError(f"argument {flag}: expected one argument")
    return argv[i + 1], i + 2


class _UsageError(Exception):
    """A usage error found before argparse runs (reported like argparse's own)."""


def _flag_of(tok: str) -> str | None:
    for flag in GLOBAL_OPTIONS:
        if tok == flag or tok.startswith(flag + "="):
            return flag
    return None


def extract_globals(argv: list[str], keep: frozenset[str] = frozenset(), start: int = 0
                    ) -> tuple[list[str], dict[str, str]]:
    """``argv`` without the GLOBAL_OPTIONS from index ``start`` on (except those in ``keep``,
    which the command owns) and their raw values. Stops at ``--``."""
    out, found, i = list(argv[:start]), {}, start
    while i < len(argv):
        tok = argv[i]
        if tok == "--":
            out.extend(argv[i:])
            break
        flag = _flag_of(tok)
        if flag is None or flag in keep:
            out.append(tok)
            i += 1
            continue
        found[flag], i = _take(argv, i, flag)
    return out, found


def find_command(parser: argparse.ArgumentParser, argv: list[str]
                 ) -> tuple[tuple[str, ...], argparse.ArgumentParser, int]:
    """(command path, its parser, index just after its last name in ``argv``): the deepest
    subcommand named on the command line (``()``, ``parser`` and 0 when none is)."""
    path: tuple[str, ...] = ()
    leaf, at, i = parser, 0, 0
    while i < len(argv):
        subs = _subparsers(leaf)
        if not subs:
            break
        tok = argv[i]
        if tok == "--":
            break
        if tok in GLOBAL_OPTIONS:
            i += 2  # its value
            continue
        if not tok.startswith("-") and tok in subs:
            path, leaf, at = (*path, tok), subs[tok], i + 1
        elif not tok.startswith("-"):
            break  # an unknown name: argparse says so
        i += 1
    return path, leaf, at


# -- the file ----------------------------------------------------------------------------------
def read_toml(path: str) -> dict[str, Any]:
    """The file as a dict; errors name the file and, for syntax, the line."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"--config {path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"--config {path}: is a directory, not a TOML file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"--config {path}: not valid TOML: {e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"--config {path}: not a UTF-8 text file") from None


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Long option name (without ``--``) → action, for the options a file may set."""
    out = {}
    for a in parser._actions:
        if isinstance(a, (argparse._HelpAction, argparse._VersionAction)) or a.dest == "config":
            continue
        for s in a.option_strings:
            if s.startswith("--"):
                out[s[2:]] = a
    return out


def _key(name: str, valid: dict[str, argparse.Action]) -> str | None:
    for k in (name, name.replace("_", "-")):
        if k in valid:
            return k
    return None


def _unknown(path: str, table: str, key: str, valid) -> ConfigError:
    keys = ", ".join(sorted(valid)) or "none"
    return ConfigError(f"--config {path}: unknown key {key!r} in [{table}]; valid keys: {keys}")


def _table_settings(data: dict, path: str, command: tuple[str, ...],
                    parents: list[argparse.ArgumentParser], leaf: argparse.ArgumentParser
                    ) -> dict[str, Any]:
    """The settings for ``leaf`` (option name → value) from the tables along ``command``;
    deeper tables override shallower ones. Keys must name an option of the table's command
    (for a table with actions: of one of its actions)."""
    settings: dict[str, Any] = {}
    node: Any = data
    for depth, name in enumerate(command):
        node = node.get(name, {}) if isinstance(node, dict) else {}
        table = ".".join(command[:depth + 1])
        if not isinstance(node, dict):
            raise ConfigError(f"--config {path}: {table} must be a table ([{table}])")
        scope = parents[depth]
        subs = _subparsers(scope)
        valid = dict(_options(scope))
        for sub in subs.values():
            valid.update(_options(sub))
        here = _options(leaf)
        for key, value in node.items():
            if isinstance(value, dict) and key in subs:
                continue  # a nested action table
            k = _key(key, valid)
            if k is None:
                raise _unknown(path, table, key, valid)
            if _key(key, here) is not None:
                settings[_key(key, here)] = value
    return settings


# -- values → tokens ---------------------------------------------------------------------------
def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(_text(v) for v in value)
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return str(value)


def _check_value(action: argparse.Action, raw: str, where: str) -> None:
    """The file's value through the option's own type and choices (errors name the file)."""
    value: Any = raw
    if action.type is not None:
        try:
            value = action.type(raw)
        except (argparse.ArgumentTypeError, ValueError, TypeError) as e:
            raise ConfigError(f"{where}: {e}") from None
    if action.choices is not None and value not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise ConfigError(f"{where}: {raw!r} is not one of {choices}")


def _tokens(key: str, action: argparse.Action, value: Any, where: str) -> list[str]:
    flag = "--" + key
    if isinstance(action, argparse.BooleanOptionalAction):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return [flag if value else "--no-" + key]
    if action.nargs == 0:  # store_true / store_false / store_const / count
        if isinstance(action, argparse._CountAction) and isinstance(value, int):
            return [flag] * value
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        on = value == bool(action.const) if isinstance(action.const, bool) else value
        return [flag] if on else []
    if isinstance(value, dict) or isinstance(value, bool) and action.type is not None:
        raise ConfigError(f"{where}: expected a value for {flag}, got {value!r}")
    many = action.nargs in ("+", "*") or isinstance(action.nargs, int)
    if isinstance(action, argparse._AppendAction) or many:
        items = value if isinstance(value, list) else [value]
        for v in items:
            _check_value(action, _text(v), where)
        if many:
            return [flag, *(_text(v) for v in items)]
        return [f"{flag}={_text(v)}" for v in items]
    _check_value(action, _text(value), where)
    return [f"{flag}={_text(value)}"]


def config_tokens(data: dict, path: str, command: tuple[str, ...],
                  parents: list[argparse.ArgumentParser], leaf: argparse.ArgumentParser
                  ) -> list[str]:
    """The file's settings for ``command`` as command-line tokens (``threads`` excluded)."""
    settings = _table_settings(data, path, command, parents, leaf)
    opts = _options(leaf)
    out: list[str] = []
    for key, value in settings.items():
        action = opts[key]
        if getattr(action, _MARK, False):
            continue  # --threads: handled by prepare()
        out += _tokens(key, action, value, f"--config {path}: [{'.'.join(command)}] {key}")
    return out


def _file_threads(data: dict, path: str, command: tuple[str, ...]) -> int | None:
    """``threads`` at the top of the file or in a table along ``command`` (deepest wins)."""
    found, node = data.get("threads"), data
    for name in command:
        node = node.get(name, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict) and "threads" in node:
            found = node["threads"]
    if found is None:
        return None
    if isinstance(found, bool) or not isinstance(found, int) or found < 0:
        raise ConfigError(f"--config {path}: threads must be an integer ≥ 0, got {found!r}")
    return found


def _check_top(data: dict, path: str, commands: set[str]) -> None:
    for key, value in data.items():
        if key == "threads" or isinstance(value, dict) and key in commands:
            continue
        valid = ", ".join(["threads", *sorted(f"[{c}]" for c in commands)])
        raise ConfigError(f"--config {path}: unknown top-level key {key!r}; valid: {valid}")


@dataclass(frozen=True)
class Prepared:
    """The command line after the config file and the global options were applied."""

    argv: list[str]
    command: tuple[str, ...]
    config: str | None
    threads: int | None  # None: not asked for (the default applies)


def prepare(parser: argparse.ArgumentParser, argv: list[str],
            commands: tuple[str, ...] = ()) -> Prepared:
    """Apply ``--config`` and ``--threads`` to ``argv`` for ``parser`` (see the module doc).
    Raises ConfigError for a bad file; a missing option value is an argparse usage error."""
    try:
        return _prepare(parser, argv, commands)
    except _UsageError as e:
        parser.error(str(e))
        raise  # parser.error exits


def _own_threads(tail: list[str]) -> int | None:
    """The value of a command's own ``--threads`` in ``tail`` (the last one), if valid."""
    value = None
    for i, tok in enumerate(tail):
        if _flag_of(tok) == "--threads":
            try:
                value = threads_value(_take(tail, i, "--threads")[0])
            except (argparse.ArgumentTypeError, _UsageError):
                value = None  # argparse reports it
    return value


def _prepare(parser: argparse.ArgumentParser, argv: list[str], commands: tuple[str, ...]
             ) -> Prepared:
    command, leaf, at = find_command(parser, argv)
    keep = frozenset(f for f in GLOBAL_OPTIONS if _owns(leaf, f))
    head, found = extract_globals(argv[:at])
    tail, found_after = extract_globals(argv[at:], keep=keep)
    found.update(found_after)
    path = found.get("--config")
    threads = None
    if "--threads" in found:
        try:
            threads = threads_value(found["--threads"])
        except argparse.ArgumentTypeError as e:
            raise _UsageError(f"argument --threads: {e}") from None
    tokens: list[str] = []
    if path is not None:
        data = read_toml(path)
        _check_top(data, path, set(commands) | set(_subparsers(parser)))
        parents = [parser] + [p for _, p in _walk(parser, command)]
        tokens = config_tokens(data, path, command, parents[1:], leaf)
        if threads is None:
            threads = _file_threads(data, path, command)
    if threads is not None and _owns(leaf, "--threads"):
        tokens.append(f"--threads={threads}")  # the command's own option (e.g. vnncomp)
    if "--threads" in keep:
        threads = _own_threads(tail) if _own_threads(tail) is not None else threads
    return Prepared([*head, *tokens, *tail], command, path, threads)


def _walk(parser: argparse.ArgumentParser, command: tuple[str, ...]):
    p = parser
    for name in command:
        p = _subparsers(p)[name]
        yield name, p


# -- threads -----------------------------------------------------------------------------------
THREADS_ENV = "NNCERT_THREADS"


def default_threads() -> int:
    """``NNCERT_THREADS`` when set, else ``OMP_NUM_THREADS`` when set, else 1: on the benchmark
    networks (MLPs and small convnets) one thread was as fast as or faster than several in
    ``bench/threads_bench.py``, and it never oversubscribes a shared machine."""
    text = os.environ.get(THREADS_ENV)
    if text:
        try:
            return threads_value(text)
        except argparse.ArgumentTypeError as e:
            raise ConfigError(f"{THREADS_ENV}={text!r}: {e}") from None
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "")))
    except ValueError:
        return 1


def resolve_threads(n: int | None, jobs: int = 1) -> int:
    """Threads for one of ``jobs`` workers: ``n`` (0: every core), never more than
    ``max(1, cores // jobs)`` when several workers run."""
    cores = os.cpu_count() or 1
    n = default_threads() if n is None else n
    n = cores if n == 0 else n
    if jobs > 1:
        n = min(n, max(1, cores // jobs))
    return max(1, n)


def apply_threads(n: int) -> None:
    """This process computes with ``n`` torch threads; child processes inherit
    OMP/MKL/OPENBLAS thread counts of ``n`` through the environment. Torch is not imported
    here (``vnncomp run``'s parent never needs it: start-up counts against the timeout); when
    it is imported later it reads ``OMP_NUM_THREADS``."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != n:
        torch.set_num_threads(n)


__all__ = ["Prepared", "apply_threads", "default_threads", "resolve_threads",
           "threads_value"]


# -- nncert config show ------------------------------------------------------------------------
def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, Sequence) and not isinstance(v, str):  # lists, and LazyChoices defaults
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v), ensure_ascii=False)


def effective_toml(command: tuple[str, ...], leaf: argparse.ArgumentParser,
                   args: argparse.Namespace, threads: int, required: set[str]) -> str:
    """The settings of ``args`` as the TOML a ``--config`` file would hold (unset options as
    comments)."""
    lines = [f"threads = {threads}", "", f"[{'.'.join(command)}]"]
    seen = set()
    for key, action in _options(leaf).items():
        if action.dest in seen or getattr(action, _MARK, False):
            continue
        seen.add(action.dest)
        value = getattr(args, action.dest, None)
        if value is None:
            lines.append(f"# {key} = (not set{', required' if action.dest in required else ''})")
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def show(args: argparse.Namespace) -> int:
    from .main import build_parser

    target = list(args.target)
    if not target or target[0].startswith("-"):
        raise ConfigError("config show: name a command, e.g. `nncert config show verify`")
    parser = build_parser(target[0])
    if target[0] not in _subparsers(parser):
        commands = ", ".join(sorted(_subparsers(build_parser())))
        raise ConfigError(f"config show: unknown command {target[0]!r}; choose from {commands}")
    glob = ([f"--config={args.config}"] if args.config else []) + (
        [f"--threads={args.threads}"] if args.threads is not None else [])
    prepared = prepare(parser, target + glob, args.commands)
    command, leaf, _ = find_command(parser, prepared.argv)
    if _subparsers(leaf):
        actions = ", ".join(_subparsers(leaf))
        raise ConfigError(f"config show {' '.join(command)}: name an action too ({actions})")
    required = {a.dest for a in leaf._actions if a.required}
    for a in leaf._actions:
        a.required = False
    ns = parser.parse_args(prepared.argv)
    text = effective_toml(command, leaf, ns, resolve_threads(prepared.threads), required)
    print(text, end="")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "config", help="settings files: show the effective settings of a command",
        description="`nncert config show COMMAND [ACTION] [--config FILE] [flags]` prints the "
                    "settings COMMAND would run with (file, then flags, then defaults) as TOML; "
                    "save it and pass it back with --config.")
    ss = p.add_subparsers(dest="config_command", metavar="ACTION")
    s = ss.add_parser("show", help="print the effective settings of COMMAND as TOML",
                      description="Print the settings COMMAND would run with as TOML "
                                  "(required options not given are listed as comments).")
    s.add_argument("target", nargs=argparse.REMAINDER, metavar="COMMAND [ACTION] [flags]",
                   help="the command line to show, e.g. `verify --method crown`")
    s.set_defaults(func=show)
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])
