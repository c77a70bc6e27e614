"""ComfyUI's agent for the broker (headroom.comfy.broker_client) against the
stand-in of ComfyUI (tests/python/comfy_standin: NOT ComfyUI; the real one
is checked in integrations/comfyui/VERIFIED.md), with a real `headroom
watch` running the broker: the loaded models are offered item by item,
least recently used first, a release unloads through the bridge and is
answered with the bytes the unloaded models held, a running prompt gets
ComfyUI's between-prompts flags instead, and the node pack's thread
connects by itself when a broker's socket exists, unless comfy_agent is
off."""

import os
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import comfy_standin  # noqa: E402
from broker_fixtures import MiB, cli_path, wait_for  # noqa: E402

from headroom import agent, comfy  # noqa: E402
from headroom.comfy import broker_client, models as comfy_models  # noqa: E402

pytestmark = pytest.mark.skipif(not os.path.exists(cli_path()),
                                reason="headroom CLI not built (set HEADROOM_CLI)")


@pytest.fixture
def fake(monkeypatch):
    with comfy_models._events_lock:
        del comfy_models._events[:]
    return comfy_standin.install(monkeypatch)


class CacheSet:
    """ComfyUI's execution.CacheSet as a holder search sees it."""

    def __init__(self):
        self.outputs = type("HierarchicalCache", (), {})()
        self.outputs.cache = {}


CacheSet.__module__ = "execution"


def load(fake, name, nbytes, caches):
    p = fake.mp.ModelPatcher(fake.FakeModule(nbytes), "cpu", "offload")
    p.headroom_name = name
    caches.outputs.cache[name] = [[p]]  # a loader node's output, in the output cache
    fake.mm.load_models_gpu([p])
    return p


def client(b, pid):
    for c in b.status()["clients"]:
        if c["pid"] == pid:
            return c
    return None


def test_offers_loaded_models_and_unloads_through_the_bridge(fake, broker):
    keep = CacheSet()
    load(fake, "vae", 64 * MiB, keep)
    load(fake, "unet", 300 * MiB, keep)  # the most recently used
    models = broker_client.ComfyModels()
    a = agent.connect(priority=0, registry=models, name="comfyui", path=broker.path,
                      interval=0.2)
    try:
        c = wait_for(lambda: (client(broker, os.getpid()) or {}).get("items") and
                     client(broker, os.getpid()))
        items = {x["name"]: x for x in c["items"]}
        assert set(items) == {"comfyui:unet", "comfyui:vae"}
        assert items["comfyui:unet"]["bytes"] == 300 * MiB
        assert items["comfyui:vae"]["kind"] == "model" and items["comfyui:vae"]["device"] == "host"
        assert c["releasable_bytes"]["host"] == 364 * MiB
        # The least recently used shows the longer idle time.
        time.sleep(1.2)
        ids = {x["name"]: x["idle_s"] for x in models.offer_items()}
        assert ids["comfyui:vae"] > ids["comfyui:unet"]

        # A release for 50 MiB: ComfyUI's free_memory unloads least recently
        # used first, so the VAE (64 MiB) goes and the UNet stays.
        got = a.release("host", 50 * MiB)
        assert got == 64 * MiB
        assert [m["name"] for m in comfy.loaded_models()] == ["unet"]
        # The output cache (keep) still holds the VAE: the agent asked the
        # worker to reset it without unloading the rest.
        assert models.last_result.still_referenced == ["vae"]
        assert models.last_result.in_output_cache == ["vae"]
        assert fake.queue.flags == {"unload_models": False, "free_memory": True}

        # A release asked through the broker is answered with the bytes.
        fake.queue.flags.clear()
        free0 = broker.status()["resources"][0]["free_bytes"]
        # The broker refuses as soon as every release asked is answered; the
        # timeout only bounds the wait for the answer on a loaded machine.
        r = broker.cli("reserve", str(free0 + 100 * MiB), "--device", "host", "--timeout",
                       "60s", "--json", "--", "true")
        ans = wait_for(lambda: [e for e in broker.events("answer") if e["name"] == "comfyui"])
        assert ans and ans[0]["released_bytes"] == 300 * MiB, r.stderr
        assert comfy.loaded_models() == []
        # The stand-in's models are not real memory: nothing came free, so
        # the broker refused (the real ComfyUI is granted: VERIFIED.md).
        assert r.returncode == 75
    finally:
        a.close()


