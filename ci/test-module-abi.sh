#!/usr/bin/env bash
# The dynamic module against the stock Envoy 1.40 binary we ship configs for, at the
# symbol level: every callback the module calls is exported by that Envoy; every hook that
# Envoy looks up for an HTTP filter, a transport socket and the tls_wake network filter is
# exported by the module; the module shares no TLS library with Envoy (its BoringSSL is
# static and private) and exports nothing but its hooks; `envoy-qat check` loads it, reads
# its ABI string and validates filter configs with its own parser (and refuses bad ones).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
export ENVOY_QAT_DEPS="${ENVOY_QAT_DEPS:-$repo/build/qat-deps}"
fail() { echo "test-module-abi: FAIL: $*" >&2; exit 1; }
pass() { echo "test-module-abi: ok: $*"; }
# The Envoy binary itself (build/venv/bin/envoy is a Python entry point that runs it).
envoy_bin=$("$repo/build/venv/bin/python" -c 'import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"))' 2>/dev/null) \
  || fail "stock Envoy not found in build/venv: run ci/deps.sh"
[[ -x "$envoy_bin" ]] || fail "stock Envoy not found at $envoy_bin: run ci/deps.sh"
cargo build -q --locked -p envoy-qat-module
cargo build -q --locked --bin envoy-qat
target="${CARGO_TARGET_DIR:-$repo/target}/debug"
so="$target/libenvoy_qat_module.so"
[[ -f "$so" ]] || fail "$so was not built"
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT

nm -D --defined-only "$envoy_bin" | awk '{print $3}' | sort -u > "$t/envoy-exports"
nm -D --defined-only "$so" | awk '{print $3}' | sort -u > "$t/module-exports"

# 1. Callbacks: the module resolves them by name at load; each must be in Envoy's exports.
strings -n 8 "$so" | grep -oE '^envoy_dynamic_module_callback_[a-z0-9_]+' | sort -u > "$t/callbacks"
n=$(wc -l < "$t/callbacks")
[[ $n -ge 15 ]] || fail "found only $n callback names in the module"
missing=$(comm -23 "$t/callbacks" "$t/envoy-exports")
[[ -z "$missing" ]] || fail "callbacks the module calls that Envoy 1.40 does not export: $missing"
pass "all $n callbacks the module calls are exported by $(basename "$envoy_bin") 1.40"
# Nothing is imported from Envoy at link time (a missing symbol would fail dlopen).
! nm -D --undefined-only "$so" | grep -q envoy_dynamic_module || fail "the module links Envoy symbols directly"

# 2. Hooks: every HTTP-filter hook name in Envoy's binary is exported by the module.
strings -n 8 "$envoy_bin" | grep -xE 'envoy_dynamic_module_on_(program_init|http_filter_[a-z_]+)' | sort -u > "$t/hooks"
n=$(wc -l < "$t/hooks")
[[ $n -ge 25 ]] || fail "found only $n HTTP filter hook names in Envoy"
missing=$(comm -23 "$t/hooks" "$t/module-exports")
[[ -z "$missing" ]] || fail "hooks Envoy 1.40 looks up that the module does not export: $missing"
pass "the module exports all $n HTTP filter hooks Envoy 1.40 looks up"
# The check command's own list is the same set.
grep -oE '"envoy_dynamic_module_on_(program_init|http_filter_[a-z_]+)"' src/check/module.rs | tr -d '"' | sort -u > "$t/check-hooks"
cmp -s "$t/hooks" "$t/check-hooks" || fail "src/check/module.rs ENVOY_140_HTTP_HOOKS differs from Envoy's: $(diff "$t/hooks" "$t/check-hooks" | head -5)"
pass "envoy-qat check's hook list matches Envoy 1.40's"

# 2b. The tls transport socket and the tls_wake network filter: every transport-socket hook
# Envoy 1.40 looks up, and the network-filter hooks it requires (plus `scheduled`, which the
# wake-up needs), are exported.
strings -n 8 "$envoy_bin" | grep -xE 'envoy_dynamic_module_on_transport_socket_[a-z_]+' | sort -u > "$t/ts-hooks"
n=$(wc -l < "$t/ts-hooks")
[[ $n -ge 12 ]] || fail "found only $n transport socket hook names in Envoy"
missing=$(comm -23 "$t/ts-hooks" "$t/module-exports")
[[ -z "$missing" ]] || fail "transport socket hooks Envoy 1.40 looks up that the module does not export: $missing"
strings -n 8 "$envoy_bin" > "$t/envoy-strings"
for h in config_new config_destroy new new_connection read write event destroy scheduled; do
  grep -qx "envoy_dynamic_module_on_network_filter_$h" "$t/module-exports" || fail "the module does not export envoy_dynamic_module_on_network_filter_$h"
  grep -q "envoy_dynamic_module_on_network_filter_$h" "$t/envoy-strings" || fail "Envoy 1.40 has no envoy_dynamic_module_on_network_filter_$h"
