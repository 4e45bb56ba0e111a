#!/usr/bin/env bash
# Offline validation of envoy-config/: every Envoy YAML through the real stock Envoy (QAT typed
# configs swapped for stock ones), every Istio/Kubernetes manifest against JSON schemas.
#   usage: ci/validate-configs.sh [envoy|manifests|stockify] [ARGS...]   (no arguments: both)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
py="$repo/build/venv/bin/python"
[[ -x "$py" ]] || { echo "validate-configs: $py missing: run ci/deps.sh" >&2; exit 2; }
if (($#)); then exec "$py" "$repo/ci/validate_configs.py" "$@"; fi
rc=0
"$py" "$repo/ci/validate_configs.py" envoy || rc=1
"$py" "$repo/ci/validate_configs.py" manifests || rc=1
exit $rc
