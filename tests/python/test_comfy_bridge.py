"""headroom.comfy against the stand-in of ComfyUI's model management
(tests/python/comfy_standin: NOT ComfyUI; the real one is checked in
integrations/comfyui/VERIFIED.md), and outside ComfyUI."""

import gc

import pytest

from headroom import comfy, manager as mgr
from headroom.comfy import models as comfy_models

import comfy_standin

G = 1 << 30
M = 1 << 20


@pytest.fixture
def fake(monkeypatch):
    with comfy_models._events_lock:
        del comfy_models._events[:]
    return comfy_standin.install(monkeypatch)


class CacheSet:
    """ComfyUI's execution.CacheSet as a holder search sees it: the prompt
    executor's caches, its output cache keeping each node's outputs."""

    def __init__(self):
        self.outputs = type("HierarchicalCache", (), {})()
        self.outputs.cache = {}


CacheSet.__module__ = "execution"


def patcher(fake, nbytes, name=None):
    p = fake.mp.ModelPatcher(fake.FakeModule(nbytes), "cpu", "offload")
    if name:
        p.headroom_name = name
    return p


def test_outside_comfyui_everything_says_it_is_absent():
    assert not comfy.available()
    why = comfy.absent_reason()
    assert why.startswith("ComfyUI's model management is absent") and "comfy" in why
    for f in (comfy.loaded_models, lambda: comfy.free("all"), lambda: comfy.unload_index(0),
              lambda: comfy.register_auxiliary(object(), "k", [])):
        with pytest.raises(comfy.ComfyAbsent, match="model management is absent"):
            f()
    assert comfy.models_text() == why
    assert comfy.install_manager_action(mgr.SmartMemoryManager()) is False
    st = comfy.panel_state(machine=False)
    assert st["comfy"] is False and st["models"] == [] and "absent" in st["comfy_note"]


