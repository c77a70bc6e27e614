"""The Registry's fuller API on CPU modules: partial loads in groups of
submodules (real moves, on a Pool of the host backend), upcoming steps for
lookahead, explicit offload and offload after use, modules still to be
loaded, the low-memory override, a larger variant offered when it fits,
releasable_bytes/release, and bad arguments named."""

import warnings

import pytest

import headroom
from headroom._c import lib as _lib

from conftest import torch_or_skip

MIB = 1 << 20


@pytest.fixture
def torch(fresh_loader, libpath):
    fresh_loader.setenv("HEADROOM_LIB", libpath)
    t = torch_or_skip()
    if not _lib.has("hr_asset_set_busy"):
        pytest.skip("this libheadroom has no hr_asset_set_busy")
    return t


def linear(torch, mib):
    return torch.nn.Linear(1024, mib * 256, bias=False)


def tower(torch, blocks, mib):
    """blocks Linear layers of `mib` MiB each that can run in a row."""
    side = int((mib * MIB / 4) ** 0.5)
    return torch.nn.Sequential(*[torch.nn.Linear(side, side, bias=False) for _ in range(blocks)])


def pool_registry(torch, capacity_mib, budget_mib=None, policy="auto"):
    from headroom.pool import Pool

    p = Pool("host", capacity=capacity_mib * MIB)
    r = headroom.Registry(pool=p, budget_bytes=budget_mib * MIB if budget_mib else None,
                          policy=policy)
    return p, r


def allocated(p):
    return p.stats()["allocated_bytes.all.current"]


def test_partial_load_moves_whole_groups_and_the_module_still_runs(torch):
    p, r = pool_registry(torch, 96, budget_mib=48)
    te = linear(torch, 24)
    big = tower(torch, 8, 4)  # 8 groups of 4 MiB
    x = torch.randn(3, big[0].in_features)
    want = big(x)
    r.register(te, "te", pinned=True)
    assert r.register(big, "big", partial=True) == 32 * MIB
    with r.use(te):
        pass
    with r.use(big, working_bytes=4 * MIB) as plan:
        # 24 pinned + 32 + 4 > 48: 20 MiB of big stays, in 5 whole groups.
        assert plan.actions == [("load_partial", "big", 20 * MIB)]
        info = r.info(big)
        assert info["resident_bytes"] == 20 * MIB and info["groups"] == 8 and info["partial"]
        assert allocated(p) == 44 * MIB  # the pool holds what the registry says
        on = [r._place.on_device(b.weight) for b in big]
        assert on == [True] * 5 + [False] * 3
        with torch.no_grad():  # autograd would keep the streamed weights for backward
            got = big(x)  # the 3 groups on the host are brought in for their forward
        assert torch.allclose(got, want)
        assert allocated(p) == 44 * MIB and not r._place.on_device(big[7].weight)
    # A module that needs room takes it from big in part (lookahead: partial first).
    other = linear(torch, 8)
    r.register(other, "other")
    with r.use(other, working_bytes=4 * MIB, upcoming=[big]) as plan:
        kinds = [k for k, n, _ in plan.actions if n == "big"]
        assert kinds == ["offload_partial"], plan.actions
        assert r.info(big)["resident_bytes"] == 12 * MIB
    assert allocated(p) == (24 + 12 + 8) * MIB
    with r.use(big), torch.no_grad():
        assert torch.allclose(big(x), want)
    r.close()
    p.close()


def sequence_bytes(torch, policy, with_upcoming):
    r = headroom.Registry(device="cpu", budget_bytes=40 * MIB, policy=policy)
    mods = {k: linear(torch, 16) for k in "abc"}
    for k, m in mods.items():
        r.register(m, k)
    seq = list("abcabcabcacb")
    for i, k in enumerate(seq):
        up = [mods[n] for n in seq[i + 1:]] if with_upcoming else None
        with r.use(mods[k], upcoming=up):
            pass
    return r.stats()["bytes_loaded"]


