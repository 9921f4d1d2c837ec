#!/usr/bin/env bash
# Make a "board" venv: what a Raspberry Pi gets — tflite-runtime 2.14.0, numpy<2 and edge_runner,
# and nothing else (no TensorFlow, no pipeline).
#
#   scripts/make_board_venv.sh DIR          # PYTHON=python3.11 by default (tflite-runtime 2.14
#                                           # has wheels for CPython 3.8-3.11 only)
#
# Idempotent: an existing venv that already has the right packages is kept and only the
# edge_runner copy is refreshed (so a cached venv always runs the current source).
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
DIR=$1
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SRC="$HERE/edge_runner"

pick_python() {
  if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return; fi
  for cand in python3.11 python3.10 python3.9 /usr/bin/python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1 &&
       "$cand" -c 'import sys, venv; sys.exit(not ((3, 8) <= sys.version_info[:2] <= (3, 11)))' \
         2>/dev/null; then
      echo "$cand"; return
    fi
  done
  echo "make_board_venv: no Python 3.8-3.11 with venv found (tflite-runtime 2.14 needs one); set PYTHON=" >&2
  exit 1
}

ready() {
  [ -x "$DIR/bin/python" ] && "$DIR/bin/python" - <<'PY' 2>/dev/null
import sys
import numpy, tflite_runtime
sys.exit(not (tflite_runtime.__version__ == "2.14.0" and int(numpy.__version__.split(".")[0]) < 2))
PY
}

if ! ready; then
  PY=$(pick_python)
  rm -rf "$DIR"
  "$PY" -m venv "$DIR"
  "$DIR/bin/python" -m pip install --quiet --disable-pip-version-check \
    "tflite-runtime==2.14.0" "numpy<2"
  ready || { echo "make_board_venv: tflite-runtime 2.14.0 / numpy<2 not importable in $DIR" >&2; exit 1; }
fi

# The runner itself: a plain copy into site-packages (no pip, no deps, no pipeline).
SITE=$("$DIR/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
rm -rf "$SITE/edge_runner.tmp"
mkdir -p "$SITE/edge_runner.tmp"
cp "$SRC"/*.py "$SITE/edge_runner.tmp/"
rm -rf "$SITE/edge_runner"
mv "$SITE/edge_runner.tmp" "$SITE/edge_runner"

cat > "$DIR/bin/edge-runner" <<PY
#!$DIR/bin/python
import sys
from edge_runner.cli import main
sys.exit(main())
PY
chmod +x "$DIR/bin/edge-runner"
echo "$DIR/bin/python"