done
pass "the module exports all $n transport socket hooks and the 9 network filter hooks tls_wake needs"
grep -oE '"envoy_dynamic_module_on_transport_socket_[a-z_]+"' src/check/module.rs | tr -d '"' | sort -u > "$t/check-ts-hooks"
cmp -s "$t/ts-hooks" "$t/check-ts-hooks" || fail "src/check/module.rs ENVOY_140_TRANSPORT_SOCKET_HOOKS differs from Envoy's: $(diff "$t/ts-hooks" "$t/check-ts-hooks" | head -5)"

# 3. No TLS library shared with Envoy, no QAT library linked, and nothing but glibc: BoringSSL
# (the tls socket's) is linked statically and none of its symbols is exported or imported;
# the C++ runtime of BoringSSL's libssl and Rust's unwinder are linked statically too
# (module/build.rs), so the module loads in Envoy's distroless image (glibc only: no
# libstdc++.so.6, no libgcc_s.so.1). Section 6 runs it in such a root.
needed=$(readelf -d "$so" | awk '/NEEDED/{print $5}' | tr -d '[]' | tr '\n' ' ')
for lib in $needed; do
  case $lib in
    libc.so.6 | libm.so.6 | libdl.so.2 | libpthread.so.0 | librt.so.1 | ld-linux-x86-64.so.2) ;;
    *) fail "the module needs $lib, which is not part of glibc ($needed)" ;;
  esac
done
# The glibc it needs: no newer than the oldest Envoy image's (distroless Debian 12: 2.36;
# Ubuntu 22.04: 2.35). A module built on a newer distribution could need more (e.g. the
# __isoc23_* functions of glibc 2.38): build it on Debian bookworm or as old.
max_glibc=$(objdump -T "$so" | grep -oE 'GLIBC_[0-9]+\.[0-9]+' | sed 's/GLIBC_//' | sort -V | tail -1)
[[ $(printf '%s\n2.35\n' "$max_glibc" | sort -V | tail -1) == 2.35 ]] \
  || fail "the module needs glibc $max_glibc; Envoy's images have 2.35 (Ubuntu 22.04) and 2.36 (distroless Debian 12)"
! nm -D --undefined-only "$so" | grep -qE ' (_Znw|_Zdl|_ZNSt|_Unwind_|__cxa_)' || fail "the module imports C++ runtime or unwinder symbols (libstdc++/libgcc_s must be static)"
! nm -D --defined-only "$so" | grep -qE ' (_Znw|_Zdl|_ZNSt|_Unwind_|__cxa_)' || fail "the module exports C++ runtime or unwinder symbols"
! nm -D --undefined-only "$so" | grep -qE ' (SSL_|EVP_|BIO_|RSA_|EC_KEY_|X509_)' || fail "the module imports TLS symbols"
! nm -D --defined-only "$so" | grep -qE ' (SSL_|EVP_|BIO_|RSA_|EC_KEY_|X509_|OPENSSL_)' || fail "the module exports BoringSSL symbols (they must stay private)"
exported=$(nm -D --defined-only "$so" | awk '{print $3}' | grep -vcE '^(envoy_dynamic_module_on_|envoy_qat_module_)' || true)
[[ "$exported" -eq 0 ]] || fail "the module exports $exported symbols besides its hooks: $(nm -D --defined-only "$so" | awk '{print $3}' | grep -vE '^(envoy_dynamic_module_on_|envoy_qat_module_)' | head -5)"
pass "module needs only: $needed(glibc $max_glibc at most); exports only its hooks; BoringSSL stays private"

