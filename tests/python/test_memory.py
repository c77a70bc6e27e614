"""free_memory(): modes, cooldown, what it frees, and its errors."""

import gc
import weakref

import pytest

import headroom
from headroom import memory

MIB = 1 << 20


class Holder:
    pass


def make_cycles(n, size):
    """n reference cycles each holding `size` written bytes; returns weakrefs."""
    refs = []
    for i in range(n):
        a, b = Holder(), Holder()
        a.other, b.other = b, a
        a.data = bytes([i % 251 + 1]) * size  # written, so resident
        refs.append(weakref.ref(a))
    return refs


@pytest.fixture
def no_auto_gc():
    gc.collect()
    gc.disable()
    memory._last_done = None
    yield
    gc.enable()
    memory._last_done = None


def test_wrong_mode_and_cooldown():
    with pytest.raises(ValueError, match="conservative, balanced, aggressive; got 'fast'"):
        headroom.free_memory("fast")
    with pytest.raises(ValueError, match="cooldown must be >= 0"):
        headroom.free_memory("balanced", cooldown=-1)
    with pytest.raises(ValueError, match="max_passes"):
        headroom.free_memory("aggressive", max_passes=0)


def test_balanced_collects_cycles_and_returns_ram(no_auto_gc):
    refs = make_cycles(64, MIB)
    res = headroom.free_memory("balanced")
    assert all(r() is None for r in refs)
    assert any(a.startswith("gc.collect()") for a in res.actions)
    assert any(a.startswith("malloc_trim(0)") for a in res.actions)
    # 64 MiB of garbage became unreachable; at least half of it must leave RSS.
    assert res.ram_freed >= 32 * MIB, str(res)
    assert res.ram_before - res.ram_after == res.ram_freed
    assert "freed" in str(res) and res.passes == 1 and not res.skipped


def test_conservative_does_not_run_gc(no_auto_gc):
    refs = make_cycles(4, 64 * 1024)
    res = headroom.free_memory("conservative")
    assert all(r() is not None for r in refs)  # cycles survive: no gc in conservative
    assert not any(a.startswith("gc.collect") for a in res.actions)
    gc.collect()
    assert all(r() is None for r in refs)


def test_aggressive_repeats_until_nothing_comes_back(no_auto_gc):
    make_cycles(16, MIB)
    res = headroom.free_memory("aggressive", max_passes=4)
    assert 2 <= res.passes <= 4  # the first pass frees 16 MiB, so a second one runs
    assert res.ram_freed >= 8 * MIB


def test_cooldown_skips_calls(no_auto_gc):
    first = headroom.free_memory("balanced", cooldown=60)
    second = headroom.free_memory("balanced", cooldown=60)
    assert not first.skipped and second.skipped
    assert second.ram_freed == 0 and "cooldown" in str(second)
    third = headroom.free_memory("balanced", cooldown=0)
    assert not third.skipped


def test_vram_is_reported_as_unavailable_without_cuda(no_auto_gc):
    res = headroom.free_memory("conservative")
    d = res.as_dict()
    if res.vram_before is None:
        assert d["vram_freed"] is None and res.vram_note
        assert "VRAM n/a" in str(res)
    else:  # a machine with CUDA in use
        assert d["vram_freed"] == res.vram_before - res.vram_after
