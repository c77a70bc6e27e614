"""Real processes around the broker for its tests and its benchmark: the
broker itself (`headroom watch` with a socket of its own and a host budget),
agents (Python processes holding real memory in caches and in a stand-in of
headroom.Registry), and readings of their resident memory from /proc."""

import json
import os
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PYDIR = os.path.join(REPO, "python")
MiB = 1 << 20


def cli_path():
    return os.path.abspath(os.environ.get("HEADROOM_CLI")
                           or os.path.join(REPO, "build", "release", "headroom"))


def rss(pid):
    """Resident bytes of pid, from /proc/PID/status (VmRSS)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise ValueError("no VmRSS for pid %d" % pid)


class Broker:
    """`headroom watch` with its broker on a private socket; its JSON lines
    (broker events among them) are collected in `lines`."""

    def __init__(self, budget="host=1G", env=None, args=(), preexec=None):
        self.dir = tempfile.mkdtemp(prefix="hr-broker-", dir="/tmp")
        os.chmod(self.dir, 0o755)
        self.path = os.path.join(self.dir, "broker.sock")
        e = dict(os.environ)
        e.update({"HEADROOM_BROKER_SOCKET": self.path, "XDG_CONFIG_HOME": self.dir,
                  "HEADROOM_BROKER_TIMEOUT": "1s", "HEADROOM_PATIENCE": "2s",
                  "HEADROOM_RAM_WARN": "100", "HEADROOM_RAM_CRITICAL": "100",
                  "HEADROOM_LOG_LEVEL": "warn"})
        e.update(env or {})
        self.path = e["HEADROOM_BROKER_SOCKET"]  # one of the test's own, if it gave one
        self.env = e
        cmd = [cli_path(), "watch", "--json", "--listen", "none", "--db", "none",
               "--interval", "1s"] + (["--budget", budget] if budget else []) + list(args)
        self.proc = subprocess.Popen(cmd, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, preexec_fn=preexec)
        self.lines = []
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()
        deadline = time.monotonic() + 20
        while not os.path.exists(self.path):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                if self.proc.poll() is None:
                    self.proc.kill()
                raise RuntimeError("the broker did not start: %s" % self.proc.stderr.read())
            time.sleep(0.02)

    def _read(self):
        for line in self.proc.stdout:
            try:
                self.lines.append(json.loads(line))
            except ValueError:
                pass

    def events(self, kind=None):
        return [x for x in list(self.lines) if x.get("event", "").startswith("broker_")
                and (kind is None or x["event"] == "broker_" + kind)]

    def cli(self, *args, timeout=60):
        return subprocess.run([cli_path()] + list(args), env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def status(self):
        from headroom import agent
        return agent.status(self.path)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._t.join(timeout=5)
        self.proc.stdout.close()
        self.proc.stderr.close()


# An agent: a real Python process that holds `cache_mb` in a cache (dropped
# at no cost) and `models_mb` in a stand-in of headroom.Registry (models of
# 100 MiB each, offloaded least recently used first), registers with the
# broker at `priority`, prints "ready" and then its RSS whenever asked on
# stdin, until stdin closes.
AGENT = r"""
import os, sys, time
sys.path.insert(0, %(pydir)r)
from headroom import agent

MiB = 1 << 20

def hold(n):
    b = bytearray(n)
    for i in range(0, n, 4096):
        b[i] = 1
    return b

class ShelfStandIn:
    # Stands in for headroom.Registry: releasable_bytes() and release(n).
    def __init__(self, mb):
        self.models = [hold(100 * MiB) for _ in range(mb // 100)]
    def releasable_bytes(self):
        return sum(len(m) for m in self.models)
    def release(self, n):
        got = 0
        while self.models and got < n:
            got += len(self.models.pop(0))
        return got

cache = [hold(%(cache_mb)d * MiB)] if %(cache_mb)d else []
shelf = ShelfStandIn(%(models_mb)d)
a = agent.connect(priority=%(priority)d, registry=shelf, name=%(name)r, path=%(path)r,
                  interval=0.2)
if cache:
    a.add_cache("cache", lambda: sum(len(c) for c in cache), cache.clear)
print("ready", flush=True)
for line in sys.stdin:
    print(a.requests, a.released_total, flush=True)
"""


class Agent:
    def __init__(self, broker, name, priority, cache_mb=0, models_mb=0):
        code = AGENT % {"pydir": PYDIR, "cache_mb": cache_mb, "models_mb": models_mb,
                        "priority": priority, "name": name, "path": broker.path}
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError("agent %s did not start" % name)
        self.pid = self.proc.pid
        self.name = name

    def rss(self):
        return rss(self.pid)

    def counts(self):
        """(release requests answered, bytes released) as the agent says."""
        self.proc.stdin.write("?\n")
        self.proc.stdin.flush()
        r, b = self.proc.stdout.readline().split()
        return int(r), int(b)

    def stop(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=20)
        self.proc.stdout.close()


def wait_for(pred, timeout=60, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()
