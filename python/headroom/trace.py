"""Import allocation traces into headroom's trace format (docs/trace-format.md).

Two inputs are understood:

* PyTorch memory snapshots, the pickles written by
  ``torch.cuda.memory._dump_snapshot()``. They are unpickled by an Unpickler
  whose ``find_class`` refuses every global, so a pickle that names any class
  or function (one built to call ``os.system``, say) is refused before
  anything in it can run. A real snapshot holds only dicts, lists, tuples,
  strings, numbers, booleans and None, so nothing legitimate is lost.
* RMM ``logging_resource_adaptor`` CSV logs (``Thread,Time,Action,Pointer,
  Size,Stream``), which RAPIDS users have.

What the import does, per device:

* pairs each ``alloc`` with the next ``free_completed`` at the same address (a
  block is reusable at ``free_completed``, not at ``free_requested``);
* reconstructs what was live before the recorded window: a ``free_completed``
  with no ``alloc`` before it, and blocks of the final ``segments`` in an
  active state that no ``alloc`` in the trace accounts for;
* keeps PyTorch's own reserved-memory timeline (``segment_alloc``/``map``
  add, ``segment_free``/``unmap`` subtract, starting from the final segments'
  total minus the net change) and its peaks, for comparison;
* numbers blocks with small reusable slots, so that a replay needs one array
  of as many pointers as were ever live at once, and no hash table;
* keeps each event's time (PyTorch's ``time_us``, RMM's ``Time``) as
  microseconds since the section's first timed event, written as a ``T`` line
  only where it changes.

Hostile input is bounded: the input must be a regular file of at most
``MAX_INPUT_BYTES``; unpickling and conversion run under an address-space
limit (``resource.RLIMIT_AS``, restored afterwards) of the memory in use plus
``MEMORY_FLOOR`` and ``MEMORY_PER_BYTE`` times the input's size, so a tiny
pickle that asks for a huge memo or string fails at once instead of taking
gigabytes; untrusted values are never printed whole (a bounded repr), and
every number written is checked against what ``headroom replay`` accepts.
Every failure is one line on stderr and exit status 1; no ``.tmp`` file is
left behind.

Usage: ``python3 -m headroom.trace import SNAPSHOT.pickle -o TRACE``. Standard
library only; this module never loads libheadroom.
"""

import argparse
import csv
import io
import os
import pickle
import reprlib
import sys

from ._files import NotRegularFile, open_regular

try:
    import resource
except ImportError:  # not on Linux: no address-space limit
    resource = None

FORMAT_VERSION = 2

#: The largest input read (snapshots of real runs are tens of MiB).
MAX_INPUT_BYTES = 512 * 2**20
#: The memory an import may add to what the process already uses.
MEMORY_FLOOR = 1 * 2**30
MEMORY_PER_BYTE = 32
#: Limits of headroom's trace reader (src/trace/read.c).
MAX_DEVICE = 1024
U64_MAX = 2**64 - 1
I64_MAX = 2**63 - 1
U32_MAX = 2**32 - 1

_short = reprlib.Repr()
_short.maxlevel, _short.maxstring, _short.maxother = 2, 60, 60

#: Trace actions a PyTorch snapshot may hold, and what the import does with each.
PYTORCH_ACTIONS = {
    "alloc": "alloc",
    "free_requested": "ignore",  # the block is not reusable yet
    "free_completed": "free",
    "segment_alloc": "grow",
    "segment_map": "grow",
    "segment_free": "shrink",
    "segment_unmap": "shrink",
    "snapshot": "ignore",
    "oom": "oom",
}

_ACTIVE_STATES = ("active_allocated", "active_pending_free")


class TraceError(Exception):
    """A file that cannot be imported; the message says what and where."""


class _NoGlobalsUnpickler(pickle.Unpickler):
    """Refuses every global, so that no class or function named in the pickle is
    ever looked up, let alone called."""

    def find_class(self, module, name):
        raise TraceError(
            "refused: the pickle names the global %s.%s; a memory snapshot holds only "
            "dicts, lists, strings and numbers, so this file is not one and nothing in it "
            "was run" % (module, name))

    def persistent_load(self, pid):
        raise TraceError("refused: the pickle uses a persistent id (%.60r); a memory "
                         "snapshot has none, and nothing in it was run" % (pid,))


