#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo fuzz / libFuzzer) of every parser that sees outside bytes:
# keys (PEM, DER), provider config (Envoy YAML / typed JSON / C ABI options), the compressor's
# typed config, the bounded decompressor, the streaming compressor (with a C zlib oracle) and
# the private-key operations the C ABI starts. Targets live in tests/fuzz (its own cargo
# workspace). Builds the targets, replays tests/fuzz/regressions, then runs each target for
# FUZZ_SECONDS from seeds generated here (openssl keys, compressed files, envoy-config/) plus
# the committed seeds, and fails on any crash, hang or leak of the fuzzer's limits.
#
#   usage: ci/test-fuzz.sh                       # CI: FUZZ_SECONDS=10 per target
#          FUZZ_SECONDS=600 ci/test-fuzz.sh      # a longer local run
#          FUZZ_TARGETS="decompress bridge" ci/test-fuzz.sh
#          FUZZ_SANITIZER=address FUZZ_SECONDS=600 ci/test-fuzz.sh   # with AddressSanitizer
#
# Rust stable only: cargo fuzz builds with `--sanitizer none` (SanitizerCoverage through
# stable -C flags). FUZZ_SANITIZER=address builds with the unstable -Zsanitizer=address,
# which the stable rustc takes under RUSTC_BOOTSTRAP=1 (its ASan runtime ships with the
# toolchain): a separate, slower build (about 6 CPU-minutes more), for local runs. The working corpus
# stays in build/fuzz/corpus/<target> between local runs; crash inputs go to
# build/fuzz/artifacts/<target>/ (FUZZ_OUT=DIR puts seeds, corpus and artifacts elsewhere,
# e.g. where several checkouts share one build/).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
export ENVOY_QAT_DEPS="${ENVOY_QAT_DEPS:-$repo/build/qat-deps}"
seconds="${FUZZ_SECONDS:-10}"
fuzz="$repo/tests/fuzz"
out="${FUZZ_OUT:-$repo/build/fuzz}"
all_targets=(key_pem key_der provider_config compressor_config decompress compress_roundtrip bridge)
read -r -a targets <<<"${FUZZ_TARGETS:-${all_targets[*]}}"
start=$SECONDS
fail() { echo "test-fuzz: FAIL: $*" >&2; exit 1; }

cargo_fuzz="$repo/build/tools/cargo/bin/cargo-fuzz"
[[ -x "$cargo_fuzz" ]] || ci/deps.sh
[[ -x "$cargo_fuzz" ]] || fail "cargo-fuzz is not installed (ci/deps.sh installs it)"
export PATH="$repo/build/tools/cargo/bin:$PATH"

echo "test-fuzz: formatting of tests/fuzz"
cargo fmt --manifest-path "$fuzz/Cargo.toml" -- --check

sanitizer="${FUZZ_SANITIZER:-none}"
tdir="$fuzz/target"
if [[ "$sanitizer" != none ]]; then
  export RUSTC_BOOTSTRAP=1
  tdir="$out/target-$sanitizer"
  # The ASan build keeps envoy-qat's link to Debian's BoringSSL, whose rpath the root
  # crate's build script sets for its own binaries only.
  export LD_LIBRARY_PATH="/usr/lib/x86_64-linux-gnu/android${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
echo "test-fuzz: building the fuzz targets (cargo fuzz build -O -a --sanitizer $sanitizer)"
# pipefail (set above) makes the pipeline fail with cargo's status; sed, unlike grep -v,
# succeeds when it filters out every line. A failed build must stop here, not go on to
# fuzz stale binaries left in the target directory.
(cd "$fuzz" && cargo fuzz build --fuzz-dir . -O -a --sanitizer "$sanitizer" \
  --target-dir "$tdir" 2>&1 | sed -e '/^ *\(Compiling\|Downloaded\|Downloading\) /d') ||
  fail "cargo fuzz build failed (see above); not fuzzing what an earlier build left"
bindir="$tdir/x86_64-unknown-linux-gnu/release"
for t in "${targets[@]}"; do [[ -x "$bindir/$t" ]] || fail "target $t was not built"; done
echo "test-fuzz: built in $((SECONDS - start)) s"

