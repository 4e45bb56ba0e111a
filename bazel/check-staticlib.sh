#!/usr/bin/env bash
# Checks the output of bazel/rust-staticlib.sh: the static library Envoy links must hold the
# Rust core and nothing else. Fails when
#  - it or the system libraries it asks for bring a TLS library (Envoy links its own
#    BoringSSL; a second one, e.g. Debian's Android BoringSSL, must never come along);
#  - it defines C++ code: cpp/ssl, the bridge's C++ half or cxx's C++ runtime (Bazel compiles
#    those against Envoy's toolchain; a second copy, built with the host's C++ library,
#    would be an ODR violation), or references the C++ standard library;
#  - it lacks the bridge's Rust entry points (wrong crate, or no bridge in it).
#   usage: bazel/check-staticlib.sh OUT_DIR
set -euo pipefail
out=$1
lib="$out/libenvoy_qat.a"
fail() { echo "check-staticlib: $lib: $*" >&2; exit 1; }
[[ -s "$lib" ]] || fail "missing"
command -v nm > /dev/null || fail "cannot be checked: nm (binutils) is not installed"
if grep -Eq -- '-l(ssl|crypto)\b' "$out/native-static-libs.txt"; then
  fail "asks for a TLS library: $(cat "$out/native-static-libs.txt")"
fi
# (nm's LTO plugin may complain about rustc's bitcode on stderr: the symbol tables are what counts.)
syms=$(nm -A --defined-only "$lib" 2>/dev/null | awk '{print $NF}')
undef=$(nm -A --undefined-only "$lib" 2>/dev/null | awk '{print $NF}')
tls=$(grep -E '^(SSL|SSL_CTX|EVP|BIO|X509|RSA|EC_KEY|ERR)_' <<<"$syms"$'\n'"$undef" | sort -u | head -5 || true)
[[ -z "$tls" ]] || fail "holds or references TLS library symbols: $tls"
# C++ of ours: envoy_qat:: (Rust's legacy mangling also starts _ZN9envoy_qat, but ends in
# 17h<hash>E), the bridge's C++ side (envoy_qat$ssl$...) and cxx's runtime
# (cxxbridge1$cxx_string$..., called by the Rust side, defined in cxx.cc).
cxx=$(grep -E '^_ZN(9envoy_qat|4rust)|^envoy_qat\$ssl\$|^cxxbridge1\$cxx_string\$' <<<"$syms" \
  | grep -Ev '17h[0-9a-f]{16}E$' | head -5 || true)
[[ -z "$cxx" ]] || fail "defines C++ that Bazel must compile: $cxx"
std=$(grep -E '^_Z(N|NK)?St|^__cxa_|^_ZTV' <<<"$syms"$'\n'"$undef" | sort -u | head -5 || true)
[[ -z "$std" ]] || fail "references the C++ standard library (C++ compiled by cargo left inside): $std"
grep -q '^envoy_qat\$ffi\$cxxbridge1\$.*engine_from_options$' <<<"$syms" \
  || fail "lacks the bridge's Rust entry points (engine_from_options)"
grep -q '^cxxbridge1\$cxx_string\$length$' <<<"$undef" \
  || fail "does not call cxx's C++ runtime: not a cxx-bridged envoy-qat core?"
echo "check-staticlib: $lib holds the Rust core only (no TLS library, no C++)"
