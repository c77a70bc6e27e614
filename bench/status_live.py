#!/usr/bin/env python3
"""What reading the live process table costs: `headroom status` and
`headroom watch` of two builds side by side, with `ps aux` and the floor.

One run measures, at this machine's own process count and again with N
(default 1,000) more real sleeping processes (`sleep 600` children, killed
at the end whatever happens):

- status: the floor (bench/floor/statm_floor.c: list /proc and read every
  process's statm, nothing else), `ps aux`, and `headroom status` (and
  `status --filter python`) of the build before and the build after,
  alternating, ROUNDS rounds after one warm-up. CPU is user + system time
  from wait4's rusage, so it includes exec and dynamic loading.
- watch: `headroom watch --json --interval 1s` of each build for WATCH
  samples: how many samples read the process table (the sample lines'
  processes_read) and the CPU per sample in the steady state (the watch
  process's on-CPU time from /proc/PID/task/*/schedstat, read as sample
  lines arrive, from the end of the warm-up to the last sample).
- NVML: `strace -f -e trace=open,openat` over `headroom watch` for 6
  samples and over one `headroom status`: the opens that name nvidia-ml
  (this machine has no NVIDIA driver, so each is a failed search).

Writes a markdown report to OUT when given.

usage: bench/status_live.py --after CLI [--before CLI] [--floor PROG]
                            [--rounds R] [--n N] [--watch S] [--out OUT.md]
"""

import argparse
import glob
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ENV = dict(os.environ, HEADROOM_COLOR="never")


def run(argv):
    """(CPU seconds, wall seconds) of one run, output thrown away."""
    t0 = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, ENV,
                         file_actions=[(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)])
    _, status, ru = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit("%s failed (%d)" % (" ".join(argv), status))
    return ru.ru_utime + ru.ru_stime, wall


def live_processes():
    return len([d for d in os.listdir("/proc") if d.isdigit()])


def spawn_sleepers(n):
    kids = []
    for _ in range(n):
        kids.append(subprocess.Popen(["sleep", "600"], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL))
    time.sleep(0.5)
    return kids


def reap(kids):
    for k in kids:
        k.send_signal(signal.SIGKILL)
    for k in kids:
        k.wait()


def bench_status(cmds, rounds):
    """{name: [CPU ms]} and {name: [wall ms]} over alternating rounds."""
    cpu = {k: [] for k in cmds}
    wall = {k: [] for k in cmds}
    for argv in cmds.values():  # warm-up
        run(argv)
    for _ in range(rounds):
        for k, argv in cmds.items():
            c, w = run(argv)
            cpu[k].append(c * 1e3)
            wall[k].append(w * 1e3)
    return cpu, wall


def task_cpu_s(pid):
    """On-CPU seconds of every thread of pid (schedstat: nanoseconds)."""
    total = 0
    for f in glob.glob("/proc/%d/task/*/schedstat" % pid):
        try:
            with open(f) as fh:
                total += int(fh.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total / 1e9


def bench_watch(cli, samples, warm=5):
    """(samples, samples that read processes, steady CPU ms per sample,
    reads after the warm-up, samples after the warm-up, whole-run CPU ms per
    sample) of `headroom watch` at 1 Hz."""
    argv = [cli, "watch", "--json", "--interval", "1s", "--count", str(samples), "--db", "none",
            "--listen", "none"]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=ENV,
                         text=True)
    n = reads = late_reads = 0
    c_warm = None
    c_last = 0.0
    for line in p.stdout:
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if e.get("event") != "sample":
            continue
        n += 1
        c = task_cpu_s(p.pid)
        if e.get("processes_read"):
            reads += 1
            if n > warm:
                late_reads += 1
        if n == warm:
            c_warm = c
        if n == samples:
            c_last = c
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise SystemExit("%s failed (%d)" % (" ".join(argv), p.returncode))
    steady = (c_last - c_warm) / (samples - warm) * 1e3 if c_warm is not None else float("nan")
    whole = (ru.ru_utime + ru.ru_stime) / max(n, 1) * 1e3
    return n, reads, steady, late_reads, n - warm, whole


def nvml_opens(argv):
    """Opens naming nvidia-ml while argv runs, by strace."""
    with tempfile.NamedTemporaryFile(prefix="hr-strace-", suffix=".txt") as t:
        subprocess.run(["strace", "-f", "-qq", "-e", "trace=open,openat", "-o", t.name] + argv,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV, check=True)
        with open(t.name, errors="replace") as f:
            return sum("nvidia-ml" in line for line in f)