# Seeds: keys from openssl (throwaway test keys), compressed files, the project's configs.
seeds="$out/seeds"
rm -rf "$seeds"
mkdir -p "$seeds"/{key_pem,key_der,provider_config,compressor_config,decompress,compress_roundtrip,bridge}
k="$seeds/keys"
mkdir -p "$k"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$k/rsa.pem" 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$k/p256.pem" 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out "$k/p384.pem" 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-521 -out "$k/p521.pem" 2>/dev/null
openssl genpkey -algorithm ED25519 -out "$k/ed25519.pem" 2>/dev/null
openssl rsa -in "$k/rsa.pem" -traditional -out "$k/rsa-pkcs1.pem" 2>/dev/null
openssl ec -in "$k/p256.pem" -out "$k/p256-sec1.pem" 2>/dev/null
openssl pkey -in "$k/rsa.pem" -pubout -out "$k/rsa-pub.pem" 2>/dev/null
openssl pkey -in "$k/p256.pem" -aes128 -passout pass:x -out "$k/p256-enc.pem" 2>/dev/null
openssl req -new -x509 -key "$k/p256.pem" -subj /CN=fuzz -days 1 -out "$k/p256-cert.pem" 2>/dev/null
cat "$k/p256-cert.pem" "$k/p256-sec1.pem" >"$k/bundle.pem"
for f in rsa rsa-pkcs1 p256 p256-sec1 p384 p521 ed25519 rsa-pub p256-enc p256-cert bundle; do
  cp "$k/$f.pem" "$seeds/key_pem/$f"
