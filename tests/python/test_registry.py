"""headroom.Registry on CPU modules with a CPU budget: the C registry decides,
the Python side measures and moves modules. Needs torch (Debian's CPU-only
python3-torch is enough)."""

import pytest

import headroom
from headroom._c import lib as _lib
from headroom.pytorch.registry import module_bytes

from conftest import torch_or_skip

MIB = 1 << 20


@pytest.fixture
def torch(fresh_loader, libpath):
    fresh_loader.setenv("HEADROOM_LIB", libpath)
    t = torch_or_skip()
    if not _lib.has("hr_residency_require"):
        pytest.skip("this libheadroom has no residency")
    return t


def linear(torch, mib):
    """A Linear layer of about `mib` MiB (weights only, float32)."""
    return torch.nn.Linear(1024, mib * 256, bias=False)


def test_bytes_are_measured_once_per_storage(torch):
    m = torch.nn.Linear(1024, 8192)
    assert module_bytes(m) == (1024 * 8192 + 8192) * 4
    tied = torch.nn.Module()
    tied.a = torch.nn.Linear(64, 64, bias=False)
    tied.b = torch.nn.Linear(64, 64, bias=False)
    tied.b.weight = tied.a.weight
    tied.register_buffer("scale", torch.ones(16))
    assert module_bytes(tied) == 64 * 64 * 4 + 16 * 4


def test_use_loads_and_offloads_the_least_recently_used(torch):
    r = headroom.Registry(device="cpu", budget_bytes=100 * MIB, policy="lru")
    a, b, c = (linear(torch, n) for n in (32, 32, 48))
    assert r.register(a, "a") == 32 * MIB
    r.register(b, "b")
    r.register(c, "c")
    assert r.resident() == []  # on the CPU device, modules start offloaded
    with r.use(a, working_bytes=8 * MIB) as plan:
        assert plan.actions == [("load", "a", 32 * MIB)]
    with r.use(b, working_bytes=8 * MIB):
        pass
    assert r.resident() == ["a", "b"]
    with r.use(c, working_bytes=8 * MIB) as plan:
        # 32 + 32 + 48 + 8 > 100: the least recently used, a, goes.
        assert ("offload", "a", 32 * MIB) in plan.actions
        assert ("load", "c", 48 * MIB) in plan.actions
        assert plan.bytes_offloaded == 32 * MIB and plan.capacity_bytes == 100 * MIB
    assert r.resident() == ["b", "c"]
    st = r.stats()
    assert st["loads"] == 3 and st["offloads"] == 1 and st["assets"] == 3


def test_refusal_is_readable_and_changes_nothing(torch):
    r = headroom.Registry(device="cpu", budget_bytes=64 * MIB)
    unet = linear(torch, 40)
    small = linear(torch, 20)
    r.register(unet, "unet", variant="fp16")
    r.register(linear(torch, 16), "unet", variant="fp8")
    r.register(small, "clip")
    with r.use(small):
        pass
    before = r.resident()
    with pytest.raises(headroom.ResidencyError) as ei:
        with r.use(unet, small, working_bytes=16 * MIB):
            pytest.fail("the block must not run")
    e = ei.value
    assert e.name == "HR_ENOSPC" and e.short_bytes == 12 * MIB
    assert "unet" in e.message and e.suggestions
    text = str(e)
    assert "suggestions:\n  - " in text
    assert any("fp8" in s for s in e.suggestions), e.suggestions
    assert r.resident() == before
    assert r.stats()["refusals"] == 1


def test_pinned_modules_stay_and_groups_load_together(torch):
    r = headroom.Registry(device="cpu", budget_bytes=64 * MIB)
    te = linear(torch, 24)
    unet = linear(torch, 24)
    lora = linear(torch, 8)
    r.register(te, "text_encoder", pinned=True)
    r.register(unet, "unet")
    r.register(lora, "lora", group=unet)
    with r.use(te):
        pass
    with r.use(unet, working_bytes=4 * MIB) as plan:
        names = [n for k, n, _ in plan.actions if k == "load"]
        assert sorted(names) == ["lora", "unet"]
    assert r.info(lora)["group"] == "unet"
    with pytest.raises(headroom.ResidencyError) as ei:
        r.require(unet, working_bytes=20 * MIB)  # 24 + 24 + 8 + 20 > 64 with te pinned
    assert any("unpin" in s for s in ei.value.suggestions), ei.value.suggestions
    assert "text_encoder" in r.resident()


