"""Stage logging: where memory grows, per named stage, across repetitions.

``with headroom.stage("unet"):`` (or ``@headroom.stage("unet")``) samples
RSS and, when CUDA is in use, VRAM allocated and reserved at entry and exit.
A stage's growth is its own net change: what the process holds at the
stage's exit beyond what it held at its entry, so work between stages (or
in another stage) is never blamed on it. The first WARMUP_CALLS calls of a
stage are warm-up (caches filling, lazy initialisation) and do not count.

report() puts each stage's running sum of net changes, over time, through
the library's one leak test (Mann-Kendall trend with a Theil-Sen slope,
hr_leak_evaluate, with the window, minimum rate and minimum samples of the
option table: leak_window, leak_min_rate, leak_min_samples), the same test
watch and the smart manager use; a stage is named only when its own memory
keeps rising ("decode: RSS +2.0 MiB per call over 120 calls"). A model load,
a sawtooth (a cache that fills and is flushed) and a plateau do not alarm.
Without the library the table is written and no stage is judged.
"""

import functools
import sys
import threading
import time

from .._c import options
from ..readings import detection, procfs
from ..readings.units import fmt_bytes
from . import vram

#: The first calls of a stage are warm-up and are not judged.
WARMUP_CALLS = 2

_lock = threading.Lock()
_stats = {}  # name -> list of samples (dicts)
_order = []


def _sample():
    alloc, res = vram.process_bytes()
    return procfs.rss_bytes(), alloc, res


class stage:
    """A context manager and a decorator that records one call of stage `name`."""

    def __init__(self, name):
        if not isinstance(name, str) or not name:
            raise ValueError("stage name must be a non-empty string; got %r" % (name,))
        self.name = name
        self._enter = None

    def __enter__(self):
        self._enter = (time.perf_counter(),) + _sample()
        return self

    def __exit__(self, *exc):
        t1 = time.perf_counter()
        rss1, alloc1, res1 = _sample()
        t0, rss0, alloc0, res0 = self._enter
        record(self.name, t1 - t0, (rss0, rss1), (alloc0, alloc1), (res0, res1))
        return False

    def __call__(self, fn):
        name = self.name

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with stage(name):
                return fn(*args, **kwargs)

        return wrapper


def record(name, seconds, rss, vram_allocated=(None, None), vram_reserved=(None, None), t=None):
    """Adds one call of `name` with (entry, exit) pairs of bytes; what stage()
    does on exit, public so that samples taken elsewhere (or recorded
    earlier, and replayed) can be added. t: the call's exit time in seconds
    (time.monotonic() when None)."""
    s = {"seconds": seconds, "rss": rss, "alloc": vram_allocated, "res": vram_reserved,
         "t": time.monotonic() if t is None else float(t)}
    with _lock:
        if name not in _stats:
            _stats[name] = []
            _order.append(name)
        _stats[name].append(s)


_open = {}  # name -> entry sample of begin()


def begin(name):
    """Starts a call of stage `name` that end(name) closes, for callers that
    cannot wrap the work in a `with` block (a node graph: a begin node and an
    end node with the work between them). A second begin() restarts it."""
    s = stage(name)
    s.__enter__()
    with _lock:
        _open[name] = s


def end(name):
    """Closes the call begin(name) started and records it; raises ValueError
    when no such call is open."""
    with _lock:
        s = _open.pop(name, None)
    if s is None:
        raise ValueError("stage %r was not begun: call begin(%r) first" % (name, name))
    s.__exit__(None, None, None)


def reset():
    """Forgets every sample and every open begin()."""
    with _lock:
        _stats.clear()
        _order.clear()
        _open.clear()


_KEYS = (("rss", "rss", "RSS"), ("alloc", "vram_allocated", "VRAM allocated"),
         ("res", "vram_reserved", "VRAM reserved"))
_judged = ("rss", "alloc")  # reserved memory is a cache: its growth is not a leak


