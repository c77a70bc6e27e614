#!/bin/sh
# Benchmark of `headroom status` (see bench/status_bench.c): builds the Release
# tree, generates a 1,000-process fixture under build/, and writes
# bench/results/status.md. Usage: bench/status.sh [ROUNDS]
set -eu
cd "$(dirname "$0")/.."
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DHR_WERROR=ON >/dev/null
cmake --build build/release -j 2 --target headroom_cli status_bench >/dev/null
rm -rf build/bench-fixture-status
./build/release/bench/status_bench ./build/release/headroom build/bench-fixture-status \
  bench/results/status.md "${1:-50}"
rm -rf build/bench-fixture-status
echo "wrote bench/results/status.md"
