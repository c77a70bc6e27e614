#!/bin/sh
# The verdict matrix: the stage report's verdicts on real processes (the
# loops of tests/python/verdict_scenarios.py), under PyTorch 2.x (build/venv)
# with glibc's own and a fixed mmap threshold, and under Debian's PyTorch
# 1.13; and the cost of a stage call beside main's tree. Writes
# bench/results/verdicts.md. Run from the repository root after a Release
# build.
set -eu
lib=${HEADROOM_LIB:-$PWD/build/release/libheadroom.so}
set --
if [ -x build/venv/bin/python ]; then
  set -- "$@" --config "PyTorch 2.13 (build/venv), glibc's malloc=build/venv/bin/python" \
    --config "PyTorch 2.13, mmap threshold fixed at 1 MiB=build/venv/bin/python:fixed"
fi
set -- "$@" --config "PyTorch $(/usr/bin/python3 -c 'import torch; print(torch.__version__)' 2>/dev/null || echo absent) (/usr/bin/python3), glibc's malloc=/usr/bin/python3"
base=""
if git rev-parse --verify -q main >/dev/null; then
  base=$(mktemp -d)
  git archive main python | tar -x -C "$base"
  set -- "$@" --baseline-tree "$base/python"
fi
/usr/bin/python3 bench/verdicts.py --out bench/results/verdicts.md --lib "$lib" "$@"
[ -z "$base" ] || rm -rf "$base"
