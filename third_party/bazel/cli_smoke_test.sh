#!/usr/bin/env bash
# Runs a py_binary (or any program) once and checks what it did:
#   cli_smoke_test.sh EXPECTED_STATUS REGEX PROGRAM [ARGS...]
# passes when PROGRAM ARGS exits with EXPECTED_STATUS and its stdout+stderr
# match the extended regular expression REGEX. Used by the BUILD files to show
# that each py_binary starts from its runfiles (imports resolve through the
# BUILD deps, package data is found) and parses its command line.
set -u
if [ $# -lt 3 ]; then
  echo "usage: $0 EXPECTED_STATUS REGEX PROGRAM [ARGS...]" >&2
  exit 2
fi
expected=$1
regex=$2
program=$3
shift 3
output=$("$program" "$@" 2>&1)
status=$?
echo "\$ $program $*  (exit status $status)"
echo "$output" | tail -n 40
if [ "$status" -ne "$expected" ]; then
  echo "FAIL: exit status $status, expected $expected" >&2
  exit 1
fi
if ! grep -Eq -- "$regex" <<<"$output"; then
  echo "FAIL: output does not match /$regex/" >&2
  exit 1
fi
echo "PASS: exit status $status, output matches /$regex/"
