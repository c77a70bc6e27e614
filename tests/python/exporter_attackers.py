"""Hostile and honest clients of the exporter, over real loopback sockets,
for tests/python/test_exporter_attack.py and bench/exporter_attack.py.

- slow clients (`python3 exporter_attackers.py attack ...`, run as a process
  of its own so its work never delays the scraper measured beside it): N
  sockets from given source addresses, each sending the start of a request
  and then one byte every DRIP seconds, never the end of the headers; a
  socket the server closes is opened again at once, as a slow-loris client
  does. Prints `ready` once all N have connected, and a JSON line of counts
  when it ends.
- scrape(): one complete GET from a given source address, read to the end;
  scrapes(): one every so often; burst(): N sent at the same moment from N
  threads.
- Watch: a real `headroom watch` serving on a free loopback port, its CPU
  and its own counters; slow_clients() starts the attack against it.

Linux routes all of 127.0.0.0/8 to loopback, so a socket bound to
127.0.0.2 ... 127.0.0.11 is a client of another address without any setup."""

import argparse
import errno
import json
import os
import re
import selectors
import socket
import subprocess
import sys
import threading
import time

PARTIAL = b"GET /metrics HTTP/1.1\r\nHost: headroom\r\nUser-Agent: slow\r\nX-Slow: "
REQUEST = b"GET /metrics HTTP/1.1\r\nHost: headroom\r\nConnection: close\r\n\r\n"


class Reply:
    """What one request got: the status code (None: no status line), the
    headers (lower-case names), the body, the seconds it took and, when it
    failed, why."""

    def __init__(self):
        self.status, self.headers, self.body, self.seconds, self.error = None, {}, b"", 0.0, ""

    def __repr__(self):
        return "Reply(%s in %.2fs%s)" % (self.status, self.seconds,
                                         ", " + self.error if self.error else "")


def parse(raw, reply):
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2) if lines and lines[0].startswith(b"HTTP/1.") else []
    if len(parts) >= 2 and parts[1].isdigit():
        reply.status = int(parts[1])
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            reply.headers[name.strip().lower().decode("latin-1")] = value.strip().decode(
                "latin-1")
    reply.body = body


def scrape(port, source="127.0.0.1", request=REQUEST, limit=10.0):
    """One complete request from `source`, read until the server closes;
    `limit` bounds the whole exchange (the caller's bookkeeping, not the
    figure judged: that is Reply.seconds)."""
    reply, raw = Reply(), b""
    t0 = time.monotonic()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.settimeout(limit)
        s.bind((source, 0))
        s.connect(("127.0.0.1", port))
        s.sendall(request)
        while True:
            left = limit - (time.monotonic() - t0)
            if left <= 0:
                raise socket.timeout("no end within %.0fs" % limit)
            s.settimeout(left)
            chunk = s.recv(65536)
            if not chunk:
                break
            raw += chunk
    except OSError as e:
        reply.error = "%s: %s" % (type(e).__name__, e)
    finally:
        s.close()
    reply.seconds = time.monotonic() - t0
    parse(raw, reply)
    return reply


def scrapes(port, n, every, limit=10.0):
    """n scrapes from 127.0.0.1, one every `every` seconds; their Replies."""
    out, t0 = [], time.monotonic()
    for i in range(n):
        wait = t0 + i * every - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        out.append(scrape(port, limit=limit))
    return out


def burst(port, n, source="127.0.0.1", limit=30.0):
    """n complete requests from n threads released together; their Replies."""
    gate = threading.Barrier(n)
    replies = [None] * n

    def one(i):
        try:
            gate.wait(timeout=limit)
        except threading.BrokenBarrierError:
            pass
        replies[i] = scrape(port, source, limit=limit)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(limit * 2)
    return replies


