#!/usr/bin/env bash
# Download the pinned Envoy source archive (versions.bzl) once, check its sha256, and print
# its path and version. Shared by build.sh and build-image.sh.
#   usage: fetched=$(bazel/fetch-envoy.sh); eval "$fetched"   -> sets tarball, ver, cache
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
ver=$(sed -n 's/^ENVOY_VERSION = "\(.*\)"/\1/p' "$here/versions.bzl")
sha=$(sed -n 's/^ENVOY_SHA256 = "\(.*\)"/\1/p' "$here/versions.bzl")
cache="${ENVOY_QAT_BAZEL_CACHE:-$here/.cache}"
mkdir -p "$cache"
tarball="$cache/envoy-$ver.tar.gz"
if [[ ! -f "$tarball" ]]; then
  curl -fsSL -o "$tarball.part" "https://github.com/envoyproxy/envoy/archive/v$ver.tar.gz"
  mv "$tarball.part" "$tarball"
fi
echo "$sha  $tarball" | sha256sum -c --quiet >&2
printf 'tarball=%q\nver=%q\ncache=%q\n' "$tarball" "$ver" "$cache"
