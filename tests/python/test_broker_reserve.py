"""`headroom reserve` and headroom.reserve() as users run them, against a
real broker: whole byte counts only; SIGTERM, SIGINT and SIGHUP sent to
headroom reach the command, and the lease ends with it; a parent that
ignores SIGCHLD does not lose the command's status nor make headroom spin;
`reserve auto` learns the size from what earlier runs of the same command
used, as the watch's history recorded it (a real watch sampling the real
child processes), and says where the figure came from."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from broker_fixtures import MiB, Broker, cli_path, wait_for  # noqa: E402

from headroom import agent  # noqa: E402

pytestmark = pytest.mark.skipif(not os.path.exists(cli_path()),
                                reason="headroom CLI not built (set HEADROOM_CLI)")


def test_whole_bytes_only(broker):
    for size in ("1.5", "0.3K", "12Q", "0", "1e-3"):
        r = broker.cli("reserve", size, "--device", "host", "--", "true")
        assert r.returncode == 2 and "not a whole number of bytes" in r.stderr, (size, r.stderr)
    r = broker.cli("reserve", "1.5K", "--device", "host", "--json", "--", "true")
    assert r.returncode == 0 and json.loads(r.stderr.splitlines()[0])["bytes"] == 1536
    for bad in (1.5, True, "1G", None):
        with pytest.raises(TypeError):
            with agent.reserve(bad, device="host", path=broker.path):
                pass
    with pytest.raises(ValueError):
        with agent.reserve(0, device="host", path=broker.path):
            pass
    with agent.reserve(1 << 20, device="host", path=broker.path) as g:
        assert g["bytes"] == 1 << 20


CHILD = r"""
import signal, sys, time
def on(sig, frame):
    print("got", signal.Signals(sig).name, flush=True)
    sys.exit(40 + sig)
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(s, on)
print("ready", flush=True)
time.sleep(60)
sys.exit(3)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signals_reach_the_command_and_the_lease_ends(broker, sig):
    p = subprocess.Popen([cli_path(), "reserve", "1M", "--device", "host", "--", sys.executable,
                          "-c", CHILD], env=broker.env, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        assert len(broker.status()["leases"]) == 1
        os.kill(p.pid, sig)
        assert p.stdout.readline().strip() == "got " + sig.name
        assert p.wait(timeout=20) == 40 + sig  # the command's status
        assert wait_for(lambda: broker.status()["leases"] == [])
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdout.close()


def test_a_parent_that_ignores_sigchld(broker):
    # Ignoring SIGCHLD is kept across exec: the kernel would reap the
    # command unseen, and a wait that retries on ECHILD never ends. headroom
    # takes the default back, so it gets the command's status and exits.
    def ignore():
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    r = subprocess.run([cli_path(), "reserve", "1M", "--device", "host", "--", "sh", "-c",
                        "sleep 0.5; exit 5"], env=broker.env, capture_output=True, text=True,
                       timeout=30, preexec_fn=ignore)
    assert r.returncode == 5, r.stderr
    assert wait_for(lambda: broker.status()["leases"] == [])
    ends = wait_for(lambda: broker.events("lease_end"))
    assert ends and ends[-1]["message"] == "its holder closed the connection"


HOG = r"""
import time
b = bytearray(%d * 1024 * 1024)
for i in range(0, len(b), 4096):
    b[i] = 1
time.sleep(3.5)
"""


def test_reserve_auto_learns_from_history(tmp_path):
    db = str(tmp_path / "h.db")
    # Every process is sampled and kept (--top), so the child is found
    # however busy the machine is.
    b = Broker(budget="host=4G", args=("--db", db, "--history-flush", "1s", "--top", "100000"))
    cmd = [sys.executable, "-c", HOG % 200]
    try:
        r = b.cli("reserve", "auto", "--device", "host", "--db", db, "--", *cmd)
        assert r.returncode == 2 and "holds no earlier run" in r.stderr and "--first-run" in \
            r.stderr, r.stderr
        r = b.cli("reserve", "auto", "--device", "host", "--db", db, "--first-run", "64M",
                  "--json", "--", *cmd)
        assert r.returncode == 0, r.stderr
        assert "64.00 MiB" in r.stderr and "its first run (--first-run)" in r.stderr
        assert json.loads(r.stderr.splitlines()[-1])["bytes"] == 64 * MiB
        runs = wait_for(lambda: b.events("run"))
        assert runs[0]["message"] == " ".join(cmd)[:255]
        time.sleep(2.5)  # one history flush past the run's end

        r = b.cli("reserve", "auto", "--device", "host", "--db", db, "--margin", "50",
                  "--json", "--", *cmd)
        assert r.returncode == 0, r.stderr
        assert "the p95 of the peaks of 1 earlier run" in r.stderr and "+ 50%" in r.stderr, \
            r.stderr
        asked = json.loads(r.stderr.splitlines()[-1])["bytes"]
        # The peak the watch saw: the child's 200 MiB plus the interpreter,
        # times 1.5.
        assert 1.5 * 200 * MiB <= asked <= 1.5 * 320 * MiB, asked
    finally:
        b.stop()
