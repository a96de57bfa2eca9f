#!/usr/bin/env bash
# VNN-COMP calling convention: install_tool.sh v1
# Installs nncert from this repository with pip into <repo>/.venv (the interpreter that
# prepare_instance.sh and run_instance.sh use). NNCERT_PYTHON=/path/to/python installs into
# that interpreter's environment instead of creating the venv.
set -euo pipefail
if [ "$#" -ne 1 ]; then
    echo "usage: $0 v1" >&2
    exit 1
fi
if [ "$1" != "v1" ]; then
    echo "expected version string v1, got $1" >&2
    exit 1
fi
HERE="$(cd "$(dirname "$0")/.." && pwd)"
if [ -n "${NNCERT_PYTHON:-}" ]; then
    PY="$NNCERT_PYTHON"
else
    python3 -m venv "$HERE/.venv"
    PY="$HERE/.venv/bin/python"
fi
echo "nncert: installing from $HERE with $PY" >&2
"$PY" -m pip install --upgrade pip
"$PY" -m pip install "$HERE"
"$PY" -m nncert.cli.main --version
