"""The smart memory manager: one background thread per process that samples
host RAM, VRAM and this process's RSS on an interval, classifies RAM and VRAM
as ok / warning / critical, warns when RSS keeps growing (the least-squares
slope over a window), and calls free_memory() at critical, at most once per
cooldown.

It is a process-wide singleton (manager()) because two such threads would
free memory under each other; start() on a running manager changes its
settings instead of starting a second thread.
"""

import threading
import time

from . import _readings, memory, watch

LEVELS = ("ok", "warning", "critical")
#: Percentage points under a threshold that a level must fall before it drops.
HYSTERESIS = 2.0
_MIB = 1 << 20


def check_thresholds(warn, critical, what):
    """Raises ValueError unless 0 <= warn <= critical <= 100."""
    for label, v in (("warning", warn), ("critical", critical)):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0 or v > 100:
            raise ValueError("%s %s threshold must be a percentage in [0, 100]; got %r"
                             % (what, label, v))
    if warn > critical:
        raise ValueError("%s warning threshold (%s%%) is above the critical one (%s%%)"
                         % (what, warn, critical))


def slope_per_second(points):
    """Least-squares slope of (t, y) points; None under 2 points or no time span."""
    n = len(points)
    if n < 2:
        return None
    mt = sum(t for t, _ in points) / n
    my = sum(y for _, y in points) / n
    den = sum((t - mt) ** 2 for t, _ in points)
    if den == 0:
        return None
    return sum((t - mt) * (y - my) for t, y in points) / den


def default_read():
    """One sample: RAM used percent of the host, VRAM used percent of the
    fullest device (None without CUDA), this process's RSS."""
    return {"ram_percent": _readings.host_memory()["used_percent"],
            "vram_percent": _readings.vram_usage_percent(),
            "rss_bytes": _readings.rss_bytes()}