def test_upcoming_steps_let_lookahead_move_less_than_lru(torch):
    lru = sequence_bytes(torch, "lru", False)
    look = sequence_bytes(torch, "lookahead", True)
    auto = sequence_bytes(torch, "auto", True)
    assert lru == 11 * 16 * MIB  # every step but the second to last misses
    assert look < lru and auto == look, (look, lru)


def test_upcoming_forms_and_bad_steps(torch):
    r = headroom.Registry(device="cpu", budget_bytes=64 * MIB, policy="lookahead")
    a, b = linear(torch, 8), linear(torch, 8)
    r.register(a, "a")
    r.register(b, "b")
    with r.use(a, upcoming=[b, [a, "b"], {"use": ["a"], "working_bytes": MIB}, ("a", b)]):
        pass
    with pytest.raises(TypeError, match="upcoming must be a list"):
        r.require(a, upcoming="b")
    with pytest.raises(ValueError, match=r"upcoming\[0\]: a dict step"):
        r.require(a, upcoming=[{"modules": [a]}])
    with pytest.raises(KeyError, match="no module registered as 'zz'"):
        r.require(a, upcoming=["zz"])
    with pytest.raises(TypeError, match=r"upcoming\[0\].working_bytes"):
        r.require(a, upcoming=[{"use": [a], "working_bytes": "1G"}])


def test_offload_and_offload_after(torch):
    p, r = pool_registry(torch, 64, budget_mib=64)
    enc, unet = linear(torch, 8), linear(torch, 16)
    r.register(enc, "clip_vision")
    r.register(unet, "unet", pinned=True)
    with r.use(enc, offload_after=True):
        assert r.resident() == ["clip_vision"] and allocated(p) == 8 * MIB
        with pytest.raises(RuntimeError, match="in use"):
            r.offload(enc)
    assert r.resident() == [] and allocated(p) == 0
    with r.use(unet):
        pass
    assert r.offload(unet) == 16 * MIB  # pinned, but the caller says it is done with it
    assert allocated(p) == 0 and r.info(unet)["resident_bytes"] == 0
    assert r.offload(unet) == 0
    with pytest.raises(ValueError, match="at least one"):
        r.offload()
    r.close()
    p.close()


def test_a_loader_with_an_estimate_loads_on_first_use(torch):
    r = headroom.Registry(device="cpu", budget_bytes=64 * MIB)
    calls = []

    def load():
        calls.append(1)
        return linear(torch, 16)

    assert r.register(load, "late", estimated_bytes=16 * MIB) == 16 * MIB
    assert calls == [] and r.info("late")["groups"] is None
    with r.use("late") as plan:
        assert plan.actions == [("load", "late", 16 * MIB)]
    with r.use("late"):
        pass
    assert calls == [1] and r.info("late")["groups"] == 1
    with pytest.raises(ValueError, match="a loader needs estimated_bytes"):
        r.register(load, "again")
    meta = torch.nn.Linear(1024, 2048, device="meta")
    assert r.register(meta, "meta", estimated_bytes=headroom.estimate_bytes(meta)) == 8396800
    r.register(lambda: 5, "broken", estimated_bytes=MIB)
    with pytest.raises(headroom.ResidencyError, match="returned int, not a torch.nn.Module"):
        r.require("broken")


def test_allow_low_memory_loads_and_says_what_it_risks(torch):
    p, r = pool_registry(torch, 128, budget_mib=32)
    big, mid = linear(torch, 40), linear(torch, 24)
    r.register(big, "big")
    r.register(mid, "mid")
    with pytest.raises(headroom.ResidencyError):
        with r.use(big):
            pass
    with pytest.warns(headroom.LowMemoryWarning, match="outside the budget") as rec:
        with r.use(big, allow_low_memory=True) as plan:
            assert plan.low_memory and "8.0 MiB short" in plan.risk
            assert r._place.on_device(big.weight) and allocated(p) == 40 * MIB
            assert any("CPU" in s for s in plan.suggestions)
    assert "what would fit instead" in str(rec[0].message)
    assert allocated(p) == 0  # back to the host when the block ended
    with pytest.warns(headroom.LowMemoryWarning, match="working memory instead of"):
        with r.use(mid, working_bytes=16 * MIB, allow_low_memory=True) as plan:
            assert "8.0 MiB of working memory instead of 16.0 MiB" in plan.risk
    assert r.resident() == ["mid"]  # counted by the registry: it stays
    r.close()
    p.close()


