#!/bin/sh
# `headroom status` and `watch` on the live process table with 1,000 extra
# sleeping processes, beside `ps aux` and the statm floor (bench/status_live.py);
# writes bench/results/status-live.md. HR_BEFORE_CLI, when set, names a second
# headroom CLI (an earlier build) measured side by side as "before".
set -eu
cd "$(dirname "$0")/.."
cli="${HR_CLI:-$PWD/build/release/headroom}"
cmake --build "${HR_BUILD:-build/release}" -j 2 --target headroom_cli statm_floor >/dev/null
exec python3 bench/status_live.py --after "$cli" ${HR_BEFORE_CLI:+--before "$HR_BEFORE_CLI"} \
  --floor "${HR_BUILD:-build/release}/bench/statm_floor" --n 1000 \
  --out bench/results/status-live.md
