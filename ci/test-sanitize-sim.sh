#!/usr/bin/env bash
# The QAT backend's tests against tests/qat-sim (tests/qat_sim.rs, tests/qat_faults.rs), then the
# dynamic module's unit tests, under
# AddressSanitizer (with LeakSanitizer): the simulator cdylib, the backend's unsafe FFI and
# pinned-memory handling, and the engine, all instrumented.
#
# Rust's -Zsanitizer is unstable; the stable toolchain ships the ASan runtime
# (librustc-stable_rt.asan.a), and RUSTC_BOOTSTRAP=1 lets its compiler accept the flag. Only
# the target's crates are instrumented (--target keeps build scripts and proc macros plain);
# std is not rebuilt (that needs -Zbuild-std and the rust-src of a nightly), so a bug inside
# std itself goes unseen. cpp/ssl has its own gcc ASan/UBSan pass in ci/test-abi.sh.
#
# The soak test runs QAT_SOAK_OPS operations (default here 2000; the plain suite's default is
# 5000, CI's QAT suite 100000): ASan makes every operation several times slower.
#   usage: ci/test-sanitize-sim.sh          QAT_SOAK_OPS=20000 ci/test-sanitize-sim.sh
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
export ENVOY_QAT_DEPS="${ENVOY_QAT_DEPS:-$repo/build/qat-deps}"
start=$SECONDS
target=x86_64-unknown-linux-gnu
dir="$repo/build/asan-target"
log="$repo/build/asan-sim.log"
mkdir -p "$repo/build"
export RUSTC_BOOTSTRAP=1
# A clean one-off build: incremental state would only cost time.
export CARGO_INCREMENTAL=0
export RUSTFLAGS="-Zsanitizer=address -Cforce-frame-pointers=yes"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:halt_on_error=1:detect_stack_use_after_return=1"
export QAT_SOAK_OPS="${QAT_SOAK_OPS:-2000}"
# The simulator's fast path dlopens the system libcrypto.so.3 with RTLD_DEEPBIND, which ASan's
# dlopen refuses; its portable Rust arithmetic (num-bigint, p256, p384) is instrumented code.
export QAT_SIM_ARITH=bigint
echo "test-sanitize-sim: building the QAT tests with -Zsanitizer=address"
cargo test --locked --target "$target" --target-dir "$dir" --no-run \
  --test qat_sim --test qat_faults 2>&1 | grep -v '^ *\(Compiling\|Downloaded\|Downloading\)' || true
echo "test-sanitize-sim: built in $((SECONDS - start)) s; running"
rc=0
cargo test --locked --target "$target" --target-dir "$dir" \
  --test qat_sim --test qat_faults >"$log" 2>&1 || rc=$?
grep -E '^test result|^running|AddressSanitizer|LeakSanitizer|^SUMMARY' "$log" || true
if ((rc != 0)) || grep -q 'Sanitizer' "$log"; then
  grep -B2 -A40 -m1 'ERROR: \(Address\|Leak\)Sanitizer' "$log" >&2 || tail -60 "$log" >&2
  echo "test-sanitize-sim: FAIL (exit $rc; full log ${log#"$repo"/})" >&2
  exit 1
fi
# Proof the instrumentation is really in: the test binary exports the ASan runtime and the
# simulator it loaded is instrumented code that calls into it.
deps="$dir/$target/debug/deps"
bin=$(find "$deps" -maxdepth 1 -name 'qat_sim-*' -type f -executable | head -1)
exported=$(nm -D --defined-only "$bin" | grep -c ' __asan_init$' || true)
calls=$(nm -D --undefined-only "$deps/libqat_sim.so" | grep -c ' __asan_report_' || true)
if ((exported != 1 || calls == 0)); then
  echo "test-sanitize-sim: FAIL: not instrumented ($bin exports __asan_init: $exported; libqat_sim.so ASan checks: $calls)" >&2
  exit 1
fi
echo "test-sanitize-sim: qat_sim and qat_faults clean under ASan+LSan (QAT_SOAK_OPS=$QAT_SOAK_OPS) in $((SECONDS - start)) s"

# The dynamic module's own tests (module/: the tls socket's keys, BoringSSL backend and engine
# round trips, its config parsers, the compressor's state machine and worker threads) under
# the same ASan+LSan. The module in Envoy cannot be: the stock Envoy is not instrumented and
# its tcmalloc owns malloc, so an instrumented .so has no runtime to call there. BoringSSL
# (C, built by cmake) is not instrumented either; the Rust that drives it is.
mstart=$SECONDS
mlog="$repo/build/asan-module.log"
rc=0
cargo test --locked --target "$target" --target-dir "$dir" -p envoy-qat-module --lib >"$mlog" 2>&1 || rc=$?
grep -E '^test result|AddressSanitizer|LeakSanitizer|^SUMMARY' "$mlog" || true
if ((rc != 0)) || grep -q 'ERROR: \(Address\|Leak\)Sanitizer' "$mlog"; then
  grep -B2 -A40 -m1 'ERROR: \(Address\|Leak\)Sanitizer' "$mlog" >&2 || tail -60 "$mlog" >&2
  echo "test-sanitize-sim: FAIL: the module's tests (exit $rc; full log ${mlog#"$repo"/})" >&2
  exit 1
fi
mbin=$(find "$deps" -maxdepth 1 -name 'envoy_qat_module-*' -type f -executable | head -1)
# (The runtime is linked statically here: it is in the binary's own symbol table; the
# instrumented code calls its __asan_report_* checks.)
checks=0
[[ -n "$mbin" ]] && nm "$mbin" | grep -c ' __asan_init$' >/dev/null \
  && checks=$(objdump -d --no-show-raw-insn "$mbin" | grep -c 'call.*<__asan_report_' || true)
((checks > 0)) || { echo "test-sanitize-sim: FAIL: the module's test binary is not instrumented" >&2; exit 1; }
echo "test-sanitize-sim: the module's tests clean under ASan+LSan ($checks checks in the binary) in $((SECONDS - mstart)) s"
