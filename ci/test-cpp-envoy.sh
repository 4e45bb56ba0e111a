#!/usr/bin/env bash
# cpp/envoy is built only by bazel/ (needs the internet); here: clang-format in Envoy's
# style, and a mechanical check that everything it calls exists in the bridge and cpp/ssl.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
(cd "$repo/cpp/envoy" && clang-format --dry-run -Werror ./*.h ./*.cc) || {
  echo "cpp/envoy: run  clang-format -i cpp/envoy/*.h cpp/envoy/*.cc" >&2
  exit 1
}
python3 "$repo/ci/check_cpp_envoy.py" "$repo"
