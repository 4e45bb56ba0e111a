#!/usr/bin/env bash
# Benchmark for the compression figures: `envoy-qat bench compress` (release build) on
#   1. the web corpus (ci/web-corpus.sh: real HTML, CSS, JS, JSON, SVG, text and XML from
#      Debian packages, the content types Envoy's compressor filter compresses by
#      default), and
#   2. the generated corpus (synthetic text/JSON/HTML with 10% random bytes standing in for
#      already-compressed content that a misconfigured content_type list would let through).
# Each prints every level next to gzip -6, gzip -1 and pigz run in the same invocation,
# level 6 against gzip -6 in interleaved rounds (whole corpus, then each part), the
# flush-heavy stream and decompression against gzip -d. Prints figures; no pass/fail.
#   usage: ci/bench-compress.sh [rounds]     (default 7)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
rounds=${1:-7}
"$repo/ci/deps.sh"
cargo build -q --locked --release --bin envoy-qat
bin="$repo/target/release/envoy-qat"
export ENVOY_QATZIP_LIB="${ENVOY_QATZIP_LIB:-$repo/build/qat-deps/usr/lib/x86_64-linux-gnu/libqatzip.so.3}"
web=$("$repo/ci/web-corpus.sh")
echo "# $(nproc) cores; web corpus $(grep sha256 "$(dirname "$web")/corpus.txt")"
"$bin" bench compress --corpus "$web" --rounds "$rounds"
echo
"$bin" bench compress --rounds "$rounds"
