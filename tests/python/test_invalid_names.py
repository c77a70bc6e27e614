"""A process whose name is not valid UTF-8 (bytes 0xff 0xfe, as a process may
name itself with prctl) is reported by status, watch, the exporter and the
history export, and each of them stays strict JSON: the bytes become U+FFFD.

The process is a real one: a Python stand-in that renames itself with
PR_SET_NAME and waits until its stdin closes."""

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from conftest import cli_or_skip

RAW_NAME = b"hr\xff\xfeodd"
SHOWN = "hr\ufffd\ufffdodd"

STAND_IN = r"""
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(15, ctypes.c_char_p(%r), 0, 0, 0) != 0:  # PR_SET_NAME
    sys.exit("prctl failed")
hold = bytearray(32 << 20)  # some resident memory, so it is among the largest
for i in range(0, len(hold), 4096):
    hold[i] = 1
print("ready", flush=True)
sys.stdin.read()
""" % RAW_NAME


def strict(raw):
    """Parses bytes as strict JSON: UTF-8 only, no NaN or Infinity."""
    def reject(c):
        raise ValueError("not JSON: %s" % c)
    return json.loads(raw.decode("utf-8"), parse_constant=reject)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def odd_process():
    mark = "hrutf8mark%d" % os.getpid()
    p = subprocess.Popen([sys.executable, "-c", STAND_IN, mark], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE)
    assert p.stdout.readline() == b"ready\n"
    with open("/proc/%d/comm" % p.pid, "rb") as f:
        assert f.read().rstrip(b"\n") == RAW_NAME
    yield p, mark
    if p.poll() is None:
        p.kill()
    p.wait()


def named(entries, pid):
    return [e for e in entries if e.get("pid") == pid]


def test_status_json(odd_process):
    p, mark = odd_process
    r = subprocess.run([cli_or_skip(), "status", "--json", "--filter", mark],
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    doc = strict(r.stdout)
    mine = named(doc["processes"], p.pid)
    assert len(mine) == 1 and mine[0]["name"] == SHOWN
    assert len(doc["processes"]) == 1  # the filter, and never status itself


def get(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read()


def wait_for(pred, seconds=120):
    """Waits until pred() is true; the deadline is far past the usual time,
    so a loaded machine only makes it slower. Returns pred()'s last value."""
    deadline = time.monotonic() + seconds
    while not pred() and time.monotonic() < deadline:
        time.sleep(0.05)
    return pred()


def test_watch_exporter_and_history(odd_process, tmp_path):
    p, mark = odd_process
    cli = cli_or_skip()
    db = str(tmp_path / "history.db")
    port = free_port()
    # Runs until the stand-in's exit is seen (6000 samples bound it, ten
    # minutes, should the test fail), then ends on SIGTERM, history committed.
    w = subprocess.Popen([cli, "watch", "--json", "--interval", "100ms", "--count", "6000",
                          "--filter", mark, "--db", db, "--listen", "127.0.0.1:%d" % port,
                          "--history-flush", "1s"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    lines = []

    def read():
        for line in w.stdout:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        snap = None

        def shown():
            nonlocal snap
            try:
                snap = strict(get("http://127.0.0.1:%d/api/snapshot" % port))
                return bool(named(snap["processes"], p.pid))
            except (urllib.error.URLError, ConnectionError):
                return w.poll() is not None

        assert wait_for(shown), "the exporter never showed the stand-in"
        mine = named(snap["processes"], p.pid)
        assert len(mine) == 1 and mine[0]["name"] == SHOWN
        metrics = get("http://127.0.0.1:%d/metrics" % port).decode("utf-8")
        # No GPU memory: its RSS is in the series of its name (and container).
        assert 'headroom_process_group_rss_bytes{comm="%s",' % SHOWN in metrics
        # The stand-in exits while watched: an exit event names it.
        p.stdin.close()
        p.wait(timeout=60)
        def exited():
            return w.poll() is not None or any(
                b'"event":"exit"' in l and strict(l).get("pid") == p.pid for l in list(lines))

        assert wait_for(exited)
        w.terminate()
        w.wait(timeout=60)
        reader.join(timeout=60)
        err = w.stderr.read()
    finally:
        if w.poll() is None:
            w.kill()
            w.wait()
    assert w.returncode == 0, err
    events = [strict(line) for line in lines]
    samples = [e for e in events if e["event"] == "sample"]
    assert samples
    tops = [t for s in samples for t in named(s["top"], p.pid)]
    assert tops and all(t["name"] == SHOWN for t in tops)
    exits = [e for e in events if e["event"] == "exit" and e["pid"] == p.pid]
    assert len(exits) == 1 and exits[0]["name"] == SHOWN

    r = subprocess.run([cli, "history", "--json", "--db", db, "--since", "1h"],
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    doc = strict(r.stdout)
    rows = [s for s in doc["samples"] if s["scope"] == "proc" and s["pid"] == p.pid]
    assert rows and all(s["name"] == SHOWN for s in rows)
    gone = [e for e in doc["events"] if e["event"] == "exit" and e["pid"] == p.pid]
    assert len(gone) == 1 and gone[0]["name"] == SHOWN