def _open_regular(path, mode, **kw):
    """Opens `path` for reading if it is a regular file of at most
    MAX_INPUT_BYTES (a FIFO or a device is refused before it is opened).
    `mode` and keyword arguments go to open(). Raises TraceError."""
    try:
        f = open_regular(path, mode, **kw)
    except NotRegularFile as e:
        raise TraceError("%s: %s" % (path, e)) from None
    except OSError as e:
        raise TraceError("%s: cannot read: %s" % (path, e.strerror or e)) from None
    size = os.fstat(f.fileno()).st_size
    if size > MAX_INPUT_BYTES:
        f.close()
        raise TraceError("%s: %d bytes, more than the %d this importer reads"
                         % (path, size, MAX_INPUT_BYTES))
    return f


def read_input(path):
    """Reads `path` whole: a regular file of at most MAX_INPUT_BYTES (so
    /dev/zero or a FIFO is refused rather than read until memory runs out).
    Raises TraceError."""
    try:
        with _open_regular(path, "rb") as f:
            data = f.read(MAX_INPUT_BYTES + 1)
    except OSError as e:
        raise TraceError("%s: cannot read: %s" % (path, e.strerror or e)) from None
    if len(data) > MAX_INPUT_BYTES:
        raise TraceError("%s: grew past %d bytes while read" % (path, MAX_INPUT_BYTES))
    return data


class _MemoryBound:
    """Lowers the soft address-space limit to the memory in use plus
    MEMORY_FLOOR + MEMORY_PER_BYTE * nbytes for the duration of a `with`,
    and restores it after. The C unpickler grows its memo to the largest
    index a pickle names, and a string to the length it declares; under the
    limit such a request fails at once with MemoryError."""

    def __init__(self, nbytes):
        self.nbytes = nbytes
        self.old = None

    def __enter__(self):
        if resource is None:
            return self
        try:
            with open("/proc/self/statm") as f:
                in_use = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
            soft, hard = resource.getrlimit(resource.RLIMIT_AS)
            want = in_use + MEMORY_FLOOR + MEMORY_PER_BYTE * self.nbytes
            if hard != resource.RLIM_INFINITY:
                want = min(want, hard)
            if soft == resource.RLIM_INFINITY or want < soft:
                resource.setrlimit(resource.RLIMIT_AS, (want, hard))
                self.old = (soft, hard)
        except (OSError, ValueError):
            self.old = None
        return self

    def __exit__(self, *exc):
        if self.old is not None:
            resource.setrlimit(resource.RLIMIT_AS, self.old)
        return False


def load_snapshot(path, data=None):
    """Unpickles `path` (or its bytes, `data`) without allowing any global;
    returns the object. Raises TraceError for a refused, truncated,
    oversized or unreadable pickle. The caller bounds the memory."""
    if data is None:
        data = read_input(path)
    if not data:
        raise TraceError("%s: empty file" % path)
    try:
        return _NoGlobalsUnpickler(io.BytesIO(data)).load()
    except TraceError as e:
        raise TraceError("%s: %s" % (path, e)) from None
    except EOFError:
        raise TraceError("%s: truncated: the pickle ends before its STOP opcode (%d bytes read)"
                         % (path, len(data))) from None
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "truncated" in msg:
            raise TraceError("%s: truncated: %s (%d bytes read)" % (path, msg, len(data))) from None
        raise TraceError("%s: not a pickle or a damaged one: %s" % (path, msg)) from None
    except MemoryError:
        raise TraceError("%s: refused: the pickle asks for more memory than %d bytes of "
                         "input can need (a memo index or a length far too large)"
                         % (path, len(data))) from None
    except (ValueError, TypeError, IndexError, KeyError, AttributeError, OverflowError,
            RecursionError, UnicodeDecodeError) as e:
        raise TraceError("%s: damaged pickle: %s: %s"
                         % (path, type(e).__name__, _short.repr(str(e)))) from None


# ---- the intermediate form ------------------------------------------------


