#!/usr/bin/env bash
# The one test command (README and .ci/run call it): installs what is missing, then runs
# formatting and lint checks, every Rust test, and every ci/test-*.sh suite with real clients.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
start=$SECONDS
# Each step's wall time, printed at the end: where CI's time goes.
times=()
step() {
  local name=$1 t=$SECONDS
  shift
  echo "== $name"
  "$@"
  times+=("$(printf '%6d s  %s' $((SECONDS - t)) "$name")")
}
step "ci/deps.sh" ci/deps.sh
export ENVOY_QAT_DEPS="$repo/build/qat-deps"
step "cargo fmt --check" cargo fmt --all -- --check
step "cargo clippy" cargo clippy --workspace --all-targets --locked -- -D warnings
step "cargo test" cargo test --workspace --locked
for suite in ci/test-*.sh; do
  [[ -e "$suite" ]] || continue
  step "$suite" "$suite"
done
printf '%s\n' "${times[@]}"
echo "== all tests passed in $((SECONDS - start)) s"
