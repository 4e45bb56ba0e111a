#!/usr/bin/env bash
# cpp/api protos: compiled by protoc against Envoy's real descriptors, checked for upstream
# field compatibility, and every qat/qatzip typed_config in envoy-config/ parsed into them.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
"$repo/build/venv/bin/python" "$repo/ci/check_api_protos.py" "$repo" "$repo/build/api-check"
