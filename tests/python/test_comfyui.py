"""The ComfyUI node pack, without ComfyUI: each node's FUNCTION called with
inputs of the types ComfyUI would pass."""

import importlib.util
import os
import sys
import threading

import pytest

import headroom
from headroom import free, manager as mgr, stages
from headroom.pytorch import vram

from conftest import REPO

PACK = os.path.join(REPO, "integrations", "comfyui")


def _tables():
    spec = importlib.util.spec_from_file_location("headroom_readme_tables",
                                                  os.path.join(PACK, "readme_tables.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


tables = _tables()


def load_pack():
    return tables.load_pack()


pack = load_pack()
nodes = sys.modules["headroom_comfyui.nodes"]
processes = sys.modules["headroom_comfyui.processes"]
NODES = pack.NODE_CLASS_MAPPINGS


@pytest.fixture(autouse=True)
def clean():
    stages.reset()
    free._last_done = None
    yield
    stages.reset()
    mgr.manager().stop()


def call(key, **inputs):
    cls = NODES[key]
    return getattr(cls(), cls.FUNCTION)(**inputs)


def test_every_node_follows_the_conventions():
    assert set(NODES) == set(pack.NODE_DISPLAY_NAME_MAPPINGS)
    for key, cls in NODES.items():
        it = cls.INPUT_TYPES()
        assert "required" in it, key
        assert isinstance(cls.RETURN_TYPES, tuple) and cls.RETURN_TYPES, key
        assert len(cls.RETURN_NAMES) == len(cls.RETURN_TYPES), key
        assert callable(getattr(cls, cls.FUNCTION)), key
        assert cls.CATEGORY == "headroom" and isinstance(cls.OUTPUT_NODE, bool), key
        assert cls.IS_CHANGED() != cls.IS_CHANGED()  # NaN: never cached
        assert isinstance(cls.DESCRIPTION, str) and len(cls.DESCRIPTION) > 20, key
        # Every input and every output has a tooltip.
        for group in ("required", "optional"):
            for name, spec in it.get(group, {}).items():
                assert len(spec) == 2 and len(spec[1].get("tooltip", "")) > 10, (key, name)
        assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES), key
        assert all(isinstance(t, str) and len(t) > 5 for t in cls.OUTPUT_TOOLTIPS), key
    for key in ("HeadroomMemoryMonitor", "HeadroomFreeMemoryImage", "HeadroomFreeMemoryLatent",
                "HeadroomFreeMemoryCLIP", "HeadroomFreeMemoryModel", "HeadroomVRAMOptimizer",
                "HeadroomWaitForMemory", "HeadroomSmartMemoryManager", "HeadroomMemoryReport"):
        assert key in NODES
    assert nodes.ANY == "IMAGE" and not (nodes.ANY != "MODEL")


def test_readme_tables_are_the_node_definitions():
    if not headroom.library_available():
        pytest.skip("the Smart Memory Manager's defaults are the library's option table")
    with open(tables.README) as f:
        text = f.read()
    assert tables.blocks(text) == [k for k in tables.blocks(text) if k in NODES]
    assert set(tables.blocks(text)) == set(NODES)  # one table per node
    assert tables.render(text, NODES) == text, (
        "integrations/comfyui/README.md's tables differ from the node definitions: run "
        "python integrations/comfyui/readme_tables.py --write")
    # The defaults the README gives are the ones the nodes and the manager use.
    smm = tables.table(NODES["HeadroomSmartMemoryManager"])
    d = mgr.SmartMemoryManager.defaults()
    assert "| in | interval | FLOAT 0.1–600 (%g) |" % d["interval"] in smm
    assert "| in | leak_window | FLOAT 1–604800 (%g) |" % d["window"] in smm
    assert "| in | cooldown | FLOAT 0–86400 (%g) |" % d["cooldown"] in smm
    assert "(%s) |" % d["mode"] in smm.split("| in | mode |")[1].split("\n")[0]
    # A changed default shows as a difference.
    spec = NODES["HeadroomWaitForMemory"].INPUT_TYPES()
    assert "| in | patience | FLOAT 0–3600 (60) |" in tables.table(NODES["HeadroomWaitForMemory"])
    assert spec["required"]["patience"][1]["default"] == 60.0


def test_memory_monitor_passes_through_and_reports():
    value = {"samples": object()}
    out = call("HeadroomMemoryMonitor", value=value, ram_threshold=0.0, vram_threshold=90.0,
               process_filter="python")
    passed, text = out["result"]
    assert passed is value and out["ui"]["text"] == [text]
    # Threshold 0 %: always at least warning (critical from the table's level on).
    assert text.startswith(("WARNING RAM:", "CRITICAL RAM:")) or not headroom.library_available()
    assert "this process: RSS" in text and "VRAM" in text
    # Other Python processes on the machine may be larger: only the top ten show.
    assert "processes matching python: " in text and "python: 0 " not in text
    assert ("(libheadroom probe)" in text) == headroom.library_available()
    calm = call("HeadroomMemoryMonitor", value=1, ram_threshold=100.0, vram_threshold=100.0,
                process_filter="")["result"][1]
    assert calm.startswith("RAM:") and "processes matching" not in calm
    with pytest.raises(ValueError, match=r"ram_threshold must be a percentage in \[0, 100\]"):
        call("HeadroomMemoryMonitor", value=1, ram_threshold=-5.0, vram_threshold=90.0)
    with pytest.raises(ValueError, match="vram_threshold"):
        call("HeadroomMemoryMonitor", value=1, ram_threshold=5.0, vram_threshold=150.0)


@pytest.mark.parametrize("key,label", [("HeadroomFreeMemoryImage", "image"),
                                       ("HeadroomFreeMemoryLatent", "latent"),
                                       ("HeadroomFreeMemoryModel", "model")])
def test_free_memory_nodes(key, label):
    cls = NODES[key]
    assert label in cls.INPUT_TYPES()["required"]
    assert cls.INPUT_TYPES()["required"]["mode"][0] == ["conservative", "balanced", "aggressive"]
    value = {"samples": [1, 2, 3]} if label == "latent" else object()
    out, report = call(key, **{label: value}, mode="balanced", cooldown=0.0)
    assert out is value
    assert report.startswith("free_memory(balanced): RAM") and "gc.collect()" in report
    with pytest.raises(ValueError, match="mode must be one of"):
        call(key, **{label: value}, mode="everything", cooldown=0.0)
    with pytest.raises(ValueError, match="cooldown must be a number >= 0"):
        call(key, **{label: value}, mode="balanced", cooldown=-1.0)


def rows(process_mib, device_mib, total_mib=1000):
    M = 1 << 20
    return [{"index": 0, "name": "GPU", "total_bytes": total_mib * M,
             "device_bytes": device_mib * M, "device_percent": 100.0 * device_mib / total_mib,
             "source": "test", "process_bytes": process_mib * M,
             "process_percent": 100.0 * process_mib / total_mib,
             "process_label": "PyTorch reserved", "allocated_bytes": None}]


def test_vram_optimizer_compares_this_process_and_does_not_repeat_a_futile_pass(monkeypatch):
    if not headroom.library_available():
        pytest.skip("the decision is the library's level classifier")
    value = object()
    node = NODES["HeadroomVRAMOptimizer"]()
    out, text = node.run(value, mode="balanced", threshold=50.0, cooldown=0.0)
    assert out is value
    if not nodes.vram_rows():
        assert "no VRAM reading" in text and "nothing done" in text
    # The readings are the test's (no GPU here); the decision is the library's.
    seq = []
    monkeypatch.setattr(nodes, "vram_rows", lambda: seq.pop(0) if len(seq) > 1 else seq[0])
    # The device is full of other processes' memory; this process holds 100 MiB.
    seq[:] = [rows(100, 900)]
    text = node.run(value, mode="balanced", threshold=50.0, cooldown=0.0)[1]
    assert "this process 10.0% of cuda:0" in text and "device 900.0 MiB, every process" in text
    assert "under threshold 50.0%; nothing done" in text
    # Measured on the device it acts; the pass lowers nothing (the readings
    # stay): said so, and the next run does not free again.
    text = node.run(value, mode="balanced", threshold=50.0, cooldown=0.0, measure="device")[1]
    assert ">= threshold 50.0%; free_memory(balanced)" in text
    assert "reading 900.0 MiB -> 900.0 MiB (not lowered: not repeated until it grows)" in text
    text = node.run(value, mode="balanced", threshold=50.0, cooldown=0.0, measure="device")[1]
    assert "could not lower it" in text and "free_memory" not in text
    # Once the reading grows, it frees again; a pass that lowers it is repeatable.
    seq[:] = [rows(100, 920), rows(100, 850), rows(100, 850)]
    text = node.run(value, mode="balanced", threshold=50.0, cooldown=0.0, measure="device")[1]
    assert "free_memory(balanced)" in text and "reading 920.0 MiB -> 850.0 MiB" in text
    assert "not repeated" not in text
    seq[:] = [rows(100, 850), rows(100, 800)]
    text = node.run(value, mode="balanced", threshold=50.0, cooldown=0.0, measure="device")[1]
    assert "free_memory(balanced)" in text
    # This process above the threshold: it acts on its own use.
    seq[:] = [rows(700, 900), rows(300, 500)]
    text = node.run(value, mode="conservative", threshold=50.0, cooldown=0.0)[1]
    assert "this process 70.0% of cuda:0" in text and "free_memory(conservative)" in text
    with pytest.raises(ValueError, match="threshold must be a percentage"):
        node.run(value, mode="balanced", threshold=-1.0, cooldown=0.0)
    with pytest.raises(ValueError, match="mode must be one of"):
        node.run(value, mode="max", threshold=50.0, cooldown=0.0)
    with pytest.raises(ValueError, match="measure must be one of this process, device"):
        node.run(value, mode="balanced", threshold=50.0, cooldown=0.0, measure="gpu")


def test_vram_optimizer_without_the_library_says_it_cannot_decide(fresh_loader, monkeypatch):
    fresh_loader.setenv("HEADROOM_LIB", "/nonexistent/libheadroom.so")
    monkeypatch.setattr(nodes, "vram_rows", lambda: rows(900, 900))
    text = call("HeadroomVRAMOptimizer", value=1, mode="balanced", threshold=50.0,
                cooldown=0.0)[1]
    assert "no level classifier" in text and "nothing done" in text


def test_smart_memory_manager_node_starts_and_stops_the_thread():
    out = call("HeadroomSmartMemoryManager", enabled=True, mode="balanced", interval=0.05,
               ram_warning=80.0, ram_critical=90.0, vram_warning=85.0, vram_critical=95.0,
               leak_mib_per_min=50.0, leak_window=10.0, cooldown=30.0, value="x")
    assert out["result"][0] == "x"
    assert out["result"][1].startswith("Smart Memory Manager: running")
    assert mgr.manager().running()
    # Enabled again: same thread, new settings.
    call("HeadroomSmartMemoryManager", enabled=True, interval=0.05, cooldown=10.0)
    assert [t.name for t in threading.enumerate()].count(
        "headroom-smart-manager") == 1
    assert mgr.manager().status()["settings"]["cooldown"] == 10.0
    out = call("HeadroomSmartMemoryManager", enabled=False)
    assert out["result"][1].startswith("Smart Memory Manager: stopped")
    assert not mgr.manager().running()
    with pytest.raises(ValueError, match="above the critical"):
        call("HeadroomSmartMemoryManager", enabled=True, ram_warning=95.0, ram_critical=90.0)
    assert not mgr.manager().running()


def test_stage_nodes_and_memory_report():
    kept = []
    for i in range(5):
        v = call("HeadroomStageBegin", value=i, stage="unet")[0]
        kept.append(bytes([i + 1]) * (4 << 20))
        assert call("HeadroomStageEnd", value=v, stage="unet") == (i,)
    out = call("HeadroomMemoryReport", reset=True)
    text = out["result"][0]
    # The table has the stage and its five calls; whether five calls are a
    # leak is the stage report's judgement (tests/python/test_stages.py).
    assert text.startswith("stage") and any(
        line.split()[:2] == ["unet", "5"] for line in text.splitlines()), text
    assert call("HeadroomMemoryReport", reset=False)["result"][0] == (
        "no stages recorded\n\nper-node verdict: none (ComfyUI's execution module is not "
        "loaded in this process)")
    with pytest.raises(ValueError, match="was not begun"):
        call("HeadroomStageEnd", value=1, stage="vae")
    with pytest.raises(ValueError, match="non-empty"):
        call("HeadroomStageBegin", value=1, stage="  ")
    del kept


def test_memory_monitor_cgroup_line(monkeypatch):
    # The cgroup numbers are the test's: this machine's cgroup has no limit.
    monkeypatch.setattr(processes, "cgroup", lambda: {"version": 2, "usage_bytes": 3 << 30,
                                                      "limit_bytes": 4 << 30})
    text = call("HeadroomMemoryMonitor", value=1, ram_threshold=70.0, vram_threshold=90.0,
                process_filter="")["result"][1]
    assert "WARNING container (cgroup v2): 3.0 GiB of 4.0 GiB limit (75.0%)" in text or (
        not headroom.library_available() and "container (cgroup v2): 3.0 GiB" in text)


def test_process_list_without_the_library(fresh_loader):
    fresh_loader.setenv("HEADROOM_LIB", "/nonexistent/libheadroom.so")
    procs, source = processes.matching(["python"], top=100000)
    assert source == "/proc" and os.getpid() in [p["pid"] for p in procs]


def test_process_list_is_the_probes_selection(fresh_loader, libpath):
    import subprocess

    fresh_loader.setenv("HEADROOM_LIB", libpath)
    child = subprocess.Popen(["sleep", "60"])
    try:
        procs, source = processes.matching(["sleep"], top=100000)
        assert source == "libheadroom probe" and child.pid in [p["pid"] for p in procs]
        # The probe's rule: a non-empty filter never matches the calling process.
        procs, _ = processes.matching(["python"], top=100000)
        assert os.getpid() not in [p["pid"] for p in procs]
        procs, _ = processes.matching(["sleep"], top=0)  # GPU holders alone: none here
        assert child.pid not in [p["pid"] for p in procs]
        for bad, err in (("sleep", ValueError), (("sleep", -1), ValueError),
                         ((3, 1), ValueError), (("sleep", "10"), TypeError)):
            with pytest.raises(err, match="select"):
                headroom.snapshot(what=["procs"], select=bad)
    finally:
        child.kill()
        child.wait()


def test_vram_through_the_stand_in_nvml(fresh_loader, libpath):
    # The project's stand-in NVML (tests/fake_nvml) gives device readings
    # without a GPU: the thresholds and the optimizer's decision run on them,
    # with this process holding 512 MiB of GPU 0 by the driver's count.
    nvml = os.path.join(os.path.dirname(libpath), "helpers", "libfake-nvml-v3.so")
    if not os.path.exists(nvml):
        pytest.skip("the probe's stand-in NVML is not built at %s" % nvml)
    if vram.torch_cuda() is not None:
        pytest.skip("CUDA is in use in this process: readings come from torch")
    fresh_loader.setenv("HEADROOM_LIB", libpath)
    fresh_loader.setenv("FAKE_NVML_GPUS", "2")
    fresh_loader.setenv("FAKE_NVML_PROCS", "0:%d:512" % os.getpid())
    # The process's options are read once per process, so an environment
    # variable set now is not seen: the test sets the NVML path they hold.
    from headroom.readings import snapshot as probe

    fresh_loader.setattr(probe, "_process_paths", (b"/", nvml.encode(), None, 0))
    devs = vram.devices()
    assert [d["source"] for d in devs] == ["nvml", "nvml"]
    pct = devs[0]["used_percent"]
    assert 0 < pct < 100
    (r0, r1) = nodes.vram_rows()
    assert r0["process_bytes"] == 512 << 20 and r0["process_label"].startswith("driver's count")
    assert r1["process_bytes"] == 0
    monitor = NODES["HeadroomMemoryMonitor"]()
    low, high = min(d["used_percent"] for d in devs), max(d["used_percent"] for d in devs)
    text = monitor.run(1, 100.0, low - 0.5, "")["result"][1]
    assert "WARNING VRAM cuda:0 Fake GPU 0" in text and "WARNING VRAM cuda:1" in text
    assert "this process 512.0 MiB (" in text and "driver's count for this process" in text
    # The levels live on the node: within the hysteresis the warning stays.
    text = monitor.run(1, 100.0, pct + 1.0, "")["result"][1]
    assert "WARNING VRAM cuda:0" in text
    calm = NODES["HeadroomMemoryMonitor"]().run(1, 100.0, high + 5.0, "")["result"][1]
    assert "WARNING VRAM" not in calm and "VRAM cuda:1 Fake GPU 1" in calm
    opt = NODES["HeadroomVRAMOptimizer"]()
    acted = opt.run(1, mode="conservative", threshold=pct - 0.5, cooldown=0.0,
                    measure="device")[1]
    assert ">= threshold" in acted and "free_memory(conservative)" in acted
    mine = 100.0 * (512 << 20) / devs[0]["total_bytes"]
    idle = NODES["HeadroomVRAMOptimizer"]().run(1, mode="conservative", threshold=mine + 1,
                                                cooldown=0.0)[1]
    assert "under threshold" in idle and "nothing done" in idle
    assert mgr.default_read()["vram_percent"] == pytest.approx(pct)


def test_wait_for_memory_node(monkeypatch):
    import asyncio

    node = NODES["HeadroomWaitForMemory"]()
    assert NODES["HeadroomWaitForMemory"].FUNCTION == "wait"  # no ComfyUI execution here
    out, text = node.wait(7, amount="0", where="host RAM", patience=0.0, poll=0.1)
    assert out == 7 and text.startswith("wait for 0 B free (available host RAM): ")
    assert "free after 0.0 s (1 read)" in text
    out, text = node.wait(7, amount="1000T", where="compute device", patience=0.0, poll=0.1)
    assert out == 7 and "when the patience (0.0 s, 1 reads) ran out" in text
    with pytest.raises(RuntimeError, match="ran out"):
        node.wait(7, amount="1000T", patience=0.0, poll=0.1, on_timeout="error")
    # The coroutine form, as a ComfyUI that awaits node functions runs it.
    out, text = asyncio.run(node.wait_async(8, amount="1K", where="host RAM", patience=1.0,
                                            poll=0.1))
    assert out == 8 and "free after" in text
    with pytest.raises(ValueError, match="amount must be a size"):
        node.wait(7, amount="lots")
    with pytest.raises(ValueError, match="where must be one of"):
        node.wait(7, amount="1G", where="disk")
    with pytest.raises(ValueError, match="on_timeout must be one of"):
        node.wait(7, amount="1G", on_timeout="retry")
    with pytest.raises(ValueError, match="poll must be"):
        node.wait(7, amount="1G", poll=0.0)


def test_the_wait_hands_control_back():
    import asyncio

    from headroom.comfy import wait

    # A clock and a free reading that are the test's: free memory appears at t=3.
    t = [0.0]
    reads = []

    def free(where="compute device"):
        reads.append(t[0])
        return (1 << 30 if t[0] >= 3 else 0), "test"

    slept = []

    def on_poll(s):
        slept.append(s)
        t[0] += s

    orig = wait.free_bytes
    wait.free_bytes = free
    try:
        res = wait.wait_for_memory("1G", patience=10, poll=1.0, on_poll=on_poll,
                                   clock=lambda: t[0])
        assert res.ok and slept == [1.0, 1.0, 1.0] and res.reads == 4
        t[0], slept[:] = 0.0, []
        res = wait.wait_for_memory("1G", patience=2.5, poll=1.0, on_poll=on_poll,
                                   clock=lambda: t[0])
        assert not res.ok and slept == [1.0, 1.0, 0.5] and res.waited_s == 2.5

        # The coroutine awaits between reads: another task runs meanwhile.
        async def both():
            t[0] = 0.0
            ran = []

            async def other():
                for _ in range(3):
                    ran.append(t[0])
                    await asyncio.sleep(0)

            task = asyncio.ensure_future(other())
            clock = iter([0.0, 0.0, 0.001, 0.002, 5.0, 5.0, 5.0])
            t[0] = 5.0
            res = await wait.wait_for_memory_async("1G", patience=10, poll=0.001,
                                                   clock=lambda: next(clock))
            await task
            return res, ran

        t[0] = 0.0
        wait.free_bytes = lambda where="compute device": ((1 << 30) if len(reads) > 6 else 0,
                                                          reads.append(0) or "test")
        res, ran = asyncio.run(both())
        assert res.ok and len(ran) == 3
    finally:
        wait.free_bytes = orig
