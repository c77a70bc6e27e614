"""headroom.snapshot(): the same keys as `headroom status --json`, read
through the library; fixture roots; errors carry the probe's reason."""

import json
import os
import subprocess
import time

import pytest

import headroom
from headroom._c import lib as _lib

from conftest import REPO


@pytest.fixture
def lib(fresh_loader, libpath):
    fresh_loader.setenv("HEADROOM_LIB", libpath)
    if not _lib.has("hr_snapshot_json"):
        pytest.skip("this libheadroom has no probe")
    return _lib.load()


def cli_json():
    cli = os.environ.get("HEADROOM_CLI") or os.path.join(REPO, "build", "release", "headroom")
    if not os.path.exists(cli):
        pytest.skip("headroom CLI not built at %s (set HEADROOM_CLI)" % cli)
    r = subprocess.run([cli, "status", "--json"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def keys(d, prefix=""):
    out = set()
    for k, v in d.items():
        out.add(prefix + k)
        if isinstance(v, dict):
            out |= keys(v, prefix + k + ".")
    return out


def test_same_keys_as_the_cli(lib):
    snap = headroom.snapshot()
    ref = cli_json()
    assert keys(snap) == keys(ref)
    assert snap["schema_version"] == ref["schema_version"]
    assert snap["processes"] and ref["processes"]
    assert set(snap["processes"][0]) == set(ref["processes"][0])
    assert abs(snap["host"]["total_bytes"] - ref["host"]["total_bytes"]) == 0


def test_this_process_is_in_it(lib):
    snap = headroom.snapshot(what=["host", "procs"])
    me = [p for p in snap["processes"] if p["pid"] == os.getpid()]
    assert len(me) == 1 and me[0]["rss_bytes"] > 0
    assert snap["host"]["state"] == "ok" and snap["host"]["total_bytes"] > 0


def test_no_gpu_is_a_state_not_an_error(lib):
    gpu = headroom.snapshot(what=["gpus"])["gpu"]
    assert gpu["state"] in ("ok", "absent", "denied", "error")
    if gpu["state"] != "ok":
        assert gpu["message"] and gpu["devices"] == []


def _fixture_root(tmp, meminfo):
    (tmp / "proc").mkdir()
    (tmp / "proc" / "meminfo").write_text(meminfo)
    return str(tmp)


def test_fixture_root(lib, tmp_path):
    root = _fixture_root(tmp_path, "MemTotal: 1000 kB\nMemFree: 200 kB\nMemAvailable: 600 kB\n")
    host = headroom.snapshot(root=root, what=["host"])["host"]
    assert host["total_bytes"] == 1000 * 1024 and host["available_bytes"] == 600 * 1024


def test_broken_meminfo_raises_with_the_reason(lib, tmp_path):
    root = _fixture_root(tmp_path, "MemTotal: lots kB\nMemFree: 200 kB\n")
    with pytest.raises(headroom.HeadroomError) as ei:
        headroom.snapshot(root=root, what=["host"])
    assert "MemTotal" in str(ei.value) and ei.value.code < 0


def test_bad_what(lib):
    with pytest.raises(ValueError, match="unknown probe part 'disks'"):
        headroom.snapshot(what=["host", "disks"])
    with pytest.raises(ValueError, match="combination of the probe bits"):
        headroom.snapshot(what=1 << 9)


def fake_nvml(libpath):
    p = os.path.join(os.path.dirname(libpath), "helpers", "libfake-nvml-v3.so")
    if not os.path.exists(p):
        pytest.skip("the probe's stand-in NVML is not built at %s" % p)
    return p


def test_gpus_through_the_stand_in_nvml(lib, libpath, monkeypatch):
    # tests/fake_nvml is the project's stand-in for libnvidia-ml: it exercises
    # the NVML path through dlopen; it says nothing about a real GPU.
    nvml = fake_nvml(libpath)
    monkeypatch.setenv("FAKE_NVML_GPUS", "2")
    monkeypatch.setenv("FAKE_NVML_PROCS", "1:%d:512" % os.getpid())
    snap = headroom.snapshot(what=["gpus", "procs"], nvml_path=nvml)
    assert snap["gpu"]["state"] == "ok" and len(snap["gpu"]["devices"]) == 2
    me = [p for p in snap["processes"] if p["pid"] == os.getpid()][0]
    assert me["gpu_bytes"] == 512 << 20


CHAIN = """
import headroom
try:
    headroom.snapshot(what=["host"])
except headroom.HeadroomError as e:
    print("error", e)
else:
    s = headroom.snapshot(what=["host", "gpus"])
    print("total", s["host"]["total_bytes"], "gpu", s["gpu"]["state"])
"""


def test_options_chain_picks_root_and_nvml(lib, libpath, tmp_path):
    # The process's options are read once per process, so each case is a
    # process of its own.
    from conftest import run_python

    nvml = fake_nvml(libpath)
    root = _fixture_root(tmp_path, "MemTotal: 2048 kB\nMemFree: 1024 kB\n")
    env = {"HEADROOM_LIB": libpath, "HEADROOM_ROOT": root, "HEADROOM_NVML_LIBRARY": nvml,
           "HEADROOM_CONFIG": str(tmp_path / "none.conf")}
    r = run_python(CHAIN, env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("error") and "none.conf" in r.stdout  # an explicit file missing
    env.update(HEADROOM_CONFIG=None, XDG_CONFIG_HOME=str(tmp_path))
    r = run_python(CHAIN, env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["total", str(2048 * 1024), "gpu", "ok"]


def _me(snap):
    return [p for p in snap["processes"] if p["pid"] == os.getpid()][0]


def test_pss_only_when_asked(lib):
    assert all(p["pss_bytes"] is None for p in headroom.snapshot()["processes"])
    assert all(p["pss_bytes"] is None
               for p in headroom.snapshot(what=["host", "procs"])["processes"])
    assert _me(headroom.snapshot(pss=True))["pss_bytes"] > 0
    assert _me(headroom.snapshot(what=["procs", "pss"]))["pss_bytes"] > 0
    with pytest.raises(TypeError, match="list of names"):
        headroom.snapshot(what="host")
    with pytest.raises(ValueError, match="names no probe part"):
        headroom.snapshot(what=[])


def test_the_option_table_is_read_once_per_process(lib, monkeypatch):
    from headroom import options
    from headroom.readings import snapshot as probe

    calls = []
    real = lib.hr_options_process

    def counted(*args):
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(lib, "hr_options_process", counted)
    monkeypatch.setattr(options, "_process", None)
    monkeypatch.setattr(probe, "_process_paths", None)
    for _ in range(5):
        headroom.snapshot(what=["host"])
    assert len(calls) == 1
    assert options.process() is options.process()
    assert options.process().get("root") == "/" or os.environ.get("HEADROOM_ROOT")


FIXTURES = os.path.join(REPO, "tests", "fixtures", "probe")


def _through_json(root):
    """A host-only snapshot through hr_probe_snapshot and its JSON (an empty
    selection keeps it off the struct path)."""
    return headroom.snapshot(root=root, what=["host"], select=("", 0))


def test_host_only_is_the_json_snapshot_without_the_json(lib, tmp_path, monkeypatch):
    odd = _fixture_root(tmp_path, "MemTotal: 1000 kB\nMemFree: 200 kB\nMemAvailable: 2000 kB\n"
                                  "Cached: 12\nShmem: many kB\nSwapTotal: 18446744073709551614\n")
    roots = [os.path.join(FIXTURES, n) for n in ("v2_limited", "meminfo_truncated")] + [odd]
    headroom.snapshot(root=roots[0], what=["host"])  # learns the parts not read
    for root in roots:
        want = _through_json(root)
        taken = []
        real = lib.hr_probe_snapshot
        monkeypatch.setattr(lib, "hr_probe_snapshot", lambda *a: taken.append(a) or real(*a))
        t0 = time.time()
        got = headroom.snapshot(root=root, what=["host"])
        monkeypatch.undo()
        assert taken == []  # no snapshot, no JSON
        assert t0 - 0.001 <= got.pop("time") <= time.time() + 0.001
        want.pop("time")
        assert got == want and list(got["host"]) == list(want["host"])
    host = headroom.snapshot(root=odd, what=["host"])["host"]
    # Available above total: used is unknown; a malformed line is unknown; the
    # unset-limit value is written as the JSON writes it.
    assert host["used_bytes"] is None and host["shmem_bytes"] is None
    assert host["cached_bytes"] == 12 and host["swap_total_bytes"] == "max"
    # The dicts are the caller's: changing one changes no later one.
    a = headroom.snapshot(what=HOST_ONLY)
    a["cgroup"]["state"] = "changed"
    a["gpu"]["devices"].append(1)
    b = headroom.snapshot(what=HOST_ONLY)
    assert b["cgroup"]["state"] == "absent" and b["gpu"]["devices"] == []


HOST_ONLY = ["host"]


def test_host_only_live_and_its_errors(lib, tmp_path):
    with open("/proc/meminfo") as f:
        total = int(f.readline().split()[1]) * 1024
    host = headroom.snapshot(what=["host"])["host"]
    assert host["total_bytes"] == total and 0 < host["available_bytes"] <= total
    assert host["used_bytes"] == total - host["available_bytes"]
    assert headroom.snapshot(what=1)["host"]["total_bytes"] == total
    broken = _fixture_root(tmp_path, "MemTotal: lots kB\nMemFree: 200 kB\n")
    for _ in range(2):  # the first call learns through JSON, the second not
        with pytest.raises(headroom.HeadroomError) as ei:
            headroom.snapshot(root=broken, what=["host"])
        assert "proc/meminfo: MemTotal is not a number" in str(ei.value)
        assert ei.value.name == "HR_EPARSE"
    with pytest.raises(headroom.HeadroomError, match="not found") as ei:
        headroom.snapshot(root=str(tmp_path / "nothing"), what=["host"])
    assert ei.value.name == "HR_ENOENT"


def _cli_selection(root, top, filt=None):
    cli = os.environ.get("HEADROOM_CLI") or os.path.join(REPO, "build", "release", "headroom")
    if not os.path.exists(cli):
        pytest.skip("headroom CLI not built at %s (set HEADROOM_CLI)" % cli)
    args = [cli, "--root", root, "status", "--json", "--top", str(top)]
    r = subprocess.run(args + (["--filter", filt] if filt else []), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return [p["pid"] for p in json.loads(r.stdout)["processes"]]


def test_select_is_the_probes_selection(lib):
    root = os.path.join(FIXTURES, "v2_limited")
    every = headroom.snapshot(root=root, what=["host", "procs"])["processes"]
    assert len(every) == 3
    for filt, top in (("", 1), ("", 2), ("", 10), ("python", 5), ("nothing-like-it", 5)):
        got = headroom.snapshot(root=root, what=["host", "procs"], select=(filt, top))
        assert [p["pid"] for p in got["processes"]] == _cli_selection(root, top, filt)
    got = headroom.snapshot(root=root, what=["host", "procs"], select=("", 2))["processes"]
    assert [p["rss_bytes"] for p in got] == sorted((p["rss_bytes"] for p in every),
                                                   reverse=True)[:2]
    for bad, err in ((("python",), ValueError), ("python", ValueError), ((3, 1), ValueError),
                     (("", -1), ValueError), (("", "2"), TypeError)):
        with pytest.raises(err):
            headroom.snapshot(root=root, what=["procs"], select=bad)


GROWER = """
import sys
blocks = []
for line in sys.stdin:
    blocks.append(bytearray(int(line)))  # zero-filled: touched, resident
    print(len(blocks), flush=True)
"""


def _statm_rss(pid):
    with open("/proc/%d/statm" % pid) as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_polling_reads_each_process_fresh(lib):
    """Snapshots taken again and again (the thread's probe context reads a
    known process the short way) still follow a real process's memory as
    /proc shows it, and see processes come and go."""
    import sys

    p = subprocess.Popen([sys.executable, "-c", GROWER], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    try:
        def mine():
            return [q for q in headroom.snapshot(what=["procs"])["processes"] if q["pid"] == p.pid]

        assert len(mine()) == 1
        for _ in range(3):
            before = _statm_rss(p.pid)
            p.stdin.write("%d\n" % (48 << 20))
            p.stdin.flush()
            p.stdout.readline()
            got = mine()[0]["rss_bytes"]
            now = _statm_rss(p.pid)
            assert got >= before + (40 << 20)
            assert abs(got - now) <= (4 << 20), (got, now)
    finally:
        p.kill()
        p.wait()
    assert mine() == []


def test_the_panel_names_the_gpu_holders_from_the_selection(lib, libpath, monkeypatch):
    """ComfyUI's panel takes the probe's selection with top 0 (the GPU
    holders alone) to name the processes on the GPUs."""
    from headroom import comfy
    from headroom.readings import snapshot as probe

    nvml = fake_nvml(libpath)
    monkeypatch.setenv("FAKE_NVML_GPUS", "1")
    monkeypatch.setenv("FAKE_NVML_PROCS", "0:%d:512" % os.getpid())
    root, _, cg, cg_pid = probe._paths()
    monkeypatch.setattr(probe, "_process_paths", (root, nvml.encode(), cg, cg_pid))
    taken = []
    real = probe.snapshot
    monkeypatch.setattr(probe, "snapshot", lambda *a, **k: taken.append(k) or real(*a, **k))
    st = comfy.panel_state(machine=True)
    assert st["machine_note"] == "" and taken and taken[0]["select"] == ("", 0)
    with open("/proc/self/comm") as f:
        me = f.read().strip()
    assert [(p["pid"], p["name"]) for p in st["gpu"]["processes"]] == [(os.getpid(), me)]
