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


def load_pack():
    spec = importlib.util.spec_from_file_location(
        "headroom_comfyui", os.path.join(PACK, "__init__.py"), submodule_search_locations=[PACK])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["headroom_comfyui"] = mod
    spec.loader.exec_module(mod)
    return mod


pack = load_pack()
nodes = sys.modules["headroom_comfyui.nodes"]
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
    for key in ("HeadroomMemoryMonitor", "HeadroomFreeMemoryImage", "HeadroomFreeMemoryLatent",
                "HeadroomFreeMemoryModel", "HeadroomVRAMOptimizer",
                "HeadroomSmartMemoryManager", "HeadroomMemoryReport"):
        assert key in NODES
    assert nodes.ANY == "IMAGE" and not (nodes.ANY != "MODEL")


def test_memory_monitor_passes_through_and_reports():
    value = {"samples": object()}
    out = call("HeadroomMemoryMonitor", value=value, ram_threshold=0.0, vram_threshold=90.0,
               process_filter="python")
    passed, text = out["result"]
    assert passed is value and out["ui"]["text"] == [text]
    assert text.startswith("WARNING RAM:")  # threshold 0 %: always above
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


def test_vram_optimizer_acts_only_above_threshold(monkeypatch):
    value = object()
    out, text = call("HeadroomVRAMOptimizer", value=value, mode="balanced", threshold=50.0,
                     cooldown=0.0)
    assert out is value
    if vram.usage_percent() is None:
        assert "no VRAM reading" in text and "nothing done" in text
    # The decision on a given reading (the reading is the test's, not a GPU's).
    monkeypatch.setattr(vram, "usage_percent", lambda: 40.0)
    assert "40.0% <= threshold 50.0%; nothing done" in call(
        "HeadroomVRAMOptimizer", value=value, mode="balanced", threshold=50.0, cooldown=0.0)[1]
    monkeypatch.setattr(vram, "usage_percent", lambda: 70.0)
    text = call("HeadroomVRAMOptimizer", value=value, mode="conservative", threshold=50.0,
                cooldown=0.0)[1]
    assert "70.0% > threshold 50.0%; free_memory(conservative)" in text
    with pytest.raises(ValueError, match="threshold must be a percentage"):
        call("HeadroomVRAMOptimizer", value=value, mode="balanced", threshold=-1.0, cooldown=0.0)
    with pytest.raises(ValueError, match="mode must be one of"):
        call("HeadroomVRAMOptimizer", value=value, mode="max", threshold=50.0, cooldown=0.0)


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
    assert call("HeadroomMemoryReport", reset=False)["result"][0] == "no stages recorded\n"
    with pytest.raises(ValueError, match="was not begun"):
        call("HeadroomStageEnd", value=1, stage="vae")
    with pytest.raises(ValueError, match="non-empty"):
        call("HeadroomStageBegin", value=1, stage="  ")
    del kept


def test_memory_monitor_cgroup_line(monkeypatch):
    # The cgroup numbers are the test's: this machine's cgroup has no limit.
    monkeypatch.setattr(nodes, "_cgroup", lambda: {"version": 2, "usage_bytes": 3 << 30,
                                                   "limit_bytes": 4 << 30})
    text = call("HeadroomMemoryMonitor", value=1, ram_threshold=70.0, vram_threshold=90.0,
                process_filter="")["result"][1]
    assert "WARNING container (cgroup v2): 3.0 GiB of 4.0 GiB limit (75.0%)" in text


def test_process_list_without_the_library(fresh_loader):
    fresh_loader.setenv("HEADROOM_LIB", "/nonexistent/libheadroom.so")
    procs, source = nodes.matching_processes(["python"], top=100000)
    assert source == "/proc" and os.getpid() in [p["pid"] for p in procs]


def test_process_list_through_the_probe(fresh_loader, libpath):
    fresh_loader.setenv("HEADROOM_LIB", libpath)
    procs, source = nodes.matching_processes(["python"], top=100000)
    assert source == "libheadroom probe" and os.getpid() in [p["pid"] for p in procs]


def test_vram_through_the_stand_in_nvml(fresh_loader, libpath):
    # The project's stand-in NVML (tests/fake_nvml) gives device readings
    # without a GPU: the thresholds and the optimizer's decision run on them.
    nvml = os.path.join(os.path.dirname(libpath), "helpers", "libfake-nvml-v3.so")
    if not os.path.exists(nvml):
        pytest.skip("the probe's stand-in NVML is not built at %s" % nvml)
    if vram.torch_cuda() is not None:
        pytest.skip("CUDA is in use in this process: readings come from torch")
    fresh_loader.setenv("HEADROOM_LIB", libpath)
    fresh_loader.setenv("FAKE_NVML_GPUS", "2")
    # The process's options are read once per process, so an environment
    # variable set now is not seen: the test sets the NVML path they hold.
    from headroom.readings import snapshot as probe

    fresh_loader.setattr(probe, "_process_paths", (b"/", nvml.encode(), None, 0))
    devs = vram.devices()
    assert [d["source"] for d in devs] == ["nvml", "nvml"]
    pct = devs[0]["used_percent"]
    assert 0 < pct < 100
    text = call("HeadroomMemoryMonitor", value=1, ram_threshold=100.0,
                vram_threshold=pct - 0.5, process_filter="")["result"][1]
    assert "WARNING VRAM cuda:0 Fake GPU 0" in text and "WARNING VRAM cuda:1" in text
    calm = call("HeadroomMemoryMonitor", value=1, ram_threshold=100.0,
                vram_threshold=pct + 0.5, process_filter="")["result"][1]
    assert "WARNING VRAM" not in calm and "VRAM cuda:1 Fake GPU 1" in calm
    acted = call("HeadroomVRAMOptimizer", value=1, mode="conservative", threshold=pct - 0.5,
                 cooldown=0.0)[1]
    assert "> threshold" in acted and "free_memory(conservative)" in acted
    idle = call("HeadroomVRAMOptimizer", value=1, mode="conservative", threshold=pct + 0.5,
                cooldown=0.0)[1]
    assert "<= threshold" in idle and "nothing done" in idle
    assert mgr.default_read()["vram_percent"] == pytest.approx(pct)
