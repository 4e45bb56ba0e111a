#!/usr/bin/env bash
# Benchmark: new TLS 1.3 handshakes/s and Envoy CPU per handshake in ONE stock Envoy 1.40, for
# (a) Envoy's own TLS, (b) the module's `tls` transport socket with the key held by BoringSSL in
# the module (mode boring), (c) the module on envoy-qat's engine with qat-sim at a fixed device
# latency, (d) the engine's software backend; RSA 2048, resumption off, h2load with one request
# per new connection. Prints the figures and the ratios (b)/(a), (c)/(b), (d)/(b) with the
# targets; no pass/fail on timing. See ci/bench_tls_module.py.
#   usage: ci/bench-tls-module.sh [--rounds N] [--requests N] [--clients N] [--load close|burst]
#                                 [--latency-us N] [--fronts envoy,boring,qat-sim,software]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
export ENVOY_QAT_DEPS="${ENVOY_QAT_DEPS:-$repo/build/qat-deps}"
py="$repo/build/venv/bin/python"
[[ -x "$py" && -x "$repo/build/venv/bin/envoy" ]] || { echo "bench-tls-module: build/venv missing: run ci/deps.sh" >&2; exit 2; }
for tool in h2load openssl; do
  command -v "$tool" >/dev/null || { echo "bench-tls-module: $tool missing: run ci/deps.sh" >&2; exit 2; }
done
cargo build -q --locked --release -p envoy-qat-module -p qat-sim     # CARGO_BUILD_JOBS=1 on a shared machine
target="${CARGO_TARGET_DIR:-$repo/target}/release"
exec "$py" "$repo/ci/bench_tls_module.py" --module-dir "$target" --sim "$target/libqat_sim.so" "$@"
