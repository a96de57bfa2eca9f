"""The documentation is true: generated pages are current, relative links resolve, and the code
blocks marked ``<!-- test -->`` in README.md and docs/ run from the repository root as written."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nncert.cli import docgen

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARK = "<!-- test -->"


def _blocks() -> list[tuple[str, str, str]]:
    """(page:line, language, code) of every fenced block right after a MARK line."""
    out = []
    for page in PAGES:
        lines = page.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            if line.strip() != MARK:
                continue
            fence = lines[i + 1].strip() if i + 1 < len(lines) else ""
            assert fence.startswith("```"), f"{page.name}:{i + 1}: {MARK} must precede a code block"
            end = next(j for j in range(i + 2, len(lines)) if lines[j].strip() == "```")
            out.append((f"{page.relative_to(ROOT)}:{i + 1}", fence[3:] or "bash",
                        "\n".join(lines[i + 2:end])))
    return out


def _commands(code: str) -> list[str]:
    """The commands of a bash block: one per line, ``\\`` continuations joined, comments off."""
    text = code.replace("\\\n", " ")
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def _sandbox(tmp_path: Path) -> Path:
    """A copy of the repository root made of links (outputs land here, not in the checkout),
    with ``../shared`` beside it as beside the checkout."""
    repo = tmp_path / "work" / "repo"
    repo.mkdir(parents=True)
    for entry in ROOT.iterdir():
        if entry.name not in (".git", ".venv", ".ci-venv"):
            (repo / entry.name).symlink_to(entry)
    if (ROOT.parent / "shared").exists():
        (tmp_path / "work" / "shared").symlink_to(ROOT.parent / "shared")
    return repo


def _env() -> dict[str, str]:
    path = str(ROOT / "src")
    old = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": path + (os.pathsep + old if old else ""),
            "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}


BLOCKS = _blocks()


def test_generated_pages_are_current():
    assert docgen.stale(ROOT) == [], "run `python -m nncert.cli.docgen` and commit docs/"


def test_relative_links_resolve():
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            if "://" in target or target.startswith("mailto:"):
                continue
            assert (page.parent / target).exists(), f"{page.relative_to(ROOT)}: broken link {target}"


def test_there_are_marked_blocks():
    assert len(BLOCKS) >= 5 and any(lang == "python" for _, lang, _ in BLOCKS)


@pytest.mark.parametrize("where, lang, code", BLOCKS, ids=[b[0] for b in BLOCKS])
def test_marked_block_runs(tmp_path, where, lang, code):
    if "../shared" in code and not (ROOT.parent / "shared").is_dir():
        pytest.skip("needs ../shared beside the repository")
    repo = _sandbox(tmp_path)
    if lang == "python":
        runs = [([sys.executable, "-"], code)]
    else:
        nncert = "nncert" if shutil.which("nncert") else f"{sys.executable} -m nncert.cli.main"
        runs = [(["bash", "-c", re.sub(r"^nncert\b", nncert, c)], None) for c in _commands(code)]
    for argv, stdin in runs:
        r = subprocess.run(argv, cwd=repo, env=_env(), input=stdin, capture_output=True,
                           text=True, timeout=900)
        assert r.returncode == 0, f"{where}: {argv[-1][:200]}\n{r.stderr[-2000:]}"
        assert "Traceback" not in r.stderr, f"{where}: {r.stderr[-2000:]}"


def test_readme_benchmark_tables_come_from_the_results_files():
    """Every benchmark table of the README is a report table over committed results files."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = list(docgen.REPORT_BLOCK.finditer(text))
    assert len(blocks) >= 2
    for m in blocks:
        files = m["files"].split()
        assert all((ROOT / f).is_file() for f in files), files
        expected = docgen.report_table(ROOT, files, m["table"].strip())
        assert m["body"].strip() == expected.strip(), "run `python -m nncert.cli.docgen`"
