#!/usr/bin/env bash
# Download Debian packages with apt against a private source list and unpack them with
# `dpkg -x`; nothing is installed, no root is needed and the machine's own apt state is
# untouched. Shared by ci/fetch-qat-deps.sh (trixie) and ci/web-corpus.sh (bookworm).
#   usage: ci/apt-download.sh WORK UNPACK SUITES PKG...
# SUITES is a space-separated list of suites of the Debian mirror this machine's apt
# already points at (deb.debian.org if none); a suite ending in -security comes from the
# mirror's -security archive. The .debs stay in WORK/debs (for their versions); apt's
# lists and cache in WORK are removed afterwards.
set -euo pipefail
work=$1 unpack=$2 suites=$3
shift 3
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/debs" "$unpack"
mirror=$( (cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null || true) \
  | grep -E '^(URIs:|deb )' | grep -oE 'https?://[^ ]+/debian/?( |$)' | grep -v security | head -n1 | tr -d ' ' || true)
mirror=${mirror:-http://deb.debian.org/debian}
mirror=${mirror%/}
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
for suite in $suites; do
  if [[ $suite == *-security ]]; then
    echo "deb [signed-by=$keyring] $mirror-security $suite main"
  else
    echo "deb [signed-by=$keyring] $mirror $suite main"
  fi
done > "$work/sources.list"
aptopts=(-o "Dir::Etc::sourcelist=$work/sources.list" -o "Dir::Etc::sourceparts=-"
  -o "Dir::State::Lists=$work/lists" -o "Dir::State::status=/dev/null" -o "Dir::Cache=$work/cache"
  -o "Dir::Cache::archives=$work/cache/archives" -o "Acquire::Retries=3" -q)
[[ $(id -u) -eq 0 ]] && aptopts+=(-o "APT::Sandbox::User=root")
apt-get "${aptopts[@]}" update >&2
(cd "$work/debs" && apt-get "${aptopts[@]}" download "$@" >&2)
for deb in "$work/debs"/*.deb; do dpkg -x "$deb" "$unpack"; done
rm -rf "$work/lists" "$work/cache"
