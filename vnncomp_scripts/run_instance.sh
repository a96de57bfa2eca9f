#!/usr/bin/env bash
# VNN-COMP calling convention:
#   run_instance.sh v1 <category> <onnx> <vnnlib> <result file> <timeout seconds>
# Writes sat (with the witness) / unsat / timeout / unknown / error to the result file.
set -uo pipefail
if [ "$#" -ne 6 ]; then
    echo "usage: $0 v1 <category> <onnx> <vnnlib> <result file> <timeout>" >&2
    exit 1
fi
VERSION="$1"; CATEGORY="$2"; ONNX="$3"; VNNLIB="$4"; RESULT="$5"; TIMEOUT="$6"
if [ "$VERSION" != "v1" ]; then
    echo "expected version string v1, got $VERSION" >&2
    exit 1
fi
HERE="$(cd "$(dirname "$0")/.." && pwd)"
PY="${NNCERT_PYTHON:-$HERE/.venv/bin/python}"
[ -x "$PY" ] || PY=python3
echo "nncert: $CATEGORY: $ONNX $VNNLIB (timeout $TIMEOUT s)" >&2
# nncert.cli.vnncomp: the vnncomp command without the other subcommands' imports (start-up
# counts against the timeout); the command stops its verifier at the timeout (result: timeout)
exec "$PY" -m nncert.cli.vnncomp run --onnx "$ONNX" --vnnlib "$VNNLIB" \
    --timeout "$TIMEOUT" --out "$RESULT"
