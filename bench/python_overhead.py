"""Per-call cost of the Python layer's hot paths: free_memory in each mode
(and within its cooldown), stage() around nothing, snapshot(). Prints a
markdown table of medians and 99th percentiles, measured in one run."""

import statistics
import sys
import time

import headroom
from headroom import free


def measure(fn, n):
    ts = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        fn()
        ts.append(time.perf_counter_ns() - t0)
    ts.sort()
    return statistics.median(ts), ts[min(len(ts) - 1, int(len(ts) * 0.99))]


def free(mode, cooldown=0.0):
    def f():
        if cooldown == 0:
            free._last_done = None
        headroom.free_memory(mode, cooldown=cooldown)
    return f


def stage_empty():
    with headroom.stage("bench"):
        pass


def main():
    rows = []
    headroom.free_memory("balanced")  # start the cooldown clock
    rows.append(("free_memory(balanced, cooldown=3600), skipped", *measure(
        lambda: headroom.free_memory("balanced", cooldown=3600), 20000)))
    rows.append(("free_memory(conservative)", *measure(free("conservative"), 2000)))
    rows.append(("free_memory(balanced)", *measure(free("balanced"), 300)))
    rows.append(("free_memory(aggressive)", *measure(free("aggressive"), 100)))
    rows.append(("with stage(name): pass", *measure(stage_empty, 20000)))
    if headroom.library_available():
        rows.append(("snapshot() (everything)", *measure(headroom.snapshot, 100)))
        rows.append(("snapshot(what=['host'])", *measure(lambda: headroom.snapshot(what=["host"]),
                                                        2000)))
    out = sys.stdout
    out.write("| call | median | p99 |\n| --- | ---: | ---: |\n")
    for name, med, p99 in rows:
        out.write("| `%s` | %.1f µs | %.1f µs |\n" % (name, med / 1e3, p99 / 1e3))


if __name__ == "__main__":
    main()
