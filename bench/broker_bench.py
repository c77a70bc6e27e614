"""Benchmark of the broker (run by bench/broker.sh): real agent processes on
the CPU, host memory under a budget as the resource.

1. reserve -> granted when a release is needed, with 1, 4 and 16 agents,
   each alone and beside a hung client (registered, offering a cache it
   never gives: asked first, it costs one broker_timeout, then counts as
   busy) and a hung adapter (an endpoint that accepts and never answers:
   every refresh of it runs into its deadline). Each agent holds a cache of
   CACHE_MB; each round reserves what is free plus half a cache, so one
   agent must drop its cache and the broker must see the memory come back
   in /proc before it grants. Reported beside the release itself (the asked
   agent's ask -> answer time, as the broker timed it).
2. bytes released against bytes asked (every ask and answer of those runs).
3. `headroom broker --json` (a whole CLI run: start, connect, status,
   print) and a status request on an open connection, while the hung
   client and the hung adapter are there.
4. the broker thread's CPU (utime + stime of the thread named hr-broker in
   /proc/PID/task) per second, at rest with 16 agents connected, and under
   100 reservations per second (each granted at once, then released), alone
   and beside the hung client and adapter.
Usage: broker_bench.py OUT.md [ROUNDS]"""

import json
import os
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "python"))
sys.path.insert(0, os.path.join(HERE, "..", "python"))
from broker_fixtures import MiB, PYDIR, Broker, cli_path, wait_for  # noqa: E402
from headroom import agent  # noqa: E402

CACHE_MB = 32

# An agent whose cache refills 0.2 s after it was dropped (as a process that
# caches again as it works), so every round finds one to drop.
AGENT = r"""
import sys, threading, time
sys.path.insert(0, %(pydir)r)
from headroom import agent
MiB = 1 << 20
cache = []
def fill():
    b = bytearray(%(mb)d * MiB)
    for i in range(0, len(b), 4096):
        b[i] = 1
    cache.append(b)
fill()
a = agent.connect(priority=0, name="bench", path=%(path)r, interval=0.05)
a.add_cache("cache", lambda: sum(len(c) for c in cache), cache.clear)
def refill():
    while True:
        time.sleep(0.05)
        if not cache:
            time.sleep(0.2)
            fill()
threading.Thread(target=refill, daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"""


def pct(xs, p):
    """The p-th percentile (nearest rank) of xs; NaN for none."""
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


class Hung:
    """A registered client that offers a cache and never reads again, and an
    HTTP endpoint that accepts and never answers (the broker's comfyui
    adapter points at it)."""

    def __init__(self):
        self.http = socket.socket()
        self.http.bind(("127.0.0.1", 0))
        self.http.listen(64)
        self.url = "http://127.0.0.1:%d" % self.http.getsockname()[1]
        self.client = None

    def register(self, b):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(b.path)
        hello = {"v": 1, "op": "hello", "pid": os.getpid(), "name": "hung", "priority": 0}
        offer = {"v": 1, "op": "offer", "items": [{"kind": "cache", "name": "never",
                                                   "bytes": 64 * MiB, "idle_s": 1e6}]}
        s.sendall((json.dumps(hello) + "\n" + json.dumps(offer) + "\n").encode())
        self.client = s

    def close(self):
        if self.client:
            self.client.close()
        self.http.close()


def broker_with(budget, hung):
    env = {"HEADROOM_BROKER_ADAPTERS": "comfyui@host=" + hung.url} if hung else None
    b = Broker(budget=budget, env=env)
    if hung:
        hung.register(b)
    return b


