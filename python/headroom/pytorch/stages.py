"""Stage logging: which named stage keeps the memory a process gains.

``with headroom.stage("unet"):`` (or ``@headroom.stage("unet")``) reads RSS
(/proc/self/statm), the C heap's live bytes (glibc's mallinfo2) and, when
CUDA is in use, VRAM allocated and reserved at entry and exit. The readings
go to the package's one attribution engine (headroom.readings.attribution):
a stage is named only when the process's own memory rises and the growth
stays in what that stage added (memory a stage allocates and that is freed
between stages, or in a later stage, is not its growth; the time between
stages is a part of its own, "outside stages").

report() returns the table and the verdicts as a Report (a str); it prints
only when asked (report(print=True), or .print()). A warm-up that levels off,
a one-off load and a sawtooth are no leaks; the thresholds are
attribution.Settings' (1 MiB per call, judged over the last 30 calls once 20
are counted after 2 warm-up calls of each stage; configure() changes them).
Without libheadroom (the trend test is its hr_leak_evaluate) the table is
written and nothing is judged.
"""

import functools
import sys
import threading
import time

from ..readings import attribution, heap, procfs
from ..readings.units import fmt_bytes
from . import vram

Settings = attribution.Settings
_tracker = attribution.Tracker()
_open = {}  # name -> call of begin()
_open_lock = threading.Lock()


def _sample():
    alloc, res = vram.process_bytes()
    live = heap.live_bytes()
    if live is None and "heap" in _tracker.keys:
        _tracker.drop("heap")
    return {"rss": procfs.rss_bytes(), "heap": live, "vram_allocated": alloc,
            "vram_reserved": res}


class stage:
    """A context manager and a decorator that records one call of stage `name`."""

    def __init__(self, name):
        if not isinstance(name, str) or not name:
            raise ValueError("stage name must be a non-empty string; got %r" % (name,))
        self.name = name
        self._call = None

    def __enter__(self):
        self._call = _tracker.enter(self.name, _sample(), time.perf_counter())
        return self

    def __exit__(self, *exc):
        call, self._call = self._call, None
        _tracker.exit(call, _sample(), time.perf_counter())
        return False

    def __call__(self, fn):
        name = self.name

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with stage(name):
                return fn(*args, **kwargs)

        return wrapper


def record(name, seconds, rss, vram_allocated=(None, None), vram_reserved=(None, None), t=None):
    """Adds one call of `name` taken elsewhere (or recorded earlier, and
    replayed): (entry, exit) pairs of bytes; t is the call's exit time in
    seconds (now when None) and seconds its length. Calls recorded one after
    another follow each other on the one line of readings, the time between
    them outside any stage."""
    t1 = time.perf_counter() if t is None else float(t)
    keys = ("rss", "vram_allocated", "vram_reserved")
    pairs = (rss, vram_allocated, vram_reserved)
    call = _tracker.enter(name, {k: p[0] for k, p in zip(keys, pairs)}, t1 - seconds)
    _tracker.exit(call, {k: p[1] for k, p in zip(keys, pairs)}, t1)


def begin(name):
    """Starts a call of stage `name` that end(name) closes, for callers that
    cannot wrap the work in a `with` block (a node graph: a begin node and an
    end node with the work between them). A second begin() restarts it."""
    if not isinstance(name, str) or not name:
        raise ValueError("stage name must be a non-empty string; got %r" % (name,))
    with _open_lock:
        old = _open.pop(name, None)
        if old is not None:
            _tracker.exit(old, _sample(), time.perf_counter())
        _open[name] = _tracker.enter(name, _sample(), time.perf_counter())


def end(name):
    """Closes the call begin(name) started and records it; raises ValueError
    when no such call is open."""
    with _open_lock:
        call = _open.pop(name, None)
    if call is None:
        raise ValueError("stage %r was not begun: call begin(%r) first" % (name, name))
    _tracker.exit(call, _sample(), time.perf_counter())


def reset():
    """Forgets every call and every open begin()."""
    with _open_lock:
        _open.clear()
    _tracker.reset()


def configure(settings):
    """Makes `settings` (a Settings) the thresholds of report() and verdicts()
    from now on; the calls recorded so far are forgotten."""
    if not isinstance(settings, Settings):
        raise ValueError("settings must be a headroom.stages.Settings; got %r" % (settings,))
    global _tracker
    _tracker = attribution.Tracker(settings)
    with _open_lock:
        _open.clear()