def test_offloadable_bytes_skip_modules_in_use(torch):
    # On the CPU a module is given back by dropping it, so only one with a
    # loader counts.
    r = headroom.Registry(device="cpu", budget_bytes=128 * MIB)
    r.register(lambda: linear(torch, 16), "a", estimated_bytes=16 * MIB)
    r.register(lambda: linear(torch, 32), "b", estimated_bytes=32 * MIB, pinned=True)
    r.register(linear(torch, 8), "no_loader")
    with r.use("a", "b", "no_loader"):
        assert r.offloadable_bytes() == 0  # a is in use, b is pinned
    assert r.offloadable_bytes() == 16 * MIB
    choice = headroom.pytorch.device_choice.decide(40 * MIB, 30 * MIB, r.offloadable_bytes())
    assert choice.is_gpu and choice.offload_bytes == 10 * MIB


def test_a_failing_move_becomes_an_error(torch):
    r = headroom.Registry(device="cpu", budget_bytes=64 * MIB)
    m = linear(torch, 8)

    def broken(*a, **k):
        raise RuntimeError("disk on fire")

    r.register(m, "m")
    r._place.moves = True
    r._place.on_device = lambda t: False
    r._place.to_device = broken
    with pytest.raises(headroom.ResidencyError, match="disk on fire"):
        r.require(m)


def test_bad_input(torch):
    with pytest.raises(ValueError, match="needs a budget_bytes"):
        headroom.Registry(device="cpu")
    with pytest.raises(ValueError, match="policy must be one of auto, comfy, lru, lookahead"):
        headroom.Registry(device="cpu", budget_bytes=MIB, policy="mru")
    with pytest.raises(ValueError, match="budget_bytes must be"):
        headroom.Registry(device="cpu", budget_bytes=-5)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            headroom.Registry(device="cuda:0", budget_bytes=MIB)
    r = headroom.Registry(device="cpu", budget_bytes=64 * MIB)
    m = linear(torch, 1)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        r.register(object(), "x")
    with pytest.raises(ValueError, match="no parameters"):
        r.register(torch.nn.ReLU(), "relu")
    r.register(m, "m")
    with pytest.raises(ValueError, match="already registered as 'm'"):
        r.register(m, "again")
    with pytest.raises(headroom.HeadroomError, match="HR_EEXIST"):
        r.register(linear(torch, 1), "m")
    with pytest.raises(KeyError, match="not registered"):
        r.require(linear(torch, 1))
    with pytest.raises(KeyError, match="no module registered as 'vae'"):
        r.require("vae")
    with pytest.raises(ValueError, match="working_bytes"):
        r.require(m, working_bytes=-1)
    with pytest.raises(ValueError, match="at least one"):
        r.require()
    assert r.require("m").actions == [("load", "m", MIB)]
    r.unregister(m)
    assert r.stats()["assets"] == 0


def test_a_closed_registry_raises_and_numbers_are_range_checked(torch):
    m = linear(torch, 1)
    with headroom.Registry(device="cpu", budget_bytes=100 * MIB) as r:
        r.register(m, "m")
        with r.use(m):
            pass
    for use in (lambda: r.register(linear(torch, 1), "n"), lambda: r.info(m), r.stats,
                lambda: r.require(m), lambda: r.unregister(m), r.resident):
        with pytest.raises(ValueError, match="the Registry is closed"):
            use()
    r.close()
    with pytest.raises(ValueError, match=r"budget_bytes must be an integer in \[0, "):
        headroom.Registry(device="cpu", budget_bytes=1 << 64)
    r = headroom.Registry(device="cpu", budget_bytes=100 * MIB)
    with pytest.raises(ValueError, match=r"priority must be an integer in \[-2147483648, "):
        r.register(linear(torch, 1), "big", priority=1 << 31)
    r.register(m, "m")
    with pytest.raises(ValueError, match="working_bytes must be an integer in"):
        r.require(m, working_bytes=1 << 64)
    r.close()


def loaded(r, torch, name, mib, **kw):
    """Registers a loader of a Linear of `mib` MiB as `name`: on the CPU a
    registry gives memory back by dropping such a module (release())."""
    r.register(lambda: linear(torch, mib), name, estimated_bytes=mib * MIB, **kw)


