#!/usr/bin/env bash
# Print Envoy's build image (envoyproxy/envoy-build-ubuntu:<tag>) named by the pinned
# Envoy release's .bazelrc, for Dockerfile.envoy's BUILD_IMAGE.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
fetched=$("$here/fetch-envoy.sh") # fails on a checksum mismatch
eval "$fetched"
tar -xzOf "$tarball" "envoy-$ver/.bazelrc" | grep -o 'envoyproxy/envoy-build-ubuntu:[0-9a-f]*' | sort -u | head -n1