done
# key_der: one label-selector byte, then the DER.
der() { { printf '\000'; openssl "$@" -outform DER 2>/dev/null; }; }
der pkey -in "$k/rsa.pem" >"$seeds/key_der/rsa-pkcs8"
der rsa -in "$k/rsa.pem" -traditional >"$seeds/key_der/rsa-pkcs1"
der pkey -in "$k/p256.pem" >"$seeds/key_der/p256-pkcs8"
der ec -in "$k/p256.pem" >"$seeds/key_der/p256-sec1"
der pkey -in "$k/p384.pem" >"$seeds/key_der/p384-pkcs8"
der pkey -in "$k/p521.pem" >"$seeds/key_der/p521-pkcs8"
# provider_config: mode byte 0 + Envoy/Istio YAML; mode 1 + typed config JSON.
for f in envoy-config/envoy/*.yaml envoy-config/istio/*.yaml; do
  { printf '\000'; cat "$f"; } >"$seeds/provider_config/$(basename "$f")"
done
python3 - "$seeds" "$k/p256-sec1.pem" <<'PY'
import gzip, json, os, random, sys, zlib
seeds, keyfile = sys.argv[1], sys.argv[2]
key = open(keyfile).read()
def w(target, name, data):
    with open(os.path.join(seeds, target, name), "wb") as f:
        f.write(data)
qat = "type.googleapis.com/envoy.extensions.private_key_providers.qat.v3alpha.QatPrivateKeyMethodConfig"
for i, cfg in enumerate([
    {"@type": qat, "private_key": {"inline_string": key}, "poll_delay": "0.002s"},
    {"private_key": {"inline_string": key}, "poll_delay": {"seconds": 0, "nanos": 5000000}},
    {"private_key": {"environment_variable": "FUZZ_NO_SUCH_VAR"}, "poll_delay": "1s"},
    "0.000000001s",
]):
    w("provider_config", f"json-{i}", b"\x01" + json.dumps(cfg).encode())
w("provider_config", "options", b"\x02" + bytes(range(64)))
# decompress: 8-byte header (format, split, max_output LE, max_ratio, ratio_grace KiB).
random.seed(7)
text = b"".join(b"line %d of an HTTP response body\n" % i for i in range(3000))
mixed = text[:20000] + random.randbytes(3000)
def hdr(fmt, split=0, max_out=0, ratio=0, grace=0):
    return bytes([fmt, split]) + max_out.to_bytes(4, "little") + bytes([ratio, grace])
raw = zlib.compressobj(6, zlib.DEFLATED, -15)
raw_data = raw.compress(mixed) + raw.flush()
for name, data in [
    ("gzip", hdr(0, 0) + gzip.compress(mixed)),
    ("gzip-2members", hdr(0, 7) + gzip.compress(b"a" * 100) + gzip.compress(b"b" * 200)),
    ("gzip-limited", hdr(0, 0, 1000) + gzip.compress(text)),
    ("gzip-ratio", hdr(0, 3, 0, 10, 1) + gzip.compress(b"\0" * 200000)),
    ("zlib", hdr(1, 13) + zlib.compress(mixed)),
    ("raw", hdr(2, 0) + raw_data),
    ("auto", hdr(3, 0) + gzip.compress(b"auto")),
]:
    w("decompress", name, data)
# bridge: key, flags, sigalg (BE), length (LE), data.
for name, key_i, flags, alg, n in [
    ("rsa-pss", 0, 0, 0x0804, 32), ("rsa-pkcs1", 0, 0, 0x0401, 0),
    ("rsa-decrypt", 0, 2, 0, 256), ("p256", 1, 0, 0x0403, 100),
    ("p384", 2, 0, 0x0503, 7), ("noop", 1, 1, 0x0403, 1), ("cancel", 0, 4, 0x0804, 3),
]:
    w("bridge", name, bytes([key_i, flags]) + alg.to_bytes(2, "big") + n.to_bytes(2, "little") + b"msg")
w("compress_roundtrip", "text", text[:3000])
w("compress_roundtrip", "mixed", mixed[:3000])
PY

# Replay stored crash inputs first (the Rust suite replays them too: tests/fuzz_regressions.rs).
replayed=0
for t in "${targets[@]}"; do
  reg="$fuzz/regressions/$t"
  if compgen -G "$reg/*" >/dev/null; then
    "$bindir/$t" -runs=1 "$reg"/* >"$out/replay-$t.log" 2>&1 \
      || { tail -30 "$out/replay-$t.log"; fail "$t: a stored regression input fails again"; }
    replayed=$((replayed + $(find "$reg" -type f | wc -l)))
  fi
done
echo "test-fuzz: replayed $replayed stored crash inputs"

declare -A max_len=([key_pem]=8192 [key_der]=4096 [decompress]=65536 [compress_roundtrip]=8192)
summary=()
for t in "${targets[@]}"; do
  corpus="$out/corpus/$t"
  art="$out/artifacts/$t"
  mkdir -p "$corpus" "$art"
  extra=()
  [[ -d "$fuzz/corpus/$t" ]] && extra+=("$fuzz/corpus/$t")
  log="$out/$t.log"
  echo "test-fuzz: $t for ${seconds} s"
  rc=0
  "$bindir/$t" -max_total_time="$seconds" -timeout=30 -rss_limit_mb=2048 \
    -max_len="${max_len[$t]:-4096}" -print_final_stats=1 -artifact_prefix="$art/" \
    "$corpus" "$seeds/$t" "${extra[@]}" >"$log" 2>&1 || rc=$?
  if ((rc != 0)); then
    grep -v '^#' "$log" | tail -40 >&2
    fail "$t crashed (exit $rc); input saved under ${art#"$repo"/}/ - minimise it with cargo fuzz tmin, store it under tests/fuzz/regressions/$t/ and fix the library"
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  last=$(grep -E '^#[0-9]+' "$log" | tail -1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9]*[a-zA-Z]*\).*/\1/p' <<<"$last")
  line=$(printf '%-20s %10s runs  cov %6s  ft %6s  corpus %s' "$t" "$runs" "$cov" "$ft" "$corp")
  echo "test-fuzz: $line"
  summary+=("$line")
done
echo "test-fuzz: summary (${seconds} s per target)"
printf '  %s\n' "${summary[@]}"
echo "test-fuzz: ${#targets[@]} targets, no crash, in $((SECONDS - start)) s"
