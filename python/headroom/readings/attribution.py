"""Attribution: which named part of a process keeps the memory the process gains.

One engine for every per-part verdict: stages of a PyTorch loop
(``headroom.stage``) and nodes of a ComfyUI prompt (a node's execution is a
call of a part named by its class and id). The caller gives a Tracker a
reading of the process's memory where each call begins and ends ({"rss":
bytes, "heap": live C heap bytes, "vram_allocated": ..., ...}); the rest is
worked out here, by Tracker.judge().

The readings form one line in time. Each interval between two readings
belongs to the innermost call open during it or, when none is, to "outside
stages, between A and B" (the gap after a top-level call of A and before one
of B: the gap between frames is a part of its own). Per kind of memory, the
level above the lowest reading is a stack of layers, each owned by the part
whose interval raised it:

- an interval that rises pushes a layer of its owner;
- an interval that falls takes memory back from the top (the most recent
  layers first: a part that frees what it made pops its own layer);
- an interval only shows its net change, so memory it allocated and memory
  it freed cancel out. When a fall takes back layers of two parts or more
  (tensors of several stages freed together between frames), the bytes under
  where it stopped, as many as it took, become ambiguous among those parts
  and the falling one; when it takes from one other part's layer and stops
  inside it, that layer's remainder becomes ambiguous between the two.
  Ambiguous bytes are no part's own.

A part's kept memory is what its own layers hold, read at the start of each
of its calls (of a gap: at its end); memory a stage allocates and that is
freed between stages, or in a later stage, has left its layers by its next
call. The library's one leak test (hr_leak_evaluate: Mann-Kendall trend,
Theil-Sen slope, checks on the window's halves), with the call index as its
time, is run on the last `window` calls after each part's first `warmup`,
once `min_calls` are complete. A part is named when

1. its kept memory rises, and
2. the process's own memory rises: the lowest reading of each of the part's
   cycles (from one call's entry to the next's),

each by `min_growth` bytes per call or more. Host memory rises when RSS does
or the live C heap does, and a part keeps it in live heap bytes where they
can be read (RSS grows wherever the allocator found fresh pages, which need
not be the stage that keeps the block), else in RSS; device memory in live
bytes (VRAM allocated). A warm-up that levels off, a one-off load and a
sawtooth fail the test. When the process's memory rises and no part keeps
it, the verdict says so, lists the parts it may be with, and names none.
"""

import threading
from collections import deque

from . import detection
from .units import fmt_bytes

MIB = 1 << 20
OUTSIDE = "outside stages"

KEYS = ("rss", "heap", "vram_allocated", "vram_reserved")


class Settings:
    """What a verdict needs: min_growth bytes per call (default 1 MiB),
    min_calls complete calls counted (after the warm-up) before any verdict
    (default 20), warmup calls of each part left out (default 2), window
    calls judged (the last ones, default 30), and tolerance bytes under which
    a change is noise (default min_growth / 4). A leak that starts with the
    calls is named after warmup + min_calls + 1 calls (23 by default): a
    call's kept memory is known at the next call."""

    __slots__ = ("min_growth", "min_calls", "warmup", "window", "tolerance")

    def __init__(self, min_growth=MIB, min_calls=20, warmup=2, window=30, tolerance=None):
        # The trend test cannot reach its significance (1e-4) on fewer than
        # 10 points, so fewer calls could never name anything.
        for label, v, least in (("min_growth", min_growth, 1), ("min_calls", min_calls, 10),
                                ("warmup", warmup, 0), ("window", window, 10)):
            if isinstance(v, bool) or not isinstance(v, int) or v < least:
                raise ValueError("%s must be an integer >= %d; got %r" % (label, least, v))
        if window < min_calls:
            raise ValueError("window (%d calls) must be at least min_calls (%d)"
                             % (window, min_calls))
        if tolerance is None:
            tolerance = min_growth // 4
        if isinstance(tolerance, bool) or not isinstance(tolerance, int) or tolerance < 0:
            raise ValueError("tolerance must be an integer >= 0 bytes; got %r" % (tolerance,))
        self.min_growth, self.min_calls, self.warmup = min_growth, min_calls, warmup
        self.window, self.tolerance = window, tolerance

    def as_dict(self):
        return {k: getattr(self, k) for k in self.__slots__}