def table(cpu, wall, ref):
    m_ref = statistics.median(cpu[ref])
    lines = ["| what | CPU median (ms) | CPU p90 (ms) | wall median (ms) | CPU / floor |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for k in cpu:
        m = statistics.median(cpu[k])
        xs = sorted(cpu[k])
        p90 = xs[min(len(xs) - 1, int(0.9 * len(xs)))]
        lines.append("| %s | %.2f | %.2f | %.2f | %.2f |" % (
            k, m, p90, statistics.median(wall[k]), m / m_ref))
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--after", required=True, help="the headroom CLI measured")
    ap.add_argument("--before", help="the headroom CLI to compare with (main's build)")
    ap.add_argument("--floor", help="statm_floor (default: beside --after, bench/statm_floor)")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--n", type=int, default=1000, help="sleeping processes added")
    ap.add_argument("--watch", type=int, default=25, help="watch samples per build and setting")
    ap.add_argument("--out")
    a = ap.parse_args()
    after = os.path.abspath(a.after)
    floor = os.path.abspath(a.floor or os.path.join(os.path.dirname(after), "bench",
                                                    "statm_floor"))
    ps = shutil.which("ps") or "/bin/ps"
    builds = {"after": after}
    if a.before:
        builds = {"before": os.path.abspath(a.before), "after": after}
    cmds = {"floor (statm of every pid)": [floor], "`ps aux`": [ps, "aux"]}
    for b, cli in builds.items():
        cmds["`headroom status` (%s)" % b] = [cli, "status"]
    for b, cli in builds.items():
        cmds["`headroom status --filter python` (%s)" % b] = [cli, "status", "--filter",
                                                              "python"]
    floor_key = next(iter(cmds))

    out = ["# Reading the live process table: `headroom status` and `watch`", ""]
    out.append("Measured %s UTC on Linux %s (%d CPUs online, shared with other work) by "
               "`bench/status_live.py` (%d rounds after one warm-up, alternating; medians). "
               "*before* is %s, *after* is %s. CPU is user + system time of the process from "
               "wait4, so it includes exec and dynamic loading; the floor "
               "(bench/floor/statm_floor.c) lists /proc and reads every process's statm, "
               "nothing else." % (time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
                                  platform.release(), os.cpu_count(), a.rounds,
                                  "`%s`" % a.before if a.before else "not measured",
                                  "`%s`" % a.after))
    watch_rows = []
    for setting, extra in (("this machine", 0), ("this machine + %d sleeping processes" % a.n,
                                                 a.n)):
        kids = []
        try:
            kids = spawn_sleepers(extra)
            live = live_processes()
            sys.stderr.write("status_live: %s (%d processes)...\n" % (setting, live))
            cpu, wall = bench_status(cmds, a.rounds)
            for b, cli in builds.items():
                sys.stderr.write("status_live: watch (%s), %d samples...\n" % (b, a.watch))
                watch_rows.append((setting, live, b) + bench_watch(cli, a.watch))
        finally:
            reap(kids)
        out += ["", "## `status`: %s, %d live processes" % (setting, live), ""]
        out += table(cpu, wall, floor_key)
    out += ["", "## `watch` at 1 Hz (`--interval 1s`, default `--proc-budget 1`)", "",
            "Steady CPU per sample: the watch process's on-CPU time over the samples after "
            "the first 5 (schedstat); whole run: wait4's user + system over every sample, "
            "the first (a full read of every process) and the start included.", "",
            "| setting | processes | build | samples | samples that read processes | read after "
            "the first 5 | steady CPU per sample (ms) | whole run CPU per sample (ms) |",
            "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for setting, live, b, n, reads, steady, late, late_n, whole in watch_rows:
        out.append("| %s | %d | %s | %d | %d | %d of %d | %.2f | %.2f |" % (
            setting, live, b, n, reads, late, late_n, steady, whole))
    if shutil.which("strace"):
        out += ["", "## Opens naming nvidia-ml (no NVIDIA driver here)", "",
                "| build | `watch`, 6 samples | `status` |", "| --- | ---: | ---: |"]
        for b, cli in builds.items():
            w = nvml_opens([cli, "watch", "--json", "--interval", "0.2s", "--count", "6",
                            "--db", "none", "--listen", "none"])
            s = nvml_opens([cli, "status"])
            out.append("| %s | %d | %d |" % (b, w, s))
    text = "\n".join(out) + "\n"
    print(text)
    if a.out:
        with open(a.out, "w", encoding="utf-8") as f:
            f.write(text)


if __name__ == "__main__":
    main()
