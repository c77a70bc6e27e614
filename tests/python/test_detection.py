"""Levels with hysteresis and the leak test: the library's, with no Python
copy; without the library they say so."""

import random

import pytest

from headroom import manager as mgr, options
from headroom._c import lib as _lib
from headroom.readings import detection

MIB = 1 << 20


@pytest.fixture
def native(fresh_loader, libpath):
    fresh_loader.setenv("HEADROOM_LIB", libpath)
    if not detection.available():
        pytest.skip("this libheadroom has no level classifier or leak test")


def walk(values):
    cur, out = "ok", []
    for v in values:
        cur = detection.level_update(cur, v, 80, 90, 2.0)
        out.append(cur)
    return out


SERIES = [50, 80, 79, 78.5, 77.9, 90, 89, 88.1, 87.9, None, 50]
EXPECTED = ["ok", "warning", "warning", "warning", "ok", "critical", "critical", "critical",
            "warning", "warning", "ok"]


def test_library_levels_have_hysteresis(native):
    assert walk(SERIES) == EXPECTED


def test_library_leak_test(native):
    rnd = random.Random(7)
    leak = [(float(t), 500 * MIB + t * 2 * MIB + rnd.randrange(MIB)) for t in range(120)]
    r = detection.leak_evaluate(leak, 120.0, 10 * MIB)
    assert r["suspected"] and 100 * MIB <= r["slope_per_min"] <= 140 * MIB
    flat = [(float(t), 500 * MIB + rnd.randrange(MIB)) for t in range(120)]
    assert not detection.leak_evaluate(flat, 120.0, 10 * MIB)["suspected"]
    saw = [(float(t), 500 * MIB + (t % 20) * 5 * MIB) for t in range(120)]
    assert not detection.leak_evaluate(saw, 120.0, 10 * MIB)["suspected"]
    with pytest.raises(ValueError, match="window_s"):
        detection.leak_evaluate(leak, 0, 10 * MIB)


def test_detector_is_the_library_one_and_refuses_use_after_close(native):
    d = detection.LeakDetector(120.0, 10 * MIB)
    rs = [d.add(float(t), 500 * MIB + t * 2 * MIB) for t in range(60)]
    assert rs[-1]["suspected"] and sum(r["raised"] for r in rs) == 1
    d.close()
    d.close()
    with pytest.raises(ValueError, match="closed"):
        d.add(61.0, 1)


def run_manager(series, **settings):
    clock, it = [0.0], iter(series)
    m = mgr.SmartMemoryManager(read=lambda: {"ram_percent": 10.0, "vram_percent": None,
                                             "rss_bytes": next(it)}, clock=lambda: clock[0])
    m.configure(**settings)
    leaks = []
    for _ in range(len(series)):
        m.step()
        clock[0] += 1.0
        leaks.append(m.status()["leak"])
    return m, leaks


def test_manager_uses_the_library_test_and_the_table_defaults(native):
    o = options.process()
    m, leaks = run_manager([500 * MIB + n * MIB for n in range(120)], window=120,
                           leak_mib_per_min=10)
    st = m.status()
    assert st["logic"] == "libheadroom"
    assert "RSS growing +60.0 MiB/min" in st["leak"] and "confidence" in st["leak"]
    s = st["settings"]
    # What was not given is the option table's.
    assert s["mode"] == o.get("mode") and s["cooldown"] == o.get("cooldown")
    assert s["min_samples"] == o.get("leak_min_samples")
    assert s["hysteresis"] == o.get("hysteresis") and s["interval"] == o.get("interval")
    d = mgr.SmartMemoryManager.defaults()
    assert d["window"] == o.get("leak_window")
    assert d["leak_mib_per_min"] * MIB == o.get("leak_min_rate")


def test_manager_raises_nothing_on_loads_or_a_plateau(native):
    # Ten minutes at 1 Hz under the table's defaults: one 2 GiB load, two
    # loads 60 s apart and a two-minute ramp after five flat minutes, none of them a leak. (The first
    # tooth of a sawtooth is a rising series of its own to a trend test fed
    # from the start; keeping it quiet is the leak test's own work.)
    base = 800 * MIB
    load = [base + (2048 * MIB if t >= 100 else 0) for t in range(600)]
    two = [base + (1024 * MIB if t >= 100 else 0) + (1024 * MIB if t >= 160 else 0)
           for t in range(600)]
    plateau = [base + min(max(t - 300, 0), 120) * 2 * MIB for t in range(600)]
    for name, series in (("load", load), ("two loads", two), ("plateau", plateau)):
        _, leaks = run_manager(series)
        assert not any(leaks), (name, [x for x in leaks if x][:1])
    _, leaks = run_manager([base + t * 5 * MIB // 60 * 12 for t in range(600)])
    assert any(leaks)  # 60 MiB/min for ten minutes is one


def test_without_library_the_manager_says_unavailable(fresh_loader):
    fresh_loader.setenv("HEADROOM_LIB", "/nonexistent/libheadroom.so")
    assert not detection.available()
    assert detection.unavailable_reason().startswith("unavailable: libheadroom")
    with pytest.raises(_lib.LibraryNotFoundError):
        detection.level_update("ok", 50, 80, 90, 2)
    with pytest.raises(_lib.LibraryNotFoundError):
        detection.leak_evaluate([(0, 1), (1, 2)], 10, 1)
    m = mgr.SmartMemoryManager()
    assert m.status()["logic"].startswith("unavailable: ")
    with pytest.raises(_lib.LibraryNotFoundError):
        m.start(interval=0.1)
    assert not m.running()
