#!/usr/bin/env bash
# The one test command (README and .ci/run call it): installs what is missing, then runs
# formatting and lint checks, every Rust test, and every ci/test-*.sh suite with real clients.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
start=$SECONDS
ci/deps.sh
export ENVOY_QAT_DEPS="$repo/build/qat-deps"
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
for suite in ci/test-*.sh; do
  [[ -e "$suite" ]] || continue
  echo "== $suite"
  "$suite"
done
echo "== all tests passed in $((SECONDS - start)) s"
