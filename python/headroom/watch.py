"""The watch part's decision functions, through libheadroom when it exports
them: levels with hysteresis (hr_level_update) and the leak test
(hr_leak_evaluate: Mann-Kendall trend plus Theil-Sen slope). The smart
memory manager uses them when the library has them and falls back to the
pure-Python versions here otherwise (a plain threshold level and a
least-squares slope), saying which in its status.
"""

import ctypes
import math

from . import _lib

LEVELS = ("ok", "warning", "critical")


def native():
    """True when the library is there and exports the watch functions."""
    return (_lib.available() and _lib.has("hr_leak_evaluate")
            and _lib.has("hr_level_update"))


def level_update(cur, percent, warn, critical, hyst=2.0, use_native=None):
    """The level after `cur` ("ok", "warning", "critical") for a use of
    `percent`: it rises as soon as a threshold is reached and falls only when
    the use is more than `hyst` points under it. None keeps the level.
    use_native: None picks the library when it has the function."""
    if cur not in LEVELS:
        cur = "ok"
    if use_native is None:
        use_native = native()
    if use_native:
        lib = _lib.load()
        pct = float("nan") if percent is None else float(percent)
        return LEVELS[lib.hr_level_update(LEVELS.index(cur), pct, warn, critical, hyst)]
    if percent is None or math.isnan(percent):
        return cur
    target = "critical" if percent >= critical else "warning" if percent >= warn else "ok"
    if LEVELS.index(target) >= LEVELS.index(cur):
        return target
    # Falling: only past each threshold by more than hyst.
    if cur == "critical" and percent > critical - hyst:
        return "critical"
    if percent > warn - hyst:
        return "warning"
    return "ok"


def leak_evaluate(points, window_s, min_rate_per_min, min_samples=8):
    """Runs the library's leak test on (t, bytes) points; returns a dict with
    suspected, n, span_s, slope_per_min, confidence; None without the library."""
    if not native():
        return None
    lib = _lib.load()
    n = len(points)
    t = (ctypes.c_double * max(n, 1))(*[p[0] for p in points])
    y = (ctypes.c_double * max(n, 1))(*[float(p[1]) for p in points])
    cfg = _lib.LeakConfig(window_s, min_samples, min_rate_per_min, 0.0, 0)
    out = _lib.LeakResult()
    _lib.check(lib.hr_leak_evaluate(ctypes.byref(cfg), t, y, n, ctypes.byref(out)),
               "hr_leak_evaluate")
    return {"suspected": bool(out.suspected), "n": out.n, "span_s": out.span_s,
            "slope_per_min": out.slope_per_min, "confidence": out.confidence}
