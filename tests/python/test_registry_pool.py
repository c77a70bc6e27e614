"""The out-of-memory path on the CPU: a Pool on the host backend, a Registry
whose modules' weights live in that pool, and an allocation that fits only
after the pool's reclaimer (the registry) offloads idle modules; tags in
the out-of-memory message; and who still holds memory an offload should
have returned (a global list, a reference cycle)."""

import gc
import warnings

import pytest

import headroom
from headroom._c import lib as _lib

from conftest import torch_or_skip

MIB = 1 << 20
KEPT = []  # a global that keeps a tensor alive, as a careless cache would


@pytest.fixture
def torch(fresh_loader, libpath):
    fresh_loader.setenv("HEADROOM_LIB", libpath)
    t = torch_or_skip()
    if not _lib.has("hr_asset_set_busy") or not _lib.has("hr_pool_add_reclaimer"):
        pytest.skip("this libheadroom has no reclaimer API")
    yield t
    KEPT.clear()


def linear(torch, mib):
    return torch.nn.Linear(1024, mib * 256, bias=False)


def pool_and_registry(torch, capacity_mib):
    from headroom.pool import Pool

    # Garbage left by earlier tests may hold tensors whose storage lay in a
    # pool since closed, at the addresses this new pool hands out again: the
    # report of what holds memory would count them. Collect it first.
    gc.collect()
    p = Pool("host", capacity=capacity_mib * MIB)
    return p, headroom.Registry(pool=p)


def loaded(torch, r, mib, name):
    """A module of `mib` MiB registered as `name` and used once: on the
    device, idle."""
    m = linear(torch, mib)
    r.register(m, name)
    with r.use(m):
        pass
    return m


def allocated(p):
    return p.stats()["allocated_bytes.all.current"]


def test_an_allocation_that_fails_offloads_idle_modules_and_succeeds(torch):
    p, r = pool_and_registry(torch, 48)
    a, b = linear(torch, 16), linear(torch, 16)
    want = a.weight.detach().clone()
    r.register(a, "a")
    r.register(b, "b")
    with r.use(a), r.use(b):
        pass
    assert r.resident() == ["a", "b"] and allocated(p) == 32 * MIB
    x = p.alloc(24 * MIB)  # 16 free: only fits once a registered module is offloaded
    assert allocated(p) < 48 * MIB and r.stats()["reclaims"] >= 1
    assert r.resident() in (["b"], [])  # the least recently used went first
    assert torch.equal(a.weight, want)  # the weights came back to the host intact
    st = p.stats()
    assert st["num_alloc_retries"] >= 1 and st["num_ooms"] == 0
    p.free(x)
    with r.use(a):  # and it loads again
        assert r._place.on_device(a.weight) and torch.equal(a.weight, want)
    r.close()
    p.close()


def test_a_registry_closed_before_its_pool_is_no_longer_its_reclaimer(torch):
    p, r = pool_and_registry(torch, 48)
    a = loaded(torch, r, 16, "a")
    r.close()  # the last registry on the pool: the pool's callback is taken back
    before = p.stats()["num_alloc_retries"]
    with pytest.raises(headroom.HeadroomError):
        p.alloc(40 * MIB)
    assert p.stats()["num_alloc_retries"] == before  # no reclaimer was asked
    # A new registry on the same pool is its reclaimer again: 24 MiB are
    # free, 28 fit once its idle module is offloaded.
    r2 = headroom.Registry(pool=p)
    loaded(torch, r2, 8, "b")
    x = p.alloc(28 * MIB)
    assert p.stats()["num_alloc_retries"] == before + 1 and r2.resident() == []
    p.free(x)
    r2.close()
    del a
    gc.collect()
    p.close()


def test_modules_in_use_are_not_reclaimed_and_the_message_names_tags(torch):
    p, r = pool_and_registry(torch, 48)
    a, b = linear(torch, 16), linear(torch, 16)
    r.register(a, "unet")
    r.register(b, "vae")
    with r.use(a, b):
        with headroom.tag("latents"):
            with pytest.raises(headroom.HeadroomError) as ei:
                p.alloc(24 * MIB)
    msg = str(ei.value)
    assert "out of memory" in msg and ei.value.name == "HR_ENOMEM"
    # Live bytes by tag: the registry tags what it loads with the module's name.
    assert "unet 16.00 MiB" in msg and "vae 16.00 MiB" in msg, msg
    assert r.resident() == ["unet", "vae"]
    with headroom.tag("latents"):
        x = p.alloc(24 * MIB)  # outside the block they are idle: room is made
    assert r.resident() != ["unet", "vae"]
    p.free(x)
    with pytest.raises(ValueError, match="tag name"):
        with headroom.tag(""):
            pass
    r.close()
    p.close()


def test_two_registries_on_one_pool_both_give_back(torch):
    from headroom.pool import Pool

    p = Pool("host", capacity=48 * MIB)
    r1, r2 = headroom.Registry(pool=p), headroom.Registry(pool=p)
    a, b = linear(torch, 16), linear(torch, 16)
    r1.register(a, "a")
    r2.register(b, "b")
    for r, m in ((r1, a), (r2, b)):
        with r.use(m):
            pass
    x = p.alloc(40 * MIB)
    assert r1.resident() == [] and r2.resident() == []
    p.free(x)
    r1.close()  # a closed registry is no longer asked
    with r2.use(b):
        pass
    with pytest.raises(headroom.HeadroomError, match="out of memory"):
        with r2.use(b):
            p.alloc(40 * MIB)
    r2.close()
    p.close()


def test_an_offload_held_back_by_a_global_names_it(torch):
    p, r = pool_and_registry(torch, 64)
    m = loaded(torch, r, 16, "ip_adapter")
    KEPT.append(m.weight.detach())  # shares the storage in the pool
    with pytest.warns(headroom.MemoryNotReturnedWarning, match="offloading ip_adapter moved "
                      "16.0 MiB to the host but gave back only 0 B") as rec:
        r.offload(m)
    text = str(rec[0].message)
    assert "held by test_registry_pool.KEPT[0]" in text, text
    h = r.last_holders
    assert h.bytes_alive == 16 * MIB and h.module == "ip_adapter" and not h.cycles
    assert allocated(p) == 16 * MIB
    KEPT.clear()
    assert allocated(p) == 0  # let go: the block went back to the pool
    r.close()
    p.close()


def test_an_offload_held_back_by_a_cycle_collects_it(torch):
    p, r = pool_and_registry(torch, 64)
    m = loaded(torch, r, 16, "clip_vision")
    enabled = gc.isenabled()
    gc.disable()  # so that the cycle lives until the report's own collection
    try:
        cache = {"embeds": m.weight.detach()}
        cache["self"] = cache
        del cache
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            r.offload(m)
    finally:
        if enabled:
            gc.enable()
    msgs = [str(w.message) for w in rec if w.category is headroom.MemoryNotReturnedWarning]
    assert len(msgs) == 1, [str(w.message) for w in rec]
    h = r.last_holders
    assert h.bytes_in_cycles == 16 * MIB and h.bytes_alive == 0 and len(h.cycles) == 1
    assert "kept alive only by reference cycles" in msgs[0]
    # The path around the cycle and where the tensor hangs from it, on
    # PyTorch 1.13 and 2.x alike.
    assert h.cycles[0].endswith("held by a dict['embeds'], in the cycle a dict['self'] -> "
                                "the dict"), h.cycles
    assert h.note == ""
    assert allocated(p) == 0  # collected, and the block is back in the pool
    r.close()
    p.close()
