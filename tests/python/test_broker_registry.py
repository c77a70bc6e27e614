"""The agent with a real headroom.Registry on host memory: a real agent
process registers a CPU Registry of real torch nn.Modules, three of them
through loaders (built when first used) and one as a module, and a
reservation makes it give memory back.

On host memory a module moved elsewhere in the host frees nothing, so the
Registry releases by dropping modules that have a loader, least recently
used first, and loads them again on next use; the module without one is not
offered. What is checked against the process's own /proc readings: the
offer (the three loader modules only), the resident memory the agent's
process gave back (VmRSS, read from outside), the bytes the agent answered
(measured by Registry.release(), within a few MiB of that fall), the grant
that the fall made possible, and a dropped module loaded again, with the
same weights, on its next use."""

import gc
import json
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from broker_fixtures import PYDIR, MiB, Broker, cli_path, rss, wait_for  # noqa: E402

pytestmark = pytest.mark.skipif(not os.path.exists(cli_path()),
                                reason="headroom CLI not built (set HEADROOM_CLI)")

AGENT = r"""
import json, sys
sys.path.insert(0, %(pydir)r)
import torch
import headroom
from headroom import agent

MiB = 1 << 20
reg = headroom.Registry(device="cpu", budget_bytes=1 << 30)
loads = {}

def loader(name, seed):
    def load():
        loads[name] = loads.get(name, 0) + 1
        g = torch.Generator().manual_seed(seed)
        m = torch.nn.Linear(1024, 32 * 256, bias=False)  # 32 MiB of float32 weights
        with torch.no_grad():
            m.weight.copy_(torch.randn(m.weight.shape, generator=g))
        return m
    return load

for i, name in enumerate(("first", "second", "third")):
    reg.register(loader(name, i), name, estimated_bytes=32 * MiB)
kept = torch.nn.Linear(1024, 32 * 256, bias=False)
reg.register(kept, "kept")
with reg.use(kept):  # the least recently used of all, but it has no loader
    pass
for name in ("first", "second", "third"):  # used in this order: "first" is the oldest
    with reg.use(name):
        pass
sums = {}
a = agent.connect(priority=0, registry=reg, name="torchreg", path=%(path)r, interval=0.2)
print("ready", flush=True)
for line in sys.stdin:
    if line.strip() == "use first":
        with reg.use("first"):
            pass
    print(json.dumps({
        "resident": reg.resident(), "loads": loads, "releasable": reg.releasable_bytes(),
        "requests": a.requests, "released": a.released_total, "error": a.last_error,
        "first_sum": float(reg._assets[reg._aid("first")].module.weight.sum())
        if reg._assets[reg._aid("first")].module is not None else None}), flush=True)
"""


def ask(p, what="?"):
    p.stdin.write(what + "\n")
    p.stdin.flush()
    return json.loads(p.stdout.readline())


def test_a_host_registry_drops_loader_modules_and_loads_them_again(tmp_path):
    try:
        import torch  # noqa: F401
    except ImportError:
        pytest.skip("torch is not importable")
    db = str(tmp_path / "h.db")
    b = Broker(budget="host=3G", args=("--db", db))
    p = None
    try:
        code = AGENT % {"pydir": PYDIR, "path": b.path}
        p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env=b.env)
        assert p.stdout.readline().strip() == "ready"
        s0 = ask(p)
        assert s0["resident"] == ["first", "kept", "second", "third"]
        assert s0["loads"] == {"first": 1, "second": 1, "third": 1}
        assert s0["releasable"] == 96 * MiB  # "kept" has no loader: not offered
        sum0 = s0["first_sum"]

        def offered():
            return any(c["pid"] == p.pid and c["releasable_bytes"]["host"] == 96 * MiB
                       for c in b.status()["clients"])
        assert wait_for(offered)
        rss0 = rss(p.pid)
        free0 = b.status()["resources"][0]["free_bytes"]
        r = b.cli("reserve", str(free0 + 40 * MiB), "--device", "host", "--timeout", "20s",
                  "--json", "--", "true")
        reply = json.loads(r.stderr.splitlines()[0])
        s1 = ask(p)
        fell = rss0 - rss(p.pid)
        # The two oldest with a loader were dropped (40 MiB needs two of 32),
        # the newest and the one without a loader, older still, stayed; the process's memory fell by
        # about what they held, and the agent answered what it measured.
        assert s1["resident"] == ["kept", "third"], s1
        assert 56 * MiB <= fell <= 72 * MiB, fell
        assert abs(s1["released"] - fell) <= 8 * MiB, (s1["released"], fell)
        assert s1["error"] is None
        assert r.returncode == 0 and reply["op"] == "granted", r.stderr
        ans = wait_for(lambda: [e for e in b.events("answer") if e["pid"] == p.pid])
        assert ans[0]["released_bytes"] == s1["released"] and ans[0]["name"] == "torchreg"
        # The next use loads "first" again through its loader, same weights.
        s2 = ask(p, "use first")
        assert s2["loads"]["first"] == 2 and s2["first_sum"] == sum0
        assert "first" in s2["resident"]
    finally:
        if p:
            p.stdin.close()
            p.wait(timeout=30)
            p.stdout.close()
        b.stop()
    h = b.cli("history", "--db", db, "--since", "1h", "--json")
    answers = [e for e in json.loads(h.stdout)["events"] if e["event"] == "broker_answer"]
    assert answers and answers[0]["released_bytes"] == s1["released"]


def test_registry_release_measures_what_came_back():
    """Registry.release() in this process: on host memory it drops what has
    a loader and returns the fall of VmRSS, never what it booked; a module
    whose memory someone else still holds gives nothing back, and says so."""
    torch = pytest.importorskip("torch")
    import headroom
    from headroom.free import malloc_trim
    from headroom.readings import procfs
    reg = headroom.Registry(device="cpu", budget_bytes=1 << 30)
    keep = []

    def load():
        m = torch.nn.Linear(1024, 16 * 256, bias=False)  # 16 MiB
        keep.append(m)  # someone else holds it too: dropping frees nothing
        return m
    reg.register(load, "held", estimated_bytes=16 * MiB)
    with reg.use("held"):
        pass
    assert reg.releasable_bytes() == 16 * MiB
    gc.collect()
    malloc_trim()  # earlier tests' garbage is not this release's
    before = procfs.rss_bytes()
    got = reg.release(16 * MiB)
    assert got < 4 * MiB, got  # booked 16 MiB, measured next to nothing
    assert abs((before - procfs.rss_bytes()) - got) <= 4 * MiB
    assert reg.resident() == []
    keep.clear()
    reg.close()