class _Part:
    """One part's books on one kind of memory."""

    __slots__ = ("name", "stage", "cycles", "held", "lows", "low")

    def __init__(self, name, stage, window):
        self.name, self.stage = name, stage
        self.cycles = 0  # samples taken (calls of a stage, gaps of a gap kind)
        self.held = deque(maxlen=window + 1)  # (cycle, kept bytes at its start)
        self.lows = deque(maxlen=window)  # (cycle, lowest reading of the cycle)
        self.low = None  # lowest reading since the current cycle began


class Ledger:
    """The layers of one kind of memory (RSS, VRAM allocated, ...) and each
    part's kept bytes; fed readings by a Tracker."""

    MAX_LAYERS = 4096

    def __init__(self, window, tolerance):
        self.window, self.tol = window, tolerance
        self.level = None
        self.layers = []  # [owner or None, bytes, candidates (frozenset) or None]
        self.kept = {}  # owner -> bytes of its own layers
        self.ambiguous = {}  # candidates -> bytes
        self.sediment = {}  # (owner, candidates) -> bytes under every layer
        self.parts = {}

    def part(self, name, stage):
        p = self.parts.get(name)
        if p is None:
            p = self.parts[name] = _Part(name, stage, self.window)
        return p

    def reading(self, value, owner):
        """The interval from the last reading to `value` belonged to `owner`."""
        if self.level is None:
            self.level = value
            return
        delta = value - self.level
        self.level = value
        for p in self.parts.values():
            if p.low is not None and value < p.low:
                p.low = value
        if delta > 0:
            self._push(owner, delta, None)
        elif delta < 0:
            self._fall(-delta, owner)

    def sample(self, part):
        """A cycle of `part` ends and the next begins at the current level."""
        if part.low is not None:
            part.lows.append((part.cycles - 1, part.low))
        part.held.append((part.cycles, self.kept.get(part.name, 0)))
        part.cycles += 1
        part.low = self.level

    def _push(self, owner, nbytes, cands):
        """A layer on top: each rise is a layer of its own (a later fall may
        stop inside it); ambiguous bytes with the same candidates merge."""
        top = self.layers[-1] if self.layers else None
        if cands is not None and top is not None and top[2] == cands:
            top[1] += nbytes
        else:
            self.layers.append([owner, nbytes, cands])
            if len(self.layers) > self.MAX_LAYERS:
                self._compact()
        self._book(owner, cands, nbytes)

    def _book(self, owner, cands, nbytes):
        if cands is None:
            self.kept[owner] = self.kept.get(owner, 0) + nbytes
        else:
            self.ambiguous[cands] = self.ambiguous.get(cands, 0) + nbytes

    def _compact(self):
        """Bounded books: neighbours of the same owner in the lower half of the
        stack merge (only the top layers' edges matter to a fall); if that is
        not enough, the lowest quarter settles into the sediment, where each
        owner keeps its bytes but no order is kept."""
        half = len(self.layers) // 2
        low = []
        for layer in self.layers[:half]:
            if low and low[-1][0] == layer[0] and low[-1][2] == layer[2]:
                low[-1][1] += layer[1]
            else:
                low.append(layer)
        self.layers = low + self.layers[half:]
        if len(self.layers) > self.MAX_LAYERS * 3 // 4:
            cut = len(self.layers) // 4
            for owner, nbytes, cands in self.layers[:cut]:
                k = (owner, cands)
                self.sediment[k] = self.sediment.get(k, 0) + nbytes
            del self.layers[:cut]

    def _dig(self, nbytes, touched):
        """A fall below every layer takes from the sediment, from every owner
        in proportion to what it holds there; returns what it took."""
        total = sum(self.sediment.values())
        if total <= 0:
            return 0
        took = 0
        for k, have in list(self.sediment.items()):
            take = min(have, nbytes * have // total)
            self.sediment[k] = have - take
            self._book(k[0], k[1], -take)
            took += take
            if take > self.tol:
                touched.update(k[1] if k[1] is not None else (k[0],))
        return took

    @staticmethod
    def _owners(layer):
        return layer[2] if layer[2] is not None else (layer[0],)

    def _fall(self, nbytes, owner):
        """`owner`'s interval gave back `nbytes`: taken from the top. An
        interval's own allocations and frees net out, so when it takes from
        another part's layers the bytes left where it stopped are ambiguous:
        the remainder of a layer it stopped inside (when it took one other
        part's), or as many bytes as it took (when it took two parts' or
        more)."""
        touched, left, inside = set(), nbytes, False
        while left > 0 and self.layers:
            top = self.layers[-1]
            take = min(top[1], left)
            top[1] -= take
            left -= take
            self._book(top[0], top[2], -take)
            if take > self.tol:
                touched.update(self._owners(top))
            if top[1] == 0:
                self.layers.pop()
            else:
                inside = take > self.tol and top[1] > self.tol
        if left > 0 and self.sediment:
            left -= self._dig(left, touched)
        taken = nbytes - left
        if not touched or touched == {owner} or not self.layers:
            return
        cands = frozenset(touched | {owner})
        if len(touched) >= 2:
            self._blur(taken, cands)
        elif inside:
            self._blur(min(taken, self.layers[-1][1]), cands)

    def _blur(self, nbytes, cands):
        """The top `nbytes` of the stack become ambiguous among `cands` and
        the owners of the layers they come from (those over the tolerance)."""
        moved, left, i = [], nbytes, len(self.layers) - 1
        while left > 0 and i >= 0:
            layer = self.layers[i]
            take = min(layer[1], left)
            layer[1] -= take
            left -= take
            self._book(layer[0], layer[2], -take)
            moved.append((layer, take))
            i -= 1
        self.layers = [x for x in self.layers if x[1] > 0]
        if not moved:
            return
        all_c = set(cands)
        for layer, nbytes in moved:
            if nbytes > self.tol:
                all_c.update(self._owners(layer))
        self._push(None, sum(m[1] for m in moved), frozenset(all_c))


class _Call:
    __slots__ = ("name", "t0", "readings")

    def __init__(self, name, t0, readings):
        self.name, self.t0, self.readings = name, t0, readings


class _Stats:
    """Counts for the table: calls, seconds and the mean change inside a call."""

    __slots__ = ("calls", "seconds", "inside")

    def __init__(self):
        self.calls, self.seconds, self.inside = 0, 0.0, {}

    def add(self, seconds, before, after):
        self.calls += 1
        self.seconds += max(0.0, seconds)
        for k, a in before.items():
            b = after.get(k)
            if a is not None and b is not None:
                acc = self.inside.setdefault(k, [0, 0])
                acc[0] += b - a
                acc[1] += 1

    def row(self, name, kind):
        return {"name": name, "kind": kind, "calls": self.calls,
                "seconds_mean": self.seconds / self.calls if self.calls else 0.0,
                "inside": {k: s / n for k, (s, n) in self.inside.items() if n}}


class Tracker:
    """Calls of named parts on one line of readings; judge() gives the
    verdicts. One per process for stages, one per ComfyUI server for nodes.
    Thread-safe: calls from several threads are put on the one line in the
    order their readings arrive (attribution is then as good as the
    interleaving lets it be)."""

    def __init__(self, settings=None, keys=KEYS):
        self.settings = settings if settings is not None else Settings()
        self.keys = tuple(keys)
        self._lock = threading.Lock()
        self._clear()

    def _clear(self):
        s = self.settings
        self._ledgers = {k: Ledger(s.window, s.tolerance) for k in self.keys}
        self._open = []  # open calls, innermost last
        self._last = None  # (name, time, readings) of the last top-level exit
        self._stats, self._order = {}, []
        self._outside = _Stats()
        self._gaps = []

    def reset(self):
        """Forgets every call and every open one."""
        with self._lock:
            self._clear()

    def enter(self, name, readings, t):
        """A call of `name` begins at time t (seconds on any clock the exits
        share) with `readings` ({key: bytes or None}). Returns the call, for
        exit()."""
        if not isinstance(name, str) or not name:
            raise ValueError("a part's name must be a non-empty string; got %r" % (name,))
        call = _Call(name, t, dict(readings))
        with self._lock:
            if name not in self._stats:
                self._stats[name] = _Stats()
                self._order.append(name)
            if self._open:
                self._feed(readings, self._open[-1].name)
            elif self._last is not None:
                gap = "%s, between %s and %s" % (OUTSIDE, self._last[0], name)
                self._feed(readings, gap)
                self._outside.add(t - self._last[1], self._last[2], call.readings)
                if gap not in self._gaps:
                    self._gaps.append(gap)
                self._sample(gap, False)
            else:
                self._feed(readings, None)
            self._sample(name, True)
            self._open.append(call)
        return call

    def exit(self, call, readings, t):
        """The call `call` (from enter()) ends at time t with `readings`."""
        with self._lock:
            if not any(c is call for c in self._open):
                raise ValueError("the call of %r is not open" % (getattr(call, "name", call),))
            self._feed(readings, self._open[-1].name)
            self._open = [c for c in self._open if c is not call]
            self._stats[call.name].add(t - call.t0, call.readings, readings)
            if not self._open:
                self._last = (call.name, t, dict(readings))

    def _feed(self, readings, owner):
        for k, led in self._ledgers.items():
            v = readings.get(k)
            if v is not None:
                led.reading(int(v), owner)

    def _sample(self, name, stage):
        for led in self._ledgers.values():
            if led.level is not None:
                led.sample(led.part(name, stage))

    def drop(self, key):
        """Stops keeping the books of `key` (its readings stopped: the heap's
        turned off as too slow); verdicts on it fall back as judge() says."""
        with self._lock:
            self._ledgers.pop(key, None)
            self.keys = tuple(k for k in self.keys if k != key)

    def judge(self):
        """The verdicts now: an Attribution. Without libheadroom nothing is
        judged and the Attribution says so (judged False)."""
        with self._lock:
            return _judge(self, self.settings)


#: The memories judged: (verdict key, the readings whose rise makes the
#: process's memory rise, the readings a part keeps it in). Host memory rises
#: when RSS does or the C heap's live bytes do (a leak that fills memory the
#: allocator held free shows in the live bytes before RSS), and a part keeps
#: it in live heap bytes (RSS where the heap is not read: where RSS grows
#: follows where the allocator found room). Device memory: live bytes.
#: Reserved VRAM is a cache, whose growth is no leak.
JUDGED = (("rss", ("rss", "heap"), "heap"),
          ("vram_allocated", ("vram_allocated",), "vram_allocated"))
WORDS = {"rss": "RSS", "heap": "C heap", "vram_allocated": "VRAM allocated",
         "vram_reserved": "VRAM reserved"}


def _evaluate(points, s):
    if len(points) < s.min_calls:
        return None
    pts = [(float(c), float(v)) for c, v in points]
    return detection.leak_evaluate(pts, float(len(pts) + 1), s.min_growth * 60.0,
                                   min_samples=s.min_calls)


def judge_part(held, lows, s):
    """The tests on one part and one kind of memory: `held` the part's kept
    bytes at the start of each of its cycles, `lows` the process's lowest
    reading of each cycle, as (cycle, bytes) pairs. Returns a dict: counted
    (complete cycles judged: nothing is judged before min_calls), kept_per_call and process_per_call (Theil-Sen slopes in
    bytes per call; None before min_calls), kept_rises, process_rises,
    confidence (of the kept trend)."""
    held = [(c, v) for c, v in held if c >= s.warmup][-s.window:]
    lows = [(c, v) for c, v in lows if c >= s.warmup][-s.window:]
    out = {"counted": len(lows), "kept_per_call": None, "process_per_call": None,
           "kept_rises": False, "process_rises": False, "confidence": 0.0}
    if len(lows) < s.min_calls:  # judged once min_calls cycles are complete
        return out
    rk, rp = _evaluate(held, s), _evaluate(lows, s)
    if rk is not None:
        out.update(kept_per_call=rk["slope_per_min"] / 60.0, kept_rises=rk["suspected"],
                   confidence=rk["confidence"])
    if rp is not None:
        out.update(process_per_call=rp["slope_per_min"] / 60.0, process_rises=rp["suspected"])
    return out


class Attribution:
    """The verdicts at one moment.

    rows: per part, in first-seen order, then one "outside stages" row: name,
    kind ("stage" or "outside"), calls, seconds_mean, inside ({key: mean
    change within a call}) and per kind of memory read a judge_part() dict
    (for the outside row, the gap kinds' kept growth summed).
    leaks: one dict per part and judged memory named: part, key (the memory
    whose growth was tested: "rss" or "vram_allocated"), by (the memory the
    part keeps it in: "heap", "rss", "vram_allocated"), kept_per_call,
    process_per_call, counted, confidence, text.
    unattributed: one dict per judged memory that rises while no part keeps
    it: key, kind ("leak": the live bytes rise too, or RSS alone where the
    heap is not read; "growth": RSS rises while the live heap does not),
    process_per_call, per (the part whose calls count it), candidates,
    text. judged: False without the library (then nothing is judged)."""

    def __init__(self, settings, judged):
        self.settings, self.judged = settings, judged
        self.rows, self.leaks, self.unattributed = [], [], []

    def lines(self):
        """The verdicts in words, one a line."""
        return [v["text"] for v in self.leaks] + [v["text"] for v in self.unattributed]

    def named(self, key=None):
        """The parts named as leaks (of `key` alone when given)."""
        return [v["part"] for v in self.leaks if key is None or v["key"] == key]


def _fmt(n):
    return fmt_bytes(n, signed=True)


def _judge(tr, s):
    a = Attribution(s, detection.available())
    v = {}  # (name, key) -> judge_part dict
    if a.judged:
        for key, led in tr._ledgers.items():
            for name, p in led.parts.items():
                v[(name, key)] = judge_part(p.held, p.lows, s)
    for name in tr._order:
        row = tr._stats[name].row(name, "stage")
        row.update({k: v[(name, k)] for k in tr._ledgers if (name, k) in v})
        a.rows.append(row)
    if tr._outside.calls:
        row = tr._outside.row(OUTSIDE, "outside")
        for k in tr._ledgers:
            vs = [v[(g, k)] for g in tr._gaps if (g, k) in v]
            if vs:
                row[k] = _sum_gaps(vs)
        a.rows.append(row)
    if not a.judged:
        return a
    for key, gates, by in JUDGED:
        gates = [g for g in gates if g in tr._ledgers and tr._ledgers[g].level is not None]
        if not gates:
            continue
        if by not in gates:
            by = gates[0]
        _judge_key(a, tr, v, key, gates, by)
    return a


def _judge_key(a, tr, v, key, gates, by):
    """Names the parts that keep memory `key` (readings `by`) while one of
    `gates` rises; else says what rises, kept by no one part."""
    for name in tr._order + tr._gaps:
        k = v.get((name, by))
        rising = [(g, v[(name, g)]) for g in gates
                  if (name, g) in v and v[(name, g)]["process_rises"]]
        if k and k["kept_rises"] and rising:
            a.leaks.append(_leak(name, key, by, k, rising))
    if not any(x["key"] == key for x in a.leaks):
        _unattributed(a, tr, v, key, gates, by)


def _sum_gaps(vs):
    kept = [x["kept_per_call"] for x in vs if x["kept_per_call"] is not None]
    return {"counted": max(x["counted"] for x in vs),
            "kept_per_call": sum(kept) if kept else None, "process_per_call": None,
            "kept_rises": any(x["kept_rises"] for x in vs),
            "process_rises": any(x["process_rises"] for x in vs), "confidence": 0.0}


def _rises(rising):
    return " and its ".join("%s %s" % (WORDS[g], _fmt(r["process_per_call"])) for g, r in rising)


def _leak(name, key, by, k, rising):
    text = ("possible leak: %s keeps %s of %s per call over its last %d calls; the process's "
            "%s per call of it (confidence %.3f)" % (
                name, _fmt(k["kept_per_call"]), WORDS[by], k["counted"], _rises(rising),
                k["confidence"]))
    return {"part": name, "key": key, "by": by, "kept_per_call": k["kept_per_call"],
            "process_per_call": {g: r["process_per_call"] for g, r in rising},
            "counted": k["counted"], "confidence": k["confidence"], "text": text}


def _unattributed(a, tr, v, key, gates, by):
    per, rising = None, []
    for n in sorted(tr._order, key=lambda n: tr._stats[n].calls):
        rising = [(g, v[(n, g)]) for g in gates if (n, g) in v and v[(n, g)]["process_rises"]]
        if rising:
            per = n
            break
    if per is None:
        return
    growth = {g: r["process_per_call"] for g, r in rising}
    if by in gates and by not in growth:
        where = [n for n in tr._order + tr._gaps
                 if (n, rising[0][0]) in v and v[(n, rising[0][0])]["kept_rises"]]
        text = ("growth, no leak named: the process's %s per call of %s while its live %s "
                "does not rise (memory the allocator keeps after frees, or memory not from "
                "malloc)%s" % (_rises(rising), per, WORDS[by],
                               "; it grows in %s" % ", ".join(where) if where else ""))
        a.unattributed.append({"key": key, "kind": "growth", "process_per_call": growth,
                               "per": per, "candidates": where, "text": text})
        return
    cands = {}
    for c, nbytes in tr._ledgers[by].ambiguous.items():
        for name in c:
            cands[name] = cands.get(name, 0) + nbytes
    names = sorted(cands, key=lambda n: -cands[n])
    if names:
        why = ("%s add memory that is given back together, so the %s cannot tell which "
               "of them keeps it" % (", ".join(names), WORDS[by]))
    else:
        names = _pending(tr._ledgers[by], a.settings)
        why = "no part judged keeps %s per call" % fmt_bytes(a.settings.min_growth)
        if names:
            why += "; too few calls yet to judge %s, whose kept memory grows" % ", ".join(names)
    text = ("possible leak: the process's %s per call of %s, kept by no one part: %s"
            % (_rises(rising), per, why))
    a.unattributed.append({"key": key, "kind": "leak", "process_per_call": growth,
                           "per": per, "candidates": names, "text": text})


def _pending(led, s):
    """Parts not judged yet (fewer than min_calls counted) whose kept bytes
    have grown min_growth per call or more since their warm-up."""
    out = []
    for name, p in led.parts.items():
        held = [v for c, v in p.held if c >= s.warmup]
        done = sum(1 for c, _ in p.lows if c >= s.warmup)
        if done < s.min_calls and len(held) >= 2 and \
                held[-1] - held[0] >= s.min_growth * (len(held) - 1):
            out.append(name)
    return out


def replay(calls, settings=None, keys=KEYS):
    """judge() on recorded calls: `calls` is an iterable of (name, t_enter,
    t_exit, readings_at_entry, readings_at_exit) in the order they began
    (calls may nest: a call that begins before the previous one ended is
    inside it). Returns the Attribution."""
    tr = Tracker(settings, keys)
    events = []
    for i, (name, t0, t1, r0, r1) in enumerate(calls):
        events.append((float(t0), 0, i, name, r0))
        events.append((float(t1), 1, i, name, r1))
    # At one time, exits before entries; the inner of nested calls ends first.
    events.sort(key=lambda e: (e[0], -e[1], -e[2] if e[1] else e[2]))
    open_ = {}
    for t, kind, i, name, r in events:
        if kind == 0:
            open_[i] = tr.enter(name, r, t)
        else:
            tr.exit(open_.pop(i), r, t)
    return tr.judge()
