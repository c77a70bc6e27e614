"""The smart memory manager: one background thread per process that samples
host RAM, VRAM and this process's RSS on an interval, classifies RAM and VRAM
as ok / warning / critical, warns when RSS keeps growing, and calls
free_memory() at critical, at most once per cooldown.

The levels and the leak test are the library's (hr_level_update; the leak
detector ``headroom watch`` runs: Mann-Kendall trend with a Theil-Sen slope),
and every setting not given defaults to the process's option table (mode,
thresholds, hysteresis, leak_min_rate, leak_window, leak_min_samples,
cooldown, interval), so the manager and ``headroom watch`` decide alike.
Without libheadroom the manager does not start: configure() and start() raise
LibraryNotFoundError and status() says it is unavailable.

It is a process-wide singleton (manager()) because two such threads would
free memory under each other; start() on a running manager changes its
settings instead of starting a second thread.
"""

import threading
import time

from . import free as _free
from ._c import lib as _lib, options
from .pytorch import vram
from .readings import detection, procfs
from .readings.units import fmt_bytes

LEVELS = ("ok", "warning", "critical")
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


def default_read():
    """One sample: RAM used percent of the host, VRAM used percent of the
    fullest device (None without CUDA), this process's RSS."""
    return {"ram_percent": procfs.host_memory()["used_percent"],
            "vram_percent": vram.usage_percent(),
            "rss_bytes": procfs.rss_bytes()}


class SmartMemoryManager:
    def __init__(self, read=default_read, free=None, clock=time.monotonic):
        """read, free and clock replace the readings, free_memory and the
        monotonic clock (tests)."""
        self._read = read
        self._free = free if free is not None else _free.free_memory
        self._clock = clock
        self._lock = threading.Lock()
        self._thread = None
        self._stop = threading.Event()
        self._cfg = {}
        self._detector = None
        self._reset_state()

    def _reset_state(self):
        self._events = []
        self._last = {}
        self._level = "n/a"
        self._ram_level = self._vram_level = "ok"
        self._leak = ""
        self._frees = 0
        self._last_free = None

    @staticmethod
    def defaults():
        """The settings configure() uses for what it is not given, from the
        process's option table. Raises LibraryNotFoundError without the library."""
        o = options.process()
        return dict(interval=o.get("interval"), ram_warn=o.get("ram_warn"),
                    ram_critical=o.get("ram_critical"), vram_warn=o.get("vram_warn"),
                    vram_critical=o.get("vram_critical"), hysteresis=o.get("hysteresis"),
                    mode=o.get("mode"), leak_mib_per_min=o.get("leak_min_rate") / _MIB,
                    window=o.get("leak_window"), min_samples=o.get("leak_min_samples"),
                    cooldown=o.get("cooldown"))

    def configure(self, interval=None, ram_warn=None, ram_critical=None, vram_warn=None,
                  vram_critical=None, mode=None, leak_mib_per_min=None, window=None,
                  cooldown=None, hysteresis=None, min_samples=None):
        """Checks and sets the settings; each one not given (None) comes from
        the option table. Raises ValueError on a bad one, LibraryNotFoundError
        without the library (the levels and the leak test are its)."""
        given = dict(interval=interval, ram_warn=ram_warn, ram_critical=ram_critical,
                     vram_warn=vram_warn, vram_critical=vram_critical, mode=mode,
                     leak_mib_per_min=leak_mib_per_min, window=window, cooldown=cooldown,
                     hysteresis=hysteresis, min_samples=min_samples)
        if not detection.available():
            raise _lib_error()
        cfg = self.defaults()
        cfg.update({k: v for k, v in given.items() if v is not None})
        _check(cfg)
        leak = (cfg["window"], cfg["leak_mib_per_min"], cfg["min_samples"])
        with self._lock:
            # The detector keeps its samples unless its own settings change:
            # configuring again with the same ones (a node run every prompt)
            # must not start the trend over.
            if self._detector is not None and self._cfg and leak == (
                    self._cfg["window"], self._cfg["leak_mib_per_min"],
                    self._cfg["min_samples"]):
                self._cfg = cfg
                return
        detector = detection.LeakDetector(cfg["window"], cfg["leak_mib_per_min"] * _MIB,
                                          cfg["min_samples"])
        with self._lock:
            old, self._detector = self._detector, detector
            self._cfg = cfg
            if old is not None:
                old.close()

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
            ram = self._ram_level = detection.level_update(
                self._ram_level, s.get("ram_percent"), cfg["ram_warn"], cfg["ram_critical"],
                cfg["hysteresis"])
            vram = self._vram_level = detection.level_update(
                self._vram_level, s.get("vram_percent"), cfg["vram_warn"], cfg["vram_critical"],
                cfg["hysteresis"])
        if s.get("vram_percent") is None:
            vram = "n/a"
        order = {"n/a": -1, "ok": 0, "warning": 1, "critical": 2}
        level = max(ram, vram, key=order.get)
        with self._lock:
            if level != self._level and level in ("warning", "critical"):
                self._event("%s: RAM %s, VRAM %s" % (level, ram, vram))
            self._level = level
            self._last = dict(s, ram_level=ram, vram_level=vram)
            due = level == "critical" and (self._last_free is None
                                           or now - self._last_free >= cfg["cooldown"])
            if due:
                self._last_free = now
        with self._lock:
            # Under the lock: configure() may replace and free the detector.
            leak = self._leak_text(self._detector, now, s["rss_bytes"], cfg)
        res = self._free(cfg["mode"]) if due else None
        with self._lock:
            if leak and not self._leak:
                self._event("possible leak: " + leak)
            self._leak = leak
            if res is not None:
                self._frees += 1
                self._event("critical: " + str(res))
        return level

    def _leak_text(self, detector, now, rss, cfg):
        """Feeds this sample to the library's leak detector; returns the leak
        warning while its alarm is raised, else ""."""
        r = detector.add(now, rss)
        if not r["suspected"] or cfg["leak_mib_per_min"] <= 0:
            return ""
        return "RSS growing %s/min over the last %.0f s (trend confidence %.4f)" % (
            fmt_bytes(r["slope_per_min"], signed=True), r["span_s"], r["confidence"])

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
                    "logic": detection.unavailable_reason() or "libheadroom",
                    "level": self._level, "last": dict(self._last), "leak": self._leak,
                    "frees": self._frees, "events": list(self._events),
                    "settings": dict(self._cfg)}

    def report(self):
        """The status in a few lines of text."""
        st = self.status()
        f = fmt_bytes
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


