#!/usr/bin/env bash
# Fetch qatlib and QATzip (headers and runtime libraries) from Debian trixie into a
# build directory, without installing anything from trixie system-wide.
#   usage: ci/fetch-qat-deps.sh [DEST]      (default: build/qat-deps in the repo)
# Idempotent: a complete DEST is reused. Prints DEST on success.
# Result: DEST/usr/include/qat/*.h, DEST/usr/include/qatzip.h,
#         DEST/usr/lib/x86_64-linux-gnu/{libqat.so.4,libusdm.so.0,libqatzip.so.3}
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:-${ENVOY_QAT_DEPS:-$repo/build/qat-deps}}
pkgs=(libqat-dev libqat4 libusdm0 libusdm-dev libqatzip-dev libqatzip3)
stamp="$dest/.complete"
if [[ -f "$stamp" && -f "$dest/usr/include/qat/cpa.h" && -f "$dest/usr/include/qatzip.h" ]]; then
  echo "$dest"; exit 0
fi
"$repo/ci/apt-download.sh" "$dest/.apt" "$dest" trixie "${pkgs[@]}"
test -f "$dest/usr/include/qat/cpa.h" || { echo "fetch-qat-deps: cpa.h missing after unpack" >&2; exit 1; }
test -f "$dest/usr/include/qatzip.h" || { echo "fetch-qat-deps: qatzip.h missing after unpack" >&2; exit 1; }
touch "$stamp"
echo "$dest"