class DeviceTrace:
    """One device's trace: initial live blocks, then events, with PyTorch's
    recorded numbers. Block ids are unique per block instance; slots are
    assigned when written."""

    def __init__(self, device):
        self.device = device
        self.initial = []  # (block id, size, stream)
        self.events = []  # ("A", id, size, stream) ("F", id) ("R", delta) ("O", size, stream)
        # Microseconds since the section's first timed event, one per event;
        # None when the input has no times at all.
        self.times = None
        self.n_blocks = 0
        self.pytorch = {}  # recorded numbers, written as pytorch_* keys
        self.notes = []

    def new_block(self):
        self.n_blocks += 1
        return self.n_blocks - 1

    def ops(self):
        return sum(1 for e in self.events if e[0] in ("A", "F"))

    def live_timeline_peak(self):
        """Peak of the live bytes: the initial blocks plus allocs minus frees."""
        sizes = {}
        live = 0
        for bid, size, _ in self.initial:
            sizes[bid] = size
            live += size
        peak = live
        for e in self.events:
            if e[0] == "A":
                sizes[e[1]] = e[2]
                live += e[2]
                peak = max(peak, live)
            elif e[0] == "F":
                live -= sizes[e[1]]
        return sum(s for _, s, _ in self.initial), peak


def _where(dev, i):
    return "device_traces[%d][%d]" % (dev, i)


def _int_field(ev, key, where, allow_missing=False, limit=U64_MAX):
    v = ev.get(key)
    if v is None and allow_missing:
        return 0
    if isinstance(v, bool) or not isinstance(v, int):
        raise TraceError("%s: field '%s' should be an integer, found %s" %
                         (where, key, type(v).__name__ if v is not None else "nothing"))
    if v < 0:
        raise TraceError("%s: field '%s' is negative (%d)" % (where, key, v))
    if v > limit:
        raise TraceError("%s: field '%s' is %s, more than %d" % (where, key, _short.repr(v), limit))
    return v


def _pair_events(dt, events, final_active):
    """Turns (kind, addr, size, stream, where, time) tuples into dt.events,
    pairing frees with allocs by address. `final_active` maps the address of
    each active block of the final segments to (size, stream); those that no
    alloc explains were live before the window and stay live to its end.

    Times (an absolute count of microseconds, or None) become dt.times,
    relative to the first event that has one. An event without a time keeps
    the last one, and so does one whose time is earlier than the last: the
    format's times never go back (events stay in the input's order)."""
    live = {}  # addr -> (block id, size, alloc where)
    grow = 0
    unmatched_frees = 0
    times = []
    base = None
    now = 0
    for kind, addr, size, stream, where, t in events:
        if t is not None:
            if base is None:
                base = t
            now = max(now, t - base)
        times.append(now)
        if kind == "alloc":
            if addr in live:
                first = live[addr][2].rsplit(": ", 1)[-1]
                raise TraceError("%s: alloc at 0x%x, which is already live (allocated at %s) "
                                 "with no free_completed between" % (where, addr, first))
            bid = dt.new_block()
            live[addr] = (bid, size, where)
            dt.events.append(("A", bid, size, stream))
        elif kind == "free":
            if addr in live:
                bid = live.pop(addr)[0]
            else:
                # Allocated before the recorded window: live from the start.
                bid = dt.new_block()
                dt.initial.append((bid, size, stream))
                unmatched_frees += 1
            dt.events.append(("F", bid))
        elif kind in ("grow", "shrink"):
            delta = size if kind == "grow" else -size
            grow += delta
            dt.events.append(("R", delta))
        elif kind == "oom":
            dt.events.append(("O", size, stream))
    dt.times = times if base is not None else None
    before = 0
    for addr, (size, stream) in sorted(final_active.items()):
        if addr not in live:
            bid = dt.new_block()
            dt.initial.append((bid, size, stream))
            before += 1
    if unmatched_frees:
        dt.notes.append("%d frees with no alloc in the window: live from the start"
                        % unmatched_frees)
    if before:
        dt.notes.append("%d blocks of the final segments never allocated in the window: "
                        "live from the start to the end" % before)
    return grow


def _check_list(obj, what):
    if not isinstance(obj, list):
        raise TraceError("%s should be a list, found %s" % (what, type(obj).__name__))
    return obj


