#!/usr/bin/env bash
# Add envoy-qat's extensions to a checkout of istio/proxy, so its `//:envoy` (the Envoy in
# Istio's proxyv2 image, with Istio's own filters) carries `qat` and `qatzip`.
#   usage: add-envoy-qat.sh ISTIO_PROXY_DIR ENVOY_QAT_SRC_DIR
# ENVOY_QAT_SRC_DIR/target/envoy-qat-bazel must hold bazel/rust-staticlib.sh's output.
# Idempotent: a checkout already patched is left alone.
set -euo pipefail
proxy=$1
src=$(cd "$2" && pwd)
marker="# envoy-qat extensions"
ext="$proxy/bazel/extension_config/extensions_build_config.bzl"
if grep -q "$marker" "$proxy/WORKSPACE"; then
  echo "add-envoy-qat: $proxy already has envoy-qat" >&2
  exit 0
fi
for f in "$proxy/BUILD" "$proxy/WORKSPACE" "$ext"; do
  [[ -f "$f" ]] || { echo "add-envoy-qat: $f missing; this istio/proxy layout is not supported" >&2; exit 1; }
done
grep -q '^ISTIO_EXTENSIONS = \[' "$proxy/BUILD" || {
  echo "add-envoy-qat: $proxy/BUILD has no ISTIO_EXTENSIONS list; this istio/proxy layout is not supported" >&2
  exit 1
}
grep -q '^ISTIO_ENABLED_CONTRIB_EXTENSIONS = \[' "$ext" || {
  echo "add-envoy-qat: $ext has no ISTIO_ENABLED_CONTRIB_EXTENSIONS list; this istio/proxy layout is not supported" >&2
  exit 1
}
# 1. istio/proxy 1.20 to 1.28 link Envoy's contrib QAT private key provider. It registers
#    the factory name `qat` and the proto message envoy.extensions.private_key_providers.qat.
#    v3alpha.QatPrivateKeyMethodConfig, as ours does (wire-compatible on purpose): both in one
#    binary abort Envoy at start-up. Take upstream's (and its qatzip, should a release enable it) out
#    of the enabled contrib list (later istio/proxy branches comment it out themselves).
for name in envoy.tls.key_providers.qat envoy.compression.qatzip.compressor; do
  sed -i "/^ISTIO_ENABLED_CONTRIB_EXTENSIONS = \[/,/^\]/{/^[[:space:]]*\"${name//./\\.}\",/d}" "$ext"
  if sed -n '/^ISTIO_ENABLED_CONTRIB_EXTENSIONS = \[/,/^\]/p' "$ext" | grep -Eq "^[[:space:]]*\"$name\""; then
    echo "add-envoy-qat: could not remove $name from $ext" >&2
    exit 1
  fi
done
# 2. The extensions join Istio's list of extensions linked into //:envoy.
sed -i "/^ISTIO_EXTENSIONS = \[/a\\    \"@envoy_qat//:envoy_extensions\",  $marker" "$proxy/BUILD"
# 3. The envoy-qat sources, the BUILD files for them, and cargo's output.
cat >> "$proxy/WORKSPACE" <<WS

$marker
local_repository(
    name = "envoy_qat_build",
    path = "$src/bazel",
)

new_local_repository(
    name = "envoy_qat",
    build_file = "@envoy_qat_build//:envoy_qat.BUILD.bazel",
    path = "$src",
)

new_local_repository(
    name = "envoy_qat_rust",
    build_file = "@envoy_qat_build//:envoy_qat_rust.BUILD.bazel",
    path = "$src/target/envoy-qat-bazel",
)
WS
echo "add-envoy-qat: patched $proxy" >&2
