#!/usr/bin/env bash
# Run one fuzz target (see README.md).
#   tests/fuzz/run.sh TARGET [SECONDS] [libFuzzer flags...]
# TARGET: http1 | config | config_values | headers | retry
# SECONDS: how long to fuzz (default 300); 0 replays the seed corpus only.
# The binaries come from the project's build (scripts/build.sh build):
# $SLUICE_BUILD_DIR, default build/. New inputs go to
# $SLUICE_BUILD_DIR/tests/fuzz/corpus/TARGET (kept between runs), crashes to
# $SLUICE_BUILD_DIR/tests/fuzz/artifacts/TARGET/; the source tree is never written.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${SLUICE_BUILD_DIR:-$here/../../build}
target=${1:?usage: tests/fuzz/run.sh TARGET [SECONDS] [libFuzzer flags...]}
seconds=${2:-300}
shift $(($# < 2 ? $# : 2))

[ -d "$build" ] && build=$(cd "$build" && pwd)
bin=$build/tests/fuzz/bin/fuzz_$target
seeds=$here/corpus/$target
if [ ! -x "$bin" ] || [ ! -d "$seeds" ]; then
  echo "run.sh: no fuzz target '$target' in $build (needs clang-14: scripts/deps.sh," \
       "then scripts/build.sh build)" >&2
  exit 2
fi
case $target in
  config_values) dict=config ;;
  *) dict=$target ;;
esac
work=$build/tests/fuzz/corpus/$target
artifacts=$build/tests/fuzz/artifacts/$target
mkdir -p "$work" "$artifacts"
# libFuzzer writes some files to the working directory (-jobs logs): the build tree's.
cd "$build/tests/fuzz"

# -timeout: one input taking this long is a hang, a finding like a crash.
flags=(-dict="$here/dict/$dict.dict" -artifact_prefix="$artifacts/" -timeout=25)
if [ "$seconds" -eq 0 ]; then
  # Files, not directories: each seed runs once and nothing is written.
  exec "$bin" "${flags[@]}" "$@" "$seeds"/*
fi
# New inputs go to the first directory only: the build tree's.
exec "$bin" "${flags[@]}" -max_total_time="$seconds" -print_final_stats=1 "$@" "$work" "$seeds"
