#!/usr/bin/env bash
# Fault-injection soak (issue 8, item 3).
#
# 1. `envoy-qat serve` on the QAT backend over tests/qat-sim with faults switched on
#    (random submit failures, callback failures, RETRY storms, slow answers, every
#    instance restarting every few seconds, responses that never arrive and silent
#    device resets, both caught by a 500 ms per-operation deadline; 2 instances) and
#    software failover per
#    operation on (the default), under h2load: every request of the main lane is a new
#    TLS 1.3 handshake (HTTP/1.1 with Connection: close, as ci/bench-abi.sh does), and a
#    small HTTP/2 lane asks for gzip over a few long connections, and an abort lane
#    (python3) resets connections 0-20 ms after its ClientHello, often while the
#    server's signature is in flight (serve notices the reset only after the operation
#    ends, so these end as completed operations and failed handshakes, not cancels;
#    cancels are covered by tests/qat_pinned.rs and tests/tls_cancel.rs).
#    Every SOAK_SAMPLE_SECS
#    one table line: handshakes, RSS, open fds, pinned memory outstanding, the
#    provider's counters and the faults the QAT backend saw.
#    At the end it asserts: h2load saw no failed/errored/timed-out request (with
#    fallback on no handshake may fail), the server's handshake failures are at most the
#    aborted clients, every
#    provider operation ended exactly once (submitted = completed + failed + cancelled,
#    none in flight) and none failed, pinned memory outstanding once the load ended is
#    exactly the quarantined blocks (past their deadline and never answered: kept until
#    qatlib stops, then reclaimed), open fds end <= start + SOAK_CLIENTS + 16, RSS growth after the warm-up
#    (from a reading taken under load once 10% of the handshakes are done, to the largest
#    later reading and to the reading at the end) <= SOAK_RSS_SLACK_MB (no such reading
#    is a failure), that every counter it reads was there, and that faults did happen.
# 2. The compressor soak (tests/soak_compress.rs): SOAK_COMPRESS_BYTES through the
#    Compressor with random write sizes and Flush points, decoded and compared as it
#    goes, MB/s and RSS printed over time, RSS flat after warm-up.
#
# Key: ECDSA P-256 (SOAK_KEY_TYPE). On qat-sim an RSA-2048 signature costs several
# times a P-256 one (the simulator does RSA with num-bigint), so 200k handshakes take
# minutes with P-256 on 2 cores instead of most of an hour with RSA-2048.
#
# RSS bound (SOAK_RSS_SLACK_MB, default 32 MB): after the warm-up the server's working
# set is fixed (at most SOAK_CLIENTS+2 connections with their TLS and HTTP state, the
# engine's pool of at most 1024 eventfds and its operation slots, the allocator's
# arenas), so a flat server stays within allocator noise of a few MB. 32 MB over the
# ~90% of handshakes after the warm-up is 32 MB / 180k = ~190 bytes per handshake at the
# full size: any per-handshake or per-operation leak (an SSL object, a connection task, an
# operation context, a key copy) exceeds it many times over. At the CI size (5k
# handshakes) only leaks of >= ~7 KB per handshake are caught; the full run is the test.
#
# fd bound: start (before the load) + SOAK_CLIENTS + 16: the engine keeps drained
# eventfds for reuse, at most one per operation that was in flight at once (bounded by
# the concurrent handshakes), plus slack for the runtime.
#
# Knobs (env): SOAK_HANDSHAKES (200000), SOAK_COMPRESS_BYTES (10000000000), SOAK_CLIENTS
# (32), SOAK_KEY_TYPE (p256), SOAK_FAULTS (see below), SOAK_SAMPLE_SECS (5),
# SOAK_RSS_SLACK_MB (32), SOAK_OP_TIMEOUT_MS (500: the per-operation deadline), SOAK_PROFILE (release | debug: debug reuses the build
# `cargo test` made; ci/test-soak.sh uses it), SOAK_COMPRESS_THREADS (2).
#   usage: ci/soak.sh                      # the full soak
#          SOAK_HANDSHAKES=5000 SOAK_COMPRESS_BYTES=300000000 ci/soak.sh
set -euo pipefail
trap 'echo "soak: FAIL: command failed at line $LINENO: $BASH_COMMAND" >&2' ERR
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
export ENVOY_QAT_DEPS="${ENVOY_QAT_DEPS:-$repo/build/qat-deps}"

