#!/usr/bin/env bash
# VNN-COMP calling convention: install_tool.sh v1
# Installs nncert from this repository with `pip install -e` into a virtual environment,
# <repo>/.venv (the interpreter that prepare_instance.sh and run_instance.sh use), created with
# --system-site-packages so a torch already on the machine is reused instead of downloaded.
# NNCERT_VENV=DIR puts the venv elsewhere (then set NNCERT_PYTHON=DIR/bin/python for the other
# scripts); NNCERT_PYTHON=/path/to/python installs into that interpreter's environment instead.
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
    VENV="${NNCERT_VENV:-$HERE/.venv}"
    python3 -m venv --system-site-packages "$VENV"
    PY="$VENV/bin/python"
fi
echo "nncert: installing from $HERE with $PY" >&2
"$PY" -m pip install --upgrade pip
"$PY" -m pip install -e "$HERE"
"$PY" -m nncert.cli.main --version
