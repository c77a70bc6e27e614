"""Detection: the library's decision functions (src/detect), for the parts of
the package that decide: levels with hysteresis (hr_level_update) and leak
detection, the trend test (Mann-Kendall trend plus Theil-Sen slope:
hr_leak_evaluate on a series, hr_leak_create/hr_leak_add for a detector fed
sample by sample, as ``headroom watch`` runs it).

There is no second implementation here: without libheadroom these raise
LibraryNotFoundError, and callers say that the feature is unavailable rather
than deciding with other arithmetic.
"""

import ctypes

from .._c import lib as _lib

LEVELS = ("ok", "warning", "critical")


def available():
    """True when the library is there and exports the level and leak functions."""
    return (_lib.available() and _lib.has("hr_leak_evaluate") and _lib.has("hr_leak_add")
            and _lib.has("hr_level_update"))


def unavailable_reason():
    """Why available() is False ("" when it is True)."""
    try:
        _lib.load()
    except _lib.HeadroomError as e:
        return "unavailable: %s" % e
    if not available():
        return ("unavailable: this libheadroom (%s) has no level classifier or leak test"
                % _lib.loaded_path())
    return ""


def _need():
    lib = _lib.load()
    if not available():
        raise _lib.HeadroomError(-7, "detection", unavailable_reason())
    return lib


def level_update(cur, percent, warn, critical, hyst):
    """The level after `cur` ("ok", "warning", "critical") for a use of
    `percent`: it rises as soon as a threshold is reached and falls only when
    the use is more than `hyst` points under it. None keeps the level."""
    if cur not in LEVELS:
        cur = "ok"
    lib = _need()
    pct = float("nan") if percent is None else float(percent)
    return LEVELS[lib.hr_level_update(LEVELS.index(cur), pct, float(warn), float(critical),
                                      float(hyst))]


def _result(r):
    return {"suspected": bool(r.suspected), "n": r.n, "span_s": r.span_s,
            "slope_per_min": r.slope_per_min, "confidence": r.confidence,
            "raised": bool(r.raised)}


def _config(window_s, min_rate_per_min, min_samples, alpha=0.0, max_points=0):
    if not window_s > 0:
        raise ValueError("window_s must be > 0 seconds; got %r" % (window_s,))
    if not min_rate_per_min >= 0:
        raise ValueError("min_rate_per_min must be >= 0 bytes; got %r" % (min_rate_per_min,))
    _lib.check_int(min_samples, "min_samples", 3, 100000)
    return _lib.LeakConfig(float(window_s), min_samples, float(min_rate_per_min), float(alpha),
                           max_points)


def leak_evaluate(points, window_s, min_rate_per_min, min_samples=8):
    """Runs the library's leak test on (t, bytes) points in time order;
    returns a dict with suspected, n, span_s, slope_per_min, confidence."""
    lib = _need()
    cfg = _config(window_s, min_rate_per_min, min_samples)
    n = len(points)
    t = (ctypes.c_double * max(n, 1))(*[float(p[0]) for p in points])
    y = (ctypes.c_double * max(n, 1))(*[float(p[1]) for p in points])
    out = _lib.LeakResult()
    _lib.check(lib.hr_leak_evaluate(ctypes.byref(cfg), t, y, n, ctypes.byref(out)),
               "hr_leak_evaluate")
    return _result(out)


class LeakDetector(_lib.Handle):
    """The library's leak detector (hr_leak_t), fed one sample at a time; an
    alarm, once raised, stays until the slope falls under half the rate.
    close() frees it; a use after that raises ValueError."""

    def __init__(self, window_s, min_rate_per_min, min_samples=8):
        self._h = None
        self._lib = _need()
        cfg = _config(window_s, min_rate_per_min, min_samples)
        h = ctypes.c_void_p()
        _lib.check(self._lib.hr_leak_create(ctypes.byref(cfg), ctypes.byref(h)),
                   "hr_leak_create")
        self._h = h

    def add(self, t, nbytes, pid=0, series=0):
        """Adds the sample (seconds, bytes) of series (pid, series) and returns
        the result as leak_evaluate does, with `raised` set on the sample
        that started an alarm."""
        if not self._h:
            raise ValueError("the LeakDetector is closed")
        out = _lib.LeakResult()
        _lib.check(self._lib.hr_leak_add(self._h, pid, 0, series, float(t), int(nbytes),
                                         ctypes.byref(out)), "hr_leak_add")
        return _result(out)

    def close(self):
        if getattr(self, "_h", None):
            self._lib.hr_leak_destroy(self._h)
            self._h = None