def from_snapshot(snap, path="snapshot"):
    """Converts an unpickled PyTorch snapshot into DeviceTrace objects (one per
    device with any event or segment), plus a dict of file-level header
    fields. Raises TraceError naming the place of any structural problem."""
    if not isinstance(snap, dict):
        raise TraceError("%s: a PyTorch memory snapshot is a dict with 'segments' and "
                         "'device_traces'; found %s" % (path, type(snap).__name__))
    for key in ("segments", "device_traces"):
        if key not in snap:
            raise TraceError("%s: no '%s' key: not a PyTorch memory snapshot (keys: %s)"
                             % (path, key, ", ".join(sorted(_short.repr(k) for k in snap))[:200]
                                or "none"))
    segments = _check_list(snap["segments"], "%s: 'segments'" % path)
    traces = _check_list(snap["device_traces"], "%s: 'device_traces'" % path)
    settings = snap.get("allocator_settings") or {}
    conf = settings.get("PYTORCH_CUDA_ALLOC_CONF", "") if isinstance(settings, dict) else ""
    if not isinstance(conf, str):
        raise TraceError("%s: allocator_settings.PYTORCH_CUDA_ALLOC_CONF should be a string, "
                         "found %s" % (path, type(conf).__name__))

    seg_by_dev = {}
    for si, seg in enumerate(segments):
        where = "%s: segments[%d]" % (path, si)
        if not isinstance(seg, dict):
            raise TraceError("%s: should be a dict, found %s" % (where, type(seg).__name__))
        dev = _int_field(seg, "device", where, allow_missing=True, limit=MAX_DEVICE)
        _int_field(seg, "total_size", where)
        _check_list(seg.get("blocks"), where + ": 'blocks'")
        seg_by_dev.setdefault(dev, []).append((si, seg))

    out = []
    if len(traces) > MAX_DEVICE + 1:
        raise TraceError("%s: 'device_traces' has %d devices; replay reads devices 0 to %d"
                         % (path, len(traces), MAX_DEVICE))
    devices = sorted(set(range(len(traces))) | set(seg_by_dev))
    for dev in devices:
        events = _check_list(traces[dev], "%s: device_traces[%d]" % (path, dev)) \
            if dev < len(traces) else []
        segs = seg_by_dev.get(dev, [])
        if not events and not segs:
            continue
        dt = DeviceTrace(dev)
        parsed = []
        for i, ev in enumerate(events):
            where = "%s: %s" % (path, _where(dev, i))
            if not isinstance(ev, dict):
                raise TraceError("%s: an event should be a dict, found %s"
                                 % (where, type(ev).__name__))
            action = ev.get("action")
            kind = PYTORCH_ACTIONS.get(action) if isinstance(action, str) else None
            if kind is None:
                raise TraceError("%s: unknown action %s (known: %s)"
                                 % (where, _short.repr(action), ", ".join(PYTORCH_ACTIONS)))
            if kind == "ignore":
                continue
            size = _int_field(ev, "size", where)
            addr = _int_field(ev, "addr", where, allow_missing=(kind == "oom"))
            stream = _int_field(ev, "stream", where, allow_missing=True)
            t = ev.get("time_us")
            if t is not None:
                t = _int_field(ev, "time_us", where)
            parsed.append((kind, addr, size, stream, where, t))

        final_active = {}
        reserved_end = 0
        expandable = False
        for si, seg in segs:
            reserved_end += seg["total_size"]
            expandable = expandable or bool(seg.get("is_expandable"))
            for bi, blk in enumerate(seg["blocks"]):
                where = "%s: segments[%d].blocks[%d]" % (path, si, bi)
                if not isinstance(blk, dict):
                    raise TraceError("%s: should be a dict" % where)
                if blk.get("state") in _ACTIVE_STATES:
                    addr = _int_field(blk, "address", where)
                    size = _int_field(blk, "requested_size" if blk.get("requested_size")
                                      else "size", where)
                    final_active[addr] = (size, _int_field(seg, "stream", where, True))

        grow = _pair_events(dt, parsed, final_active)
        start = reserved_end - grow
        if start < 0:
            dt.notes.append("segment events add up to more than the final segments hold "
                            "(%d bytes): PyTorch's reserved timeline starts at 0" % -start)
            start = 0
        low = run = 0
        for e in dt.events:
            if e[0] == "R":
                run += e[1]
                low = min(low, run)
        if start + low < 0:
            dt.notes.append("segment frees before their allocations: PyTorch's reserved "
                            "timeline starts at %d so that it never goes below zero" % -low)
            start = -low
        reserved = peak = start
        for e in dt.events:
            if e[0] == "R":
                reserved += e[1]
                peak = max(peak, reserved)
        live_start, live_peak = dt.live_timeline_peak()
        dt.pytorch = {
            "reserved_start": start,
            "peak_reserved": peak,
            "peak_live": live_peak,
            "ooms": sum(1 for e in dt.events if e[0] == "O"),
            "expandable": int(expandable),
        }
        out.append(dt)
    if not out:
        raise TraceError("%s: the snapshot has no events and no segments on any device" % path)
    header = {"source": "pytorch-snapshot", "alloc_conf": conf or ""}
    return header, out