handshakes=${SOAK_HANDSHAKES:-200000}
compress_bytes=${SOAK_COMPRESS_BYTES:-10000000000}
clients=${SOAK_CLIENTS:-32}
key_type=${SOAK_KEY_TYPE:-p256}
faults=${SOAK_FAULTS:-submit_fail=0.01,cb_fail=0.01,retry=0.2,slow=0.01,slow_us=5000,restart_every_ms=3000,restart_ms=50,lost=0.002,reset_every_ms=2500}
op_timeout_ms=${SOAK_OP_TIMEOUT_MS:-500}
sample=${SOAK_SAMPLE_SECS:-5}
rss_slack_mb=${SOAK_RSS_SLACK_MB:-32}
profile=${SOAK_PROFILE:-release}
case "$profile" in
  release) pflag=(--release) ;;
  debug) pflag=() ;;
  *) echo "SOAK_PROFILE=$profile: expected release or debug" >&2; exit 2 ;;
esac
for tool in h2load curl python3; do
  command -v "$tool" >/dev/null || { echo "soak: $tool missing (ci/deps.sh installs it)" >&2; exit 4; }
done

echo "== soak: building ($profile)"
cargo build "${pflag[@]}" --locked -q -p envoy-qat --bin envoy-qat
cargo build "${pflag[@]}" --locked -q -p qat-sim
cargo test "${pflag[@]}" --locked -q --test soak_compress --no-run 2>&1 | grep -v '^ *Executable' || true
bin="$repo/target/$profile/envoy-qat"
sim="$repo/target/$profile/libqat_sim.so"

