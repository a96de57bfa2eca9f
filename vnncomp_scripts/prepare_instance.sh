#!/usr/bin/env bash
# VNN-COMP calling convention: prepare_instance.sh v1 <category> <onnx> <vnnlib>
# Checks that nncert can read the pair (model loads, VNN-LIB matches it) before the timed run;
# on failure: one line on stderr and a non-zero exit status.
set -euo pipefail
if [ "$#" -ne 4 ]; then
    echo "usage: $0 v1 <category> <onnx> <vnnlib>" >&2
    exit 1
fi
VERSION="$1"; CATEGORY="$2"; ONNX="$3"; VNNLIB="$4"
if [ "$VERSION" != "v1" ]; then
    echo "expected version string v1, got $VERSION" >&2
    exit 1
fi
HERE="$(cd "$(dirname "$0")/.." && pwd)"
PY="${NNCERT_PYTHON:-$HERE/.venv/bin/python}"
[ -x "$PY" ] || PY=python3
echo "nncert: preparing $CATEGORY: $ONNX $VNNLIB" >&2
exec "$PY" -c '
import sys
from nncert.complete.vnncomp import load_instance, one_line
from nncert.errors import NncertError
try:
    load_instance(sys.argv[1], sys.argv[2])
except (NncertError, OSError) as e:
    sys.exit(f"nncert: error: {one_line(str(e))}")
' "$ONNX" "$VNNLIB"
