"""The smart memory manager: levels, leak warning, freeing at critical, the thread."""

import threading
import time

import pytest

from headroom import manager as mgr

MIB = 1 << 20


def test_thresholds():
    with pytest.raises(ValueError, match=r"RAM warning threshold must be a percentage"):
        mgr.check_thresholds(-1, 90, "RAM")
    with pytest.raises(ValueError, match="above the critical"):
        mgr.check_thresholds(95, 90, "VRAM")
    m = mgr.SmartMemoryManager()
    with pytest.raises(ValueError, match="mode must be one of"):
        m.configure(mode="turbo")
    with pytest.raises(ValueError, match="interval must be > 0"):
        m.configure(interval=0)
    with pytest.raises(ValueError, match="cooldown"):
        m.configure(cooldown=-2)


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


@pytest.fixture(autouse=True)
def lib(fresh_loader, libpath):
    # The levels and the leak test are the library's: no library, no manager.
    fresh_loader.setenv("HEADROOM_LIB", libpath)


def test_leak_warning_and_free_at_critical_with_cooldown():
    # Readings given by the test: RSS grows 10 MiB per 1 s step (600 MiB/min),
    # RAM is critical from the 5th sample on; the leak test needs 8 samples.
    clock, frees, n = Clock(), [], [0]

    def read():
        n[0] += 1
        return {"ram_percent": 50.0 if n[0] < 5 else 97.0, "vram_percent": None,
                "rss_bytes": 1000 * MIB + n[0] * 10 * MIB}

    m = mgr.SmartMemoryManager(read=read, free=lambda mode: frees.append(mode) or "freed",
                               clock=clock)
    m.configure(window=20, leak_mib_per_min=100, cooldown=3, mode="aggressive", min_samples=8,
                hysteresis=2)
    levels = []
    for _ in range(10):
        levels.append(m.step())
        clock.t += 1.0
    assert levels[:4] == ["ok"] * 4 and levels[4:] == ["critical"] * 6
    # Critical at t=4..9 with a 3 s cooldown: frees at t=4 and t=7 only.
    assert frees == ["aggressive", "aggressive"]
    st = m.status()
    assert st["frees"] == 2 and st["level"] == "critical"
    assert "RSS growing +600.0 MiB/min" in st["leak"]
    texts = [t for _, t in st["events"]]
    assert any(t.startswith("possible leak") for t in texts)
    assert any(t.startswith("critical: RAM critical") for t in texts)
    assert "automatic frees: 2" in m.report()


def test_stable_rss_gives_no_leak_warning():
    clock = Clock()
    m = mgr.SmartMemoryManager(read=lambda: {"ram_percent": 10.0, "vram_percent": 10.0,
                                             "rss_bytes": 500 * MIB}, clock=clock)
    m.configure(window=5, leak_mib_per_min=1)
    for _ in range(10):
        assert m.step() == "ok"
        clock.t += 1.0
    assert m.status()["leak"] == ""


def test_thread_starts_samples_frees_and_stops():
    # Real readings: with a critical RAM threshold of 1 % this machine is
    # critical, so the thread must call free_memory within a few samples.
    called = threading.Event()

    def free(mode):
        called.set()
        return "freed"

    m = mgr.SmartMemoryManager(free=free)
    assert m.start(interval=0.02, ram_warn=0.5, ram_critical=1, cooldown=0)
    assert m.start(interval=0.02, ram_warn=0.5, ram_critical=1, cooldown=0) is False
    assert called.wait(5)
    assert m.running()
    names = [t.name for t in threading.enumerate()]
    assert names.count("headroom-smart-manager") == 1
    st = m.status()
    assert st["level"] == "critical" and st["last"]["rss_bytes"] > 0
    assert m.stop()
    assert not m.running() and not m.stop()
    assert "headroom-smart-manager" not in [t.name for t in threading.enumerate()]


def test_process_singleton():
    assert mgr.manager() is mgr.manager()


def test_bad_reading_does_not_kill_the_thread():
    def read():
        raise OSError("meminfo gone")

    m = mgr.SmartMemoryManager(read=read)
    m.start(interval=0.01)
    deadline = time.monotonic() + 120  # a condition, not a timing: long on a loaded machine
    while time.monotonic() < deadline and not m.status()["events"]:
        time.sleep(0.01)
    assert m.running()
    assert "sample failed: meminfo gone" in m.status()["events"][0][1]
    m.stop()
