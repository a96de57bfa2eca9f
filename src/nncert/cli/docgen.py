"""Generate the reference pages from the code: ``docs/cli.md`` from the argument parsers,
``docs/config.md`` from the config dataclasses, and the README's benchmark tables from the
committed results files (``bench/results/*.jsonl``, written by ``nncert bench run``) through
the report's own tables (:func:`nncert.benchmarks.report.tables`, what ``nncert report``
writes).

    python -m nncert.cli.docgen            # rewrite them (run from the repository root)
    python -m nncert.cli.docgen --check    # exit 1 when a page is stale (the tests do this)
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import inspect
import os
import re
import sys
import textwrap
from pathlib import Path

#: the config dataclasses of the reference, in reading order: (module, class)
CONFIGS: tuple[tuple[str, str], ...] = (
    ("nncert.complete.verify", "VerifyConfig"),
    ("nncert.complete.bab", "BaBConfig"),
    ("nncert.complete.graph_bab", "GraphBaBConfig"),
    ("nncert.complete.milp", "MilpConfig"),
    ("nncert.attacks", "AttackConfig"),
    ("nncert.bounds.crown", "CrownConfig"),
    ("nncert.bounds.alpha_crown", "AlphaCrownConfig"),
    ("nncert.bounds.zonotope", "ZonotopeConfig"),
    ("nncert.bounds.subdomains", "EngineConfig"),
    ("nncert.benchmarks.robustness", "RobustnessConfig"),
    ("nncert.smoothing.pixeldp", "PixelDPConfig"),
    ("nncert.training.loop", "TrainConfig"),
    ("nncert.semantic.transforms", "TransformConfig"),
    ("nncert.semantic.quantitative", "QuantConfig"),
    ("nncert.semantic.generative", "VAEConfig"),
)
#: meanings of the fields that carry no comment in their class and are not described in its
#: docstring (prefer a comment on the field: it is read first)
MEANINGS: dict[str, str] = {
    "VerifyConfig.timeout_s": "budget of the whole call, seconds; the answer is TIMEOUT when it runs out",
    "VerifyConfig.attack": "the falsifier run first (PGD + random samples); None skips it",
    "VerifyConfig.bab": "branch-and-bound settings",
    "VerifyConfig.milp": "MILP settings",
    "VerifyConfig.milp_max_unstable": "with complete='auto', decide by MILP instead of ReLU BaB "
                                      "when at most this many ReLUs are unstable after the bounds",
    "VerifyConfig.dtype": "dtype of the network copy that decides (every deciding bound is "
                          "evaluated in it)",
    "BaBConfig.timeout_s": "the loop's own budget, seconds (the call's deadline also applies)",
    "BaBConfig.input_split_max_dim": "branching='auto' splits inputs up to this many input "
                                     "dimensions, else ReLUs",
    "BaBConfig.max_domains": "UNKNOWN past this many subdomains",
    "BaBConfig.root_alpha_iters": "alpha-CROWN steps on the spec bound at the root",
    "BaBConfig.beta": "beta-CROWN multipliers for the split constraints (off only to measure)",
    "MilpConfig.timeout_s": "HiGHS time limit, seconds (the call's deadline also applies)",
    "MilpConfig.threads": "HiGHS threads",
    "AttackConfig.restarts": "PGD restarts per round",
    "AttackConfig.steps": "PGD steps per restart",
    "AttackConfig.samples": "uniform random samples tried first",
    "AttackConfig.seed": "the attack is deterministic for a seed",
    "AttackConfig.timeout_s": "cap of the whole attack, seconds (the call's deadline also applies)",
    "RobustnessConfig.eps": "radius of the ball, [0, 1] pixel units",
    "RobustnessConfig.method": "a bound method of nncert.bounds.METHODS, or 'complete'",
    "RobustnessConfig.p": "norm of the ball: math.inf or 2.0",
    "RobustnessConfig.batch_size": "points bounded at once",
    "RobustnessConfig.clip": "input domain the ball is clipped to (None: no clipping)",
    "RobustnessConfig.method_config": "the method's config (e.g. a ZonotopeConfig, or a "
                                      "VerifyConfig for 'complete'); None: its defaults",
    "GraphBaBConfig.lr": "Adam step size of the slopes",
    "GraphBaBConfig.lr_beta": "Adam step size of the split multipliers (beta)",
    "GraphBaBConfig.fsb_topk": "FSB: candidates tried per domain",
    "PixelDPConfig.epsilon": "DP epsilon of the noise layer",
    "PixelDPConfig.delta": "DP delta (Gaussian mechanism)",
    "PixelDPConfig.mechanism": "noise: 'gaussian' or 'laplace' (L1 attacks only)",
    "TrainConfig.epochs": "passes over the training data",
    "TrainConfig.batch_size": "examples per optimizer step",
    "TrainConfig.lr": "initial learning rate (the schedule scales it)",
    "TrainConfig.optimizer": "'adam' or 'sgd' (momentum 0.9)",
    "TrainConfig.weight_decay": "L2 weight decay of the optimizer",
    "TrainConfig.seed": "seeds the initialisation, the data order and every noise draw",
    "TrainConfig.device": "'cpu' or 'cuda' (a torch device string)",
    "TrainConfig.progress": "show a progress bar with the running losses (on stderr)",
    "TransformConfig.seed": "seed of the random probe parameters",
    "TransformConfig.method_config": "the bound method's own config (an AlphaCrownConfig...); None: defaults",
    "QuantConfig.method_config": "the bound method's own config; None: its defaults",
    "VAEConfig.latent": "latent dimension of the generator",
    "VAEConfig.lr": "Adam learning rate",
    "VAEConfig.fd_step": "finite-difference step of the Jacobian-norm estimate (latent units)",
}
WIDTH = 100  # help text width, fixed so the page does not depend on the terminal
HEADER = "<!-- generated by `python -m nncert.cli.docgen`: do not edit by hand -->\n\n"


# -- CLI reference -----------------------------------------------------------------------------
def _help(parser: argparse.ArgumentParser) -> str:
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(WIDTH)
    try:
        return parser.format_help()
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old


def cli_page() -> str:
    """Every command's ``--help``, as one Markdown page."""
    from . import config as cfg
    from .main import build_parser

    parser = build_parser()
    out = [HEADER, "# Command-line reference\n\n",
           "Every command's `--help`, generated from its argument parser. Options common to all "
           "commands: `--config FILE` (settings from a TOML file, see "
           "[the user guide](guide.md#config-files)), `--threads N` (see "
           "[threads](guide.md#threads)), and `--debug` before the command (full tracebacks).\n\n"]
    commands = cfg.leaf_parsers(parser)
    out.append("Commands: " + ", ".join(
        f"[`{' '.join(c)}`](#nncert-{'-'.join(c)})" for c, _ in commands) + "\n\n")
    out += ["## nncert\n\n```text\n", _help(parser), "```\n\n"]
    for command, p in commands:
        out += [f"## nncert {' '.join(command)}\n\n```text\n", _help(p), "```\n\n"]
    return "".join(out).rstrip() + "\n"


