#!/usr/bin/env bash
# The C ABI with real TLS clients: `envoy-qat serve` terminates TLS through cpp/ssl
# (BoringSSL's SSL_PRIVATE_KEY_METHOD over the Rust engine, software backend) and is
# driven by openssl s_client (TLS 1.2 and 1.3, every signature scheme of RSA, P-256 and
# P-384 keys, RSA key exchange = the decrypt path), curl (HTTP/1.1 and HTTP/2, gzip) and
# h2load (many concurrent new TLS connections). Then the same handshakes again with
# cpp/ssl and the bridge built under gcc's AddressSanitizer and UBSan.
#   usage: ci/test-abi.sh            (ABI_SKIP_SANITIZE=1 skips the sanitizer pass)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
export ENVOY_QAT_DEPS="${ENVOY_QAT_DEPS:-$repo/build/qat-deps}"
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "  ok   $*"; }
bad() { fail=$((fail + 1)); echo "  FAIL $*"; }

echo "-- clang-format (cpp/.clang-format)"
if clang-format --dry-run -Werror cpp/ssl/*.h cpp/ssl/*.cc; then
  ok "cpp/ssl is clang-format clean"
else
  bad "cpp/ssl needs clang-format -i"
fi
echo "-- building envoy-qat"
cargo build --locked --bin envoy-qat 2>&1 | tail -1
bin="$work/envoy-qat"
cp target/debug/envoy-qat "$bin"

# start NAME ARGS... : run `serve` on a free port; sets $port, $pid, $cert, $log.
start() {
  local name=$1
  shift
  log="$work/$name.log"
  cert="$work/$name.pem"
  : >"$log"
  # serve's info lines name why a handshake failed (refused() reads them).
  "$bin" --log warn,envoy_qat::serve=info serve --listen 127.0.0.1:0 --cert-out "$cert" "$@" >"$log" 2>&1 &
  pid=$!
  pids+=("$pid")
  port=""
  for _ in $(seq 1 300); do
    port=$(sed -n 's|.*listening on https://127.0.0.1:\([0-9]*\)/.*|\1|p' "$log")
    [[ -n "$port" ]] && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "serve $name did not start:"
  cat "$log"
  exit 1
}

# stop: SIGTERM the server; it must exit 0 and print its stats.
stop() {
  kill -TERM "$pid"
  local rc=0
  wait "$pid" || rc=$?
  if [[ $rc -eq 0 ]] && grep -q "stopped (SIGTERM)" "$log"; then
    ok "serve exits 0 on SIGTERM and prints its stats"
  else
    bad "serve exit code $rc on SIGTERM"
    cat "$log"
  fi
}

# pstat NAME [TEXT]: a counter from the provider line of /stats (or of TEXT).
pstat() {
  local text=${2:-}
  [[ -n "$text" ]] || text=$(curl -sS --cacert "$cert" --resolve "localhost:$port:127.0.0.1" \
    "https://localhost:$port/stats" | grep '^provider:')
  grep -o "[ ]$1=[0-9]*" <<<"$text" | head -1 | cut -d= -f2
}

# handshake DESC HASH TYPE s_client-args... : must verify, and use this hash/signature.
handshake() {
  local desc=$1 hash=$2 type=$3
  shift 3
  local out
  out=$(timeout 20 openssl s_client -connect "127.0.0.1:$port" -servername localhost \
    -CAfile "$cert" -verify_return_error -brief "$@" </dev/null 2>&1) || true
  if grep -q "^Verification: OK" <<<"$out" &&
    { [[ "$hash" == - ]] || grep -q "^Hash used: $hash\$" <<<"$out"; } &&
    { [[ "$type" == - ]] || grep -q "^Signature type: $type\$" <<<"$out"; }; then
    ok "$desc ($(grep -E '^(Protocol version|Ciphersuite):' <<<"$out" | awk '{print $NF}' | paste -sd' '))"
  else
    bad "$desc: $*"
    echo "$out" | sed 's/^/       /' | head -20
  fi
}

# refused DESC REASON s_client-args... : the handshake must fail, and for REASON: s_client
# gets the server's handshake_failure alert (40) and the server logs REASON (BoringSSL's
# error name) for one more failed handshake; the server must still be running. Any other
# failure (a crashed server, a reset connection, the client giving up on its own) fails.
refused() {
  local desc=$1 reason=$2
  shift 2
  local out rc=0 before n
  before=$(grep -c "handshake failed .*:$reason\$" "$log" || true)
  out=$(timeout 20 openssl s_client -connect "127.0.0.1:$port" -servername localhost -brief "$@" \
    </dev/null 2>&1) || rc=$?
  # The server writes its log line as the connection ends: wait for it (10 s at most).
  for _ in $(seq 1 100); do
    n=$(grep -c "handshake failed .*:$reason\$" "$log" || true)
    ((n > before)) && break
    sleep 0.1
  done
  if [[ $rc -eq 0 ]]; then
    bad "$desc was accepted: $*"
  elif ! grep -q "alert handshake failure:.*SSL alert number 40\$" <<<"$out"; then
    bad "$desc: failed, but not with the server's handshake_failure alert: $*"
    echo "$out" | sed 's/^/       /' | head -10
  elif ((n != before + 1)); then
    bad "$desc: the server did not log $reason for it (log lines $before -> $n)"
    tail -5 "$log" | sed 's/^/       /'
  elif ! kill -0 "$pid" 2>/dev/null; then
    bad "$desc: the server is gone"
  else
    ok "$desc is refused: alert 40, server: $reason"
  fi
}

# h2load_ok DESC N h2load-args... : N requests must succeed.
h2load_ok() {
  local desc=$1 n=$2
  shift 2
  local out
  out=$(timeout 300 h2load "$@" "https://127.0.0.1:$port/" 2>&1) || true
  if grep -q "requests: $n total, $n started, $n done, $n succeeded, 0 failed" <<<"$out"; then
    ok "$desc ($(grep -o 'finished in [^,]*, [0-9.]* req/s' <<<"$out"))"
  else
    bad "$desc: h2load $*"
    echo "$out" | tail -12 | sed 's/^/       /'
  fi
}

# provider_checks: async completions after a retry, nothing failed or left in flight.
provider_checks() {
  local text submitted retried cancelled failures
  # One snapshot (fetching /stats is itself a handshake).
  text=$(curl -sS --cacert "$cert" --resolve "localhost:$port:127.0.0.1" "https://localhost:$port/stats" |
    grep '^provider:')
  submitted=$(pstat submitted "$text")
  retried=$(pstat completed_after_retry "$text")
  cancelled=$(pstat cancelled "$text")
  failures=$(pstat op_failures "$text")
  if [[ "${retried:-0}" -gt 0 && $((retried + cancelled)) -eq "$submitted" && "${failures:-1}" -eq 0 ]]; then
    ok "provider: $retried of $submitted operations completed asynchronously after a retry ($cancelled cancelled), 0 failures"
  else
    bad "provider stats: submitted=$submitted completed_after_retry=$retried cancelled=$cancelled op_failures=$failures"
  fi
}

echo "-- RSA-2048 (generated key, self-signed certificate)"
start rsa --key-type rsa2048 --backend soft --response-size 20000
for s in rsa_pss_rsae_sha256:SHA256 rsa_pss_rsae_sha384:SHA384 rsa_pss_rsae_sha512:SHA512; do
  handshake "TLS 1.3 ${s%%:*}" "${s##*:}" RSA-PSS -tls1_3 -sigalgs "${s%%:*}"
  handshake "TLS 1.2 ${s%%:*}" "${s##*:}" RSA-PSS -tls1_2 -sigalgs "${s%%:*}"
done
for s in rsa_pkcs1_sha256:SHA256 rsa_pkcs1_sha384:SHA384 rsa_pkcs1_sha512:SHA512; do
  handshake "TLS 1.2 ${s%%:*}" "${s##*:}" RSA -tls1_2 -sigalgs "${s%%:*}"
done
handshake "TLS 1.2 RSA+SHA1" SHA1 RSA -tls1_2 -sigalgs RSA+SHA1 -cipher DEFAULT@SECLEVEL=0
refused "TLS 1.3 with rsa_pkcs1_sha256 only (not allowed in 1.3)" NO_COMMON_SIGNATURE_ALGORITHMS \
  -tls1_3 -sigalgs rsa_pkcs1_sha256
decrypts_before=$(pstat decrypt_calls)
handshake "TLS 1.2 RSA key exchange AES128-SHA (decrypt)" - - -tls1_2 -cipher AES128-SHA
handshake "TLS 1.2 RSA key exchange AES256-GCM-SHA384 (decrypt)" - - -tls1_2 -cipher AES256-GCM-SHA384
decrypts=$(($(pstat decrypt_calls) - decrypts_before))
if [[ $decrypts -eq 2 ]]; then ok "2 RSA decryptions through the provider"; else bad "decrypt_calls grew by $decrypts, expected 2"; fi

curl_args=(-sS --cacert "$cert" --resolve "localhost:$port:127.0.0.1")
url="https://localhost:$port/"
curl "${curl_args[@]}" --http1.1 -H 'Accept-Encoding: identity' -o "$work/plain" "$url"
if [[ $(stat -c %s "$work/plain") -eq 20000 ]] && head -1 "$work/plain" | grep -q "^envoy-qat serve: line 00000000"; then
  ok "curl HTTP/1.1 identity body: 20000 bytes"
else
  bad "curl identity body"
fi
for v in 1.1 2; do
  got=$(curl "${curl_args[@]}" --http$v --compressed -D "$work/h$v" -o "$work/body$v" -w '%{http_version}' "$url")
  if [[ "$got" == "$v" ]] && grep -qi '^content-encoding: gzip' "$work/h$v" && cmp -s "$work/plain" "$work/body$v"; then
    ok "curl --http$v --compressed: HTTP/$got, gzip, body matches"
  else
    bad "curl --http$v --compressed: version $got"
    cat "$work/h$v"
  fi
done
curl "${curl_args[@]}" --http2 -H 'Accept-Encoding: gzip' -o "$work/raw.gz" "$url"
if gzip -t "$work/raw.gz" && gzip -dc "$work/raw.gz" | cmp -s - "$work/plain" &&
  [[ $(stat -c %s "$work/raw.gz") -lt 20000 ]]; then
  ok "raw response is a valid gzip stream ($(stat -c %s "$work/raw.gz") bytes) that gunzips to the body"
else
  bad "raw gzip response"
fi
h2load_ok "h2load HTTP/1.1 Connection: close, 1000 new TLS connections, 50 concurrent" 1000 \
  --h1 -n 1000 -c 50 -H 'Connection: close'
h2load_ok "h2load HTTP/2, 2000 requests on 50 connections" 2000 -n 2000 -c 50 -m 4
provider_checks
stop

for curve in p256:secp256r1:SHA256 p384:secp384r1:SHA384; do
  IFS=: read -r kt c h <<<"$curve"
  echo "-- EC $kt"
  start "$kt" --key-type "$kt" --backend soft
  handshake "TLS 1.3 ecdsa_${c}_${h,,}" "$h" ECDSA -tls1_3 -sigalgs "ecdsa_${c}_${h,,}"
  for s in ecdsa_secp256r1_sha256:SHA256 ecdsa_secp384r1_sha384:SHA384; do
    handshake "TLS 1.2 ${s%%:*}" "${s##*:}" ECDSA -tls1_2 -sigalgs "${s%%:*}"
  done
  handshake "TLS 1.2 ECDSA+SHA1" SHA1 ECDSA -tls1_2 -sigalgs ECDSA+SHA1 -cipher DEFAULT@SECLEVEL=0
  other=secp384r1_sha384
  [[ $kt == p384 ]] && other=secp256r1_sha256
  refused "TLS 1.3 ecdsa_$other with a $kt key (curve mismatch)" NO_COMMON_SIGNATURE_ALGORITHMS \
    -tls1_3 -sigalgs "ecdsa_$other"
  refused "RSA-only sigalgs with an EC key" NO_COMMON_SIGNATURE_ALGORITHMS \
    -sigalgs "rsa_pss_rsae_sha256:rsa_pkcs1_sha256"
  got=$(curl -sS --cacert "$cert" --resolve "localhost:$port:127.0.0.1" --http2 --compressed \
    -w '%{http_version}' -o "$work/ec-body" "https://localhost:$port/")
  if [[ "$got" == 2 ]] && head -1 "$work/ec-body" | grep -q "^envoy-qat serve: line"; then
    ok "curl --http2 --compressed"
  else bad "curl --http2 --compressed with $kt"; fi
  h2load_ok "h2load HTTP/1.1 Connection: close, 500 new TLS connections, 50 concurrent" 500 \
    --h1 -n 500 -c 50 -H 'Connection: close'
  provider_checks
  stop
done

echo "-- key held by BoringSSL (--key-mode boringssl: Envoy's fallback path)"
start boringssl --key-type rsa2048 --key-mode boringssl
handshake "TLS 1.3 rsa_pss_rsae_sha256" SHA256 RSA-PSS -tls1_3 -sigalgs rsa_pss_rsae_sha256
h2load_ok "h2load HTTP/1.1 Connection: close, 200 new TLS connections" 200 --h1 -n 200 -c 20 -H 'Connection: close'
stop

echo "-- bad input"
printf 'not a key\n' >"$work/bad.pem"
if "$bin" serve --key "$work/bad.pem" --listen 127.0.0.1:0 --duration 1 >/dev/null 2>"$work/bad.err"; then
  bad "serve accepted a bad key"
elif grep -q "bad.pem" "$work/bad.err"; then
  ok "serve refuses a bad key and names it: $(head -1 "$work/bad.err")"
else
  bad "bad-key error does not name the file: $(cat "$work/bad.err")"
fi
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/other.key" 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/mine.key" 2>/dev/null
openssl req -new -x509 -key "$work/other.key" -subj /CN=localhost -days 1 -out "$work/other.pem" 2>/dev/null
if "$bin" serve --key "$work/mine.key" --cert "$work/other.pem" --listen 127.0.0.1:0 --duration 1 \
  >/dev/null 2>"$work/mismatch.err"; then
  bad "serve accepted a certificate of another key"
elif grep -q "does not match" "$work/mismatch.err"; then
  ok "serve refuses a certificate of another key"
else
  bad "mismatch error: $(cat "$work/mismatch.err")"
fi
echo "-- a key and certificate made by openssl (SEC1 EC key file)"
openssl ecparam -name prime256v1 -genkey -noout -out "$work/sec1.key"
openssl req -new -x509 -key "$work/sec1.key" -subj /CN=localhost -addext subjectAltName=DNS:localhost \
  -days 1 -out "$work/sec1.pem" 2>/dev/null
: >"$work/sec1.log"
"$bin" serve --listen 127.0.0.1:0 --key "$work/sec1.key" --cert "$work/sec1.pem" >"$work/sec1.log" 2>&1 &
pid=$!
pids+=("$pid")
log="$work/sec1.log"
for _ in $(seq 1 100); do
  port=$(sed -n 's|.*listening on https://127.0.0.1:\([0-9]*\)/.*|\1|p' "$log")
  [[ -n "$port" ]] && break
  sleep 0.1
done
cp "$work/sec1.pem" "$work/sec1-ca.pem"
cert="$work/sec1-ca.pem"
handshake "TLS 1.3 with the openssl-made key and certificate" SHA256 ECDSA -tls1_3
stop

if [[ "${ABI_SKIP_SANITIZE:-}" != 1 ]]; then
  echo "-- AddressSanitizer + UBSan build of cpp/ssl and the bridge"
  ENVOY_QAT_SANITIZE=1 cargo build --locked --bin envoy-qat 2>&1 | tail -1
  cp target/debug/envoy-qat "$work/envoy-qat-asan"
  # grep -c, not -q: -q stops reading early and nm then fails on SIGPIPE (pipefail).
  if nm "$work/envoy-qat-asan" | grep -c __asan_init >/dev/null || ldd "$work/envoy-qat-asan" | grep -c libasan >/dev/null; then
    ok "sanitizer build links the ASan runtime"
  else
    bad "sanitizer build has no ASan runtime"
  fi
  rc=0
  ENVOY_QAT_SANITIZE=1 cargo test --locked --test tls_cancel >"$work/asan-test.log" 2>&1 || rc=$?
  grep -E "^test |test result|AddressSanitizer|runtime error" "$work/asan-test.log" | sed 's/^/       /'
  if [[ $rc -eq 0 ]]; then
    ok "tls_cancel under ASan/UBSan (release an SSL with an operation in flight)"
  else
    bad "tls_cancel under ASan/UBSan"
  fi
  bin="$work/envoy-qat-asan"
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
  for kt in rsa2048 p256; do
    start "asan-$kt" --key-type "$kt" --backend soft
    if [[ $kt == rsa2048 ]]; then
      handshake "ASan TLS 1.3 rsa_pss_rsae_sha256" SHA256 RSA-PSS -tls1_3 -sigalgs rsa_pss_rsae_sha256
      handshake "ASan TLS 1.2 RSA key exchange (decrypt)" - - -tls1_2 -cipher AES128-SHA
    else
      handshake "ASan TLS 1.3 ecdsa_secp256r1_sha256" SHA256 ECDSA -tls1_3
    fi
    h2load_ok "ASan h2load 200 new TLS connections" 200 --h1 -n 200 -c 20 -H 'Connection: close'
    provider_checks
    stop
    if grep -qE "AddressSanitizer|runtime error|LeakSanitizer" "$log"; then
      bad "sanitizer report in serve's log"
      grep -E -A10 "AddressSanitizer|runtime error|LeakSanitizer" "$log" | head -40
    else
      ok "no sanitizer report from serve ($kt)"
    fi
  done
  unset ASAN_OPTIONS UBSAN_OPTIONS
  echo "-- rebuilding without sanitizers"
  cargo build --locked --bin envoy-qat 2>&1 | tail -1
fi

echo "abi: $pass passed, $fail failed"
[[ $fail -eq 0 ]]
