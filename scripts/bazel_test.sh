#!/usr/bin/env bash
# CI's Bazel job: the fast test set (tag "ci") under `bazel test`, offline.
#   bash scripts/bazel_test.sh                          # what .ci/run runs
#   bash scripts/bazel_test.sh --test_tag_filters=-slow # the whole default set
# Extra arguments go to `bazel test` after the defaults, so they override them.
# Needs the project virtualenv (.venv, made by scripts/setup.sh) or
# $EFFNET_TF_PYTHON; installs Debian's bazel-bootstrap when `bazel` is missing.
# Stops the Bazel server at the end (it would otherwise idle for hours).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v bazel >/dev/null 2>&1; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  log=$(mktemp)
  echo "[bazel] installing bazel-bootstrap (apt-get)"
  # Refresh the package lists only when they do not offer bazel-bootstrap,
  # or when they are stale (the install then fails to fetch).
  if ! apt-cache show bazel-bootstrap >"$log" 2>&1; then
    $sudo apt-get update -q >"$log" 2>&1 || { cat "$log"; exit 1; }
  fi
  if ! $sudo apt-get install -y -q bazel-bootstrap >"$log" 2>&1; then
    $sudo apt-get update -q >"$log" 2>&1 || { cat "$log"; exit 1; }
    $sudo apt-get install -y -q bazel-bootstrap >"$log" 2>&1 || { tail -n 50 "$log"; exit 1; }
  fi
  rm -f "$log"
fi

if [ -z "${EFFNET_TF_PYTHON:-}" ] && [ ! -x .venv/bin/python ]; then
  echo "[bazel] no .venv/bin/python and no \$EFFNET_TF_PYTHON: run 'bash scripts/setup.sh' first" >&2
  exit 1
fi

export TF_CPP_MIN_LOG_LEVEL=2
trap 'bazel shutdown >/dev/null 2>&1 || true' EXIT
echo "[bazel] $(dpkg-query -W -f='bazel-bootstrap ${Version}' bazel-bootstrap 2>/dev/null || echo bazel):" \
     "bazel test --config=ci --test_tag_filters=ci,-slow //... $*"
bazel test --config=ci --test_tag_filters=ci,-slow "$@" //...