# -- config reference --------------------------------------------------------------------------
def _field_comments(cls: type) -> dict[str, str]:
    """Field name → the comment on its line and the comment-only lines right after it."""
    try:
        lines, start = inspect.getsourcelines(cls)
    except (OSError, TypeError):
        return {}
    tree = ast.parse(textwrap.dedent("".join(lines)))
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    out = {}
    for node in body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        i = node.end_lineno - 1
        parts = []
        if "#" in lines[i]:
            parts.append(lines[i].split("#", 1)[1].strip())
        j = i + 1
        while j < len(lines) and lines[j].strip().startswith("#"):
            parts.append(lines[j].strip().lstrip("#").strip())
            j += 1
        out[node.target.id] = " ".join(parts)
    return out


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        v = f.default
    elif f.default_factory is not dataclasses.MISSING:
        v = f.default_factory()
        if dataclasses.is_dataclass(v):
            return f"`{type(v).__name__}()`"
    else:
        return "(required)"
    text = str(v) if type(v).__module__ == "torch" else repr(v)
    return f"`{text}`".replace("|", "\\|")


def _type(f: dataclasses.Field) -> str:
    t = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    return f"`{t}`".replace("|", "\\|")


def config_section(module: str, name: str) -> str:
    cls = getattr(importlib.import_module(module), name)
    doc = inspect.cleandoc(cls.__doc__ or "")
    if doc.startswith(f"{name}("):  # the dataclass's generated signature: no real doc
        doc = ""
    comments = _field_comments(cls)
    rows = ["| field | type | default | meaning |", "|---|---|---|---|"]
    for f in dataclasses.fields(cls):
        meaning = (comments.get(f.name) or MEANINGS.get(f"{name}.{f.name}")
                   or ("see the text above" if re.search(rf"\b{f.name}\b", doc) else ""))
        meaning = meaning.replace("|", "\\|")
        rows.append(f"| `{f.name}` | {_type(f)} | {_default(f)} | {meaning} |")
    return (f"## `{name}` (`{module}`)\n\n" + (doc + "\n\n" if doc else "")
            + "\n".join(rows) + "\n\n")


