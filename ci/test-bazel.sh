#!/usr/bin/env bash
# What can be checked of bazel/ without internet for Bazel: buildifier lint of every
# BUILD/.bzl/WORKSPACE file, shell syntax of the build scripts, the Envoy version pinned in
# one place, and the add-envoy-qat patcher run against a copy of istio/proxy's layout.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bf="$repo/build/tools/buildifier"
cd "$repo"
lint() { # type files...
  local type=$1; shift
  "$bf" -mode=check -lint=warn -type="$type" "$@" || {
    echo "buildifier: bazel/ is not clean; run  build/tools/buildifier -lint=fix -type=$type $*" >&2
    exit 1
  }
}
lint build bazel/BUILD.bazel bazel/envoy_qat.BUILD.bazel
lint workspace bazel/WORKSPACE.bazel
lint bzl bazel/*.bzl
for s in "$repo"/bazel/*.sh "$repo"/bazel/istio/*.sh; do bash -n "$s"; done
grep -q 'ENVOY_SHA256 = "[0-9a-f]\{64\}"' "$repo/bazel/versions.bzl"
# cxxbridge in Bazel must be the same version as the cxx crate in Cargo.lock.
cxx=$(awk '/^name = "cxx"$/{getline; gsub(/version = |"/,""); print; exit}' "$repo/Cargo.lock")
if [[ -n "$cxx" ]]; then
  grep -q "=$cxx\"" "$repo/bazel/WORKSPACE.bazel" \
    || { echo "bazel/WORKSPACE.bazel: cxxbridge-cmd must be =$cxx like Cargo.lock's cxx" >&2; exit 1; }
  grep -q "=$cxx\"" "$repo/bazel/istio/add-envoy-qat.sh" \
    || { echo "bazel/istio/add-envoy-qat.sh: cxxbridge-cmd must be =$cxx" >&2; exit 1; }
fi
# The istio/proxy patcher: applied to a tree with istio/proxy's BUILD layout, twice.
t=$(mktemp -d); trap 'rm -rf "$t"' EXIT
printf 'ISTIO_EXTENSIONS = [\n    "//source/extensions/filters/http/alpn:config_lib",\n]\n' > "$t/BUILD"
printf 'workspace(name = "io_istio_proxy")\n' > "$t/WORKSPACE"
"$repo/bazel/istio/add-envoy-qat.sh" "$t" "$repo" 2>/dev/null
"$repo/bazel/istio/add-envoy-qat.sh" "$t" "$repo" 2>/dev/null
[[ $(grep -c '@envoy_qat//:envoy_extensions' "$t/BUILD") == 1 ]]
[[ $(grep -c 'name = "envoy_qat"' "$t/WORKSPACE") == 1 ]]
"$bf" -mode=check -type=workspace "$t/WORKSPACE" >/dev/null 2>&1 || "$bf" -type=workspace -d "$t/WORKSPACE" | head -20
echo "bazel/: lint clean"
