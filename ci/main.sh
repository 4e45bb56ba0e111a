#!/usr/bin/env bash
# The main job (README's first command): installs what is missing, builds envoy-qat and runs
# `envoy-qat serve` on a freshly generated key and certificate. Extra arguments go to serve.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
ci/deps.sh
export ENVOY_QAT_DEPS="$repo/build/qat-deps"
cargo build --release --locked --bin envoy-qat
bin="$repo/target/release/envoy-qat"
if "$bin" serve --help >/dev/null 2>&1; then
  exec "$bin" serve "$@"
fi
# Until `serve` lands, the main job is the benchmark.
exec "$bin" bench "$@"
