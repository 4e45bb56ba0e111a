#!/usr/bin/env bash
# QAT suite with real clients (run by ci/test.sh after cargo test):
# - `envoy-qat sign --backend qat` on tests/qat-sim for every scheme and key type,
#   each signature verified by the openssl CLI (also with the simulator's portable
#   arithmetic); raw decrypt compared with openssl's; `envoy-qat bench` on the simulator;
# - Debian trixie's real libqat (build/qat-deps) with no device: --backend qat without
#   fallback fails with the reason, with fallback it signs in software;
# - the pinned-memory soak at 100k operations (10k cancelled).
# Installs nothing (ci/deps.sh does). Needs: openssl, cargo.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
cargo build -q -p envoy-qat -p qat-sim
bin="$repo/target/debug/envoy-qat"
sim="$repo/target/debug/libqat_sim.so"
real="${ENVOY_QAT_DEPS:-$repo/build/qat-deps}/usr/lib/x86_64-linux-gnu"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*" >&2; }

echo "envoy-qat QAT offload test message $(date +%s)" >"$tmp/msg"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$tmp/rsa2048.pem" 2>/dev/null
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072 -out "$tmp/rsa3072.pem" 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tmp/p256.pem" 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out "$tmp/p384.pem" 2>/dev/null
for k in rsa2048 rsa3072 p256 p384; do
  openssl pkey -in "$tmp/$k.pem" -pubout -out "$tmp/$k.pub" 2>/dev/null
done

sign_verify() { # key scheme digest [pss]   (QAT_SIM_ARITH=bigint in the environment: portable arithmetic)
  local key=$1 scheme=$2 dgst=$3 pss=${4:-}
  local sig="$tmp/$key.$scheme.sig" err="$tmp/$key.$scheme.err"
  if ! QAT_SIM_INSTANCES=2 QAT_SIM_LOG_ARITH=1 "$bin" sign --backend qat --no-fallback --qat-lib "$sim" \
      --key "$tmp/$key.pem" --scheme "$scheme" --in "$tmp/msg" --out "$sig" 2>"$err"; then
    bad "$key $scheme: envoy-qat sign on qat-sim failed: $(cat "$err")"
    return
  fi
  # The simulator says which arithmetic computed the operation in this process: with
  # QAT_SIM_ARITH=bigint it must be the portable one, and libcrypto must not have run.
  if [[ ${QAT_SIM_ARITH:-} == bigint ]] &&
    ! { grep -q "^qat-sim: computed an operation with num-bigint / p256 / p384 (portable arithmetic)$" "$err" &&
      ! grep -q "^qat-sim: computed an operation with libcrypto" "$err"; }; then
    bad "$key $scheme: QAT_SIM_ARITH=bigint, but the simulator says: $(grep '^qat-sim:' "$err" || echo nothing)"
    return
  fi
  local opts=()
  [[ -n $pss ]] && opts=(-sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:digest)
  if openssl dgst "-$dgst" -verify "$tmp/$key.pub" -signature "$sig" "${opts[@]}" "$tmp/msg" | grep -q "Verified OK"; then
    ok
  else
    bad "$key $scheme: openssl rejects the signature"
  fi
}

for key in rsa2048 rsa3072; do
  sign_verify "$key" rsa_pkcs1_sha1 sha1
  sign_verify "$key" rsa_pkcs1_sha256 sha256
  sign_verify "$key" rsa_pkcs1_sha384 sha384
  sign_verify "$key" rsa_pkcs1_sha512 sha512
  sign_verify "$key" rsa_pss_rsae_sha256 sha256 pss
  sign_verify "$key" rsa_pss_rsae_sha384 sha384 pss
  sign_verify "$key" rsa_pss_rsae_sha512 sha512 pss