def start_agents(b, n):
    procs = []
    for _ in range(n):
        p = subprocess.Popen([sys.executable, "-c", AGENT % {"pydir": PYDIR, "mb": CACHE_MB,
                                                            "path": b.path}],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "ready"
        procs.append(p)
    return procs


def all_offered(b, n):
    cs = [c for c in b.status()["clients"] if c["name"] == "bench"]
    return len(cs) == n and all(c["releasable_bytes"]["host"] == CACHE_MB * MiB for c in cs)


def stop_agents(procs):
    for p in procs:
        p.stdin.close()
    for p in procs:
        p.wait(timeout=20)


def latency_run(n, rounds, with_hung):
    hung = Hung() if with_hung else None
    b = broker_with("host=%dM" % (n * (CACHE_MB + 40) + 200), hung)
    procs = start_agents(b, n)
    grant, release, asked, got, timeouts, refused = [], [], 0, 0, 0, []
    try:
        for _ in range(rounds):
            assert wait_for(lambda: all_offered(b, n), timeout=20), b.status()
            free = b.status()["resources"][0]["free_bytes"]
            mark = len(b.lines)
            t0 = time.monotonic()
            try:
                with agent.reserve(free + CACHE_MB * MiB // 2, device="host", timeout=20,
                                   path=b.path) as g:
                    grant.append(time.monotonic() - t0)
            except agent.Refused as e:
                # Counted, and said: what the broker did in that round.
                refused.append(str(e))
                for x in b.lines[mark:]:
                    if x.get("event", "").startswith("broker_"):
                        print("    refused round:", x["event"], x.get("name"), x.get("bytes"),
                              x.get("released_bytes"), x.get("latency_s"), x.get("message"),
                              flush=True)

            # The round's events reach watch's output at its next sample (up
            # to a second later): wait for its end (its refusal or its
            # lease's end), then for every ask of it to be answered or passed
            # over (an answer may come after the grant).
            def settled():
                evs = b.lines[mark:]
                if not any(x.get("event") in ("broker_lease_end", "broker_refused")
                           for x in evs):
                    return None
                asks = [x for x in evs if x.get("event") == "broker_ask"]
                done = [x for x in evs if x.get("event") in ("broker_answer",
                                                              "broker_no_answer")]
                return (asks, done) if len(done) >= len(asks) else None
            asks, done = wait_for(settled, timeout=10) or ([], [])
            evs = [x for x in done if x["event"] == "broker_answer" and x["name"] == "bench"]
            timeouts += sum(1 for x in done if x["event"] == "broker_no_answer")
            release += [x["latency_s"] for x in evs]
            asked += sum(x["bytes"] for x in asks if x["name"] == "bench")
            got += sum(x["released_bytes"] for x in evs)
    finally:
        stop_agents(procs)
        b.stop()
        if hung:
            hung.close()
    return grant, release, asked, got, timeouts, refused


def status_run(n, count):
    """`headroom broker --json` runs and status requests, beside the hung
    client and adapter and n agents."""
    hung = Hung()
    b = broker_with("host=%dM" % (n * (CACHE_MB + 40) + 200), hung)
    procs = start_agents(b, n)
    cli, sock = [], []
    try:
        assert wait_for(lambda: all_offered(b, n), timeout=20)
        assert wait_for(lambda: b.events("adapter_failed"), timeout=20)  # it hangs
        s = agent._open(b.path)
        io = agent._Lines(s)
        for _ in range(count):
            t0 = time.monotonic()
            r = subprocess.run([cli_path(), "broker", "--json"], env=b.env, capture_output=True,
                               text=True)
            cli.append(time.monotonic() - t0)
            assert r.returncode == 0, r.stderr
            t0 = time.monotonic()
            io.send({"op": "status"})
            assert io.read(timeout=10)["op"] == "status"
            sock.append(time.monotonic() - t0)
        s.close()
    finally:
        stop_agents(procs)
        b.stop()
        hung.close()
    return cli, sock


def broker_tid(pid):
    for tid in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/comm" % (pid, tid)) as f:
            if f.read().strip() == "hr-broker":
                return int(tid)
    raise RuntimeError("no hr-broker thread in %d" % pid)


def cpu_s(pid, tid):
    with open("/proc/%d/task/%d/stat" % (pid, tid)) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_run(windows, seconds, with_hung):
    hung = Hung() if with_hung else None
    b = broker_with("host=4G", hung)
    procs = start_agents(b, 16)
    rest, busy, rates = [], [], []
    try:
        assert wait_for(lambda: all_offered(b, 16), timeout=20)
        tid = broker_tid(b.proc.pid)
        for _ in range(windows):
            c0, t0 = cpu_s(b.proc.pid, tid), time.monotonic()
            time.sleep(seconds)
            rest.append((cpu_s(b.proc.pid, tid) - c0) / (time.monotonic() - t0))
        for _ in range(windows):
            c0, t0 = cpu_s(b.proc.pid, tid), time.monotonic()
            done = 0
            while time.monotonic() - t0 < seconds:
                due = t0 + done / 100.0
                if time.monotonic() < due:
                    time.sleep(due - time.monotonic())
                with agent.reserve(1 * MiB, device="host", timeout=5, path=b.path):
                    pass
                done += 1
            el = time.monotonic() - t0
            busy.append((cpu_s(b.proc.pid, tid) - c0) / el)
            rates.append(done / el)
    finally:
        stop_agents(procs)
        b.stop()
        if hung:
            hung.close()
    return rest, busy, rates


def ms(x):
    return "%.1f ms" % (x * 1e3)


def main():
    out = sys.argv[1]
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    rows = []
    for n in (1, 4, 16):
        for with_hung in (False, True):
            g, r, asked, got, to, ref = latency_run(n, rounds, with_hung)
            rows.append((n, with_hung, g, r, asked, got, to, len(ref)))
            print("agents %2d%s: grant p50 %.1f ms p99 %.1f ms max %.1f ms; release p50 %.1f ms"
                  % (n, " + hung" if with_hung else "", pct(g, 50) * 1e3, pct(g, 99) * 1e3,
                     max(g) * 1e3, pct(r, 50) * 1e3), flush=True)
    cli, sock = status_run(16, 100)
    print("headroom broker p50 %.1f ms p99 %.1f ms; status p99 %.1f ms" % (
        pct(cli, 50) * 1e3, pct(cli, 99) * 1e3, pct(sock, 99) * 1e3), flush=True)
    cpus = [(h,) + cpu_run(3, 10, h) for h in (False, True)]
    ncpu = os.cpu_count()
    with open(out, "w") as f:
        f.write("# Broker\n\n")
        f.write("Measured by `make bench` (bench/broker.sh, bench/broker_bench.py) on %d CPUs, "
                "no GPU: host memory under `--budget` is the resource, agents are real Python "
                "processes (headroom.agent) holding a %d MiB cache each. Each round reserves "
                "what is free plus half a cache, so one agent must drop its cache and the "
                "broker must see the memory return in /proc before it grants. %d rounds per "
                "row, broker_timeout 1 s, patience 2 s. Timings are wall clock on a shared "
                "machine (load about %.0f on its %d cores during the run).\n\n"
                % (ncpu, CACHE_MB, rounds, os.getloadavg()[0], ncpu))
        f.write("Beside: a hung client (registered, offering a 64 MiB cache, never answering: "
                "the planner asks it first, it costs one broker_timeout, then it counts as "
                "busy for 30 s and idle agents are asked first) and a hung adapter (a comfyui "
                "endpoint that accepts and never answers; its refreshes run into their "
                "deadline on the broker's poll loop, one after another).\n\n")
        f.write("| agents | beside | reserve -> granted p50 | p99 | max | refused | rounds that "
                "waited for the hung client | release itself (ask -> answer) p50 | p99 | bytes "
                "released / asked |\n")
        f.write("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
        for n, h, g, r, asked, got, to, nref in rows:
            f.write("| %d | %s | %s | %s | %s | %d | %d | %s | %s | %.2f (%d MiB / %d MiB) |\n"
                    % (n, "hung client + hung adapter" if h else "nothing", ms(pct(g, 50)),
                       ms(pct(g, 99)), ms(max(g)), nref, to, ms(pct(r, 50)), ms(pct(r, 99)),
                       got / asked if asked else 0, got // MiB, asked // MiB))
        f.write("\nTarget: p99 under 1 s plus the release itself. A round that waited for "
                "the hung client costs broker_timeout (1 s here) plus the release: it is the "
                "max and, with %d rounds, may be the p99. Bytes released / asked: an agent "
                "asked for half its cache drops all of it (a cache goes whole), the \"needed "
                "plus one item\" bound.\n\n" % rounds)
        f.write("While the hung client and the hung adapter are there (16 agents), %d runs "
                "each:\n\n| what | p50 | p99 | max |\n| --- | ---: | ---: | ---: |\n"
                % len(cli))
        f.write("| `headroom broker --json` (a whole CLI run) | %s | %s | %s |\n"
                % (ms(pct(cli, 50)), ms(pct(cli, 99)), ms(max(cli))))
        f.write("| a status request on an open connection | %s | %s | %s |\n"
                % (ms(pct(sock, 50)), ms(pct(sock, 99)), ms(max(sock))))
        f.write("\nTarget: `headroom broker` p99 under 100 ms meanwhile.\n\n")
        f.write("The broker thread's CPU (utime + stime of the thread `hr-broker`, from "
                "/proc/PID/task/TID/stat), median of 3 windows of 10 s, 16 agents "
                "connected:\n\n| beside | state | CPU per second (share of one core) |\n"
                "| --- | --- | ---: |\n")
        for h, rest, busy, rates in cpus:
            who = "hung client + hung adapter" if h else "nothing"
            f.write("| %s | at rest | %.2f %% |\n" % (who, statistics.median(rest) * 100))
            f.write("| %s | %.0f reservations per second (granted at once, then released) | "
                    "%.2f %% |\n" % (who, statistics.median(rates), statistics.median(busy) * 100))
        f.write("\nEach window (percent of one core): %s.\n" % "; ".join(
            "%s: rest %s, busy %s" % ("hung" if h else "alone",
                                     ", ".join("%.2f" % (x * 100) for x in rest),
                                     ", ".join("%.2f" % (x * 100) for x in busy))
            for h, rest, busy, _ in cpus))
    print("wrote", out)


if __name__ == "__main__":
    main()