class SmartMemoryManager:
    def __init__(self, read=default_read, free=memory.free_memory, clock=time.monotonic,
                 native=None):
        """read, free and clock replace the readings, free_memory and the
        monotonic clock (tests); native=False uses the pure-Python level and
        leak logic even when libheadroom has the watch functions."""
        self._native = watch.native() if native is None else native
        self._read = read
        self._free = free
        self._clock = clock
        self._lock = threading.Lock()
        self._thread = None
        self._stop = threading.Event()
        self._cfg = {}
        self._reset_state()

    def _reset_state(self):
        self._samples = []  # (t, rss)
        self._events = []
        self._last = {}
        self._level = "n/a"
        self._ram_level = self._vram_level = "ok"
        self._leak = ""
        self._frees = 0
        self._last_free = None

    def configure(self, interval=1.0, ram_warn=80.0, ram_critical=90.0, vram_warn=85.0,
                  vram_critical=95.0, mode="balanced", leak_mib_per_min=5.0, window=60.0,
                  cooldown=30.0):
        """Checks and sets the settings; raises ValueError on a bad one."""
        if not isinstance(interval, (int, float)) or interval <= 0:
            raise ValueError("interval must be > 0 seconds; got %r" % (interval,))
        check_thresholds(ram_warn, ram_critical, "RAM")
        check_thresholds(vram_warn, vram_critical, "VRAM")
        memory.check_mode(mode)
        if leak_mib_per_min < 0:
            raise ValueError("leak_mib_per_min must be >= 0; got %r" % (leak_mib_per_min,))
        if window <= 0:
            raise ValueError("window must be > 0 seconds; got %r" % (window,))
        if cooldown < 0:
            raise ValueError("cooldown must be >= 0 seconds; got %r" % (cooldown,))
        with self._lock:
            self._cfg = dict(interval=float(interval), ram_warn=ram_warn,
                             ram_critical=ram_critical, vram_warn=vram_warn,
                             vram_critical=vram_critical, mode=mode,
                             leak_mib_per_min=leak_mib_per_min, window=float(window),
                             cooldown=float(cooldown))

    def set_critical_action(self, free):
        """Replaces what runs at critical (free_memory by default): free(mode)
        returns something whose str() is recorded as an event. Inside ComfyUI,
        headroom.comfy installs one that frees through its model management."""
        with self._lock:
            self._free = free

    def start(self, **settings):
        """Starts the thread (or, when running, only changes the settings)."""
        self.configure(**settings)
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return False
            self._reset_state()
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="headroom-smart-manager",
                                            daemon=True)
            self._thread.start()
            return True

    def stop(self, timeout=5.0):
        """Stops the thread and waits for it; True when it was running."""
        with self._lock:
            t = self._thread
            self._thread = None
        if t is None:
            return False
        self._stop.set()
        t.join(timeout)
        return True

    def running(self):
        with self._lock:
            return self._thread is not None and self._thread.is_alive()

    def _event(self, text):
        self._events.append((time.time(), text))
        del self._events[:-50]

    def step(self):
        """Takes one sample and acts on it; what the thread does each interval."""
        with self._lock:
            cfg = dict(self._cfg)
        s = self._read()
        now = self._clock()
        with self._lock:
            ram = self._ram_level = watch.level_update(
                self._ram_level, s.get("ram_percent"), cfg["ram_warn"], cfg["ram_critical"],
                HYSTERESIS, self._native)
            vram = self._vram_level = watch.level_update(
                self._vram_level, s.get("vram_percent"), cfg["vram_warn"], cfg["vram_critical"],
                HYSTERESIS, self._native)
        if s.get("vram_percent") is None:
            vram = "n/a"
        order = {"n/a": -1, "ok": 0, "warning": 1, "critical": 2}
        level = max(ram, vram, key=order.get)
        with self._lock:
            if level != self._level and level in ("warning", "critical"):
                self._event("%s: RAM %s, VRAM %s" % (level, ram, vram))
            self._level = level
            self._last = dict(s, ram_level=ram, vram_level=vram)
            self._samples.append((now, s["rss_bytes"]))
            self._samples = [p for p in self._samples if now - p[0] <= cfg["window"]]
            pts = list(self._samples)
            due = level == "critical" and (self._last_free is None
                                           or now - self._last_free >= cfg["cooldown"])
            if due:
                self._last_free = now
        leak = self._leak_text(pts, cfg) if cfg["leak_mib_per_min"] > 0 else ""
        res = self._free(cfg["mode"]) if due else None
        with self._lock:
            if leak and not self._leak:
                self._event("possible leak: " + leak)
            self._leak = leak
            if res is not None:
                self._frees += 1
                self._event("critical: " + str(res))
        return level

    def _leak_text(self, pts, cfg):
        """The leak warning for the RSS points in the window, or ""."""
        rate = cfg["leak_mib_per_min"] * _MIB
        if self._native:
            r = watch.leak_evaluate(pts, cfg["window"], rate)
            if r is None or not r["suspected"]:
                return ""
            return "RSS growing %s/min over the last %.0f s (trend confidence %.4f)" % (
                _readings.fmt_bytes(r["slope_per_min"], signed=True), r["span_s"],
                r["confidence"])
        slope = slope_per_second(pts)
        if (slope is None or len(pts) < 5 or pts[-1][0] - pts[0][0] < cfg["window"] / 2
                or slope * 60 < rate):
            return ""
        return "RSS growing %s/min over the last %.0f s" % (
            _readings.fmt_bytes(slope * 60, signed=True), pts[-1][0] - pts[0][0])

    def _run(self):
        while not self._stop.is_set():
            try:
                self.step()
            except Exception as e:  # keep watching: one bad reading must not end the thread
                with self._lock:
                    self._event("sample failed: %s" % e)
            with self._lock:
                interval = self._cfg["interval"]
            self._stop.wait(interval)

    def status(self):
        """A dict: running, level, last sample, leak text, frees, recent events."""
        with self._lock:
            return {"running": self._thread is not None and self._thread.is_alive(),
                    "logic": "libheadroom" if self._native else "python",
                    "level": self._level, "last": dict(self._last), "leak": self._leak,
                    "frees": self._frees, "events": list(self._events),
                    "settings": dict(self._cfg)}

    def report(self):
        """The status in a few lines of text."""
        st = self.status()
        f = _readings.fmt_bytes
        last = st["last"]
        lines = ["Smart Memory Manager: %s, level %s" % (
            "running" if st["running"] else "stopped", st["level"])]
        if last:
            vp = last.get("vram_percent")
            lines.append("RAM %.1f%% (%s), VRAM %s, RSS %s" % (
                last["ram_percent"], last["ram_level"],
                "%.1f%% (%s)" % (vp, last["vram_level"]) if vp is not None else "n/a",
                f(last["rss_bytes"])))
        if st["leak"]:
            lines.append("possible leak: " + st["leak"])
        lines.append("automatic frees: %d" % st["frees"])
        for t, text in st["events"][-5:]:
            lines.append("%s %s" % (time.strftime("%H:%M:%S", time.localtime(t)), text))
        return "\n".join(lines)


_instance = None
_instance_lock = threading.Lock()


def manager():
    """The process's one SmartMemoryManager."""
    global _instance
    with _instance_lock:
        if _instance is None:
            _instance = SmartMemoryManager()
        return _instance
