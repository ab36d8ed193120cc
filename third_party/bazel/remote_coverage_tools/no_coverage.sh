#!/bin/sh
echo "bazel coverage is not available: @remote_coverage_tools is an offline stand-in (third_party/bazel/remote_coverage_tools)." >&2
exit 1