def config_page() -> str:
    out = [HEADER, "# Config reference\n\n",
           "Every algorithm takes a frozen dataclass; these tables are generated from the "
           "classes: field, type, default, and the comment on the field (else the class text "
           "above the table). How to choose values: [the tuning guide](reference.md).\n\n",
           "```python\nfrom nncert.complete import VerifyConfig, verify\n"
           "from nncert.complete.bab import BaBConfig\n\n"
           "config = VerifyConfig(timeout_s=120, bab=BaBConfig(heuristic=\"babsr\"))\n```\n\n"]
    out += [config_section(m, n) for m, n in CONFIGS]
    return "".join(out).rstrip() + "\n"


# -- main --------------------------------------------------------------------------------------
PAGES = {"docs/cli.md": cli_page, "docs/config.md": config_page}

#: a README block filled from results files: ``<!-- report FILE [FILE ...] : TABLE -->`` (paths
#: relative to the repository root, TABLE a title of :func:`nncert.benchmarks.report.tables`),
#: the table's Markdown, then ``<!-- /report -->``
REPORT_BLOCK = re.compile(r"(<!-- report (?P<files>[^:>]+?) : (?P<table>[^>]+?) -->\n)"
                          r"(?P<body>.*?)(<!-- /report -->)", re.S)


def report_table(root: Path, files: list[str], title: str) -> str:
    """The Markdown of report table ``title`` over the rows of ``files`` (no heading line)."""
    from ..benchmarks.report import load_rows, tables

    rows = load_rows([root / f for f in files])
    for t in tables(rows):
        if t.title == title:
            return t.markdown().split("\n", 2)[2]  # (drop "## title" and the blank line)
    raise ValueError(f"no table {title!r} in the report of {', '.join(files)}")


def readme_with_reports(root: Path) -> str:
    """README.md with every report block recomputed from its results files."""
    text = (root / "README.md").read_text(encoding="utf-8")

    def fill(m: re.Match) -> str:
        body = report_table(root, m["files"].split(), m["table"].strip())
        return m.group(1) + "\n" + body + m.group(5)

    return REPORT_BLOCK.sub(fill, text)


def stale(root: Path) -> list[str]:
    """The pages under ``root`` whose text differs from what the code generates."""
    out = []
    for rel, make in PAGES.items():
        path = root / rel
        if not path.is_file() or path.read_text(encoding="utf-8") != make():
            out.append(rel)
    readme = root / "README.md"
    if readme.is_file() and readme.read_text(encoding="utf-8") != readme_with_reports(root):
        out.append("README.md")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nncert.cli.docgen", description=__doc__)
    ap.add_argument("--check", action="store_true", help="exit 1 if a page is stale")
    ap.add_argument("--root", default=".", help="repository root (default: .)")
    args = ap.parse_args(argv)
    root = Path(args.root)
    if args.check:
        bad = stale(root)
        for rel in bad:
            print(f"{rel} is stale: run `python -m nncert.cli.docgen`", file=sys.stderr)
        return 1 if bad else 0
    for rel, make in PAGES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(make(), encoding="utf-8")
        print(f"wrote {rel}")
    if (root / "README.md").is_file():
        (root / "README.md").write_text(readme_with_reports(root), encoding="utf-8")
        print("wrote README.md (benchmark tables)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
