#!/usr/bin/env bash
# How QATzip sessions are shared (issue 15, item 4): prints figures, no pass/fail.
#   1. QATzip's software path (Debian trixie's libqatzip, no device): 4 threads at once
#      with no session limit (a session per concurrent caller: every byte through
#      QATzip's software fallback) and with limits 1 and 2 (calls beyond the limit go to
#      zlib-rs): MB/s, sessions made, bytes through QATzip and zlib-rs.
#   2. The QATzip simulator (tests/qat-sim, 2 DC instances, 2 ms per device request):
#      2/4/8 threads with no limit and with the pool's limit (the instance count): bytes
#      the device compressed, bytes QATzip silently compressed in software ("silent-sw",
#      reported QZ_OK), bytes sent to zlib-rs, and QATzip's silent fallbacks.
# The simulator's MB/s are those of its own deflate, not a device's.
#   usage: ci/bench-qatzip-sessions.sh
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
export ENVOY_QAT_DEPS="${ENVOY_QAT_DEPS:-$repo/build/qat-deps}"
quiet() { grep -v -e 'vfio' -e 'qatzip.c' -e 'ADF_' -e 'Error no hardware' -e '^running' -e '^test ' -e '^$' -e 'test result' -e '^\.$'; }
cargo test --release --locked -q --test compress_qatzip -- --ignored --nocapture \
  measure_session_policy_on_qatzip_software_path 2>&1 | quiet
cargo test --release --locked -q --test compress_qatzip_sim -- --ignored --nocapture \
  measure_session_policy_on_the_simulator 2>&1 | quiet