# 4. envoy-qat check: loads the module, reads its ABI string, validates configs with it.
bin="$target/envoy-qat"
mk() { # filter_name, json
  cat > "$t/cfg.yaml" <<YAML
static_resources:
  listeners:
  - filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          http_filters:
          - name: envoy.filters.http.dynamic_modules
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter
              dynamic_module_config: {name: envoy_qat_module}
              filter_name: $1
              filter_config:
                "@type": type.googleapis.com/google.protobuf.StringValue
                value: '$2'
YAML
}
mk compressor '{"compression_level": 6, "backend": "software"}'
ENVOY_DYNAMIC_MODULES_SEARCH_PATH="$target" "$bin" check --envoy-config "$t/cfg.yaml" > "$t/out" 2>&1 || true
grep -q "envoy-qat-module .* abi v0.2.0 .*config valid" "$t/out" || fail "check did not pass a valid config: $(cat "$t/out")"
pass "check passes a valid compressor config"
mk compressor '{"window_bits": 16}'
ENVOY_DYNAMIC_MODULES_SEARCH_PATH="$target" "$bin" check --envoy-config "$t/cfg.yaml" > "$t/out" 2>&1 || true
grep -q 'field \\"window_bits\\": 16 is out of range\|field "window_bits": 16 is out of range' "$t/out" || fail "check did not name window_bits: $(cat "$t/out")"
pass "check names an out-of-range field"
mk decompressor '{"max_output_bytes": 1000}'
ENVOY_DYNAMIC_MODULES_SEARCH_PATH="$target" "$bin" check --envoy-config "$t/cfg.yaml" > "$t/out" 2>&1 || true
grep -q "(decompressor): loads.*config valid" "$t/out" || fail "check did not pass a decompressor config: $(cat "$t/out")"
env -u ENVOY_DYNAMIC_MODULES_SEARCH_PATH "$bin" check --envoy-config "$t/cfg.yaml" > "$t/out" 2>&1 || true
grep -q "ENVOY_DYNAMIC_MODULES_SEARCH_PATH is not set" "$t/out" || fail "check without a search path: $(cat "$t/out")"
ENVOY_DYNAMIC_MODULES_SEARCH_PATH="$t" "$bin" check --envoy-config "$t/cfg.yaml" > "$t/out" 2>&1 || true
grep -q "libenvoy_qat_module.so does not exist" "$t/out" || fail "check with a wrong search path: $(cat "$t/out")"
pass "check finds the module on the search path and says when it cannot"
# 5. The tls transport socket: check reads the certificate and key through the module and
# wants tls_wake first in the chain.
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$t/k.pem" -out "$t/c.pem" -days 2 -subj /CN=t 2>/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$t/k2.pem" -out "$t/c2.pem" -days 2 -subj /CN=t 2>/dev/null
mkts() { # first filter name, key file
  cat > "$t/ts.yaml" <<YAML
static_resources:
  listeners:
  - filter_chains:
    - filters:
      - name: envoy.filters.network.dynamic_modules
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.dynamic_modules.v3.DynamicModuleNetworkFilter
          dynamic_module_config: {name: envoy_qat_module}
          filter_name: $1
      transport_socket:
        name: envoy.transport_sockets.dynamic_modules
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.dynamic_modules.v3.DynamicModuleTransportSocket
          dynamic_module_config: {name: envoy_qat_module}
          transport_socket_name: tls
          transport_socket_config:
            "@type": type.googleapis.com/google.protobuf.StringValue
            value: '{"common_tls_context": {"tls_certificates": [{"certificate_chain": {"filename": "$t/c.pem"}, "private_key": {"filename": "$2"}}]}}'
YAML
}
mkts tls_wake "$t/k.pem"
ENVOY_DYNAMIC_MODULES_SEARCH_PATH="$target" "$bin" check --envoy-config "$t/ts.yaml" > "$t/out" 2>&1 || true
grep -q "(tls): loads, exports every hook Envoy 1.40 requires of a transport socket, config valid" "$t/out" || fail "check did not pass a tls socket config: $(cat "$t/out")"
grep -q "(tls_wake): loads, exports every hook Envoy 1.40 requires of a network filter, config valid" "$t/out" || fail "check did not pass tls_wake: $(cat "$t/out")"
grep -q "tls transport socket with tls_wake first in the chain" "$t/out" || fail "check did not see tls_wake: $(cat "$t/out")"
pass "check passes a tls socket with tls_wake"
mkts tls_wake "$t/k2.pem"
ENVOY_DYNAMIC_MODULES_SEARCH_PATH="$target" "$bin" check --envoy-config "$t/ts.yaml" > "$t/out" 2>&1 || true
grep -q "is not the key of the certificate" "$t/out" || fail "check did not catch a key that does not match: $(cat "$t/out")"
mkts tls_wake "$t/missing.pem"
ENVOY_DYNAMIC_MODULES_SEARCH_PATH="$target" "$bin" check --envoy-config "$t/ts.yaml" > "$t/out" 2>&1 || true
grep -q "cannot read $t/missing.pem" "$t/out" || fail "check did not name the missing key file: $(cat "$t/out")"
mkts compressor "$t/k.pem"
ENVOY_DYNAMIC_MODULES_SEARCH_PATH="$target" "$bin" check --envoy-config "$t/ts.yaml" > "$t/out" 2>&1 || true
grep -q "without the tls_wake network filter first" "$t/out" || fail "check did not want tls_wake: $(cat "$t/out")"
pass "check names a mismatched key, a missing key file and a missing tls_wake"