def _lib_error():
    """The error that says why the manager cannot run without the library."""
    try:
        _lib.load()
    except _lib.HeadroomError as e:
        return e
    return _lib.HeadroomError(-7, "manager", detection.unavailable_reason())


def _check(cfg):
    """Raises ValueError naming the first bad setting."""
    if not isinstance(cfg["interval"], (int, float)) or not cfg["interval"] > 0:
        raise ValueError("interval must be > 0 seconds; got %r" % (cfg["interval"],))
    check_thresholds(cfg["ram_warn"], cfg["ram_critical"], "RAM")
    check_thresholds(cfg["vram_warn"], cfg["vram_critical"], "VRAM")
    _free.check_mode(cfg["mode"])
    for name in ("leak_mib_per_min", "cooldown", "hysteresis"):
        v = cfg[name]
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not v >= 0:
            raise ValueError("%s must be a number >= 0; got %r" % (name, v))
    if not isinstance(cfg["window"], (int, float)) or not cfg["window"] > 0:
        raise ValueError("window must be > 0 seconds; got %r" % (cfg["window"],))
    for k in ("interval", "window", "cooldown", "hysteresis"):
        cfg[k] = float(cfg[k])


_instance = None
_instance_lock = threading.Lock()


def manager():
    """The process's one SmartMemoryManager."""
    global _instance
    with _instance_lock:
        if _instance is None:
            _instance = SmartMemoryManager()
        return _instance
