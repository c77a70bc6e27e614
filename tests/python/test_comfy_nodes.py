"""The node pack's ComfyUI parts (Free Memory (Model) through ComfyUI's model
management, loaded models in the reports, the routes' unload, the auxiliary
example) against the stand-in of ComfyUI (tests/python/comfy_standin: NOT
ComfyUI), and the same nodes outside ComfyUI."""

import pytest

from headroom import comfy, manager as mgr
from headroom.comfy import models as comfy_models

import comfy_standin
from test_comfyui import NODES, pack  # noqa: F401  (loads the pack once)

import sys

routes = sys.modules["headroom_comfyui.routes"]
M = 1 << 20
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
    assert m is not parent and len(m.additional_models["headroom_example"]) == 1
    assert torch.allclose(image[..., 0], img.mean(-1), atol=1e-5)  # strength 1: grey
    assert "ran on cpu" in text and "offload after use" in text
    assert fake.mm.current_loaded_models == []  # offloaded once its output was computed
    with pytest.raises(ValueError, match=r"strength must be a number in \[0, 1\]"):
        call("HeadroomAuxiliaryExample", model=parent, image=img, strength=2.0)
    with pytest.raises(ValueError, match="image must be an IMAGE"):
        call("HeadroomAuxiliaryExample", model=parent, image=torch.rand(4, 4), strength=0.5)
