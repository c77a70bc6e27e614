#!/bin/sh
# Benchmark of the broker (see bench/broker_bench.py): reserve -> granted with
# 1, 4 and 16 agents, alone and beside a hung client and a hung adapter,
# bytes released against asked, `headroom broker` meanwhile, and the broker
# thread's CPU at rest and under 100 reservations per second. Builds the
# Release CLI and writes bench/results/broker.md. Usage: bench/broker.sh [ROUNDS]
set -eu
cd "$(dirname "$0")/.."
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DHR_WERROR=ON >/dev/null
cmake --build build/release -j 2 --target headroom_cli >/dev/null
HEADROOM_CLI="$PWD/build/release/headroom" PYTHONPATH="$PWD/python" \
  /usr/bin/python3 bench/broker_bench.py bench/results/broker.md "${1:-40}"
