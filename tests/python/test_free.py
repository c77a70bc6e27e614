"""free_memory(): the modes as libheadroom's table says them, cooldown, what
it frees (caches, garbage, idle registered modules, a pool's cache), measured
from the process's own readings, its targets, and its errors."""

import gc
import os
import weakref

import pytest

import headroom
from headroom import free
from headroom._c import cleanup

from conftest import torch_or_skip

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
def no_auto_gc(fresh_loader, libpath):
    fresh_loader.setenv("HEADROOM_LIB", libpath)
    gc.collect()
    gc.disable()
    free._last_done = None
    yield
    gc.enable()
    free._last_done = None


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


def test_the_modes_are_the_library_table(fresh_loader, libpath):
    fresh_loader.setenv("HEADROOM_LIB", libpath)
    rows = cleanup.modes()
    assert tuple(m["name"] for m in rows) == headroom.MODES == free.MODES
    by = {m["name"]: m for m in rows}
    assert [by[m]["collect"] for m in free.MODES] == [False, True, True]
    assert [by[m]["idle_modules"] for m in free.MODES] == [False, False, True]
    assert by["aggressive"]["max_passes"] > 1 == by["balanced"]["max_passes"]
    # What a mode does follows its row: the table is read, not retyped.
    assert free.FreeResult("balanced").mode == "balanced"
    with pytest.raises(ValueError, match="mode must be one of"):
        cleanup.mode("fast")


def test_bad_targets(no_auto_gc):
    with pytest.raises(ValueError, match="target must be None"):
        headroom.free_memory("balanced", target="everything")
    with pytest.raises(headroom.comfy.NotAPatcher, match="registered in an open headroom "
                                                         "Registry or a ComfyUI MODEL"):
        headroom.free_memory("balanced", target="input", model={"not": "a model"})
    with pytest.raises(ValueError, match="amount must be a size"):
        headroom.free_memory("balanced", target="amount", amount="lots")


def test_an_open_pools_cache_is_released_by_every_mode(no_auto_gc):
    with headroom.Pool("host", capacity=256 * MIB) as p:
        p.free(p.alloc(64 * MIB))
        assert p.stats()["reserved_bytes.all.current"] >= 64 * MIB
        res = headroom.free_memory("conservative")
        assert p.stats()["reserved_bytes.all.current"] == 0
        assert any(a.startswith("headroom Pool release (1 pool, 64.0 MiB)")
                   for a in res.actions), res.actions


@pytest.fixture
def pool_registry(no_auto_gc):
    """A Registry whose modules' weights live in a host Pool: an offload
    really returns memory, which the process's RSS shows."""
    torch = torch_or_skip()
    gc.collect()
    p = headroom.Pool("host", capacity=512 * MIB)
    r = headroom.Registry(pool=p)
    a = torch.nn.Linear(1024, 64 * 256, bias=False)  # 64 MiB
    b = torch.nn.Linear(1024, 16 * 256, bias=False)  # 16 MiB
    r.register(a, "a")
    r.register(b, "b")
    with r.use(a, b):
        pass
    yield r, a, b, p
    r.close()
    p.close()


def test_only_aggressive_offloads_idle_modules_measured_not_booked(pool_registry):
    r, a, _b, p = pool_registry
    for mode in ("conservative", "balanced"):
        res = headroom.free_memory(mode)
        assert r.resident() == ["a", "b"], (mode, str(res))
        assert res.unloaded == [] and not any("offloaded" in x for x in res.actions)
    res = headroom.free_memory("aggressive")
    assert r.resident() == []
    assert any(x.startswith("offloaded idle modules of 1 registry (80.0 MiB moved)")
               for x in res.actions), res.actions
    # The weights moved out of the pool and its segments went back; the
    # pool's "device" is host memory here, so the move leaves this process's
    # RSS about where it was, and the result says that (measured), not the
    # 80 MiB the registry booked as moved.
    assert p.stats()["reserved_bytes.all.current"] == 0
    assert abs(res.ram_freed) < 40 * MIB, str(res)
    with r.use(a):
        assert r.resident() == ["a"]  # and it loads again


def test_targets_unload_in_any_mode(pool_registry):
    r, a, b, _p = pool_registry
    with r.use(b):  # busy: no target may take it
        res = headroom.free_memory("conservative", target="input", model=a)
        assert r.resident() == ["b"]
        assert [m["name"] for m in res.unloaded] == ["a"] and res.unloaded[0]["loaded_bytes"] \
            == 64 * MIB
        assert str(res).startswith("free_memory(conservative, input): 1 model unloaded; RAM")
        res = headroom.free_memory("conservative", target="all")
        assert r.resident() == ["b"] and "0 B moved" in " ".join(res.actions)
    with r.use(a):
        pass
    res = headroom.free_memory("balanced", target="amount", amount="1M")
    assert len(r.resident()) == 1  # one module was enough: the least recently used went
    res = headroom.free_memory("balanced", target="all")
    assert r.resident() == []


def test_the_docs_show_the_library_table(fresh_loader, libpath):
    # docs/freeing-memory.md writes the table out once; it must say what the
    # library's rows say, column by column.
    fresh_loader.setenv("HEADROOM_LIB", libpath)
    from conftest import REPO

    with open(os.path.join(REPO, "docs", "freeing-memory.md")) as f:
        rows = [[c.strip() for c in line.strip().strip("|").split("|")]
                for line in f if line.startswith("| `")]
    cols = ("caches", "collect", "idle_modules", "models", "passes", "hooks", "drop_caches")
    lib = cleanup.modes()
    assert [r[0].split("`")[1] for r in rows] == [m["name"] for m in lib]
    for r, m in zip(rows, lib):
        for col, cell in zip(cols, r[1:]):
            if col == "passes":
                want = "1" if m["max_passes"] == 1 else "up to %d, while a pass frees %d MiB " \
                    "or more" % (m["max_passes"], m["min_pass_bytes"] >> 20)
                assert cell == want, (m["name"], col)
            else:
                assert cell == ("yes" if m[col] else "no"), (m["name"], col)


def test_watch_help_prints_the_library_table(fresh_loader, libpath):
    fresh_loader.setenv("HEADROOM_LIB", libpath)
    import subprocess

    from conftest import cli_or_skip

    r = subprocess.run([cli_or_skip(), "watch", "--help"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split())  # the help wraps lines
    for m in cleanup.modes():
        assert "%s: %s" % (m["name"], m["summary"]) in text, m["name"]
