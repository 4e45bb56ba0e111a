#!/usr/bin/env bash
# Supply chain: cargo-deny over licenses, banned crates (no OpenSSL in the Rust core) and
# sources (crates.io only). Advisories need the RustSec database from GitHub, which these
# machines cannot reach; run `cargo deny check advisories` where it can.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
cargo fetch --locked -q
"$repo/build/tools/cargo/bin/cargo-deny" --log-level error check --hide-inclusion-graph \
  licenses bans sources
echo "cargo-deny: licenses, bans, sources ok"
