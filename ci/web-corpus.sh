#!/usr/bin/env bash
# Build a benchmark corpus of real web content: the kinds of response Envoy's compressor
# filter compresses by default (its default content_type list: text/html, text/css,
# application/javascript, application/json, image/svg+xml, text/plain, text/xml; not
# images or archives, which are already compressed). The files come from Debian bookworm
# packages, downloaded with `apt-get download` and unpacked with `dpkg -x` into DEST
# (nothing is installed):
#   python3.11-doc (HTML pages and their plain-text sources), libjs-bootstrap4 (CSS, JS),
#   libjs-jquery, libjs-d3 (JS), node-mdn-browser-compat-data (JSON), iso-codes (JSON,
#   XML), fonts-font-awesome (SVG, CSS).
# DEST/corpus holds one file per kind: that kind's files from every package, in path
# order, concatenated and cut at 8 MiB, so no kind outweighs the others by more than the
# packages allow. Feed it to `envoy-qat bench compress --corpus DEST/corpus`.
#   usage: ci/web-corpus.sh [DEST]      (default: build/web-corpus in the repo)
# Idempotent: a complete DEST is reused. Prints DEST/corpus on success; the package
# versions and the corpus's SHA-256 go to DEST/corpus.txt (and stderr), so figures from
# different runs can be told apart if a package is updated.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:-$repo/build/web-corpus}
pkgs=(python3.11-doc libjs-bootstrap4 libjs-jquery libjs-d3 node-mdn-browser-compat-data
      iso-codes fonts-font-awesome)
if [[ -f "$dest/.complete" ]]; then
  echo "$dest/corpus"; exit 0
fi
rm -rf "$dest"
mkdir -p "$dest/debs" "$dest/root" "$dest/corpus"
sudo=""; [[ $(id -u) -eq 0 ]] || sudo=sudo
# A fresh machine may have no package lists yet.
apt-cache show "${pkgs[0]}" >/dev/null 2>&1 || $sudo apt-get -q update >&2
(cd "$dest/debs" && apt-get -q -o APT::Sandbox::User=root download "${pkgs[@]}" >&2)
for deb in "$dest/debs"/*.deb; do dpkg -x "$deb" "$dest/root"; done
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
  for deb in "$dest/debs"/*.deb; do dpkg-deb -W --showformat='  ${Package} ${Version}\n' "$deb"; done
  echo "corpus sha256: $(cat "$dest"/corpus/* | sha256sum | cut -d' ' -f1)"
  du -b "$dest"/corpus/* | sed "s|$dest/corpus/||"
} > "$dest/corpus.txt"
cat "$dest/corpus.txt" >&2
rm -rf "$dest/root" "$dest/debs"
touch "$dest/.complete"
echo "$dest/corpus"
