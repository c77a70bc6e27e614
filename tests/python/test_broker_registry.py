"""The agent with a real headroom.Registry: a real agent process registers a
Registry of real CPU torch nn.Modules whose weights live in a host Pool
(headroom.pool.Pool("host")), and a reservation makes it offload its idle
modules, least recently used first.

What is measured, honestly: on the CPU an offload moves a module's weights
out of the pool into ordinary host memory (a copy), so the process's RSS
does not fall and the host's free memory does not grow: the broker, which
waits to see freed memory before it grants, refuses in the end. What the
test checks is the Registry's own resident bytes (the pool's allocated
bytes), which fall by what the agent reported, the broker's answer and
history (released_bytes equal to that fall), the order (least recently
used first), and the weights coming back intact. On a GPU the same offload
frees device memory the driver sees; that is not run here."""

import json
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from broker_fixtures import PYDIR, MiB, Broker, cli_path, wait_for  # noqa: E402

pytestmark = pytest.mark.skipif(not os.path.exists(cli_path()),
                                reason="headroom CLI not built (set HEADROOM_CLI)")

AGENT = r"""
import json, sys
sys.path.insert(0, %(pydir)r)
import torch
import headroom
from headroom import agent
from headroom.pool import Pool

MiB = 1 << 20
pool = Pool("host", capacity=256 * MiB)
reg = headroom.Registry(pool=pool)
mods = {}
for name in ("first", "second", "third"):
    m = torch.nn.Linear(1024, 32 * 256, bias=False)  # 32 MiB of float32 weights
    reg.register(m, name)
    mods[name] = (m, m.weight.detach().clone())
for name in ("first", "second", "third"):  # used in this order: "first" is the oldest
    with reg.use(mods[name][0]):
        pass
a = agent.connect(priority=0, registry=reg, name="torchreg", path=%(path)r, interval=0.2)
print("ready", flush=True)
for line in sys.stdin:
    print(json.dumps({
        "resident": reg.resident(),
        "pool_allocated": pool.stats()["allocated_bytes.all.current"],
        "releasable": reg.releasable_bytes(),
        "requests": a.requests, "released": a.released_total,
        "intact": all(torch.equal(m.weight, w) for m, w in mods.values())}), flush=True)
"""


def ask(p):
    p.stdin.write("?\n")
    p.stdin.flush()
    return json.loads(p.stdout.readline())


def test_a_reservation_offloads_idle_modules_of_a_real_registry(tmp_path):
    try:
        import torch  # noqa: F401
    except ImportError:
        pytest.skip("torch is not importable")
    db = str(tmp_path / "h.db")
    b = Broker(budget="host=2G", args=("--db", db))
    p = None
    try:
        code = AGENT % {"pydir": PYDIR, "path": b.path}
        p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env=b.env)
        assert p.stdout.readline().strip() == "ready"
        s0 = ask(p)
        assert s0["resident"] == ["first", "second", "third"]
        assert s0["pool_allocated"] == 96 * MiB and s0["releasable"] == 96 * MiB

        def offered():
            return any(c["pid"] == p.pid and c["releasable_bytes"]["host"] == 96 * MiB
                       for c in b.status()["clients"])
        assert wait_for(offered)
        free0 = b.status()["resources"][0]["free_bytes"]
        r = b.cli("reserve", str(free0 + 40 * MiB), "--device", "host", "--timeout", "6s",
                  "--json", "--", "true")
        reply = json.loads(r.stderr.splitlines()[0])
        s1 = ask(p)
        # The Registry offloaded the two oldest modules (40 MiB needs two of
        # 32), the newest stayed; its resident bytes fell by what it said.
        assert s1["requests"] >= 1
        assert s1["resident"] == ["third"], s1
        assert s0["pool_allocated"] - s1["pool_allocated"] == 64 * MiB
        assert s1["released"] == 64 * MiB and s1["intact"]
        assert reply["released_bytes"] == 64 * MiB
        # The copies to host memory keep RSS where it was, so the broker saw
        # no room come free: refused, naming the agent (see the docstring).
        assert r.returncode == 75 and reply["op"] == "refused", r.stderr
        assert any(h["pid"] == p.pid for h in reply["holders"])
        ans = wait_for(lambda: [e for e in b.events("answer") if e["pid"] == p.pid])
        assert ans[0]["released_bytes"] == 64 * MiB and ans[0]["name"] == "torchreg"
    finally:
        if p:
            p.stdin.close()
            p.wait(timeout=30)
            p.stdout.close()
        b.stop()
    h = b.cli("history", "--db", db, "--since", "1h", "--json")
    answers = [e for e in json.loads(h.stdout)["events"] if e["event"] == "broker_answer"]
    assert answers and answers[0]["released_bytes"] == 64 * MiB