# ---- RMM ------------------------------------------------------------------

_RMM_COLUMNS = ("Action", "Pointer", "Size")
_DAY_US = 86400 * 10**6


def _rmm_time(text, where):
    """RMM's Time column in microseconds: a clock time HH:MM:SS.ffffff (the
    logging_resource_adaptor's spdlog pattern) or seconds with a fraction
    (1634567890.123456). None for an empty field. Returns (microseconds,
    whether it is a clock time, which wraps at midnight)."""
    text = text.strip()
    if not text:
        return None, False
    clock = ":" in text
    parts = text.split(":") if clock else [text]
    if clock and len(parts) != 3:
        raise TraceError("%s: bad time %r (expected HH:MM:SS.ffffff or seconds)" % (where, text))
    sec, _, frac = parts[-1].partition(".")
    fields = parts[:-1] + [sec]
    if not all(f.isdigit() for f in fields) or (frac and not frac.isdigit()):
        raise TraceError("%s: bad time %r (expected HH:MM:SS.ffffff or seconds)" % (where, text))
    us = 0
    for f in fields:
        us = us * 60 + int(f) if clock else int(f)
    # Integer arithmetic keeps microseconds exact; digits beyond them are dropped.
    return us * 10**6 + int((frac + "000000")[:6]), clock


def from_rmm_csv(path):
    """Reads an RMM logging_resource_adaptor CSV (Thread,Time,Action,Pointer,
    Size,Stream; extra columns are ignored). One device (0): the log does not
    say which. Returns (header, [DeviceTrace])."""
    f = _open_regular(path, "r", newline="", encoding="utf-8")
    with f:
        reader = csv.reader(f)
        try:
            head = next(reader)
        except StopIteration:
            raise TraceError("%s: empty file" % path) from None
        except (csv.Error, UnicodeDecodeError) as e:
            raise TraceError("%s:1: not a CSV file: %s" % (path, e)) from None
        head = [h.strip() for h in head]
        missing = [c for c in _RMM_COLUMNS if c not in head]
        if missing:
            raise TraceError("%s:1: not an RMM log: no column %s (header: %s)"
                             % (path, ", ".join(missing), ",".join(head)))
        col = {name: head.index(name) for name in head}
        parsed = []
        line = 1
        day = 0  # microseconds added since the clock last wrapped at midnight
        last_clock = None
        try:
            for row in reader:
                line = reader.line_num
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                if len(row) < len(head):
                    raise TraceError("%s:%d: %d fields, the header has %d (truncated line?)"
                                     % (path, line, len(row), len(head)))
                action = row[col["Action"]].strip().lower()
                where = "%s:%d" % (path, line)
                try:
                    ptr = int(row[col["Pointer"]].strip(), 0)
                    size = int(row[col["Size"]].strip(), 0)
                    stream = int(row[col["Stream"]].strip(), 0) if "Stream" in col else 0
                except ValueError as e:
                    raise TraceError("%s: bad number: %s" % (where, e)) from None
                if size < 0 or ptr < 0 or stream < 0:
                    raise TraceError("%s: negative pointer, size or stream" % where)
                if size > U64_MAX or ptr > U64_MAX or stream > U64_MAX:
                    raise TraceError("%s: pointer, size or stream past 2^64" % where)
                t = None
                if "Time" in col:
                    t, clock = _rmm_time(row[col["Time"]], where)
                    if clock:
                        # A clock time more than 12 hours before the last one
                        # is the next day's.
                        if last_clock is not None and t + _DAY_US // 2 < last_clock:
                            day += _DAY_US
                        last_clock = t
                        t += day
                if action == "allocate":
                    parsed.append(("alloc", ptr, size, stream, where, t))
                elif action == "free":
                    parsed.append(("free", ptr, size, stream, where, t))
                elif action in ("allocate failure", "allocate_failure"):
                    parsed.append(("oom", ptr, size, stream, where, t))
                else:
                    raise TraceError("%s: unknown action %r (known: allocate, free, "
                                     "allocate failure)" % (where, row[col["Action"]]))
        except csv.Error as e:
            raise TraceError("%s:%d: malformed CSV: %s" % (path, reader.line_num, e)) from None
        except UnicodeDecodeError as e:
            raise TraceError("%s:%d: not UTF-8 text: %s" % (path, line, e)) from None
    dt = DeviceTrace(0)
    _pair_events(dt, parsed, {})
    _, live_peak = dt.live_timeline_peak()
    dt.pytorch = {}
    dt.notes.append("RMM log: no reserved-memory timeline; peak live %d bytes" % live_peak)
    return {"source": "rmm-csv", "alloc_conf": ""}, [dt]


