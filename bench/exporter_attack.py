"""The exporter under the connection floods it was attacked with (run by
bench/exporter.sh): a real `headroom watch --listen 127.0.0.1:PORT` and, in a
process of their own, slow clients (tests/python/exporter_attackers.py) that
send the start of a request and a byte a second and reconnect the moment the
server cuts them.

1. one address: 64 slow clients from 127.0.0.1, the scraper's own address,
   for SECONDS, while a scraper from 127.0.0.1 asks for /metrics once a
   second (a fresh connection each time, `Connection: close`).
2. many addresses: 640 slow clients from 127.0.0.2 ... 127.0.0.11 (more than
   the exporter's connection capacity), 16 scrapes once a second.
3. 200 complete scrapes sent at the same moment, no other load.

For each: scrapes answered 200 within 1 s and within 2 s, the median and
largest time, replies without a status line, the CPU of the whole watch
process meanwhile, and the exporter's own counters read from /metrics
afterwards. Then the exporter thread's CPU over 10 s with no client (it
must sleep, not spin). Usage:
exporter_attack.py OUT.md|- [SECONDS]   (HEADROOM_CLI: the CLI; HEADROOM_CLI_BEFORE,
optional: another build run through the same attacks in the same run, its
table titled HEADROOM_BEFORE_LABEL)."""

import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "python"))
from exporter_attackers import Watch, burst, scrapes, slow_clients  # noqa: E402


def judged(replies):
    ok = [r for r in replies if r.status == 200 and b"headroom_" in r.body]
    times = sorted(r.seconds for r in replies)
    return {
        "scrapes": len(replies),
        "within_1s": sum(1 for r in ok if r.seconds <= 1.0),
        "within_2s": sum(1 for r in ok if r.seconds <= 2.0),
        "no_status": sum(1 for r in replies if r.status is None),
        "status_503": sum(1 for r in replies if r.status == 503),
        "503_with_retry_after": sum(1 for r in replies
                                    if r.status == 503 and "retry-after" in r.headers),
        "median_s": statistics.median(times) if times else 0.0,
        "max_s": times[-1] if times else 0.0,
    }


def flood(cli, sources, n, count, seconds):
    w = Watch(cli, seconds + 600)
    try:
        before = w.counters()
        p = slow_clients(w.port, sources, n, seconds)
        c0, t0 = w.cpu(), time.monotonic()
        replies = scrapes(w.port, count, 1.0)
        cpu = (w.cpu() - c0) / (time.monotonic() - t0)
        counts = p.communicate(timeout=seconds + 120)[0].strip().splitlines()[-1]
        after = w.counters()
    finally:
        err = w.stop()
    res = judged(replies)
    res["cpu"] = cpu
    res["attack"] = counts
    res["counters"] = {k: after[k] - before.get(k, 0) for k in after if k.endswith("_total")
                       or "_total{" in k}
    res["stderr"] = err.strip()[-300:]
    return res


def concurrent(cli, n):
    w = Watch(cli, 600)
    try:
        before = w.counters()
        c0, t0 = w.cpu(), time.monotonic()
        replies = burst(w.port, n)
        cpu = (w.cpu() - c0) / (time.monotonic() - t0)
        after = w.counters()
    finally:
        err = w.stop()
    res = judged(replies)
    res["cpu"] = cpu
    res["status_200"] = sum(1 for r in replies if r.status == 200)
    res["counters"] = {k: after[k] - before.get(k, 0) for k in after if "_total" in k}
    res["stderr"] = err.strip()[-300:]
    return res


def at_rest(cli, seconds=10.0):
    """CPU seconds of the exporter thread over `seconds` with no client."""
    w = Watch(cli, 600)
    try:
        time.sleep(1)
        c0 = w.cpu("hr-exporter")
        time.sleep(seconds)
        return w.cpu("hr-exporter") - c0
    finally:
        w.stop()