def test_a_larger_variant_is_offered_when_it_fits(torch):
    r = headroom.Registry(device="cpu", budget_bytes=64 * MIB)
    q8, f16 = linear(torch, 8), linear(torch, 16)
    r.register(q8, "unet", variant="int8")
    r.register(f16, "unet", variant="fp16")
    with r.use(q8, working_bytes=4 * MIB) as plan:
        assert plan.suggestions == [
            "unet:int8 fits with 52.0 MiB to spare: unet:fp16 (16.0 MiB) fits too, with "
            "44.0 MiB to spare"]
    with r.use(q8, working_bytes=50 * MIB) as plan:
        assert plan.suggestions == []  # 6 MiB spare: fp16 needs 8 more
    with r.use(f16) as plan:
        assert plan.suggestions == []  # nothing larger


def test_releasable_bytes_and_release(torch):
    p, r = pool_registry(torch, 64, budget_mib=64, policy="lru")
    a, b, c, pin = (linear(torch, n) for n in (8, 8, 8, 4))
    for m, k in ((a, "a"), (b, "b"), (c, "c")):
        r.register(m, k)
    r.register(pin, "pin", pinned=True)
    for m in (b, c, pin, a):
        with r.use(m):
            pass
    assert r.releasable_bytes() == 24 * MIB
    with r.use(a):
        assert r.releasable_bytes() == 16 * MIB
        assert r.release(1) == 8 * MIB  # the least recently used first: b
        assert r.resident() == ["a", "c", "pin"]
        assert r.release(1 << 40) == 8 * MIB  # c; a is in use, pin pinned
        assert r.release(1) == 0
    assert allocated(p) == 12 * MIB
    assert r.release(0) == 0
    assert r.release(1 << 40) == 8 * MIB and r.releasable_bytes() == 0
    r.require(a)  # a plain require: a is the set in use until the next one
    assert r.releasable_bytes() == 0 and r.release(1) == 0
    r.close()
    p.close()


def test_bad_arguments_are_named(torch):
    r = headroom.Registry(device="cpu", budget_bytes=64 * MIB)
    m = linear(torch, 1)
    r.register(m, "m")
    with pytest.raises(TypeError, match="working_bytes must be an integer"):
        r.require(m, working_bytes="1G")
    with pytest.raises(ValueError, match=r"working_bytes must be an integer in \[0, 18446744073709551615\]"):
        r.require(m, working_bytes=2 ** 64)
    with pytest.raises(ValueError, match="nbytes"):
        r.release(-1)
    with pytest.raises(TypeError, match="nbytes"):
        r.release(1.5)
    with pytest.raises(ValueError, match="estimated_bytes"):
        r.register(linear(torch, 1), "x", estimated_bytes=2 ** 64)
    with pytest.raises(ValueError, match="priority"):
        r.register(linear(torch, 1), "y", priority=2 ** 40)
    with pytest.raises(TypeError, match="variant must be a string"):
        r.register(linear(torch, 1), "z", variant=8)
    with pytest.raises(TypeError, match="torch.nn.Module or a callable"):
        r.register(5, "five")
    with pytest.raises(TypeError, match="device must be"):
        headroom.Registry(device=0, budget_bytes=MIB)
    with pytest.raises(TypeError, match="pool must be a headroom.pool.Pool"):
        headroom.Registry(pool=object())
    with pytest.raises(ValueError, match="patience"):
        headroom.Registry(device="cpu", budget_bytes=MIB, patience=-1)
    r.close()
    with pytest.raises(ValueError, match="the Registry is closed"):
        r.require(m)
    with pytest.raises(ValueError, match="the Registry is closed"):
        r.releasable_bytes()
