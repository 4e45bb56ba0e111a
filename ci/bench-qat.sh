#!/usr/bin/env bash
# Benchmark for the QAT backend's figures: the same `envoy-qat bench` run on the software
# backend and on the QAT backend over tests/qat-sim (simulated device latency
# QAT_SIM_LATENCY_US, default 50 us), with our adaptive poller and with upstream's fixed
# poll_delay sleep, at 1, 4, 8, 16 and 256 operations in flight (the adaptive poller spins
# below 8 in flight and batches from 8 until fewer than 4).
# Each point prints ops/s and p50/p99, the poll thread's CPU (share of a core, per op), and
# from the simulator's own counters the mean device time and the latency the engine added
# over it; the c=1 points also measure the idle poll thread afterwards.
# qat-sim is NOT hardware: it computes with the system libcrypto on this machine's cores
# (competing with the engine: at 16 and 256 in flight its worker saturates a core) and
# models only the API contract and a fixed latency.
#   usage: ci/bench-qat.sh [seconds-per-point]   (release build; prints figures, no pass/fail)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
secs=${1:-3}
cargo build -q --release -p envoy-qat -p qat-sim
bin="$repo/target/release/envoy-qat"
sim="$repo/target/release/libqat_sim.so"
export QAT_SIM_LATENCY_US=${QAT_SIM_LATENCY_US:-50} QAT_SIM_RING=512 QAT_SIM_INSTANCES=2 QAT_SIM_WORKERS=1
common=(--seconds "$secs" --no-openssl --no-overhead --key-types "${KEY_TYPES:-p256,rsa2048}")
echo "# qat-sim device latency ${QAT_SIM_LATENCY_US} us, $(nproc) cores"
for c in 1 4 8 16 256; do
  idle=()
  [[ $c == 1 ]] && idle=(--idle-seconds 2)
  "$bin" bench --backend soft --threads 1 --concurrency "$c" "${common[@]}" | grep -v '^envoy-qat bench'
  "$bin" bench --backend qat --no-fallback --qat-lib "$sim" --poll-policy adaptive --poll-delay-ms 1 \
    --concurrency "$c" "${common[@]}" "${idle[@]}" | grep -v '^envoy-qat bench' | sed 's/$/   [qat-sim, adaptive poll]/'
  "$bin" bench --backend qat --no-fallback --qat-lib "$sim" --poll-policy fixed --poll-delay-ms 1 \
    --concurrency "$c" "${common[@]}" "${idle[@]}" | grep -v '^envoy-qat bench' | sed 's/$/   [qat-sim, fixed 1 ms poll (upstream)]/'
done