work=$(mktemp -d)
pid=""
lanes=()
cleanup() {
  for p in "${lanes[@]}"; do kill "$p" 2>/dev/null || true; done
  [[ -n "$pid" ]] && kill "$pid" 2>/dev/null
  if [[ -n "${SOAK_KEEP:-}" ]]; then echo "soak: kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
fail=0
check() { # description condition-exit-status
  if [[ $2 -eq 0 ]]; then echo "ok:   $1"; else echo "FAIL: $1"; fail=1; fi
}

# ---------------------------------------------------------------- TLS handshake soak
log="$work/serve.log"
# Created here: the background job opens it only after the fork, and the port is read
# from it at once.
: >"$log"
ENVOY_QAT_LIB="$sim" QAT_SIM_INSTANCES=2 QAT_SIM_FAULTS="$faults" QAT_SIM_SEED=${SOAK_SEED:-1} \
  ENVOY_QAT_OP_TIMEOUT_MS="$op_timeout_ms" \
  "$bin" serve --listen 127.0.0.1:0 --key-type "$key_type" --backend qat >"$log" 2>"$work/serve.err" &
pid=$!
port=""
for _ in $(seq 1 300); do
  port=$(sed -n 's|.*listening on https://127.0.0.1:\([0-9]*\)/.*|\1|p' "$log") || true
  [[ -n "$port" ]] && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
[[ -n "$port" ]] || { echo "soak: serve did not start:"; cat "$log" "$work/serve.err"; exit 1; }
head -1 "$log"
stats() { curl -sS -k --max-time 10 "https://127.0.0.1:$port/stats"; }
# The QAT backend over the simulator must really be in use (not its stand-in that sends
# everything to the fallback): only then does /stats carry its counters.
if ! stats | grep -q '^backend qat: '; then
  echo "soak: serve is not running on the QAT backend over $sim:"
  cat "$work/serve.err"
  exit 1
fi
# get TEXT LINE-PREFIX NAME: a counter from one line of the stats text.
get() { grep "^$2" <<<"$1" | tr ' ' '\n' | sed -n "s/^$3=//p" | head -1; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$pid/status"; }
fds() { ls "/proc/$pid/fd" | wc -l; }

fd_start=$(fds)
rss_start=$(rss_kb)
echo "== soak: $handshakes new-connection handshakes (h2load --h1 -c $clients, Connection: close), key $key_type,"
echo "   qat-sim 2 instances, QAT_SIM_FAULTS=$faults, operation deadline $op_timeout_ms ms, software failover on"
echo "   plus an HTTP/2 gzip lane: $((handshakes / 10 + 100)) requests over 2 connections,"
echo "   and $((handshakes / 20 + 10)) clients that reset the connection mid-handshake"
h2load --h1 -n "$handshakes" -c "$clients" -H 'Connection: close' -H 'Accept-Encoding: gzip' \
  "https://127.0.0.1:$port/" >"$work/h1.out" 2>&1 &
lanes+=($!)
h1=$!
h2load -n $((handshakes / 10 + 100)) -c 2 -m 4 -H 'Accept-Encoding: gzip' \
  "https://127.0.0.1:$port/" >"$work/h2.out" 2>&1 &
lanes+=($!)
h2=$!
# Abort lane: clients that send a ClientHello and reset the connection 0-20 ms later,
# while the server's signature may be in flight: the handshake fails on the server, the
# operation must still end exactly once and its pinned memory come back.
aborts=$((handshakes / 20 + 10))
python3 - "$port" "$aborts" >"$work/abort.out" 2>&1 <<'PY' &
import random, socket, ssl, struct, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
rnd = random.Random(1)
for i in range(n):
    raw = socket.create_connection(("127.0.0.1", port))
    s = ctx.wrap_socket(raw, do_handshake_on_connect=False)
    s.setblocking(False)
    try:
        s.do_handshake()
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
        pass
    time.sleep(rnd.uniform(0, 0.02))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
print(f"aborted {n}")
PY
lanes+=($!)
abort=$!

printf '%7s %8s %7s %7s %5s %7s %9s %9s %6s %6s %9s %7s %7s %7s %7s %7s %6s\n' \
  secs handshk hs/s RSS_MB fds pinned submitted completed failed cancel fallbacks sub_flt cb_flt retries restart expired quar
t0=$SECONDS
last_hs=0
last_t=$t0
warm_at=$((handshakes / 10))
# RSS after the warm-up: the first reading once warm_at handshakes are done, taken while the
# load still runs (a reading after the load says nothing about growth under it); then the
# largest reading after it, and the reading at the end.
rss_warm=""
rss_max=0
loading=1
sample_line() {
  local s now hs rss f dt
  s=$(stats) || return 0
  now=$SECONDS
  hs=$(get "$s" server: handshakes)
  [[ -n "$hs" ]] || return 0
  rss=$(rss_kb)
  f=$(fds)
  dt=$((now - last_t))
  ((dt > 0)) || dt=1
  printf '%7d %8d %7d %7.1f %5d %7s %9s %9s %6s %6s %9s %7s %7s %7s %7s %7s %6s\n' \
    $((now - t0)) "$hs" $(((hs - last_hs) / dt)) "$(awk -v k="$rss" 'BEGIN{print k/1024}')" "$f" \
    "$(get "$s" 'backend qat:' pinned_outstanding)" \
    "$(get "$s" provider: submitted)" "$(get "$s" provider: completed)" \
    "$(get "$s" provider: failed)" "$(get "$s" provider: cancelled)" \
    "$(get "$s" provider: fallbacks)" \
    "$(get "$s" 'backend qat:' submit_failures)" "$(get "$s" 'backend qat:' callback_failures)" \
    "$(get "$s" 'backend qat:' retries)" "$(get "$s" 'backend qat:' restarting)" \
    "$(get "$s" 'backend qat:' expired)" "$(get "$s" 'backend qat:' quarantined)"
  last_hs=$hs
  last_t=$now
  if ((hs >= warm_at)); then
    [[ -n "$rss_warm" || $loading -eq 0 ]] || rss_warm=$rss
    ((rss > rss_max)) && rss_max=$rss
  fi
  return 0
}
# warm_check: until the warm-up reading is taken, look at the handshake count every half
# second, so that reading lands even when the load runs for only a few sample periods.
warm_check() {
  local s hs rss
  s=$(stats) || return 0
  hs=$(get "$s" server: handshakes)
  [[ -n "$hs" ]] && ((hs >= warm_at)) || return 0
  rss=$(rss_kb)
  rss_warm=$rss
  ((rss > rss_max)) && rss_max=$rss
  return 0
}
next_sample=$((SECONDS + sample))
while kill -0 "$h1" 2>/dev/null || kill -0 "$h2" 2>/dev/null || kill -0 "$abort" 2>/dev/null; do
  sleep 0.5
  [[ -n "$rss_warm" ]] || warm_check
  if ((SECONDS >= next_sample)); then
    sample_line
    next_sample=$((SECONDS + sample))
  fi
done
loading=0
wait "$h1" || true
wait "$h2" || true
wait "$abort" || true
lanes=()
elapsed=$((SECONDS - t0))

# The load is over: let cancelled operations still in the device finish. Operations past
# their deadline whose answer never came (lost, or dropped by a silent reset) stay
# outstanding, quarantined, until qatlib stops: outstanding == quarantined is the end.
for _ in $(seq 1 100); do
  s=$(stats) || true
  [[ "$(get "$s" provider: in_flight)" == 0 &&
     "$(get "$s" 'backend qat:' outstanding)" == "$(get "$s" 'backend qat:' quarantined)" ]] && break
  sleep 0.1
done
sample_line
s=$(stats) || s=$(stats)
fd_end=$(fds)
rss_end=$(rss_kb)
hs_total=$(get "$s" server: handshakes)
echo "-- h2load (HTTP/1.1, one handshake per request):"
grep -E '^(finished in|requests:|status codes:|traffic:)' "$work/h1.out" | sed 's/^/   /'
echo "-- h2load (HTTP/2 gzip lane):"
grep -E '^(finished in|requests:|status codes:)' "$work/h2.out" | sed 's/^/   /'
echo "-- server /stats after the load:"
sed 's/^/   /' <<<"$s"
kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
pid=""
echo "-- serve exit statistics:"
sed -n '/stopped/,$p' "$log" | sed 's/^/   /'

reqline() { grep '^requests:' "$1"; }
n_of() { grep -o "[0-9]* $2" <<<"$(reqline "$1")" | awk '{print $1}'; }
for lane in h1 h2; do
  out="$work/$lane.out"
  want=$handshakes
  [[ $lane == h2 ]] && want=$((handshakes / 10 + 100))
  check "h2load $lane: $want requests succeeded, 0 failed, 0 errored, 0 timeout ($(reqline "$out"))" \
    $([[ "$(n_of "$out" succeeded)" == "$want" && "$(n_of "$out" failed)" == 0 && "$(n_of "$out" errored)" == 0 && "$(n_of "$out" timeout)" == 0 ]]; echo $?)
done
check "abort lane: $(cat "$work/abort.out")" $(grep -qx "aborted $aborts" "$work/abort.out"; echo $?)
# isnum VALUE...: every value is a counter that was there (a missing one reads as "", which
# bash arithmetic would take for 0).
isnum() { local v; for v in "$@"; do [[ $v =~ ^[0-9]+$ ]] || return 1; done; }
hs_fail=$(get "$s" server: handshake_failures)
check "server: handshake failures only from aborted clients (handshake_failures=${hs_fail:-MISSING} <= $aborts)" \
  $(isnum "$hs_fail" && [[ $hs_fail -le $aborts ]]; echo $?)
sub=$(get "$s" provider: submitted)
com=$(get "$s" provider: completed)
fld=$(get "$s" provider: failed)
can=$(get "$s" provider: cancelled)
inf=$(get "$s" provider: in_flight)
check "provider balanced: submitted $sub = completed $com + failed $fld + cancelled $can, in_flight $inf" \
  $(isnum "$sub" "$com" "$fld" "$can" "$inf" && [[ $sub -eq $((com + fld + can)) && $inf -eq 0 ]]; echo $?)
check "provider: no operation failed (fallback saves every fault): failed=$fld op_failures=$(get "$s" provider: op_failures)" \
  $([[ "$fld" == 0 && "$(get "$s" provider: op_failures)" == 0 ]]; echo $?)
check "provider: at least one operation per handshake (submitted $sub >= handshakes $hs_total >= $handshakes)" \
  $(isnum "$sub" "$hs_total" && [[ $sub -ge $hs_total && $hs_total -ge $handshakes ]]; echo $?)
# Pinned memory: what is still allocated after the load must be exactly the quarantined
# blocks (operations past their deadline that the device never answered: the device might
# still write them, so they stay until qatlib stops), block for block and byte for byte.
pin=$(get "$s" 'backend qat:' pinned_outstanding)
pin_b=$(get "$s" 'backend qat:' pinned_outstanding_bytes)
quar=$(get "$s" 'backend qat:' quarantined)
quar_b=$(get "$s" 'backend qat:' quarantined_bytes)
outst=$(get "$s" 'backend qat:' outstanding)
check "pinned memory after the load is only the quarantined (pinned_outstanding=$pin = quarantined=$quar = outstanding=$outst, bytes $pin_b = $quar_b; allocated $(get "$s" 'backend qat:' pinned_allocs) blocks)" \
  $(isnum "$pin" "$pin_b" "$quar" "$quar_b" "$outst" && [[ $pin -eq $quar && $pin_b -eq $quar_b && $outst -eq $quar ]]; echo $?)
expired=$(get "$s" 'backend qat:' expired)
late=$(get "$s" 'backend qat:' late_answers)
check "faults happened: submit_failures=$(get "$s" 'backend qat:' submit_failures) callback_failures=$(get "$s" 'backend qat:' callback_failures) retries=$(get "$s" 'backend qat:' retries) restarting=$(get "$s" 'backend qat:' restarting), fallbacks=$(get "$s" provider: fallbacks), expired=${expired:-MISSING} (late_answers=${late:-MISSING})" \
  $([[ "$(get "$s" 'backend qat:' callback_failures)" -gt 0 && "$(get "$s" 'backend qat:' retries)" -gt 0 && "$(get "$s" provider: fallbacks)" -gt 0 ]] &&
    isnum "$expired" && { ! [[ $faults =~ (^|,)(lost|reset_every_ms)= ]] || [[ $expired -gt 0 ]]; }; echo $?)
check "open fds: start $fd_start, end $fd_end (bound start + $clients + 16)" \
  $([[ $fd_end -le $((fd_start + clients + 16)) ]]; echo $?)
mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
if [[ -z "$rss_warm" ]]; then
  # Without a reading after the warm-up taken under load there is nothing to compare.
  check "RSS: no reading after the warm-up ($warm_at handshakes) while the load ran: raise SOAK_HANDSHAKES" 1
else
  # Growth after the warm-up: the largest reading under load, or the one at the end
  # (once the load is over and every connection closed), over the warm-up reading.
  ((rss_end > rss_max)) && rss_max=$rss_end
  check "RSS: start $(mb "$rss_start") MB, after warm-up $(mb "$rss_warm") MB, max after $(mb "$rss_max") MB, end $(mb "$rss_end") MB: growth (max and end over warm-up) $(mb $((rss_max - rss_warm))) MB <= $rss_slack_mb MB" \
    $(isnum "$rss_end" && [[ $((rss_max - rss_warm)) -le $((rss_slack_mb * 1024)) && $((rss_end - rss_warm)) -le $((rss_slack_mb * 1024)) ]]; echo $?)
fi
check "serve exited cleanly on SIGTERM (rc $rc) and printed its statistics" \
  $([[ $rc -eq 0 ]] && grep -q '^backend qat: ' "$log"; echo $?)
if [[ $rc -ne 0 ]] || ! grep -q '^backend qat: ' "$log"; then
  echo "-- serve stdout (last lines):"; tail -5 "$log"
  echo "-- serve stderr (last lines):"; tail -20 "$work/serve.err"
fi
awk -v n="$hs_total" -v t="$elapsed" 'BEGIN { printf "soak: %d handshakes in %d s = %.0f handshakes/s\n", n, t, n / (t > 0 ? t : 1) }'

# ---------------------------------------------------------------- compressor soak
echo "== soak: compressor, $compress_bytes bytes"
if SOAK_COMPRESS_BYTES="$compress_bytes" cargo test "${pflag[@]}" --locked -q --test soak_compress \
    -- --ignored --nocapture 2> >(grep -v -e 'vfio' -e 'qatzip.c' >&2); then
  check "compressor soak" 0
else
  check "compressor soak" 1
fi

[[ $fail -eq 0 ]] && echo "soak: PASS" || echo "soak: FAIL"
exit $fail
