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
mkdir -p "$dest"
work="$dest/.apt"
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/debs"
# Use the Debian mirror this machine's apt already points at.
mirror=$( (cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null || true) \
  | grep -E '^(URIs:|deb )' | grep -oE 'https?://[^ ]+/debian/?( |$)' | grep -v security | head -n1 | tr -d ' ' || true)
mirror=${mirror:-http://deb.debian.org/debian}
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] ${mirror%/} trixie main" > "$work/sources.list"
aptopts=(-o "Dir::Etc::sourcelist=$work/sources.list" -o "Dir::Etc::sourceparts=-"
  -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache"
  -o "Dir::Cache::archives=$work/cache/archives" -o "APT::Sandbox::User=root" -o "Acquire::Retries=3" -q)
apt-get "${aptopts[@]}" update >&2
(cd "$work/debs" && apt-get "${aptopts[@]}" download "${pkgs[@]}" >&2)
for deb in "$work/debs"/*.deb; do dpkg -x "$deb" "$dest"; done
test -f "$dest/usr/include/qat/cpa.h" || { echo "fetch-qat-deps: cpa.h missing after unpack" >&2; exit 1; }
test -f "$dest/usr/include/qatzip.h" || { echo "fetch-qat-deps: qatzip.h missing after unpack" >&2; exit 1; }
rm -rf "$work/lists" "$work/cache"
touch "$stamp"
echo "$dest"
