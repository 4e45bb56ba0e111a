#!/usr/bin/env bash
# Build a benchmark corpus of real web content: the kinds of response Envoy's compressor
# filter compresses by default (its default content_type list: text/html, text/css,
# application/javascript, application/json, image/svg+xml, text/plain, text/xml; not
# images or archives, which are already compressed). The files come from Debian bookworm
# packages, downloaded with `apt-get download` against a private bookworm source list
# (bookworm, bookworm-updates, bookworm-security; no root needed, the machine's own apt
# state untouched) and unpacked with `dpkg -x` into DEST (nothing is installed):
#   python3.11-doc (HTML pages and their plain-text sources), libjs-bootstrap4 (CSS, JS),
#   libjs-jquery, libjs-d3 (JS), node-mdn-browser-compat-data (JSON), iso-codes (JSON,
#   XML), adwaita-icon-theme (SVG icons).
# DEST/corpus holds one file per kind: that kind's files from every package, in path
# order, concatenated and cut at 8 MiB. The benchmark compresses each kind as one stream,
# so it measures throughput on large responses, not per-response set-up. Feed it to
# `envoy-qat bench compress --corpus DEST/corpus`.
#   usage: ci/web-corpus.sh [DEST]      (default: build/web-corpus in the repo)
# Idempotent: a DEST completed by this same script is reused. Prints DEST/corpus on
# success; the package versions and the corpus's SHA-256 go to DEST/corpus.txt (and
# stderr), so figures from different runs can be told apart if a package is updated.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:-$repo/build/web-corpus}
pkgs=(python3.11-doc libjs-bootstrap4 libjs-jquery libjs-d3 node-mdn-browser-compat-data
      iso-codes adwaita-icon-theme)
# The stamp records this script's hash: a corpus made by another version is rebuilt.
stamp_want=$(sha256sum "$0" | cut -d' ' -f1)
if [[ -f "$dest/.complete" && "$(cat "$dest/.complete")" == "$stamp_want" && -d "$dest/corpus" ]]; then
  echo "$dest/corpus"; exit 0
fi
mkdir -p "$dest"
# Only what this script makes is removed, never DEST itself.
rm -rf "$dest/.apt" "$dest/root" "$dest/corpus" "$dest/corpus.txt" "$dest/.complete"
work="$dest/.apt"
mkdir -p "$dest/corpus"
"$repo/ci/apt-download.sh" "$work" "$dest/root" "bookworm bookworm-updates bookworm-security" "${pkgs[@]}"
python3 - "$dest/root" "$dest/corpus" <<'PY'
import os, sys
root, out = sys.argv[1], sys.argv[2]
cap = 8 << 20
kinds = ["html", "css", "js", "json", "svg", "txt", "xml"]
files = {k: [] for k in kinds}
for d, _, names in os.walk(root):
    for n in names:
        p = os.path.join(d, n)
        k = n.rsplit(".", 1)[-1] if "." in n else ""
        if k in files and os.path.isfile(p) and not os.path.islink(p):
            files[k].append(p)
for k in kinds:
    buf = bytearray()
    for p in sorted(files[k]):
        if len(buf) >= cap:
            break
        with open(p, "rb") as f:
            buf += f.read(cap - len(buf))
    if not buf:
        sys.exit(f"web-corpus: no .{k} files in the packages")
    with open(os.path.join(out, k), "wb") as f:
        f.write(buf)
PY
{
  echo "packages:"
  for deb in "$work/debs"/*.deb; do dpkg-deb -W --showformat='  ${Package} ${Version}\n' "$deb"; done
  echo "corpus sha256: $(cat "$dest"/corpus/* | sha256sum | cut -d' ' -f1)"
  du -b "$dest"/corpus/* | sed "s|$dest/corpus/||"
} > "$dest/corpus.txt"
cat "$dest/corpus.txt" >&2
rm -rf "$dest/root" "$work"
echo "$stamp_want" > "$dest/.complete"
echo "$dest/corpus"
