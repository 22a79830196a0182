#!/usr/bin/env bash
# The benchmark in one command: sluice against nginx limit_req (1 worker and
# auto) and a direct connection, on loopback, in one run (and HAProxy in the
# download scenario).
# Installs what is missing (Debian 12, as root or with sudo), builds sluice in
# Release into build-bench, runs the scenarios, prints one table each and
# writes bench/results/ (results.json, *.png) and, for a full run,
# bench/RESULTS.md.
# Usage: bench/run.sh [--quick] [--keep] [burst overload overhead parking retry abandon redis jobs cpu
#                     jitter https keys download]
set -euo pipefail
cd "$(dirname "$0")/.."

# the build's own dependencies, then the benchmark's tools
scripts/deps.sh
need=()
command -v nginx >/dev/null || need+=(nginx-light)
command -v wrk >/dev/null || need+=(wrk)
command -v gnuplot >/dev/null || need+=(gnuplot-nox)
command -v valgrind >/dev/null || need+=(valgrind)
command -v haproxy >/dev/null || need+=(haproxy)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  if ! $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; then
    # nginx-light is gone from some point releases: the plain package will do
    $sudo apt-get install -y -qq --no-install-recommends "${need[@]/nginx-light/nginx}" >/dev/null
  fi
fi

echo "building sluice (Release) in build-bench..." >&2
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-bench -j "$(nproc)" --target sluice mock_upstream burst jitter_relay >/dev/null

# parked clients are file descriptors: use all the hard limit allows
ulimit -n "$(ulimit -Hn)"
exec python3 bench/bench.py --build build-bench "$@"
