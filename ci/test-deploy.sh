#!/usr/bin/env bash
# envoy-config/ offline: every Envoy YAML through the stock Envoy 1.40 (--mode validate, QAT typed
# configs swapped), every Istio/Kubernetes manifest against JSON schemas, our QAT typed configs
# through `envoy-qat check --envoy-config`, and `envoy-qat check` on this machine.
# Also serves the TLS + compression bootstrap for real in the stock Envoy behind curl and openssl.
# Installs nothing (ci/deps.sh does). The Rust suites tests/check.rs and tests/deploy_configs.rs
# (fixture trees, broken copies of every kind) run under cargo test.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
export ENVOY_QAT_DEPS="${ENVOY_QAT_DEPS:-$repo/build/qat-deps}"
cargo build --locked --quiet --bin envoy-qat
# The dynamic module, built on its own (without the C++ glue), for the configs that load it.
cargo build --locked --quiet -p envoy-qat-module
export ENVOY_DYNAMIC_MODULES_SEARCH_PATH="$repo/target/debug"
bin="$repo/target/debug/envoy-qat"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "-- stock Envoy --mode validate (QAT typed configs swapped for stock ones)"
build/venv/bin/python ci/validate_configs.py envoy --keep "$work/envoy"
echo "-- the TLS + compression bootstrap served by the stock Envoy (QAT swapped): curl, openssl"
build/venv/bin/python ci/validate_configs.py smoke
echo "-- Istio and Kubernetes manifests against JSON schemas"
build/venv/bin/python ci/validate_configs.py manifests

echo "-- envoy-qat check --envoy-config on every config (our own parser, real keys)"
n=0
for f in "$work"/envoy/*.qat.yaml; do
  case "$f" in *gzip-decompression*) continue ;; esac   # stock gzip only: nothing of ours
  "$bin" check --config-only --envoy-config "$f" | sed "s|$work/envoy/||g"
  n=$((n + 1))
done
((n >= 5)) || { echo "expected at least 5 Envoy configs, checked $n" >&2; exit 1; }

echo "-- envoy-qat check on this machine"
set +e
"$bin" check --probe
rc=$?
set -e
case $rc in
  0) echo "this machine is ready for QAT" ;;
  1) echo "this machine is not ready for QAT (expected without a QAT device): exit 1" ;;
  *) echo "envoy-qat check exited $rc" >&2; exit 1 ;;
esac
echo "deploy: all checks passed"