def verdicts():
    """The attribution now (an attribution.Attribution): rows, leaks,
    unattributed growth."""
    return _tracker.judge()


def summary():
    """Per stage, in first-seen order, then "outside stages" (the time
    between stages): dict with name, kind, calls, seconds_mean, judged and,
    for rss / heap / vram_allocated / vram_reserved, <key>_inside (mean change
    within a call), <key>_kept_per_call (the growth that stays with the
    stage, bytes per call, over its last calls; None before enough calls) and
    <key>_process_per_call (the process's growth per call of it). leak is
    True when the stage is named; leak_text says why."""
    return _rows(verdicts())


def _rows(a):
    out = []
    texts = {}
    for v in a.leaks:
        texts.setdefault(v["part"], []).append(v["text"])
    for r in a.rows:
        row = {"name": r["name"], "kind": r["kind"], "calls": r["calls"],
               "seconds_mean": r["seconds_mean"], "judged": a.judged}
        for k in attribution.KEYS:
            v = r.get(k) or {}
            row[k + "_inside"] = r["inside"].get(k)
            row[k + "_kept_per_call"] = v.get("kept_per_call")
            row[k + "_process_per_call"] = v.get("process_per_call")
        names = [r["name"]] if r["kind"] == "stage" else [
            n for n in texts if n.startswith(attribution.OUTSIDE)]
        row["leak_text"] = "; ".join(t for n in names for t in texts.get(n, ()))
        row["leak"] = bool(row["leak_text"])
        out.append(row)
    return out


class Report(str):
    """The stage report: its text is the table and the verdicts. str() and
    print() show it once; .rows are summary()'s dicts, .attribution the
    engine's result; .print(file) writes it."""

    def __new__(cls, text, rows=(), result=None):
        self = super().__new__(cls, text)
        self.rows = list(rows)
        self.attribution = result
        return self

    def print(self, file=None):
        (file or sys.stdout).write(str(self))

    def __str__(self):
        return str.__str__(self)

    def __repr__(self):
        return str.__str__(self)


def report(print=False, file=None):  # noqa: A002 - print is the natural word here
    """The per-stage table and verdicts as a Report (a str). Writes it to
    `file` (sys.stdout when print=True) only when asked."""
    a = verdicts()
    rows = _rows(a)
    text = _text(a, rows)
    rep = Report(text, rows, a)
    if print or file is not None:
        rep.print(file)
    return rep


def _text(a, rows):
    if not rows:
        return "no stages recorded\n"
    f = fmt_bytes
    cols = [("RSS in call", "rss_inside", True), ("RSS kept/call", "rss_kept_per_call", False)]
    if any(r["heap_inside"] is not None for r in rows):
        cols.append(("heap kept/call", "heap_kept_per_call", False))
    if any(r["vram_allocated_inside"] is not None for r in rows):
        cols += [("VRAM alloc in call", "vram_allocated_inside", True),
                 ("VRAM alloc kept/call", "vram_allocated_kept_per_call", False),
                 ("VRAM resv kept/call", "vram_reserved_kept_per_call", False)]
    head = ["stage", "calls", "ms/call"] + [c[0] for c in cols]
    table = [head]
    for r in rows:
        table.append([r["name"], str(r["calls"]), "%.2f" % (r["seconds_mean"] * 1e3)] + [
            f(r[k], True) if inside else _kept(r[k]) for _, k, inside in cols])
    w = [max(len(row[i]) for row in table) for i in range(len(head))]
    lines = []
    for i, row in enumerate(table):
        cells = [row[0].ljust(w[0])] + [c.rjust(w[j + 1]) for j, c in enumerate(row[1:])]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * x for x in w))
    s = a.settings
    lines.append("kept/call: what a stage added and still holds at its next call, per call, "
                 "over its last %d calls after %d warm-up calls (\"-\" before %d); a stage is "
                 "named when it keeps %s or more per call and the process's own memory rises "
                 "%s or more per call of it" % (s.window, s.warmup, s.min_calls,
                                                f(s.min_growth), f(s.min_growth)))
    if heap.status() != "ok":
        lines.append("C heap not read (%s): host memory is attributed by RSS" % heap.status())
    if not a.judged:
        lines.append("not judged: the trend test is libheadroom's and the library is not "
                     "loaded")
    lines += a.lines()
    return "\n".join(lines) + "\n"


def _kept(v):
    return "-" if v is None else fmt_bytes(v, signed=True)
