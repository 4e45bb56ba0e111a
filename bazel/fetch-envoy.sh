#!/usr/bin/env bash
# Download the pinned Envoy source archive (versions.bzl) once, check its sha256, and unpack
# the two files the build takes from it: .bazelversion and .bazelrc. Prints
# `dir=<unpacked directory>` for eval.
#   usage: fetched=$(bazel/fetch-envoy.sh); eval "$fetched"
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
commit=$("$here/pin.sh" ENVOY_COMMIT)
sha=$("$here/pin.sh" ENVOY_SHA256)
url="https://github.com/envoyproxy/envoy/archive/$commit.zip"
cache="${ENVOY_QAT_BAZEL_CACHE:-$here/.cache}"
mkdir -p "$cache"
archive="$cache/envoy-$commit.zip"
if [[ ! -f "$archive" ]]; then
  curl -fsSL -o "$archive.part" "$url"
  mv "$archive.part" "$archive"
fi
echo "$sha  $archive" | sha256sum -c --quiet >&2 || {
  echo "fetch-envoy: $archive does not have the sha256 pinned in bazel/versions.bzl" >&2
  exit 1
}
dir="$cache/envoy-$commit"
python3 - "$archive" "$dir" <<'PY'
import sys, zipfile
archive, dest = sys.argv[1], sys.argv[2]
prefix = dest.rsplit("/", 1)[1] + "/"
wanted = [".bazelversion", ".bazelrc"]
with zipfile.ZipFile(archive) as z:
    for name in wanted:
        z.extract(prefix + name, dest.rsplit("/", 1)[0])
PY
printf 'dir=%q\n' "$dir"
