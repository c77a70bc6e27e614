"""Stage logging: where memory grows, per named stage, across repetitions.

``with headroom.stage("unet"):`` (or ``@headroom.stage("unet")``) samples
RSS and, when CUDA is in use, VRAM allocated and reserved at entry and exit.
report() turns the samples into a table: per stage, the mean change inside a
call and the growth per call, the least-squares slope of the exit values over
the call number. A slope that stays positive over many calls is how a
per-frame leak in a video pipeline shows itself ("unet: +64 MiB per call
over 300 calls"); the change inside a call alone cannot tell a leak from a
stage that allocates and frees.
"""

import functools
import sys
import threading
import time

from . import _readings

#: Growth per call at or above which report() flags a stage, in bytes.
LEAK_BYTES_PER_CALL = 1 << 20
#: Calls a stage needs before report() judges its growth.
MIN_CALLS = 3

_lock = threading.Lock()
_stats = {}  # name -> list of samples (dicts)
_order = []


def _sample():
    alloc, res = _readings.vram_process()
    return _readings.rss_bytes(), alloc, res


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


def record(name, seconds, rss, vram_allocated=(None, None), vram_reserved=(None, None)):
    """Adds one call of `name` with (entry, exit) pairs of bytes; what stage()
    does on exit, public so that samples taken elsewhere can be added."""
    s = {"seconds": seconds, "rss": rss, "alloc": vram_allocated, "res": vram_reserved}
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


def _slope(ys):
    n = len(ys)
    if n < 2:
        return None
    mx = (n - 1) / 2.0
    my = sum(ys) / n
    num = sum((i - mx) * (y - my) for i, y in enumerate(ys))
    den = sum((i - mx) ** 2 for i in range(n))
    return num / den


def _series(samples, key):
    pairs = [s[key] for s in samples]
    if any(a is None or b is None for a, b in pairs):
        return None, None, None
    inside = sum(b - a for a, b in pairs) / len(pairs)
    growth = _slope([b for _, b in pairs])
    total = pairs[-1][1] - pairs[0][0]
    return inside, growth, total


def summary():
    """Per stage, in first-seen order: dict with name, calls, seconds_mean and,
    for rss / vram_allocated / vram_reserved, <key>_inside (mean change within
    a call), <key>_growth_per_call (slope of exit values; None under 2 calls)
    and <key>_total (last exit minus first entry); None where not measured.
    leak is True when a growth reaches LEAK_BYTES_PER_CALL over MIN_CALLS calls."""
    with _lock:
        items = [(n, list(_stats[n])) for n in _order]
    out = []
    for name, samples in items:
        row = {"name": name, "calls": len(samples),
               "seconds_mean": sum(s["seconds"] for s in samples) / len(samples)}
        leak = []
        for key, label in (("rss", "rss"), ("alloc", "vram_allocated"),
                           ("res", "vram_reserved")):
            inside, growth, total = _series(samples, key)
            row[label + "_inside"] = inside
            row[label + "_growth_per_call"] = growth
            row[label + "_total"] = total
            if growth is not None and len(samples) >= MIN_CALLS and growth >= LEAK_BYTES_PER_CALL:
                leak.append("%s %s per call over %d calls" % (
                    {"rss": "RSS", "alloc": "VRAM allocated", "res": "VRAM reserved"}[key],
                    _readings.fmt_bytes(growth, signed=True), len(samples)))
        row["leak"] = bool(leak)
        row["leak_text"] = "; ".join(leak)
        out.append(row)
    return out


def report(file=sys.stdout):
    """Writes the per-stage table to `file` (None: write nothing) and returns it."""
    rows = summary()
    f = _readings.fmt_bytes
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
