#!/bin/sh
# Per-call cost of the Python layer (free_memory, stage, snapshot), snapshot()
# beside psutil and a pure-Python meminfo floor, Registry.use() per call and
# per step beside accelerate's hooks (bench/python_use.py), and the bytes
# moved on the example workflows beside `headroom plan`
# (bench/python_registry.py); writes bench/results/python.md. Run from the
# repository root after a Release build. The Registry parts run under
# $HR_BENCH_PYTHON (default /usr/bin/python3): a Python with torch, and with
# accelerate for the per-step comparison (a benchmark-only virtual
# environment outside the repository: see bench/results/python.md).
set -eu
lib=${HEADROOM_LIB:-build/release/libheadroom.so}
out=bench/results/python.md
bpy=${HR_BENCH_PYTHON:-/usr/bin/python3}
{
  echo "# Python layer: per-call cost"
  echo
  echo "Measured by \`bench/python.sh\` on $(uname -m), $(nproc) CPUs, Python $(/usr/bin/python3 -c 'import platform; print(platform.python_version())'),"
  echo "no torch imported (the CUDA calls are skipped: no CUDA in the process), libheadroom from \`$lib\`."
  echo "Times are per call; the process holds no garbage between calls, so free_memory's cost is"
  echo "its fixed overhead (gc.collect() of the live heap, malloc_trim(0)). The machine may be shared:"
  echo "medians are the numbers to read; p99s carry other processes' noise."
  echo
  HEADROOM_LIB=$lib PYTHONPATH=python /usr/bin/python3 bench/python_overhead.py
  if /usr/bin/python3 -c 'import psutil' 2>/dev/null; then
    echo
    echo "## snapshot() beside psutil"
    echo
    echo "Side by side in one run, alternating call by call (bench/snapshot_vs_psutil.py --md),"
    echo "at the machine's own process count and with sleeping children up to 1,000. The host row"
    echo "is also beside the floor: pure Python reading /proc/meminfo's first figures (os.open,"
    echo "os.read, five numbers) and nothing else. The whole snapshot is taken again and again, as a"
    echo "monitor polls it: each thread's probe context reads a process it saw last time the short way"
    echo "(statm), as psutil's process_iter keeps its Process objects from one call to the next."
    echo
    HEADROOM_LIB=$lib PYTHONPATH=python /usr/bin/python3 bench/snapshot_vs_psutil.py --md
  fi
  if "$bpy" -c 'import torch' 2>/dev/null; then
    echo
    HEADROOM_LIB=$lib PYTHONPATH=python "$bpy" bench/python_use.py
    echo
    HEADROOM_LIB=$lib PYTHONPATH=python "$bpy" bench/python_registry.py \
      "${HR_CLI:-build/release/headroom}"
  fi
} > "$out"
cat "$out"
