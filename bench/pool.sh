#!/bin/sh
# The pool's hot path: alloc+free pairs on sim beside glibc malloc/free of the
# same sizes, one thread; writes bench/results/pool.md. Run from the
# repository root after a Release build (make build).
set -eu
cd "$(dirname "$0")/.."
exec ./build/release/bench/pool_hotpath 2000000 --md bench/results/pool.md
