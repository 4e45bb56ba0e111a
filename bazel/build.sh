#!/usr/bin/env bash
# Build the custom Envoy (bazel/BUILD.bazel //:envoy) on a machine with internet access.
# Reads the Bazel version and the build image from the pinned Envoy release itself, so
# every tool version is the one Envoy pins. Run inside Envoy's build image (Dockerfile.envoy
# does), or on a host with bazelisk, clang and the qatlib/QATzip -dev headers.
#   usage: bazel/build.sh [extra bazel build flags]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
fetched=$("$here/fetch-envoy.sh") # fails on a checksum mismatch
eval "$fetched"
# Envoy's .bazelrc (build settings, toolchains) and .bazelversion, from the same archive.
tar -xzf "$tarball" -C "$cache" "envoy-$ver/.bazelrc" "envoy-$ver/.bazelversion"
cp "$cache/envoy-$ver/.bazelversion" "$here/.bazelversion"
cp "$cache/envoy-$ver/.bazelrc" "$here/envoy.bazelrc"
if [[ ! -f "$here/cargo-bazel-lock.json" ]]; then
  # First build: let crate_universe write the lock file from Cargo.lock; commit it afterwards.
  export CARGO_BAZEL_REPIN=1
fi
cd "$here"
bazelisk build -c opt //:envoy "$@"
echo "built: $(bazelisk info -c opt bazel-bin)/envoy"
