#!/usr/bin/env bash
# Print Envoy's build image (envoyproxy/envoy-build-ubuntu:<tag>) named by the pinned
# Envoy release's .bazelrc, for Dockerfile.envoy's BUILD_IMAGE.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
ver=$(sed -n 's/^ENVOY_VERSION = "\(.*\)"/\1/p' "$here/versions.bzl")
sha=$(sed -n 's/^ENVOY_SHA256 = "\(.*\)"/\1/p' "$here/versions.bzl")
cache="${ENVOY_QAT_BAZEL_CACHE:-$here/.cache}"
mkdir -p "$cache"
tarball="$cache/envoy-$ver.tar.gz"
[[ -f "$tarball" ]] || curl -fsSL -o "$tarball" "https://github.com/envoyproxy/envoy/archive/v$ver.tar.gz"
echo "$sha  $tarball" | sha256sum -c --quiet
tar -xzOf "$tarball" "envoy-$ver/.bazelrc" | grep -o 'envoyproxy/envoy-build-ubuntu:[0-9a-f]*' | sort -u | head -n1