def row(name, r, want):
    return "| %s | %d | %d | %d | %d | %d (%d with Retry-After) | %.1f | %.1f | %.0f | %s |" % (
        name, r["scrapes"], r["within_1s"], r["within_2s"], r["no_status"], r["status_503"],
        r["503_with_retry_after"], r["median_s"] * 1000, r["max_s"] * 1000, r["cpu"] * 100,
        want)


def counted(c):
    """The exporter's counters over a run, in words."""
    if not c:
        return "none (this build serves no headroom_exporter_* counters)"
    get = lambda k: int(c.get(k, 0))  # noqa: E731
    drop = 'headroom_exporter_connections_dropped_total{reason="%s"}'
    return ("%d accepted; dropped at the header deadline %d, for a new one at capacity %d, "
            "at the response deadline %d; %d shed" % (
                get("headroom_exporter_connections_accepted_total"),
                get(drop % "header_deadline"), get(drop % "capacity"),
                get(drop % "response_deadline"), get("headroom_exporter_requests_shed_total")))


def run_all(cli, seconds):
    return {"one": flood(cli, "127.0.0.1", 64, int(seconds), seconds),
            "many": flood(cli, "127.0.0.2-11", 640, 16, max(seconds, 18.0)),
            "burst": concurrent(cli, 200)}


def table(title, r, seconds):
    return [
        "## " + title,
        "",
        "| attack | scrapes | answered within 1 s | answered within 2 s | no status line | "
        "503 | median ms | max ms | watch CPU, % of a core | target |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        row("64 reconnecting slow clients from 127.0.0.1, %.0f s, 1 scrape/s" % seconds,
            r["one"], "all within 1 s (accepted: 90 % within 2 s)"),
        row("640 slow clients from 127.0.0.2-.11, 16 scrapes", r["many"], "all answered"),
        row("200 concurrent complete scrapes", r["burst"], "all get a status line"),
        "",
        "- slow clients' own counts: one address %s; ten addresses %s"
        % (r["one"]["attack"], r["many"]["attack"]),
        "- the exporter's counters: one address: %s; ten addresses: %s; 200 at once: %s"
        % (counted(r["one"]["counters"]), counted(r["many"]["counters"]),
           counted(r["burst"]["counters"])),
        "",
    ]


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "-"
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 20.0
    cli = os.environ.get("HEADROOM_CLI") or os.path.join(HERE, "..", "build", "release",
                                                         "headroom")
    before = os.environ.get("HEADROOM_CLI_BEFORE")
    before_label = os.environ.get("HEADROOM_BEFORE_LABEL", "before")
    now = run_all(cli, seconds)
    rest = at_rest(cli)
    then = run_all(before, seconds) if before else None
    lines = [
        "# exporter: scrapes under connection floods",
        "",
        "Measured %s by `bench/exporter.sh` (`bench/exporter_attack.py`), %d CPUs, against a "
        "real `headroom watch --listen 127.0.0.1:PORT --interval 1s --db none`. Slow clients "
        "run in a process of their own: each sends the start of a request, then a byte a "
        "second, never the end of its headers, and reconnects the moment the server closes it. "
        "The scraper asks for /metrics once a second from 127.0.0.1 on a fresh connection and "
        "reads to the end; *answered* is a 200 with the metrics. Counters are the exporter's "
        "own, read from /metrics before and after each run; watch CPU is the whole process's "
        "over the scrapes."
        % (time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), os.cpu_count() or 0),
        "",
    ]
    lines += table("This build", now, seconds)
    lines += ["At rest (no client) for 10 s, the exporter thread (`hr-exporter`) used %.2f s "
              "of CPU: it sleeps in epoll until a connection or a deadline is due." % rest, ""]
    if then:
        lines += table("%s, in the same run" % before_label, then, seconds)
    text = "\n".join(lines)
    if out != "-":
        with open(out, "w", encoding="utf-8") as f:
            f.write(text)
    sys.stdout.write(text)
    for r in [now] + ([then] if then else []):
        for name, res in r.items():
            if res["stderr"]:
                sys.stderr.write("watch stderr (%s): %s\n" % (name, res["stderr"]))


if __name__ == "__main__":
    main()
