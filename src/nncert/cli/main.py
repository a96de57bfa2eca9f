"""``nncert``: the command line. Thin: each subcommand lives in its own module with
``register(subparsers)``, builds configs and calls the library."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import os
import sys

from ..errors import NncertError
from ..utils import one_line, tune_allocator
from . import config as cfg

#: subcommand modules, in the order ``--help`` lists them
SUBCOMMANDS = ("demo", "info", "verify", "vnncomp", "smooth", "pixeldp", "train", "evaluate",
               "semantic", "bench", "report", "config")

DESCRIPTION = """\
nncert proves things about neural networks read from PyTorch or ONNX:
sound bounds (interval, zonotope, deeppoly, crown, alpha-crown), complete verification
(branch-and-bound, MILP, VNN-COMP), probabilistic certification (randomized smoothing,
PixelDP), certified training, semantic certification and benchmark suites.
Start with `nncert demo`; every subcommand has its own --help."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors: ``nncert: error: SUBCOMMAND: message (see --help)``."""

    def error(self, message: str):  # type: ignore[override]
        sub = self.prog.removeprefix("nncert").strip()
        where = f"{sub}: " if sub else ""
        hint = f"nncert {sub} --help" if sub else "nncert --help"
        self.exit(2, f"nncert: error: {where}{message} (see {hint})\n")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or with ``only`` the parser of that subcommand alone (the others'
    modules are not imported: seconds of start-up, which count against VNN-COMP timeouts)."""
    parser = _Parser(
        prog="nncert", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true",
                        help="show full tracebacks instead of one-line errors")
    parser.add_argument("--version", action="version", version="%(prog)s 0.1.0")
    cfg.add_global_options(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS if only is None else (only,):
        module = f"nncert.cli.{name}"
        if importlib.util.find_spec(module) is None:
            continue
        importlib.import_module(module).register(sub)
    for _, p in cfg.leaf_parsers(parser):  # every command takes --config and --threads
        cfg.add_global_options(p, mark=True)
    return parser


def _command_of(argv: list[str]) -> str | None:
    """The subcommand named on the command line, when it is a known one."""
    skip = False
    for a in argv:
        if skip:
            skip = False
        elif a in cfg.GLOBAL_OPTIONS:
            skip = True  # its value
        elif not a.startswith("-"):
            return a if a in SUBCOMMANDS else None
    return None


def _prepare(argv: list[str], debug: bool):
    """(parser, parsed args), after ``--config`` and ``--threads`` were applied."""
    parser = build_parser(_command_of(argv))
    prepared = cfg.prepare(parser, argv, SUBCOMMANDS)
    args = parser.parse_args(prepared.argv)
    if not (prepared.command and prepared.command[0] == "config"):
        cfg.apply_threads(cfg.resolve_threads(prepared.threads))
    args.config = prepared.config
    args.commands = SUBCOMMANDS
    if not hasattr(args, "threads") or getattr(args, "threads", None) is None:
        args.threads = prepared.threads
    return parser, args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    tune_allocator()  # (forked workers inherit it)
    try:
        _, args = _prepare(argv, debug)
    except NncertError as e:
        if debug:
            raise
        print(f"nncert: error: {one_line(e)}", file=sys.stderr)
        return 2
    if not getattr(args, "func", None):
        build_parser().print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except NncertError as e:
        if args.debug:
            raise
        print(f"nncert: error: {one_line(e)}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader went away (`nncert info M | head`): not an error of ours
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:
        if args.debug:
            raise
        where = f": {e.filename}" if e.filename else ""
        print(f"nncert: error: {one_line(e.strerror or e)}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nncert: interrupted; results written so far are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
