#!/usr/bin/env python3
"""CPU time of `headroom status` at 1,000 live processes, side by side with
`ps -eo pid,rss,comm`.

Spawns N real sleeping processes (`sleep 600`, each its own process, killed
at the end whatever happens, and bounded by their own 600 s), then runs
`headroom status` and `ps` alternately ROUNDS times and measures each run's
CPU time (user + system, from wait4's rusage) and wall time. Prints a
markdown table of medians and 90th percentiles, and writes it to OUT when
given.

usage: bench/status_live.py HEADROOM_CLI [ROUNDS] [OUT.md] [N]
"""

import os
import platform
import signal
import statistics
import subprocess
import sys
import time


def run(argv):
    t0 = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, dict(os.environ, HEADROOM_COLOR="never"),
                         file_actions=[(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)])
    _, status, ru = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit("%s failed (%d)" % (" ".join(argv), status))
    return ru.ru_utime + ru.ru_stime, wall


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main():
    cli = os.path.abspath(sys.argv[1])
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    out = sys.argv[3] if len(sys.argv) > 3 else None
    n = int(sys.argv[4]) if len(sys.argv) > 4 else 1000
    ps = "/usr/bin/ps" if os.path.exists("/usr/bin/ps") else "/bin/ps"
    kids = []
    try:
        for _ in range(n):
            kids.append(subprocess.Popen(["sleep", "600"], stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL))
        time.sleep(0.5)
        live = len([d for d in os.listdir("/proc") if d.isdigit()])
        cmds = {
            "headroom status": [cli, "status"],
            "headroom status --json": [cli, "status", "--json"],
            "ps -eo pid,rss,comm": [ps, "-eo", "pid,rss,comm"],
        }
        cpu = {k: [] for k in cmds}
        wall = {k: [] for k in cmds}
        for k, argv in cmds.items():  # warm-up
            run(argv)
        for _ in range(rounds):
            for k, argv in cmds.items():
                c, w = run(argv)
                cpu[k].append(c * 1e3)
                wall[k].append(w * 1e3)
    finally:
        for k in kids:
            k.send_signal(signal.SIGKILL)
        for k in kids:
            k.wait()
    psm = statistics.median(cpu["ps -eo pid,rss,comm"])
    lines = [
        "| what | CPU median (ms) | CPU p90 (ms) | wall median (ms) | CPU median / ps |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for k in cmds:
        m = statistics.median(cpu[k])
        lines.append("| `%s` | %.2f | %.2f | %.2f | %.2f |" % (
            k, m, pct(cpu[k], 0.9), statistics.median(wall[k]), m / psm))
    head = ("Measured %s UTC on Linux %s (%d CPUs online), %d live processes (%d of them "
            "`sleep` children of the bench), %d rounds after one warm-up, alternating. CPU is "
            "user + system time of the process from wait4, so it includes exec and dynamic "
            "loading.\n" % (time.strftime("%Y-%m-%d %H:%M", time.gmtime()), platform.release(),
                            os.cpu_count(), live, n, rounds))
    text = head + "\n" + "\n".join(lines) + "\n"
    print(text)
    if out:
        with open(out, "w", encoding="utf-8") as f:
            f.write(text)


if __name__ == "__main__":
    main()
