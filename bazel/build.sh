#!/usr/bin/env bash
# Build the custom Envoy (bazel/BUILD.bazel //:envoy) on a machine with internet access, in
# Envoy's build image (Dockerfile.envoy does), which has Bazel(isk). The compiler is Envoy's
# hermetic clang + libc++ (toolchains_llvm, `--config=clang`), which Bazel fetches.
#  1. The Rust core: cargo + cxxbridge (bazel/rust-staticlib.sh) into ../target/envoy-qat-bazel,
#     unless that directory already holds a checked build (Dockerfile.envoy's Rust stage
#     made it: ENVOY_QAT_RUST_PREBUILT=1).
#  2. Envoy's .bazelversion and .bazelrc from the pinned archive (its sha256 checked); the
#     .bazelrc's one workspace-relative path (its workspace status script) is pointed at a
#     file of this workspace, and any other one stops the build.
#  3. bazel build -c opt //:envoy with Envoy's clang/libc++ configuration.
#   usage: bazel/build.sh [extra bazel build flags]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
rust_out="$repo/target/envoy-qat-bazel"
if [[ "${ENVOY_QAT_RUST_PREBUILT:-0}" == 1 ]]; then
  "$here/check-staticlib.sh" "$rust_out"
else
  "$here/rust-staticlib.sh" "$rust_out" release
fi

fetched=$("$here/fetch-envoy.sh") # fails on a checksum mismatch
eval "$fetched"
cp "$dir/.bazelversion" "$here/.bazelversion"
# Files an older pin's build wrote here, which Envoy's .bazelrc would still pick up
# (it try-imports clang.bazelrc).
rm -f "$here/clang.bazelrc" "$here/envoy_platform_mappings"
# Envoy's .bazelrc names one file relative to Envoy's own workspace: its workspace status
# script (it reads Envoy's git checkout).
sed -e 's|^build --workspace_status_command=.*|build --workspace_status_command="bash workspace_status.sh"|' \
  "$dir/.bazelrc" > "$here/envoy.bazelrc"
if grep -nE '^[a-z:-]+ .*(=| )bazel/[a-z_]+' "$here/envoy.bazelrc" | grep -v '^[0-9]*:#' | grep -v '%workspace%' >&2; then
  echo "build.sh: Envoy's .bazelrc names more workspace-relative files (above): map them too" >&2
  exit 1
fi

cd "$here"
"${BAZEL:-bazel}" build -c opt //:envoy "$@"
echo "built: $("${BAZEL:-bazel}" info -c opt bazel-bin)/envoy"