def test_a_running_prompt_gets_the_between_prompts_flags(fake):
    keep = CacheSet()
    load(fake, "unet", 100 * MiB, keep)
    fake.queue.currently_running = {1: (0, "prompt-7")}
    models = broker_client.ComfyModels(wait_s=0.3)
    t0 = time.monotonic()
    assert models.release_device("host", 10 * MiB) == 0  # nothing went within wait_s
    assert time.monotonic() - t0 >= 0.3
    assert fake.queue.flags == {"unload_models": True, "free_memory": True}
    assert [m["name"] for m in comfy.loaded_models()] == ["unet"]  # not pulled from the prompt
    assert models.release_device("gpu0", 0) == 0


def test_the_pack_thread_connects_when_a_broker_runs(fake, broker, monkeypatch):
    broker_client.stop()  # importing the node pack (other tests) started it
    monkeypatch.setenv("HEADROOM_BROKER_SOCKET", broker.path)
    keep = CacheSet()
    load(fake, "unet", 128 * MiB, keep)
    monkeypatch.setenv("HEADROOM_COMFY_AGENT", "0")
    monkeypatch.setattr(broker_client, "enabled", lambda: False)
    assert broker_client.start() is False
    monkeypatch.undo()
    fake = comfy_standin.install(monkeypatch)
    load(fake, "unet", 128 * MiB, keep)
    monkeypatch.setenv("HEADROOM_BROKER_SOCKET", broker.path)
    assert broker_client.start(interval=0.2) is True
    try:
        c = wait_for(lambda: client(broker, os.getpid()), timeout=10)
        assert c and c["name"] == "comfyui"
        assert wait_for(lambda: client(broker, os.getpid())["releasable_bytes"]["host"]
                        == 128 * MiB)
    finally:
        broker_client.stop()
    assert wait_for(lambda: client(broker, os.getpid()) is None)


def test_comfy_agent_option_reads_the_environment(monkeypatch):
    from headroom import options
    monkeypatch.setenv("HEADROOM_COMFY_AGENT", "0")
    o = options.Options()
    o.load_defaults()
    assert o.get("comfy_agent") is False
    monkeypatch.setenv("HEADROOM_COMFY_AGENT", "maybe")
    o = options.Options()
    with pytest.raises(Exception, match="comfy_agent"):
        o.load_defaults()


def test_where_the_offload_device_is_the_device_whole_models_go(fake):
    # As with ComfyUI --cpu: a partial unload would move nothing, so the
    # agent unloads whole models, least recently used first, until enough.
    keep = CacheSet()
    for name, n in (("old", 100 * MiB), ("mid", 50 * MiB), ("new", 200 * MiB)):
        p = fake.mp.ModelPatcher(fake.FakeModule(n), "cpu", "cpu")
        p.headroom_name = name
        keep.outputs.cache[name] = [[p]]
        fake.mm.load_models_gpu([p])
    del p
    models = broker_client.ComfyModels()
    assert models.release_device("host", 120 * MiB) == 150 * MiB  # "old", then "mid"
    assert [m["name"] for m in comfy.loaded_models()] == ["new"]
    # The output cache holds the unloaded ones: the worker is asked to reset it.
    assert fake.queue.flags == {"unload_models": False, "free_memory": True}
    # Held elsewhere (a script's variable), resetting the cache would not help.
    fake.queue.flags.clear()
    other = fake.mp.ModelPatcher(fake.FakeModule(10 * MiB), "cpu", "cpu")
    other.headroom_name = "script"
    fake.mm.load_models_gpu([other])
    keep.outputs.cache.clear()
    models.release_device("host", 300 * MiB)
    assert models.last_result.still_referenced == ["script"]
    assert models.last_result.in_output_cache == [] and fake.queue.flags == {}
