#!/bin/sh
# The exporter under the connection floods it was attacked with (see
# bench/exporter_attack.py): 64 reconnecting slow clients from the scraper's
# own address for SECONDS, 640 from ten other addresses, 200 complete scrapes
# at once. Builds the Release CLI and writes bench/results/exporter.md.
# Usage: bench/exporter.sh [SECONDS]
set -eu
cd "$(dirname "$0")/.."
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DHR_WERROR=ON >/dev/null
cmake --build build/release -j 2 --target headroom_cli >/dev/null
HEADROOM_CLI="$PWD/build/release/headroom" \
  /usr/bin/python3 bench/exporter_attack.py bench/results/exporter.md "${1:-20}"