def released(r):
    """release() of everything idle: the bytes it measured coming back and
    the names it dropped."""
    before = set(r.resident())
    got = r.release(1 << 40)
    return got, before - set(r.resident())


def test_nested_and_grouped_use_keep_the_c_registrys_books(torch):
    """use() makes the module's group busy in the C registry while any of the
    group's modules is inside a use() block, and idle when the last block
    ends; every use counts in the C registry's books as a require does."""
    r = headroom.Registry(device="cpu", budget_bytes=64 * MIB, policy="lru")
    loaded(r, torch, "a", 8)
    loaded(r, torch, "b", 8)
    loaded(r, torch, "child", 4, group="a")
    with r.use("b"):
        pass
    with r.use("a"):
        with r.use("child"):
            with r.use("a"):
                assert r.info("a")["busy"] and r.info("child")["busy"]
            got, dropped = released(r)
            assert dropped == {"b"} and got > 0  # b only: a's group is in a block
            assert sorted(r.resident()) == ["a", "child"]
        assert released(r) == (0, set())  # a's block is still open
    assert not r.info("a")["busy"]
    got, dropped = released(r)
    assert dropped == {"a", "child"} and got > 0 and r.resident() == []
    uses = r.info("a")["uses"]
    for _ in range(5):
        with r.use("child"):
            pass
    assert r.info("a")["uses"] == uses + 5 and r.info("child")["uses"] == r.info("a")["uses"]
    # The parent unregistered inside its member's block: the block still ends
    # cleanly and the member becomes idle on its own.
    with r.use("child"):
        r.unregister("a")
    assert r.info("child")["group"] == "child"
    got, dropped = released(r)
    assert dropped == {"child"} and got > 0
    r.close()


def test_a_loop_calls_the_library_once_a_step(torch):
    """A use() block calls the C registry once (hr_residency_use: require and
    mark busy); the C registry learns that the block ended at the next call
    into it, before anything there could act on the mark: a use() of the
    same module keeps it busy, anything else marks it idle first."""
    r = headroom.Registry(device="cpu", budget_bytes=64 * MIB, policy="lru")
    loaded(r, torch, "m", 2)
    loaded(r, torch, "other", 4)
    calls = []
    for name in ("_c_use", "_c_busy", "_c_require"):
        real = getattr(r, name)
        setattr(r, name, lambda *a, _n=name, _f=real: calls.append((_n,) + a[1:]) or _f(*a))
    with r.use("m") as plan:
        assert plan.actions == [("load", "m", 2 * MIB)] and plan.bytes_loaded == 2 * MIB
    for _ in range(3):
        with r.use("m") as plan:
            assert plan.actions == [] and plan.used_bytes == 2 * MIB
    assert [c[0] for c in calls] == ["_c_use"] * 4
    calls.clear()
    with r.use("other"):  # another set: m's group is marked idle first
        pass
    assert [c[0] for c in calls] == ["_c_busy", "_c_use"] and calls[0][1:] == (1, False)
    calls.clear()
    got, dropped = released(r)  # both idle: the mark of other's block settles first
    assert dropped == {"m", "other"} and got > 0
    assert calls == [("_c_busy", 2, False)]
    u = r.use("m")
    with u:
        with pytest.raises(RuntimeError, match="already open"):
            u.__enter__()
    with u:  # a finished block may be opened again
        pass
    r.close()


def test_an_ended_block_is_idle_to_every_caller(torch):
    """Between blocks a module is idle for a reclaim from another thread, an
    offload, an unregister and a plain require of another set, though the C
    registry hears of it only at that call."""
    import threading

    r = headroom.Registry(device="cpu", budget_bytes=16 * MIB, policy="lru")
    for k in ("a", "b", "c"):
        loaded(r, torch, k, 8)
    with r.use("a"):
        pass
    got = []
    t = threading.Thread(target=lambda: got.append(released(r)))
    t.start()
    t.join()
    assert got[0][1] == {"a"} and got[0][0] > 0 and r.resident() == []
    with r.use("a"):
        pass
    with r.use("b"):
        pass
    r.require("c", working_bytes=8 * MIB)  # needs a and b gone: neither is busy any more
    assert r.resident() == ["c"]
    with r.use("c"):
        pass
    assert r.offload("c") == 8 * MIB
    with r.use("a"):
        pass
    r.unregister("a")
    with r.use("b"):  # nothing about a is left to settle
        pass
    assert r.stats()["assets"] == 2
    r.close()
