#!/usr/bin/env bash
# Benchmark: new-connection TLS 1.3 handshakes per second through `envoy-qat serve`, with
# private-key operations through the provider (cpp/ssl -> engine -> software backend)
# against the same server with the key handed to BoringSSL directly (--key-mode
# boringssl, Envoy's fallback path), RSA-2048 and ECDSA P-256, in one run. Each h2load
# request is a new TLS connection (HTTP/1.1 with Connection: close). The QAT backend over
# tests/qat-sim runs with the adaptive poller and with upstream's fixed poll sleep; each
# line also gives the server's CPU time per handshake (the simulator's worker included).
#   usage: ci/bench-abi.sh [REQUESTS=3000] [CLIENTS=50]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
n=${1:-3000}
c=${2:-50}
export ENVOY_QAT_DEPS="${ENVOY_QAT_DEPS:-$repo/build/qat-deps}"
cargo build --release --locked -p envoy-qat --bin envoy-qat 2>&1 | tail -1
cargo build --release --locked -p qat-sim 2>&1 | tail -1
sim="$repo/target/release/libqat_sim.so"
bin=target/release/envoy-qat
work=$(mktemp -d)
pid=""
trap '[[ -n "$pid" ]] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT

cpu_ticks() { # PID -> user + system clock ticks of that process (all its threads)
  awk '{ print $14 + $15 }' "/proc/$1/stat"
}

run() { # KEYTYPE MODE [extra serve args] -> prints one line, sets $rate
  local kt=$1 mode=$2
  shift 2
  local log="$work/$kt-$mode.log"
  : >"$log"
  "$bin" serve --listen 127.0.0.1:0 --key-type "$kt" --key-mode "$mode" "$@" >"$log" 2>&1 &
  pid=$!
  local port=""
  for _ in $(seq 1 300); do
    port=$(sed -n 's|.*listening on https://127.0.0.1:\([0-9]*\)/.*|\1|p' "$log")
    [[ -n "$port" ]] && break
    sleep 0.1
  done
  # Warm up, then measure.
  h2load --h1 -n 200 -c "$c" -H 'Connection: close' "https://127.0.0.1:$port/" >/dev/null 2>&1
  local out t0 t1
  t0=$(cpu_ticks "$pid")
  out=$(h2load --h1 -n "$n" -c "$c" -H 'Connection: close' "https://127.0.0.1:$port/" 2>&1)
  t1=$(cpu_ticks "$pid")
  kill -TERM "$pid"
  wait "$pid" || true
  pid=""
  rate=$(grep -o 'finished in [^,]*, [0-9.]*' <<<"$out" | awk '{print $NF}')
  local ok connect p50 p99
  ok=$(grep -o '[0-9]* succeeded' <<<"$out" | awk '{print $1}')
  connect=$(grep '^time for connect' <<<"$out" | awk '{print "mean " $6 " max " $5}')
  p50=$(grep -o 'handshake_p50=[^ ]*' "$log" | cut -d= -f2)
  p99=$(grep -o 'handshake_p99=[^ ]*' "$log" | cut -d= -f2)
  local cpu_us="-"
  [[ "${ok:-0}" -gt 0 ]] && cpu_us=$(( (t1 - t0) * 1000000 / $(getconf CLK_TCK) / ok ))
  printf '%-8s %-56s %9s handshakes/s  ok=%s  server CPU %s us/handshake  server handshake p50=%s p99=%s  h2load connect %s\n' \
    "$kt" "$mode $*" "$rate" "$ok" "$cpu_us" "$p50" "$p99" "$connect"
}

echo "h2load --h1 -n $n -c $c -H 'Connection: close' (each request a new TLS 1.3 handshake); $(nproc) cores"
for kt in rsa2048 p256; do
  run "$kt" provider --backend soft
  prov=$rate
  # The QAT backend over tests/qat-sim (not hardware: it computes on these same cores).
  # Adaptive poller against upstream's fixed sleep, both with a 1 ms poll_delay.
  ENVOY_QAT_LIB="$sim" QAT_SIM_LATENCY_US=${QAT_SIM_LATENCY_US:-50} QAT_SIM_INSTANCES=2 \
    run "$kt" provider --backend qat --poll-delay-ms 1
  sim_rate=$rate
  ENVOY_QAT_LIB="$sim" QAT_SIM_LATENCY_US=${QAT_SIM_LATENCY_US:-50} QAT_SIM_INSTANCES=2 \
    run "$kt" provider --backend qat --poll-delay-ms 1 --poll-policy fixed
  fixed_rate=$rate
  run "$kt" boringssl
  base=$rate
  awk -v p="$prov" -v q="$sim_rate" -v f="$fixed_rate" -v b="$base" -v k="$kt" 'BEGIN {
    printf "%-8s ratio provider(soft)/boringssl = %.2f   provider(qat-sim)/boringssl = %.2f   qat-sim adaptive/fixed poll = %.2f\n", k, p / b, q / b, q / f }'
done