@pytest.mark.parametrize("text,n", [("512M", 512 * M), ("1.5 GiB", 3 * G // 2), ("2048", 2048),
                                    (4096, 4096), ("1k", 1024), ("0", 0)])
def test_parse_size(text, n):
    assert comfy.parse_size(text) == n


@pytest.mark.parametrize("bad", ["lots", "-1G", "1X", "", None, True, [1], float("nan"), -5])
def test_parse_size_refuses(bad):
    with pytest.raises(ValueError, match="amount must be a size"):
        comfy.parse_size(bad)


def test_loaded_models_view(fake):
    a, b = patcher(fake, 256 * M, "unet"), patcher(fake, 64 * M)
    fake.mm.load_models_gpu([a])
    fake.mm.load_models_gpu([b])
    b.is_dynamic = lambda: True
    ms = comfy.loaded_models()
    assert [m["name"] for m in ms] == ["FakeModule", "unet"]  # most recently used first
    assert ms[1] == {"index": 1, "class": "FakeModule", "name": "unet", "total_bytes": 256 * M,
                     "loaded_bytes": 256 * M, "offloaded_bytes": 0, "device": "cpu",
                     "offload_device": "offload", "dynamic": False, "currently_used": True,
                     "auxiliary_of": None}
    assert ms[0]["dynamic"] is True and ms[0]["total_bytes"] == 64 * M
    text = comfy.models_text()
    assert "ComfyUI loaded models: 2" in text and "unet (FakeModule) on cpu: 256.0 MiB" in text
    assert "dynamic VRAM (comfy-aimdo)" in text
    assert comfy.dynamic_vram()["enabled"] is False


def test_free_input_unloads_that_model_and_says_it_is_still_referenced(fake):
    a, b = patcher(fake, 256 * M, "unet"), patcher(fake, 64 * M, "vae")
    fake.mm.load_models_gpu([a, b])
    res = comfy.free("input", model=a, in_prompt=True)
    assert [m["name"] for m in res.unloaded] == ["unet"]
    assert [lm.model for lm in fake.mm.current_loaded_models] == [b]
    assert a.loaded_size() == 0 and a.model.device == "offload"
    assert res.still_referenced == ["unet"]  # this test's `a` holds it
    text = str(res)
    assert text.startswith("free_memory(balanced, input): 1 model unloaded")
    assert "unloaded unet (FakeModule) from cpu: 256.0 MiB on device before" in text
    # The holder is named; ComfyUI's output cache is not blamed for it.
    (path,) = res.held_by["unet"]
    assert path.startswith("local 'a' of test_free_input_unloads_that_model_and_says_it_is_"
                           "still_referenced() (test_comfy_bridge.py:") and path.endswith(".model")
    assert res.in_output_cache == [] and "free_memory flag" not in text
    assert "unet is still referenced after the unload (its weights stay in RAM): held by " \
        "local 'a'" in text and "ComfyUI's output cache does not hold it" in text
    assert "soft_empty_cache()" in text and "gc.collect()" in text
    assert "soft_empty_cache" in fake.mm.calls
    assert comfy.events()[-1]["kind"] == "free"
    res = comfy.free("input", model=a, in_prompt=True)
    assert res.unloaded == [] and "was not loaded" in str(res)


def test_the_output_cache_is_blamed_only_when_it_holds_the_model(fake):
    caches = CacheSet()
    a = patcher(fake, 256 * M, "unet")
    caches.outputs.cache[("CheckpointLoaderSimple", 4)] = [[a], [None]]
    fake.mm.load_models_gpu([a])
    del a
    res = comfy.free("all", in_prompt=True)
    assert res.still_referenced == ["unet"] and res.in_output_cache == ["unet"]
    assert res.held_by["unet"] == [
        "ComfyUI's caches.outputs.cache[('CheckpointLoaderSimple', 4)][0][0].model"]
    text = str(res)
    assert "ComfyUI's output cache keeps the loader's output (ComfyUI's caches.outputs" in text
    assert "free_memory flag" in text
    caches.outputs.cache.clear()
    # Nothing holds a model Python cannot see: said so.
    res.held_by, res.in_output_cache = {"unet": []}, []
    assert "by nothing Python can see" in str(res)


def test_free_all_sees_what_the_cache_still_holds(fake):
    cache = [patcher(fake, 128 * M, "held"), patcher(fake, 32 * M, "dropped")]
    fake.mm.load_models_gpu(list(cache))
    # ComfyUI's output cache drops the second model's patcher during the
    # free, as its cache reset would; the first stays held.
    fake.mm.soft_empty_cache = lambda: cache.pop()
    res = comfy.free("all")
    assert sorted(m["name"] for m in res.unloaded) == ["dropped", "held"]
    assert fake.mm.current_loaded_models == []
    assert res.still_referenced == ["held"]
    assert "free_memory(all, cpu)" in res.actions


def test_free_amount_unloads_least_recently_used_first(fake):
    fake.mm.capacity["cpu"] = 1 * G
    old, mid, new = (patcher(fake, 300 * M, n) for n in ("old", "mid", "new"))
    for p in (old, mid, new):
        fake.mm.load_models_gpu([p])
    free_before = fake.mm.get_free_memory("cpu")  # 1 G - 900 M
    res = comfy.free("amount", amount="350M")
    assert [m["name"] for m in res.unloaded] == ["old", "mid"]
    assert [lm.model for lm in fake.mm.current_loaded_models] == [new]
    assert fake.mm.get_free_memory("cpu") >= free_before + 350 * M
    res = comfy.free("amount", amount=0)
    assert res.unloaded == []


def test_refusals(fake):
    a = patcher(fake, 16 * M)
    fake.mm.load_models_gpu([a])
    with pytest.raises(comfy.NotAPatcher, match="model must be a ComfyUI MODEL"):
        comfy.free("input", model={"not": "a patcher"}, in_prompt=True)
    with pytest.raises(ValueError, match="target must be one of input, all, amount"):
        comfy.free("everything")
    with pytest.raises(ValueError, match="amount must be a size"):
        comfy.free("amount", amount="lots")
    with pytest.raises(ValueError, match="mode must be one of"):
        comfy.free("all", mode="max")
    with pytest.raises(ValueError, match="out of range: 1 model loaded"):
        comfy.unload_index(3)
    with pytest.raises(ValueError, match="index must be an integer"):
        comfy.unload_index("0")
    fake.queue.currently_running[7] = (0, "prompt-abc", {}, {}, [])
    assert comfy.running_prompts() == ["prompt-abc"]
    with pytest.raises(comfy.PromptRunning, match=r"while a prompt is running \(prompt-abc\)"):
        comfy.unload_index(0)
    with pytest.raises(comfy.PromptRunning, match="unload_models / free_memory flags"):
        comfy.free("all")
    assert len(fake.mm.current_loaded_models) == 1 and a.loaded_size() == 16 * M
    # A node of the running prompt may unload: ComfyUI reloads what it needs.
    assert len(comfy.free("input", model=a, in_prompt=True).unloaded) == 1


def test_unload_index_unloads_one(fake):
    a, b = patcher(fake, 16 * M, "a"), patcher(fake, 8 * M, "b")
    fake.mm.load_models_gpu([a])
    fake.mm.load_models_gpu([b])
    res = comfy.unload_index(1)
    assert [m["name"] for m in res.unloaded] == ["a"] and res.target == "index 1"
    assert [lm.model for lm in fake.mm.current_loaded_models] == [b]


def test_between_prompts_sets_comfyuis_flags(fake):
    text = comfy.request_between_prompts(unload_models=True, free_memory=True)
    assert fake.queue.flags == {"unload_models": True, "free_memory": True}
    assert "unload_models, free_memory" in text


def test_dynamic_models_are_left_to_aimdo(monkeypatch):
    fake = comfy_standin.install(monkeypatch, aimdo=True)
    a, d = patcher(fake, 16 * M, "static"), patcher(fake, 64 * M, "dyn")
    d.is_dynamic = lambda: True
    fake.mm.load_models_gpu([a, d])
    dv = comfy.dynamic_vram()
    assert dv["enabled"] is True and dv["usage_bytes"] == 3 << 30
    res = comfy.free("all")
    assert [m["name"] for m in res.unloaded] == ["static"] and res.left_to_aimdo == ["dyn"]
    assert [lm.model for lm in fake.mm.current_loaded_models] == [d]
    assert "dyn is managed by dynamic VRAM (comfy-aimdo): left to it" in str(res)
    res = comfy.free("input", model=d, in_prompt=True)
    assert res.unloaded == [] and res.left_to_aimdo == ["dyn"] and d.loaded_size() == 64 * M


def test_register_auxiliary_loads_and_offloads_with_the_parent(fake):
    parent = patcher(fake, 256 * M, "unet")
    enc, proj = fake.FakeModule(32 * M), fake.FakeModule(8 * M)
    aux = comfy.register_auxiliary(parent, "ipadapter", [enc, proj])
    assert comfy.auxiliary_models(parent) == aux
    assert [a.model for a in aux] == [enc, proj]
    assert all(a.load_device == "cpu" and a.offload_device == "offload" for a in aux)
    # A node's own load of the parent alone loads them (ComfyUI's
    # load_models_gpu takes the models of the parent's patches).
    fake.mm.load_models_gpu([parent])
    names = sorted(m["name"] for m in comfy.loaded_models())
    assert names == ["ipadapter:FakeModule[0]", "ipadapter:FakeModule[1]", "unet"]
    assert all(m["auxiliary_of"] == "unet" for m in comfy.loaded_models()
               if m["name"] != "unet")
    res = comfy.free("input", model=parent, in_prompt=True)
    assert len(res.unloaded) == 3 and fake.mm.current_loaded_models == []
    assert enc.model_loaded_weight_memory == 0 and enc.device == "offload"
    with pytest.raises(ValueError, match="key must be a non-empty string"):
        comfy.register_auxiliary(parent, "", [enc])
    with pytest.raises(ValueError, match=r"modules\[0\] must be a torch.nn.Module"):
        comfy.register_auxiliary(parent, "k", ["text"])
    with pytest.raises(comfy.NotAPatcher):
        comfy.register_auxiliary(enc, "k", [proj])


def test_auxiliary_models_follow_clones_once_and_a_key_replaces(fake):
    parent = patcher(fake, 256 * M, "unet")
    (enc,) = comfy.register_auxiliary(parent, "enc", fake.FakeModule(32 * M))
    lora = parent.clone()  # what a LoRA or patch node hands on
    assert comfy.auxiliary_models(lora) == [enc]
    # The sampler's load: the clone with its additional models.
    fake.mm.load_models_gpu([lora] + lora.get_nested_additional_models())
    assert [lm.model for lm in fake.mm.current_loaded_models].count(enc) == 1
    assert len(fake.mm.current_loaded_models) == 2
    # A second registration under the same key on the clone replaces it
    # there, and leaves the parent's as it was.
    (other,) = comfy.register_auxiliary(lora, "enc", fake.FakeModule(8 * M))
    assert comfy.auxiliary_models(lora) == [other] and comfy.auxiliary_models(parent) == [enc]
    assert comfy.auxiliary_models(patcher(fake, M)) == []


@pytest.mark.parametrize("after", [True, False])
def test_using_offloads_after_use_when_asked(fake, after):
    parent = patcher(fake, 256 * M, "unet")
    (aux,) = comfy.register_auxiliary(parent, "pre", fake.FakeModule(16 * M),
                                      offload_after_use=after)
    with comfy.using(aux) as m:
        assert m is aux.model and m.device == "cpu" and aux.loaded_size() == 16 * M
        m(1)
    assert m.calls == 1
    loaded = [lm.model for lm in fake.mm.current_loaded_models]
    if after:
        assert aux not in loaded and aux.loaded_size() == 0 and m.device == "offload"
    else:
        assert aux in loaded and aux.loaded_size() == 16 * M


def test_critical_action_frees_lru_when_idle_and_flags_while_running(fake):
    fake.mm.capacity["cpu"] = 1 * G
    old, new = patcher(fake, 400 * M, "old"), patcher(fake, 400 * M, "new")
    fake.mm.load_models_gpu([old])
    fake.mm.load_models_gpu([new])
    st = {"last": {"vram_level": "critical", "ram_level": "ok"},
          "settings": {"vram_warn": 50.0}}
    # 800 of 1024 MiB used, warning at 50 %: 288 MiB to free: the older model goes.
    # Only a mode that unloads models (the table's models column) does so.
    res = comfy.critical_action("balanced", st)
    assert res.unloaded == [] and len(fake.mm.current_loaded_models) == 2
    text = comfy.critical_action("aggressive", st)
    assert "1 model unloaded" in text and "under 50%" in text
    assert [lm.model for lm in fake.mm.current_loaded_models] == [new]
    fake.queue.currently_running[1] = (0, "p1", {}, {}, [])
    text = comfy.critical_action("aggressive", st)
    assert fake.queue.flags == {"unload_models": True} and "between prompts" in text
    assert [lm.model for lm in fake.mm.current_loaded_models] == [new]
    fake.queue.flags.clear()
    st["last"] = {"vram_level": "ok", "ram_level": "critical"}
    text = comfy.critical_action("aggressive", st)
    assert fake.queue.flags == {"free_memory": True} and text.endswith("free_memory")
    # What was asked of ComfyUI is recorded once each; the manager records the action.
    assert [e["text"] for e in comfy.events() if "between prompts" in e["text"]] == [
        "asked ComfyUI to act between prompts: unload_models",
        "asked ComfyUI to act between prompts: free_memory"]


def test_the_manager_runs_the_comfy_action_at_critical(fake):
    fake.mm.capacity["cpu"] = 1 * G
    p = patcher(fake, 900 * M, "big")
    fake.mm.load_models_gpu([p])
    m = mgr.SmartMemoryManager(read=lambda: {"ram_percent": 10.0, "vram_percent": 99.0,
                                             "rss_bytes": 1 << 30})
    m.configure(vram_warn=50.0, vram_critical=90.0, cooldown=60.0, leak_mib_per_min=0,
                mode="aggressive")
    assert comfy.install_manager_action(m) is True
    assert m.step() == "critical"
    assert fake.mm.current_loaded_models == []
    st = m.status()
    assert st["frees"] == 1 and "free_memory(aggressive, amount): 1 model unloaded" in st["events"][-1][1]
    fake.mm.load_models_gpu([p])
    m.step()  # within the cooldown: nothing more
    assert len(fake.mm.current_loaded_models) == 1 and m.status()["frees"] == 1


def test_panel_state(fake):
    fake.mm.load_models_gpu([patcher(fake, 16 * M, "x")])
    gc.collect()
    st = comfy.panel_state(machine=False)
    assert st["comfy"] is True and [m["name"] for m in st["models"]] == []  # x died: weakly held
    keep = patcher(fake, 16 * M, "kept")
    fake.mm.load_models_gpu([keep])
    st = comfy.panel_state(machine=False)
    assert [m["name"] for m in st["models"]] == ["kept"]
    assert st["process"]["rss_bytes"] > 0 and st["host"]["total_bytes"] > 0
    assert st["running_prompts"] == [] and st["dynamic_vram"]["enabled"] is False
    comfy.record("leak", "RSS growing")
    assert st["events"] == [] and comfy.panel_state(machine=False)["events"][-1]["kind"] == "leak"
