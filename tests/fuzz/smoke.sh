#!/bin/sh
# Runs one fuzz harness for a few seconds on its seeds: the test fuzz_<name>
# (label "fuzz") of the debug build, see cmake/fuzz.cmake.
#   smoke.sh HARNESS SEEDS SECONDS MAX_LEN [DICT]
# The inputs it finds go to a temporary folder, removed after; the input of a
# crash is kept as <harness folder>/artifacts/<harness>-crash-* and libFuzzer
# prints its path. Exit status: libFuzzer's (0 when nothing was found).
set -eu
bin=$1 seeds=$2 secs=$3 max_len=$4 dict=${5:-}
if [ ! -x "$bin" ]; then
  echo "smoke.sh: $bin was not built" >&2
  exit 1
fi
found=$(mktemp -d)
trap 'rm -rf "$found"' EXIT
art="$(dirname "$bin")/artifacts"
mkdir -p "$art"
set -- -max_total_time="$secs" -max_len="$max_len" -print_final_stats=1 \
  -artifact_prefix="$art/$(basename "$bin")-"
if [ -n "$dict" ]; then
  set -- "$@" -dict="$dict"
fi
"$bin" "$@" "$found" "$seeds"
