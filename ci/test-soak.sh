#!/usr/bin/env bash
# CI-sized fault-injection soak (run by ci/test.sh after cargo test): ci/soak.sh with
# 5,000 new-connection TLS handshakes through `serve` on qat-sim with faults and
# software failover, and 300 MB through the compressor, with the same assertions as the
# full soak (no failed handshake, every operation ended exactly once, pinned memory back
# to 0, fds and RSS flat). Uses the debug build `cargo test` already made (dependencies
# are optimised in debug builds), so it adds no release build to CI.
# The full soak: ci/soak.sh (200k handshakes, 10 GB; release build).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
export SOAK_HANDSHAKES=${SOAK_HANDSHAKES:-5000}
export SOAK_COMPRESS_BYTES=${SOAK_COMPRESS_BYTES:-300000000}
export SOAK_PROFILE=${SOAK_PROFILE:-debug}
export SOAK_SAMPLE_SECS=${SOAK_SAMPLE_SECS:-3}
start=$SECONDS
ci/soak.sh
echo "test-soak: $((SECONDS - start)) s"