class SlowClients:
    """The attack itself: `n` sockets spread over `sources` round-robin."""

    def __init__(self, port, sources, n, drip):
        self.port, self.sources, self.n, self.drip = port, sources, n, drip
        self.sel = selectors.DefaultSelector()
        self.conns = {}  # socket -> [source, connected, bytes dripped]
        self.opened = self.cut = self.failed = self.peak = 0

    def open(self, source):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.bind((source, 0))
            rc = s.connect_ex(("127.0.0.1", self.port))
        except OSError:
            s.close()
            self.failed += 1
            return False
        if rc not in (0, errno.EINPROGRESS):
            s.close()
            self.failed += 1
            return False
        self.conns[s] = [source, False, 0]
        self.sel.register(s, selectors.EVENT_WRITE)
        self.opened += 1
        return True

    def drop(self, s):
        source = self.conns.pop(s)[0]
        self.sel.unregister(s)
        s.close()
        return source

    def on_event(self, s, mask):
        state = self.conns[s]
        if not state[1]:
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                self.failed += 1
                return self.drop(s)
            state[1] = True
            self.sel.modify(s, selectors.EVENT_READ)
            return self.send(s, PARTIAL)
        try:
            if s.recv(65536):
                return None  # a refusal the server wrote before closing: read on
        except OSError:
            pass
        self.cut += 1
        return self.drop(s)

    def send(self, s, data):
        try:
            s.send(data)
            self.conns[s][2] += len(data)
        except OSError:
            self.cut += 1
            return self.drop(s)
        return None

    def connected(self):
        return sum(1 for c in self.conns.values() if c[1])

    def run(self, seconds, ready=None):
        """Holds the attack for `seconds`; calls ready() once all n have
        connected (or after 30 s whatever happened)."""
        for i in range(self.n):
            self.open(self.sources[i % len(self.sources)])
        t0 = time.monotonic()
        next_drip = t0 + self.drip
        announced = False
        while True:
            now = time.monotonic()
            if announced and now - t0 >= seconds:
                break
            for key, mask in self.sel.select(timeout=max(0.0, min(0.05, next_drip - now))):
                closed = self.on_event(key.fileobj, mask)
                if closed:
                    self.open(closed)
            # Reopen what failed to connect, at most every 50 ms.
            while len(self.conns) < self.n and self.open(self.sources[len(self.conns) %
                                                                      len(self.sources)]):
                pass
            live = self.connected()
            self.peak = max(self.peak, live)
            if not announced and (live >= self.n or time.monotonic() - t0 > 30):
                announced = True
                t0 = time.monotonic()
                if ready:
                    ready()
            if time.monotonic() >= next_drip:
                next_drip += self.drip
                for s, state in list(self.conns.items()):
                    if state[1]:
                        closed = self.send(s, b"a")
                        if closed:
                            self.open(closed)
        for s in list(self.conns):
            self.drop(s)
        return {"sockets": self.n, "opened": self.opened, "cut_by_server": self.cut,
                "connect_failures": self.failed, "peak_connected": self.peak}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Watch:
    """A real `headroom watch --listen 127.0.0.1:PORT` on a free port, ended
    by --count after `seconds` whatever happens; ready once it serves
    /metrics (60 s at most, else RuntimeError)."""

    def __init__(self, cli, seconds, env=None):
        self.port = free_port()
        self.proc = subprocess.Popen([cli, "watch", "--listen", "127.0.0.1:%d" % self.port,
                                      "--interval", "1s", "--db", "none", "--json", "--count",
                                      str(int(seconds))], env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.proc.poll() is None:
            if scrape(self.port, limit=5).status == 200:
                return
            time.sleep(0.2)
        err = self.stop()
        raise RuntimeError("headroom watch did not serve /metrics within 60 s: " + err)

    def cpu(self, thread=None):
        """CPU seconds (user + system) of the process, or of its threads
        named `thread`."""
        paths = ["/proc/%d/stat" % self.proc.pid]
        if thread:
            task = "/proc/%d/task" % self.proc.pid
            paths = []
            for t in os.listdir(task):
                with open(os.path.join(task, t, "comm")) as f:
                    if f.read().strip() == thread:
                        paths.append(os.path.join(task, t, "stat"))
        total = 0
        for path in paths:
            with open(path) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def counters(self):
        """The exporter's own samples on /metrics (headroom_exporter_*),
        {series: value}; empty when it serves none."""
        r = scrape(self.port)
        text = r.body.decode(errors="replace")
        return {m.group(1): float(m.group(2))
                for m in re.finditer(r"^(headroom_exporter_\S+) (\S+)$", text, re.M)}

    def stop(self):
        """Ends watch; returns what it wrote on stderr."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        err = self.proc.stderr.read().decode(errors="replace")
        self.proc.stderr.close()
        return err


def slow_clients(port, sources, n, seconds):
    """Starts the attack in a process of its own (`sources` as --sources
    takes them); returns the process once all n have connected. Its last
    line of output, once it ends, is the JSON of its counts."""
    p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "attack", "--port",
                          str(port), "--sources", sources, "--sockets", str(n), "--seconds",
                          str(seconds)], stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline().strip()
    if line != "ready":
        p.kill()
        p.wait()
        raise RuntimeError("the slow clients did not start: %r" % line)
    return p


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=["attack"])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--sources", default="127.0.0.1",
                    help="comma-separated source addresses, or FIRST-LAST in the last octet")
    ap.add_argument("--sockets", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--drip", type=float, default=1.0, help="seconds between bytes")
    a = ap.parse_args()
    sources = a.sources.split(",")
    if len(sources) == 1 and "-" in sources[0]:
        first, last = sources[0].split("-")
        base, lo = first.rsplit(".", 1)
        sources = ["%s.%d" % (base, i) for i in range(int(lo), int(last) + 1)]
    clients = SlowClients(a.port, sources, a.sockets, a.drip)
    counts = clients.run(a.seconds, ready=lambda: print("ready", flush=True))
    print(json.dumps(counts), flush=True)


if __name__ == "__main__":
    sys.exit(main())
