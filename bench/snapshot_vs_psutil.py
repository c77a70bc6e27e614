"""headroom.snapshot() beside psutil's equivalents, side by side, medians.

Run with libheadroom on HEADROOM_LIB and python/ on PYTHONPATH:
    python3 bench/snapshot_vs_psutil.py [rounds]
    python3 bench/snapshot_vs_psutil.py --md [rounds]
The second form writes a markdown table with rows at the machine's own
process count and at 1,000 processes (real `sleep` children started for the
run and killed after it).
Each round times one call of each, alternating, so both see the same load;
the figures are the medians over the rounds, in microseconds.

- host: snapshot(what=["host"]) beside psutil.virtual_memory() and beside
  the floor: pure Python reading /proc/meminfo's first figures (os.open,
  os.read, the first five lines' numbers) and nothing else
- processes: snapshot(what=["host", "procs"]) beside psutil.virtual_memory()
  plus process_iter(["pid", "name", "cmdline", "memory_info"]), the fields
  the snapshot's process rows carry.
"""

import os
import signal
import statistics
import subprocess
import sys
import time

import psutil

import headroom


def median_us(fn, rounds):
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e6)
    return statistics.median(out)


def side_by_side(*fns, rounds):
    """Medians in µs of each of fns, called in turn each round."""
    ts = [[] for _ in fns]
    for _ in range(rounds):
        for fn, acc in zip(fns, ts):
            t0 = time.perf_counter()
            fn()
            acc.append((time.perf_counter() - t0) * 1e6)
    return [statistics.median(t) for t in ts]


def meminfo_floor():
    """MemTotal, MemFree, MemAvailable, Buffers and Cached in bytes, read in
    pure Python with nothing else done: the floor of a host reading."""
    fd = os.open("/proc/meminfo", os.O_RDONLY)
    try:
        data = os.read(fd, 8192)
    finally:
        os.close(fd)
    return [int(line.split()[1]) * 1024 for line in data.split(b"\n", 5)[:5]]


def ps_procs():
    psutil.virtual_memory()
    return [p.info for p in psutil.process_iter(["pid", "name", "cmdline", "memory_info"])]


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    headroom.snapshot(what=["host"])  # load the library and the options once
    nproc = len(headroom.snapshot(what=["procs"])["processes"])
    h, p, f = side_by_side(lambda: headroom.snapshot(what=["host"]), psutil.virtual_memory,
                           meminfo_floor, rounds=rounds)
    print("host: snapshot(what=['host']) %.1f us, psutil.virtual_memory() %.1f us, ratio %.2fx; "
          "floor %.1f us, ratio %.2fx" % (h, p, h / p, f, h / f))
    r = max(rounds // 20, 20)
    h, p = side_by_side(lambda: headroom.snapshot(what=["host", "procs"]), ps_procs, rounds=r)
    print("processes (%d): snapshot(what=['host', 'procs']) %.0f us, psutil %.0f us, "
          "ratio %.2fx" % (nproc, h, p, h / p))
    h, p = side_by_side(headroom.snapshot, ps_procs, rounds=r)
    print("processes (%d): snapshot() %.0f us, psutil %.0f us, ratio %.2fx"
          % (nproc, h, p, h / p))
    print("python %s, psutil %s, pid %d" % (sys.version.split()[0], psutil.__version__,
                                             os.getpid()))


def sleepers_to(total):
    """Starts `sleep` children until the machine runs `total` processes;
    returns them (the caller kills them)."""
    now = len(psutil.pids())
    kids = []
    for _ in range(max(total - now, 0)):
        kids.append(subprocess.Popen(["sleep", "600"], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    time.sleep(0.5)
    return kids


def markdown(rounds):
    print("| processes | call | headroom median µs | psutil median µs | ratio | floor median µs "
          "| ratio to the floor |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    headroom.snapshot(what=["host"])
    for target in (0, 1000):
        kids = sleepers_to(target)
        try:
            n = len(psutil.pids())
            h, p, f = side_by_side(lambda: headroom.snapshot(what=["host"]),
                                   psutil.virtual_memory, meminfo_floor, rounds=rounds)
            print("| %d | `snapshot(what=['host'])` / `virtual_memory()` | %.1f | %.1f | %.2fx | "
                  "%.1f | %.2fx |" % (n, h, p, h / p, f, h / f))
            r = max(rounds // 40, 15)
            h, p = side_by_side(headroom.snapshot, ps_procs, rounds=r)
            print("| %d | `snapshot()` / `virtual_memory()` + `process_iter(pid, name, cmdline, "
                  "memory_info)` | %.0f | %.0f | %.2fx | | |" % (n, h, p, h / p))
        finally:
            for k in kids:
                k.send_signal(signal.SIGKILL)
            for k in kids:
                k.wait()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--md":
        markdown(int(sys.argv[2]) if len(sys.argv) > 2 else 2000)
    else:
        main()
