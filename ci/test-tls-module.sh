#!/usr/bin/env bash
# The module's TLS transport socket `tls` and its wake-up network filter `tls_wake`
# (module/, libenvoy_qat_module.so) in the real stock Envoy 1.40, next to Envoy's own TLS
# listeners in the same Envoy, with real clients: openssl s_client (TLS 1.2 and 1.3, RSA and
# ECDSA, RSA key exchange where configured and refused by default, session resumption), SNI
# filter chain selection with two certificates, curl h1/h2 (and gzip by the module's
# compressor), h2load with no resumption; clients that reset mid-handshake while the key
# operation is in flight on qat-sim; qat-sim fault injection with software failover; a chain
# without tls_wake; `envoy --mode validate` of envoy-config/envoy/module-tls.yaml and of bad
# transport_socket_config values; that bootstrap served; fd and gauge leak checks.
# See ci/tls_module_test.py. Prints ok:/FAIL: lines, exits 1 on any FAIL.
#   usage: ci/test-tls-module.sh [--only REGEX] [--sections LIST] [--envoy-only] [--keep] [-v]
#          (arguments go to the Python side; --envoy-only runs the harness against Envoy's own
#          TLS only, without the module)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
export ENVOY_QAT_DEPS="${ENVOY_QAT_DEPS:-$repo/build/qat-deps}"
py="$repo/build/venv/bin/python"
[[ -x "$py" && -x "$repo/build/venv/bin/envoy" ]] || { echo "test-tls-module: build/venv missing: run ci/deps.sh" >&2; exit 2; }
for tool in openssl curl h2load; do
  command -v "$tool" >/dev/null || { echo "test-tls-module: $tool missing: run ci/deps.sh" >&2; exit 2; }
done
cargo build -q --locked -p envoy-qat-module -p qat-sim     # CARGO_BUILD_JOBS=1 on a shared machine
target="${CARGO_TARGET_DIR:-$repo/target}/debug"
[[ -f "$target/libenvoy_qat_module.so" ]] || { echo "test-tls-module: no $target/libenvoy_qat_module.so" >&2; exit 1; }
[[ -f "$target/libqat_sim.so" ]] || { echo "test-tls-module: no $target/libqat_sim.so" >&2; exit 1; }
exec "$py" "$repo/ci/tls_module_test.py" --module-dir "$target" --sim "$target/libqat_sim.so" "$@"
