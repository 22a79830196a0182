#!/usr/bin/env bash
# Install what sluice needs to build and test, from Debian 12 packages only.
# Usage: scripts/deps.sh [extra-package...]   (root, or sudo available)
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  libevent-dev libcurl4-openssl-dev libssl-dev libinih-dev libjansson-dev
  libsystemd-dev libcmocka-dev libhiredis-dev redis-server
  clang-14 libclang-rt-14-dev
  python3 ca-certificates openssl
  dpkg-dev file systemd groff-base
  chromium fonts-dejavu-core     # the status page's browser test (tests/integration/test_status_page.py)
  "$@"
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
