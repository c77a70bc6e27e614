"""The node pack's ComfyUI parts (Free Memory (Model) through ComfyUI's model
management, loaded models in the reports, the routes' unload, the auxiliary
example) against the stand-in of ComfyUI (tests/python/comfy_standin: NOT
ComfyUI), and the same nodes outside ComfyUI."""

import pytest

from headroom import comfy, manager as mgr
from headroom.comfy import models as comfy_models, pernode

import comfy_standin
from test_comfyui import NODES, pack  # noqa: F401  (loads the pack once)

import sys

routes = sys.modules["headroom_comfyui.routes"]
M = 1 << 20
G = 1 << 30
FREE = "HeadroomFreeMemoryModel"


def call(key, **inputs):
    cls = NODES[key]
    return getattr(cls(), cls.FUNCTION)(**inputs)


@pytest.fixture
def fake(monkeypatch):
    nodes = sys.modules["headroom_comfyui.nodes"]
    monkeypatch.setattr(nodes, "_last_model_free", [None])
    f = comfy_standin.install(monkeypatch)
    yield f
    mgr.manager().stop()
    mgr.manager().set_critical_action(__import__("headroom").free.free_memory)


def loaded(fake, nbytes, name):
    p = fake.mp.ModelPatcher(fake.FakeModule(nbytes), "cpu", "offload")
    p.headroom_name = name
    fake.mm.load_models_gpu([p])
    return p


def test_free_model_outside_comfyui_says_so():
    value = object()
    out, text = call(FREE, model=value, mode="balanced", cooldown=0.0, target="all models")
    assert out is value and text.startswith("free_memory(balanced): RAM")
    assert "ComfyUI's model management is absent" in text and "nothing unloaded" in text
    with pytest.raises(ValueError, match="amount must be a size"):
        call(FREE, model=value, target="LRU until amount free", amount="a lot")
    with pytest.raises(ValueError, match="target must be one of"):
        call(FREE, model=value, target="some")
    with pytest.raises(ValueError, match="when must be one of"):
        call(FREE, model=value, when="later")
    text = call("HeadroomMemoryMonitor", value=1, ram_threshold=90.0, vram_threshold=90.0,
                process_filter="")["result"][1]
    assert text.splitlines()[-1].startswith("ComfyUI's model management is absent")
    with pytest.raises(RuntimeError, match="absent.*needs ComfyUI"):
        call("HeadroomAuxiliaryExample", model=object(), image=None, strength=0.5)


def test_free_model_node_unloads_its_input(fake):
    a, b = loaded(fake, 256 * M, "unet"), loaded(fake, 64 * M, "clip")
    out, text = call(FREE, model=a, mode="balanced", cooldown=0.0, unique_id="12")
    assert out is a
    assert text.startswith("free_memory(balanced, input): 1 model unloaded")
    assert "unloaded unet" in text
    assert [lm.model for lm in fake.mm.current_loaded_models] == [b]
    assert fake.sent == [("headroom.report", {"node": "12", "text": text})]
    # Within the cooldown: nothing done.
    text = call(FREE, model=b, mode="balanced", cooldown=60.0)[1]
    assert "skipped, within the cooldown" in text and len(fake.mm.current_loaded_models) == 1
    text = call(FREE, model=b, target="all models")[1]
    assert "1 model unloaded" in text and fake.mm.current_loaded_models == []


def test_free_model_node_refuses_what_is_not_a_patcher(fake):
    with pytest.raises(comfy.NotAPatcher, match="must be a ComfyUI MODEL .* got dict"):
        call(FREE, model={"weights": 1}, mode="balanced", cooldown=0.0)
    with pytest.raises(ValueError, match="amount must be a size"):
        call(FREE, model=None, target="LRU until amount free", amount="-3G")


def test_free_model_node_after_this_prompt_sets_the_flags(fake):
    a = loaded(fake, 16 * M, "unet")
    text = call(FREE, model=a, when="after this prompt")[1]
    assert fake.queue.flags == {"unload_models": True, "free_memory": True}
    assert "between prompts" in text and len(fake.mm.current_loaded_models) == 1


def test_reports_list_the_loaded_models(fake):
    kept = loaded(fake, 256 * M, "unet")  # noqa: F841 (ComfyUI holds models weakly)
    text = call("HeadroomMemoryMonitor", value=1, ram_threshold=90.0, vram_threshold=90.0,
                process_filter="")["result"][1]
    assert "ComfyUI loaded models: 1\n  unet (FakeModule) on cpu: 256.0 MiB" in text
    text = call("HeadroomMemoryReport", reset=False)["result"][0]
    assert text.startswith("no stages recorded") and "unet (FakeModule)" in text


def test_smart_manager_node_installs_the_comfy_action(fake):
    call("HeadroomSmartMemoryManager", enabled=True, interval=60.0, cooldown=30.0)
    m = mgr.manager()
    assert m._free is not __import__("headroom").free.free_memory
    m.stop()


def test_smart_manager_node_keeps_its_detector_across_prompts(fake):
    # Run once per prompt, as a workflow does: the leak detector (and its
    # samples) survive unless a leak setting changes.
    settings = dict(enabled=True, interval=60.0, cooldown=30.0, leak_mib_per_min=2.0,
                    leak_window=600.0)
    text = call("HeadroomSmartMemoryManager", **settings)["result"][1]
    m = mgr.manager()
    det = m._detector
    m.step()
    for _ in range(3):
        text = call("HeadroomSmartMemoryManager", **settings)["result"][1]
        assert m._detector is det
    call("HeadroomSmartMemoryManager", **dict(settings, cooldown=10.0))
    assert m._detector is det and m.status()["settings"]["cooldown"] == 10.0
    call("HeadroomSmartMemoryManager", **dict(settings, leak_window=300.0))
    assert m._detector is not det
    # Its status ends with the per-node verdict the Memory Report shows too.
    assert text.splitlines()[-1].startswith("per-node verdict: ")
    report = call("HeadroomMemoryReport", reset=False)["result"][0]
    assert pernode.tracker().verdict_text() in report and pernode.tracker().verdict_text() \
        in call("HeadroomSmartMemoryManager", **settings)["result"][1]
    m.stop()