done
sign_verify p256 ecdsa_secp256r1_sha256 sha256
sign_verify p256 ecdsa_sha1 sha1
sign_verify p384 ecdsa_secp384r1_sha384 sha384
sign_verify p384 ecdsa_sha1 sha1
# The simulator's portable arithmetic (num-bigint, p256/p384), used where libcrypto.so.3
# is missing, gives signatures openssl accepts too (and sign_verify checks that it ran).
QAT_SIM_ARITH=bigint sign_verify rsa2048 rsa_pss_rsae_sha256 sha256 pss
QAT_SIM_ARITH=bigint sign_verify p256 ecdsa_secp256r1_sha256 sha256
QAT_SIM_ARITH=bigint sign_verify p384 ecdsa_secp384r1_sha384 sha384

# `envoy-qat bench` on the simulator reports the poll thread's CPU and the latency added
# over the simulated device (figures are printed, not judged).
if QAT_SIM_LATENCY_US=50 "$bin" bench --backend qat --no-fallback --qat-lib "$sim" --key-types p256 \
    --concurrency 4 --seconds 0.3 --no-openssl --no-overhead --idle-seconds 0.2 >"$tmp/bench.out" 2>&1 &&
  grep -q "errors 0" "$tmp/bench.out" && grep -q "poll thread .* of a core" "$tmp/bench.out" &&
  grep -q "qat-sim device .* added over it: p50" "$tmp/bench.out" &&
  grep -q "^idle .* poll thread" "$tmp/bench.out"; then
  ok
else
  bad "envoy-qat bench on qat-sim: $(cat "$tmp/bench.out")"
fi

# Raw RSA decrypt on qat-sim equals openssl's no-padding decrypt.
head -c 255 /dev/urandom | { printf '\0'; cat; } >"$tmp/plain"
openssl pkeyutl -encrypt -pubin -inkey "$tmp/rsa2048.pub" -pkeyopt rsa_padding_mode:none \
  -in "$tmp/plain" -out "$tmp/cipher"
openssl pkeyutl -decrypt -inkey "$tmp/rsa2048.pem" -pkeyopt rsa_padding_mode:none \
  -in "$tmp/cipher" -out "$tmp/openssl.dec"
if "$bin" sign --backend qat --no-fallback --qat-lib "$sim" --key "$tmp/rsa2048.pem" \
    --scheme decrypt --in "$tmp/cipher" --out "$tmp/qat.dec" &&
  cmp -s "$tmp/qat.dec" "$tmp/openssl.dec" && cmp -s "$tmp/qat.dec" "$tmp/plain"; then
  ok
else
  bad "raw decrypt on qat-sim differs from openssl pkeyutl -decrypt -pkeyopt rsa_padding_mode:none"
fi

# Real trixie libqat, no device: without fallback a clear error (exit 4) ...
set +e
ENVOY_QAT_LIB_DIR="$real" "$bin" sign --backend qat --no-fallback --key "$tmp/p256.pem" \
  --scheme ecdsa_secp256r1_sha256 --in "$tmp/msg" --out "$tmp/real.sig" 2>"$tmp/real.err"
rc=$?
set -e
if [[ $rc -eq 4 ]] && grep -q 'icp_sal_userStart("SSL")' "$tmp/real.err" &&
  grep -q "no usable QAT device" "$tmp/real.err"; then
  ok
else
  bad "real libqat without device and without fallback: rc=$rc, $(cat "$tmp/real.err")"
fi
# ... and with fallback the software path signs.
if ENVOY_QAT_LIB_DIR="$real" "$bin" sign --backend qat --key "$tmp/p256.pem" \
    --scheme ecdsa_secp256r1_sha256 --in "$tmp/msg" --out "$tmp/real.sig" 2>"$tmp/real.err" &&
  openssl dgst -sha256 -verify "$tmp/p256.pub" -signature "$tmp/real.sig" "$tmp/msg" | grep -q "Verified OK"; then
  ok
else
  bad "real libqat without device, with fallback: $(cat "$tmp/real.err")"
fi

# 100k operations (10k cancelled) on qat-sim: no pinned memory left behind.
if QAT_SOAK_OPS=100000 cargo test -q --test qat_faults soak_no_pinned_memory_leak_with_cancels >"$tmp/soak.log" 2>&1; then
  ok
else
  bad "100k-operation soak: $(tail -20 "$tmp/soak.log")"
fi

echo "qat: $pass passed, $fail failed"
[[ $fail -eq 0 ]]
