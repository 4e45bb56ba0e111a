#!/usr/bin/env bash
# Benchmark: the Envoy dynamic module's gzip (release build of module/) against Envoy's built-in
# gzip compressor in the stock Envoy 1.40, same parameters (level 6, memory_level 5,
# window_bits 12, chunk_size 4096), on the web corpus (ci/web-corpus.sh) at response sizes of
# about 1 KiB, 32 KiB and 1 MiB, under h2load: each front Envoy's process CPU (from
# /proc/PID/stat, module threads included) per MB compressed, requests/s, and the output size
# relative to the built-in's. See ci/bench_module.py. Prints figures; no pass/fail.
#   usage: ci/bench-module.sh [--rounds N] [--scale X] [--fronts builtin,module,module-software,none]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
export ENVOY_QAT_DEPS="${ENVOY_QAT_DEPS:-$repo/build/qat-deps}"
py="$repo/build/venv/bin/python"
[[ -x "$py" && -x "$repo/build/venv/bin/envoy" ]] || { echo "bench-module: build/venv missing: run ci/deps.sh" >&2; exit 2; }
command -v h2load >/dev/null || { echo "bench-module: h2load (nghttp2-client) missing: run ci/deps.sh" >&2; exit 2; }
cargo build -q --locked --release -p envoy-qat-module
module_dir="${CARGO_TARGET_DIR:-$repo/target}/release"
web=$("$repo/ci/web-corpus.sh")
echo "# web corpus $(grep sha256 "$(dirname "$web")/corpus.txt")"
exec "$py" "$repo/ci/bench_module.py" --module-dir "$module_dir" --corpus "$web" "$@"
