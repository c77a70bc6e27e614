"""Levels with hysteresis and the leak test, in Python and through libheadroom."""

import random

import pytest

from headroom import manager as mgr, watch

MIB = 1 << 20


def walk(values, use_native):
    cur, out = "ok", []
    for v in values:
        cur = watch.level_update(cur, v, 80, 90, 2.0, use_native)
        out.append(cur)
    return out


SERIES = [50, 80, 79, 78.5, 77.9, 90, 89, 88.1, 87.9, None, 50]
EXPECTED = ["ok", "warning", "warning", "warning", "ok", "critical", "critical", "critical",
            "warning", "warning", "ok"]


def test_python_levels_have_hysteresis():
    assert walk(SERIES, False) == EXPECTED


@pytest.fixture
def native(fresh_loader, libpath):
    fresh_loader.setenv("HEADROOM_LIB", libpath)
    if not watch.native():
        pytest.skip("this libheadroom has no watch functions (hr_level_update, hr_leak_evaluate)")


def test_library_levels_agree(native):
    assert walk(SERIES, True) == EXPECTED


def test_library_leak_test(native):
    rnd = random.Random(7)
    leak = [(float(t), 500 * MIB + t * 2 * MIB + rnd.randrange(MIB)) for t in range(120)]
    r = watch.leak_evaluate(leak, 120.0, 10 * MIB)
    assert r["suspected"] and 100 * MIB <= r["slope_per_min"] <= 140 * MIB
    flat = [(float(t), 500 * MIB + rnd.randrange(MIB)) for t in range(120)]
    assert not watch.leak_evaluate(flat, 120.0, 10 * MIB)["suspected"]
    saw = [(float(t), 500 * MIB + (t % 20) * 5 * MIB) for t in range(120)]
    assert not watch.leak_evaluate(saw, 120.0, 10 * MIB)["suspected"]


def test_manager_uses_the_library_test(native):
    clock, n = [0.0], [0]

    def read():
        n[0] += 1
        return {"ram_percent": 10.0, "vram_percent": None, "rss_bytes": 500 * MIB + n[0] * MIB}

    m = mgr.SmartMemoryManager(read=read, clock=lambda: clock[0])
    m.configure(window=120, leak_mib_per_min=10)
    for _ in range(120):
        m.step()
        clock[0] += 1.0
    st = m.status()
    assert st["logic"] == "libheadroom"
    assert "RSS growing +60.0 MiB/min" in st["leak"] and "confidence" in st["leak"]


def test_without_library_the_manager_says_python(fresh_loader):
    fresh_loader.setenv("HEADROOM_LIB", "/nonexistent/libheadroom.so")
    assert not watch.native()
    assert watch.leak_evaluate([(0, 1), (1, 2)], 10, 1) is None
    assert mgr.SmartMemoryManager().status()["logic"] == "python"
