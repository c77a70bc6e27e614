#!/bin/sh
# Bytes moved by each residency policy against the exact optimum (small
# workflows) or a proven lower bound (large ones), for the examples and 100
# random workflows (seed 1); writes bench/results/residency.md. Run from the
# repository root after a Release build (make build).
set -eu
cd "$(dirname "$0")/.."
exec ./build/release/bench/residency . bench/results/residency.md 1
