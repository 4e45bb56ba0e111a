#!/usr/bin/env bash
# Smoke test of a built envoy-qat Envoy image: run it with envoy-config's QAT TLS +
# compression listener (RSA and ECDSA certificates, qat provider with fallback, qatzip),
# then openssl s_client (TLS 1.2 and 1.3, RSA and ECDSA) and curl --compressed against it.
# Without a QAT device the provider reports itself unavailable and Envoy falls back to its
# own key (fallback: true), which is what a CI runner exercises.
# An Istio proxyv2 image (bazel/Dockerfile.proxyv2) starts pilot-agent by default: with
# --proxyv2 its Envoy is run directly on the same bootstrap, which also proves that Istio's
# contrib `qat` is gone (two factories named `qat` abort Envoy at start-up).
#   usage: bazel/smoke-test.sh IMAGE [--proxyv2]
set -euo pipefail
image=$1
run=("$image")
if [[ "${2:-}" == --proxyv2 ]]; then
  run=(--entrypoint /usr/local/bin/envoy
    -v "$(cd "$(dirname "$0")/.." && pwd)/envoy-config/envoy/qat-tls-compression.yaml:/etc/envoy/envoy.yaml:ro"
    "$image" -c /etc/envoy/envoy.yaml)
fi
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'docker rm -f envoy-qat-smoke envoy-qat-upstream >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
tls="$work/tls"
mkdir -p "$tls"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
  -keyout "$tls/server-rsa.key" -out "$tls/server-rsa.crt" 2>/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost \
  -keyout "$tls/server-ecdsa.key" -out "$tls/server-ecdsa.crt" 2>/dev/null
chmod 644 "$tls"/*
# The example config's upstream: a static text body large enough to compress.
python3 -c 'print("hello envoy-qat " * 4096)' > "$work/index.html"
docker run -d --name envoy-qat-upstream --network host -v "$work:/srv:ro" -w /srv \
  python:3.12-slim python -m http.server 8080 --bind 127.0.0.1 >/dev/null
docker run -d --name envoy-qat-smoke --network host --cap-add IPC_LOCK --ulimit memlock=-1:-1 \
  -v "$tls:/etc/envoy/tls:ro" "${run[@]}" >/dev/null
for _ in $(seq 60); do
  curl -sk -o /dev/null https://127.0.0.1:10443/ && break
  sleep 1
done
for v in -tls1_2 -tls1_3; do
  for sig in rsa_pss_rsae_sha256 ecdsa_secp256r1_sha256; do
    echo | openssl s_client -connect 127.0.0.1:10443 $v -sigalgs "$sig" -servername localhost 2>&1 \
      | grep -q "Verify return code" || { echo "smoke: handshake $v $sig failed" >&2; exit 1; }
  done
done
body=$(curl -sk --http2 --compressed -D "$work/headers" https://127.0.0.1:10443/index.html)
grep -qi '^content-encoding: gzip' "$work/headers" || { echo "smoke: response not gzip" >&2; exit 1; }
[[ "$body" == *"hello envoy-qat"* ]] || { echo "smoke: wrong body" >&2; exit 1; }
# Envoy lists its statically linked extensions at start-up: ours must be registered there.
logs=$(docker logs envoy-qat-smoke 2>&1)
grep -Eq 'envoy\.tls\.key_providers:.*\bqat\b' <<<"$logs" \
  || { echo "smoke: private key provider qat not registered" >&2; exit 1; }
grep -Eq 'envoy\.compression\.compressor:.*envoy\.compression\.qatzip\.compressor' <<<"$logs" \
  || { echo "smoke: compressor envoy.compression.qatzip.compressor not registered" >&2; exit 1; }
grep -i "qat" <<<"$logs" | head -5 || true
echo "smoke: ok"
