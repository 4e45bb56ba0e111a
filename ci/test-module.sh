#!/usr/bin/env bash
# The Envoy dynamic module (module/, libenvoy_qat_module.so) in the real stock Envoy 1.40,
# side by side with Envoy's own compressor and decompressor filters in the same Envoy, in front
# of one upstream: every response case (Accept-Encoding variants, content types, sizes around
# min_content_length, statuses, HEAD, no-transform, ETags, Vary, chunked bodies, trailers,
# HTTP/1.1 and HTTP/2) must give the same status, headers, decoded body and counters; request
# decompression with the deliberate differences module/src/decompressor.rs documents; streaming
# in lockstep with the client; upstream resets and client aborts; admin /stats; `envoy --mode
# validate` of envoy-config/envoy/module-compression.yaml and of bad filter configs; that
# bootstrap served over TLS; and --concurrency 1 with a slow asynchronous compressor.
# See ci/module_side_by_side.py for the cases. Prints ok:/FAIL: lines, exits 1 on any FAIL.
#   usage: ci/test-module.sh [--only REGEX] [--keep] [-v]      (arguments go to the Python side)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
export ENVOY_QAT_DEPS="${ENVOY_QAT_DEPS:-$repo/build/qat-deps}"
py="$repo/build/venv/bin/python"
[[ -x "$py" && -x "$repo/build/venv/bin/envoy" ]] || { echo "test-module: build/venv missing: run ci/deps.sh" >&2; exit 2; }
cargo build -q --locked -p envoy-qat-module
module_dir="${CARGO_TARGET_DIR:-$repo/target}/debug"
[[ -f "$module_dir/libenvoy_qat_module.so" ]] || { echo "test-module: no $module_dir/libenvoy_qat_module.so" >&2; exit 1; }
exec "$py" "$repo/ci/module_side_by_side.py" --module-dir "$module_dir" "$@"