# ---- writing --------------------------------------------------------------


def _assign_slots(dt):
    """Maps block ids to slots so that no two blocks live at once share one;
    returns (slot of each block id, number of slots)."""
    slot_of = [0] * dt.n_blocks
    free = []
    n = 0
    for bid, _, _ in dt.initial:
        slot_of[bid] = n
        n += 1
    for e in dt.events:
        if e[0] == "A":
            if free:
                slot_of[e[1]] = free.pop()
            else:
                slot_of[e[1]] = n
                n += 1
        elif e[0] == "F":
            free.append(slot_of[e[1]])
    return slot_of, n


def _clean(text):
    return " ".join(str(text).split())


def _check_u64(v, what, dev, limit=U64_MAX):
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= limit:
        raise TraceError("device %d: %s is %s; headroom replay reads 0 to %d"
                         % (dev, what, _short.repr(v), limit))


def check_device(dt, n_slots):
    """Checks every number of `dt` against what headroom replay reads, so that
    a trace this module writes is never one that replay then refuses."""
    d = dt.device
    _check_u64(d, "the device number", d, MAX_DEVICE)
    _check_u64(n_slots, "the number of slots", d, U32_MAX)
    for k, v in dt.pytorch.items():
        _check_u64(v, "pytorch_%s" % k, d)
    for _, size, stream in dt.initial:
        _check_u64(size, "a block size", d)
        _check_u64(stream, "a stream", d)
    reserved = dt.pytorch.get("reserved_start", 0)
    for e in dt.events:
        if e[0] in ("A", "O"):
            _check_u64(e[-2], "a block size", d)
            _check_u64(e[-1], "a stream", d)
        elif e[0] == "R":
            _check_u64(abs(e[1]), "a reserved-memory change", d, I64_MAX)
            reserved += e[1]
            _check_u64(reserved, "PyTorch's reserved memory", d)
    if dt.times:
        _check_u64(dt.times[-1], "the duration in microseconds", d)


def write_trace(out, header, devices, source_name):
    """Writes the trace in headroom's text format to the text stream `out`.
    Raises TraceError, before writing the device's section, for a number
    that headroom replay would refuse."""
    w = out.write
    w("headroom-trace %d\n" % FORMAT_VERSION)
    w("source %s %s\n" % (header["source"], _clean(source_name) or "-"))
    w("alloc_conf %s\n" % (_clean(header.get("alloc_conf", "")) or "-"))
    for dt in devices:
        slot_of, n_slots = _assign_slots(dt)
        check_device(dt, n_slots)
        for note in dt.notes:
            w("# device %d: %s\n" % (dt.device, _clean(note)))
        fields = ["slots=%d" % n_slots, "initial=%d" % len(dt.initial), "ops=%d" % dt.ops()]
        fields += ["pytorch_%s=%d" % (k, v) for k, v in dt.pytorch.items()]
        times = dt.times
        if times is not None:
            fields.append("duration_us=%d" % (times[-1] if times else 0))
        w("device %d %s\n" % (dt.device, " ".join(fields)))
        for bid, size, stream in dt.initial:
            w("L %d %d %d\n" % (slot_of[bid], size, stream))
        now = None
        for i, e in enumerate(dt.events):
            if times is not None and times[i] != now:
                # The first time absolute (0), then whichever of the change
                # (+N) or the absolute time is shorter: nearly always the change.
                t = times[i]
                w("T %d\n" % t if now is None or len(str(t)) <= len(str(t - now)) + 1
                  else "T +%d\n" % (t - now))
                now = t
            k = e[0]
            if k == "A":
                w("A %d %d %d\n" % (slot_of[e[1]], e[2], e[3]))
            elif k == "F":
                w("F %d\n" % slot_of[e[1]])
            elif k == "R":
                w("R %+d\n" % e[1])
            else:
                w("O %d %d\n" % (e[1], e[2]))
    w("end\n")


