#!/usr/bin/env bash
# Print one value pinned in bazel/versions.bzl, e.g. `bazel/pin.sh ENVOY_BUILD_IMAGE`, for
# the scripts, Dockerfile build arguments and the workflow (versions live in that file only).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
val=$(sed -n "s/^$1 = \"\(.*\)\"\$/\1/p" "$here/versions.bzl")
[[ -n "$val" ]] || { echo "pin.sh: no $1 in bazel/versions.bzl" >&2; exit 1; }
echo "$val"
