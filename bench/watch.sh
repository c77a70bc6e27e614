#!/bin/sh
# CPU time per watch sample beside ps, and the 1 Hz loop's share of a core;
# writes bench/results/watch.md. Run from the repository root after a
# Release build (make build).
set -eu
exec ./build/release/bench/watch_bench --samples 40 --loop 20 --out bench/results/watch.md
