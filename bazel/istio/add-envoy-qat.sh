#!/usr/bin/env bash
# Add envoy-qat's extensions to a checkout of istio/proxy, so its `//:envoy` (the Envoy in
# Istio's proxyv2 image, with Istio's own filters) also carries `qat` and `qatzip`.
#   usage: add-envoy-qat.sh ISTIO_PROXY_DIR ENVOY_QAT_SRC_DIR
# Idempotent: a checkout already patched is left alone.
set -euo pipefail
proxy=$1
src=$(cd "$2" && pwd)
marker="# envoy-qat extensions"
if grep -q "$marker" "$proxy/WORKSPACE"; then
  echo "add-envoy-qat: $proxy already has envoy-qat" >&2
  exit 0
fi
# 1. The extensions join Istio's list of extensions linked into //:envoy.
grep -q '^ISTIO_EXTENSIONS = \[' "$proxy/BUILD" || {
  echo "add-envoy-qat: $proxy/BUILD has no ISTIO_EXTENSIONS list; this istio/proxy layout is not supported" >&2
  exit 1
}
sed -i "/^ISTIO_EXTENSIONS = \[/a\\    \"@envoy_qat//:envoy_extensions\",  $marker" "$proxy/BUILD"
# 2. The envoy-qat sources, its .bzl helpers, and its crates, after Istio's Envoy dependencies.
cat >> "$proxy/WORKSPACE" <<WS

$marker
new_local_repository(
    name = "envoy_qat",
    build_file = "$src/bazel/envoy_qat.BUILD.bazel",
    path = "$src",
)

local_repository(
    name = "envoy_qat_build",
    path = "$src/bazel",
)

load("@rules_rust//crate_universe:defs.bzl", envoy_qat_crate = "crate", envoy_qat_crates_repository = "crates_repository")

envoy_qat_crates_repository(
    name = "envoy_qat_crates",
    annotations = {"cxxbridge-cmd": [envoy_qat_crate.annotation(gen_binaries = ["cxxbridge"])]},
    cargo_lockfile = "@envoy_qat//:Cargo.lock",
    generator = "@cargo_bazel_bootstrap//:cargo-bazel",
    lockfile = "@envoy_qat_build//:cargo-bazel-lock.json",
    manifests = ["@envoy_qat//:Cargo.toml"],
    packages = {"cxxbridge-cmd": envoy_qat_crate.spec(version = "=1.0.205")},
)

load("@envoy_qat_crates//:defs.bzl", envoy_qat_crate_repositories = "crate_repositories")

envoy_qat_crate_repositories()
WS
echo "add-envoy-qat: patched $proxy" >&2