def _is_csv(path):
    if path.lower().endswith(".csv"):
        return True
    try:
        with _open_regular(path, "rb") as f:
            return f.read(6) == b"Thread"
    except (OSError, TraceError):
        return False


def import_file(path):
    """Reads a snapshot pickle or an RMM CSV; returns (header, devices).
    Memory is bounded as the module's docstring says; raises TraceError."""
    try:
        if _is_csv(path):
            with _MemoryBound(_size_of(path)):
                return from_rmm_csv(path)
        data = read_input(path)
        with _MemoryBound(len(data)):
            return from_snapshot(load_snapshot(path, data), path)
    except MemoryError:
        raise TraceError("%s: refused: importing it needs more memory than its size "
                         "justifies" % path) from None
    except RecursionError:
        raise TraceError("%s: refused: nested too deeply for a memory snapshot" % path) from None


def _size_of(path):
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def import_to(path, out_path):
    """Imports `path` and writes the trace to `out_path` (through a temporary
    file, so that a failed import leaves nothing behind, whatever the
    failure). Returns the devices; raises TraceError."""
    header, devices = import_file(path)
    tmp = "%s.tmp.%d" % (out_path, os.getpid())
    done = False
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            write_trace(f, header, devices, os.path.basename(path))
        os.replace(tmp, out_path)
        done = True
    except OSError as e:
        raise TraceError("%s: cannot write: %s" % (out_path, e.strerror or e)) from None
    finally:
        if not done:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return devices


def _gib(n):
    return n / 2**30


def _print_sizes(paths):
    """Prints every allocation's size from each input; a file that cannot be
    imported is reported and skipped. Exit 1 when none could be read."""
    read = 0
    for path in paths:
        try:
            devices = import_file(path)[1]
        except TraceError as e:
            print("headroom.trace: skipped: %s" % e, file=sys.stderr)
            continue
        read += 1
        for dt in devices:
            for e in dt.events:
                if e[0] == "A":
                    print(e[2])
    return 0 if read else 1


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python3 -m headroom.trace",
        description="Turn a PyTorch memory snapshot (pickle) or an RMM log (CSV) into "
                    "headroom's trace format, for 'headroom replay'.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    imp = sub.add_parser("import", help="import a snapshot pickle or an RMM CSV log")
    imp.add_argument("input", help="SNAPSHOT.pickle or RMM log .csv")
    imp.add_argument("-o", "--output", required=True, help="the trace file to write")
    imp.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    siz = sub.add_parser("sizes", help="print the size of every allocation, one a line "
                                       "(test and benchmark inputs)")
    siz.add_argument("inputs", nargs="+", help="snapshot pickles or RMM CSV logs")
    args = ap.parse_args(argv)
    if args.cmd == "sizes":
        return _print_sizes(args.inputs)
    try:
        devices = import_to(args.input, args.output)
    except TraceError as e:
        print("headroom.trace: error: %s" % e, file=sys.stderr)
        return 1
    except (MemoryError, RecursionError, ValueError, TypeError, KeyError, IndexError,
            AttributeError, OverflowError) as e:
        # A shape of input no check above foresaw: still one line, not a traceback.
        print("headroom.trace: error: %s: cannot import: %s: %s"
              % (args.input, type(e).__name__, _short.repr(str(e))), file=sys.stderr)
        return 1
    if not args.quiet:
        for dt in devices:
            p = dt.pytorch
            line = "device %d: %d ops, %d live at start" % (dt.device, dt.ops(), len(dt.initial))
            if "peak_reserved" in p and p["peak_live"]:
                line += ", PyTorch peak reserved %.2f GiB / peak live %.2f GiB = %.3f" % (
                    _gib(p["peak_reserved"]), _gib(p["peak_live"]),
                    p["peak_reserved"] / p["peak_live"])
            print(line, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
