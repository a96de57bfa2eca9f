"""vnncomp_scripts/install_tool.sh makes a working venv (slow: pip; needs the package index
unless every dependency is already installed on the machine)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_install_tool_makes_a_venv_that_runs_nncert(tmp_path):
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NNCERT_PYTHON")}
    r = subprocess.run(["bash", str(ROOT / "vnncomp_scripts" / "install_tool.sh"), "v1"],
                       env={**env, "NNCERT_VENV": str(venv)}, capture_output=True, text=True,
                       timeout=1800, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "nncert 0.1.0" in r.stdout
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import nncert; print(nncert.__file__)"],
                           env=env, capture_output=True, text=True, timeout=300)
    assert Path(where.stdout.strip()).resolve() == (ROOT / "src" / "nncert" / "__init__.py").resolve()
