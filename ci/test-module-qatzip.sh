#!/usr/bin/env bash
# The module's QATzip path inside the real stock Envoy 1.40, with the QATzip simulator
# (tests/qat-sim, ENVOY_QATZIP_LIB) standing in for libqatzip and a QAT device:
#  1. a device with 2 DC instances: 16 responses compressed on the "device" decode with
#     gzip and equal the body; hardware_bytes + software_bytes is every input byte, no
#     errors, and no "upper bound" line (the self-check proves QATzip's total_in is
#     device-only);
#  2. a QATzip whose total_in also counts its software path (`total_in_counts_sw=1`): one
#     log line saying hardware bytes are an upper bound, and hardware_bytes above run 1's
#     (the input QATzip sent to its software path, counted as hardware);
#  3. no device: everything in software, hardware_bytes 0, outputs still right.
# Each run is its own Envoy (the simulator's state is per process).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
export ENVOY_QAT_DEPS="${ENVOY_QAT_DEPS:-$repo/build/qat-deps}"
fail() { echo "test-module-qatzip: FAIL: $*" >&2; exit 1; }
pass() { echo "test-module-qatzip: ok: $*"; }
envoy="$repo/build/venv/bin/envoy"
[[ -x "$envoy" ]] || fail "stock Envoy not found in build/venv: run ci/deps.sh"
cargo build -q --locked -p envoy-qat-module -p qat-sim
target="${CARGO_TARGET_DIR:-$repo/target}/debug"
sim="$target/libqat_sim.so"
[[ -f "$sim" && -f "$target/libenvoy_qat_module.so" ]] || fail "module or simulator not built in $target"
t=$(mktemp -d)
pid=""
cleanup() { [[ -n "$pid" ]] && kill "$pid" 2>/dev/null; rm -rf "$t"; }
trap cleanup EXIT

# A 512 KiB text body (repetitive enough to compress, varied enough to exercise deflate).
python3 - "$t/body" <<'PY'
import random, sys
random.seed(7)
words = ["envoy", "qat", "gzip", "deflate", "istio", "sidecar", "header", "stream", "window"]
with open(sys.argv[1], "w") as f:
    n = 0
    while n < 512 * 1024:
        line = " ".join(random.choice(words) for _ in range(12)) + f" {n}\n"
        f.write(line)
        n += len(line)
PY

run() { # name QATZIP_SIM
  local name=$1 simcfg=$2 port=$((20000 + RANDOM % 10000)) admin # below the ephemeral range
  admin=$((port + 1))
  cat > "$t/$name.yaml" <<YAML
admin: {address: {socket_address: {address: 127.0.0.1, port_value: $admin}}}
static_resources:
  listeners:
  - address: {socket_address: {address: 127.0.0.1, port_value: $port}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: q
          route_config:
            max_direct_response_body_size_bytes: 1048576
            virtual_hosts:
            - name: q
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                direct_response: {status: 200, body: {filename: "$t/body"}}
          http_filters:
          - name: compressor
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter
              dynamic_module_config: {name: envoy_qat_module}
              filter_name: compressor
              filter_config: {"@type": type.googleapis.com/google.protobuf.StringValue, value: '{"backend": "qatzip", "compression_level": 6}'}
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
YAML
  ENVOY_DYNAMIC_MODULES_SEARCH_PATH="$target" ENVOY_QATZIP_LIB="$sim" QATZIP_SIM="$simcfg" \
    "$envoy" -c "$t/$name.yaml" --concurrency 2 --disable-hot-restart --log-level info \
    > "$t/$name.log" 2>&1 &
  pid=$!
  local ready=""
  for _ in $(seq 100); do
    if curl -sf -o /dev/null "http://127.0.0.1:$admin/ready" 2>/dev/null; then ready=1; break; fi
    kill -0 "$pid" 2>/dev/null || fail "$name: Envoy exited: $(tail -5 "$t/$name.log")"
    sleep 0.1
  done
  [[ -n "$ready" ]] || fail "$name: Envoy not ready after 10 s: $(tail -5 "$t/$name.log")"
  # 16 responses, 8 at a time.
  local curls=()
  for i in $(seq 16); do
    curl -s -H 'accept-encoding: gzip' -o "$t/$name.$i.gz" "http://127.0.0.1:$port/" &
    curls+=($!)
    if (( i % 8 == 0 )); then wait "${curls[@]}"; curls=(); fi
  done
  for i in $(seq 16); do
    gzip -t "$t/$name.$i.gz" 2>/dev/null || fail "$name: response $i is not valid gzip"
    gzip -dc "$t/$name.$i.gz" | cmp -s - "$t/body" || fail "$name: response $i does not decode to the body"
  done
  curl -s "http://127.0.0.1:$admin/stats" > "$t/$name.stats"
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
}
counter() { # name counter
  awk -v k="dynamicmodulescustom.compressor.$2: " 'index($0, k) == 1 {print substr($0, length(k) + 1)}' "$t/$1.stats"
}
upper_bound_lines() { grep -c "hardware bytes are counted from the session status, an upper bound" "$t/$1.log" || true; }
total=$((16 * $(stat -c %s "$t/body")))
common() { # name: every response compressed, no errors, every input byte counted once
  local c e h s
  c=$(counter "$1" compressed); e=$(counter "$1" errors); h=$(counter "$1" hardware_bytes); s=$(counter "$1" software_bytes)
  [[ "$c" == 16 ]] || fail "$1: compressed=$c, want 16"
  [[ "$e" == 0 ]] || fail "$1: errors=$e"
  [[ $((h + s)) == "$total" ]] || fail "$1: hardware_bytes $h + software_bytes $s != $total input bytes"
}

run device "instances=2"
common device
hw=$(counter device hardware_bytes)
[[ "$hw" -gt 0 ]] || fail "device: hardware_bytes=$hw"
[[ $(upper_bound_lines device) == 0 ]] || fail "device: logged an upper bound though QATzip's total_in is device-only"
pass "QATzip simulator with 2 instances in Envoy: 16 responses decode with gzip, hardware_bytes=$hw + software_bytes=$(counter device software_bytes) = all $total input bytes, errors 0, no upper-bound line"

run bound "instances=2,total_in_counts_sw=1"
common bound
hwb=$(counter bound hardware_bytes)
[[ "$hwb" -gt "$hw" ]] || fail "bound: hardware_bytes=$hwb, not above the exact run's $hw"
[[ $(upper_bound_lines bound) == 1 ]] || fail "bound: want one 'upper bound' log line, got $(upper_bound_lines bound)"
pass "a QATzip whose total_in counts software too: hardware_bytes=$hwb (exact run: $hw), logged once as an upper bound"

run nodev "no_device=1"
common nodev
[[ $(counter nodev hardware_bytes) == 0 ]] || fail "nodev: hardware_bytes=$(counter nodev hardware_bytes) without a device"
pass "no device: 16 responses decode, hardware_bytes 0, software_bytes=$(counter nodev software_bytes)"
echo "test-module-qatzip: all passed"