def _series(samples, key):
    """(mean change inside a call, mean net change per counted call, total
    net change of the counted calls, [(t, running sum)]) or Nones when not
    measured."""
    pairs = [s[key] for s in samples]
    if any(a is None or b is None for a, b in pairs):
        return None, None, None, None
    inside = sum(b - a for a, b in pairs) / len(pairs)
    counted = samples[WARMUP_CALLS:]
    if not counted:
        return inside, None, None, None
    total, points = 0, []
    for s in counted:
        a, b = s[key]
        total += b - a
        points.append((s["t"], total))
    return inside, total / len(counted), total, points


def _leak_settings():
    """(window_s, min_rate_per_min, min_samples) from the option table, or
    None without the library."""
    if not detection.available():
        return None
    o = options.process()
    return o.get("leak_window"), o.get("leak_min_rate"), o.get("leak_min_samples")


def _judge(points, settings):
    window, rate, min_samples = settings
    last = points[-1][0]
    pts = [p for p in points if p[0] >= last - window]
    if len(pts) < max(3, min_samples):
        return None
    return detection.leak_evaluate(pts, window, rate, min_samples=max(3, min_samples))


def summary():
    """Per stage, in first-seen order: dict with name, calls, seconds_mean and,
    for rss / vram_allocated / vram_reserved, <key>_inside (mean change within
    a call), <key>_growth_per_call (the stage's own net change, exit minus
    entry, per call after the warm-up; None before) and <key>_total (that net
    change summed); None where not measured. leak is True when the library's
    trend test finds the stage's own RSS or VRAM allocated rising; leak_text
    says by how much; judged is False without the library."""
    with _lock:
        items = [(n, list(_stats[n])) for n in _order]
    try:
        settings = _leak_settings()
    except Exception:  # noqa: BLE001 - a broken library must not break the table
        settings = None
    out = []
    for name, samples in items:
        row = {"name": name, "calls": len(samples),
               "seconds_mean": sum(s["seconds"] for s in samples) / len(samples),
               "judged": settings is not None}
        leak = []
        for key, label, words in _KEYS:
            inside, growth, total, points = _series(samples, key)
            row[label + "_inside"] = inside
            row[label + "_growth_per_call"] = growth
            row[label + "_total"] = total
            if settings is None or key not in _judged or not points:
                continue
            res = _judge(points, settings)
            if res is not None and res["suspected"]:
                leak.append("%s %s per call over %d calls (%s/min, confidence %.3f)" % (
                    words, fmt_bytes(growth, signed=True), len(points),
                    fmt_bytes(res["slope_per_min"], signed=True), res["confidence"]))
        row["leak"] = bool(leak)
        row["leak_text"] = "; ".join(leak)
        out.append(row)
    return out


def report(file=sys.stdout):
    """Writes the per-stage table to `file` (None: write nothing) and returns it."""
    rows = summary()
    f = fmt_bytes
    if not rows:
        text = "no stages recorded\n"
    else:
        head = ("stage", "calls", "ms/call", "RSS in call", "RSS growth/call",
                "VRAM alloc growth/call", "VRAM resv growth/call")
        table = [head]
        for r in rows:
            table.append((r["name"], str(r["calls"]), "%.2f" % (r["seconds_mean"] * 1e3),
                          f(r["rss_inside"], True), f(r["rss_growth_per_call"], True),
                          f(r["vram_allocated_growth_per_call"], True),
                          f(r["vram_reserved_growth_per_call"], True)))
        w = [max(len(row[i]) for row in table) for i in range(len(head))]
        lines = []
        for i, row in enumerate(table):
            cells = [row[0].ljust(w[0])] + [c.rjust(w[j + 1]) for j, c in enumerate(row[1:])]
            lines.append("  ".join(cells).rstrip())
            if i == 0:
                lines.append("  ".join("-" * x for x in w))
        for r in rows:
            if r["leak"]:
                lines.append("possible leak: %s: %s" % (r["name"], r["leak_text"]))
        text = "\n".join(lines) + "\n"
    if file is not None:
        file.write(text)
    return text
