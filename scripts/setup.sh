#!/usr/bin/env bash
# Creates .venv in the repository root with everything the project, its tests and its demo need.
# Idempotent: a second run only checks that the pinned packages are present.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
echo "[setup] installing requirements-dev.txt into .venv (first run takes a few minutes)"
.venv/bin/python -m pip install --disable-pip-version-check -q -r requirements-dev.txt 2>&1 \
  | grep -v -E "^WARNING: Location .* is ignored" || true
.venv/bin/python -m pip install --disable-pip-version-check -q --no-deps -e . 2>&1 \
  | grep -v -E "^WARNING: Location .* is ignored" || true
.venv/bin/python -c "import tensorflow as tf, keras; print('[setup] ready: tensorflow', tf.__version__, 'keras', keras.__version__)"