# 6. Envoy's distroless image (distroless base-nossl: glibc, no libstdc++.so.6, no
# libgcc_s.so.1): the stock Envoy and the module in a root that holds glibc's libraries and
# nothing else, serving TLS by the module's tls socket and gzip by its compressor to curl
# outside the root. A module that needs any other library fails to load here.
root="$t/distroless"
mkdir -p "$root/lib" "$root/etc" "$root/proc" "$root/dev" "$root/tmp" "$root/modules"
for lib in libc.so.6 libm.so.6 libdl.so.2 libpthread.so.0 librt.so.1; do
  cp -L "/lib/x86_64-linux-gnu/$lib" "$root/lib/"
done
mkdir -p "$root/lib64" && cp -L /lib64/ld-linux-x86-64.so.2 "$root/lib64/"
cp "$envoy_bin" "$root/envoy"
cp "$so" "$root/modules/"
cp "$t/c.pem" "$t/k.pem" "$root/etc/"
port=$((20000 + RANDOM % 10000)) # below the ephemeral range (32768-)
cat > "$root/etc/envoy.yaml" <<YAML
static_resources:
  listeners:
  - address: {socket_address: {address: 127.0.0.1, port_value: $port}}
    filter_chains:
    - filters:
      - name: tls_wake
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.dynamic_modules.v3.DynamicModuleNetworkFilter
          dynamic_module_config: {name: envoy_qat_module}
          filter_name: tls_wake
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: d
          route_config:
            virtual_hosts:
            - name: d
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                direct_response: {status: 200, body: {inline_string: "$(printf 'distroless %.0s' $(seq 300))"}}
          http_filters:
          - name: compressor
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter
              dynamic_module_config: {name: envoy_qat_module}
              filter_name: compressor
              filter_config: {"@type": type.googleapis.com/google.protobuf.StringValue, value: '{"backend": "software"}'}
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
      transport_socket:
        name: envoy.transport_sockets.dynamic_modules
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.dynamic_modules.v3.DynamicModuleTransportSocket
          dynamic_module_config: {name: envoy_qat_module}
          transport_socket_name: tls
          transport_socket_config:
            "@type": type.googleapis.com/google.protobuf.StringValue
            value: '{"common_tls_context": {"tls_certificates": [{"certificate_chain": {"filename": "/etc/c.pem"}, "private_key": {"filename": "/etc/k.pem"}}]}, "key_provider": {"mode": "engine", "backend": "software"}}'
YAML
unshare -m bash -c "mount --bind /proc '$root/proc' && mount --bind /dev '$root/dev' \
  && ENVOY_DYNAMIC_MODULES_SEARCH_PATH=/modules exec chroot '$root' /envoy -c /etc/envoy.yaml \
     --concurrency 1 --disable-hot-restart --log-level warn" > "$t/distroless.log" 2>&1 &
dl_pid=$!
ok=""
for _ in $(seq 100); do
  if curl -sk --compressed -D "$t/dl-headers" -o "$t/dl-body" "https://127.0.0.1:$port/" 2>/dev/null; then ok=1; break; fi
  kill -0 "$dl_pid" 2>/dev/null || break
  sleep 0.1
done
kill "$dl_pid" 2>/dev/null || true
wait "$dl_pid" 2>/dev/null || true
[[ -n "$ok" ]] || fail "the stock Envoy with the module did not serve TLS in a glibc-only root: $(tail -5 "$t/distroless.log")"
grep -qi '^content-encoding: gzip' "$t/dl-headers" || fail "no gzip from the module's compressor in the glibc-only root"
grep -q 'distroless distroless' "$t/dl-body" || fail "wrong body in the glibc-only root"
pass "stock Envoy + module serve TLS and gzip in a root with glibc only (Envoy's distroless image)"
echo "test-module-abi: all passed"