class FakeCLIP:
    """What a ComfyUI CLIP holds that the node uses: its ModelPatcher."""

    def __init__(self, patcher):
        self.patcher = patcher


def test_free_clip_node_unloads_the_text_encoder(fake):
    te = loaded(fake, 240 * M, "clip-l")
    unet = loaded(fake, 64 * M, "unet")
    clip = FakeCLIP(te)
    out, text = call("HeadroomFreeMemoryCLIP", clip=clip, mode="balanced", cooldown=0.0,
                     after=[["cond"]], unique_id="4")
    assert out is clip and text.startswith("free_memory(balanced, input): 1 model unloaded")
    assert "unloaded clip-l" in text
    assert [lm.model for lm in fake.mm.current_loaded_models] == [unet]
    assert fake.sent[-1] == ("headroom.report", {"node": "4", "text": text})
    text = call("HeadroomFreeMemoryCLIP", clip=clip, when="after this prompt")[1]
    assert fake.queue.flags == {"unload_models": True, "free_memory": True}
    assert "between prompts" in text
    with pytest.raises(ValueError, match="when must be one of"):
        call("HeadroomFreeMemoryCLIP", clip=clip, when="later")
    with pytest.raises(ValueError, match="clip must be a ComfyUI CLIP .* got dict"):
        call("HeadroomFreeMemoryCLIP", clip={"patcher": te}, mode="balanced", cooldown=0.0)
    with pytest.raises(ValueError, match="mode must be one of"):
        call("HeadroomFreeMemoryCLIP", clip=clip, mode="all", cooldown=0.0)


def test_free_clip_node_outside_comfyui_says_so():
    clip = object()
    out, text = call("HeadroomFreeMemoryCLIP", clip=clip, mode="conservative", cooldown=0.0)
    assert out is clip and "ComfyUI's model management is absent" in text
    assert "nothing unloaded" in text


def test_wait_node_reads_comfyuis_free_memory(fake):
    from headroom.comfy import wait

    fake.mm.capacity["cpu"] = 3 * G
    kept = loaded(fake, 1 * G, "big")  # noqa: F841 (ComfyUI holds models weakly)
    free, what = wait.free_bytes("compute device")
    assert free == 2 * G and what == "ComfyUI's free memory on cpu"
    out, text = call("HeadroomWaitForMemory", value=1, amount="2G", patience=0.0, poll=0.1)
    assert "(ComfyUI's free memory on cpu): 2.0 GiB free after" in text
    out, text = call("HeadroomWaitForMemory", value=1, amount="3G", patience=0.0, poll=0.1)
    assert "only 2.0 GiB free when the patience" in text


def test_panel_shows_per_node_memory_and_the_verdict(fake):
    st = comfy.panel_state(machine=False)
    assert set(st["nodes"]) >= {"installed", "last_prompt", "verdict", "verdict_text", "heap"}


def test_route_unload_refuses_while_a_prompt_runs(fake):
    kept = loaded(fake, 16 * M, "a")  # noqa: F841 (ComfyUI holds models weakly)
    fake.queue.currently_running[0] = (0, "p9", {}, {}, [])
    with pytest.raises(comfy.PromptRunning, match=r"\(p9\)"):
        routes._unload({"all": True})
    with pytest.raises(comfy.PromptRunning):
        routes._unload({"index": 0})
    assert len(fake.mm.current_loaded_models) == 1
    fake.queue.currently_running.clear()
    with pytest.raises(ValueError, match='must be {"index": n} or {"all": true}'):
        routes._unload({"everything": 1})
    with pytest.raises(ValueError, match="must be a JSON object"):
        routes._unload([0])
    res = routes._unload({"index": 0})
    assert [m["name"] for m in res.unloaded] == ["a"] and fake.mm.current_loaded_models == []
    # No PromptServer.instance with routes in tests: nothing is registered.
    assert routes.register() is False


def test_auxiliary_example_node(fake):
    torch = pytest.importorskip("torch", reason="the example runs a torch module")
    parent = fake.mp.ModelPatcher(fake.FakeModule(64 * M), "cpu", "cpu")
    img = torch.rand(1, 4, 4, 3)
    out = call("HeadroomAuxiliaryExample", model=parent, image=img, strength=1.0)
    m, image, text = out["result"]
    assert m is not parent and len(comfy.auxiliary_models(m)) == 1
    assert comfy.auxiliary_models(parent) == []  # registered on the clone alone
    assert torch.allclose(image[..., 0], img.mean(-1), atol=1e-5)  # strength 1: grey
    assert "ran on cpu" in text and "offload after use" in text
    assert fake.mm.current_loaded_models == []  # offloaded once its output was computed
    with pytest.raises(ValueError, match=r"strength must be a number in \[0, 1\]"):
        call("HeadroomAuxiliaryExample", model=parent, image=img, strength=2.0)
    with pytest.raises(ValueError, match="image must be an IMAGE"):
        call("HeadroomAuxiliaryExample", model=parent, image=torch.rand(4, 4), strength=0.5)
