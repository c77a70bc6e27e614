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

Usage: ``python3 -m headroom.trace import SNAPSHOT.pickle -o TRACE``. Standard
library only; this module never loads libheadroom.
"""

import argparse
import csv
import io
import os
import pickle
import sys

FORMAT_VERSION = 2

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


def load_snapshot(path):
    """Unpickles `path` without allowing any global; returns the object.
    Raises TraceError for a refused, truncated or unreadable pickle."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise TraceError("%s: cannot read: %s" % (path, e.strerror or e)) from None
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
    except (ValueError, TypeError, IndexError, KeyError, AttributeError, MemoryError,
            RecursionError, UnicodeDecodeError) as e:
        raise TraceError("%s: damaged pickle: %s: %s" % (path, type(e).__name__, e)) from None


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


def _int_field(ev, key, where, allow_missing=False):
    v = ev.get(key)
    if v is None and allow_missing:
        return 0
    if isinstance(v, bool) or not isinstance(v, int):
        raise TraceError("%s: field '%s' should be an integer, found %s" %
                         (where, key, type(v).__name__ if v is not None else "nothing"))
    if v < 0:
        raise TraceError("%s: field '%s' is negative (%d)" % (where, key, v))
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
                             % (path, key, ", ".join(sorted(map(str, snap))) or "none"))
    segments = _check_list(snap["segments"], "%s: 'segments'" % path)
    traces = _check_list(snap["device_traces"], "%s: 'device_traces'" % path)
    settings = snap.get("allocator_settings") or {}
    conf = settings.get("PYTORCH_CUDA_ALLOC_CONF", "") if isinstance(settings, dict) else ""

    seg_by_dev = {}
    for si, seg in enumerate(segments):
        where = "%s: segments[%d]" % (path, si)
        if not isinstance(seg, dict):
            raise TraceError("%s: should be a dict, found %s" % (where, type(seg).__name__))
        dev = _int_field(seg, "device", where, allow_missing=True)
        _int_field(seg, "total_size", where)
        _check_list(seg.get("blocks"), where + ": 'blocks'")
        seg_by_dev.setdefault(dev, []).append((si, seg))

    out = []
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
                raise TraceError("%s: unknown action %r (known: %s)"
                                 % (where, action, ", ".join(PYTORCH_ACTIONS)))
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
                    size = blk.get("requested_size") or _int_field(blk, "size", where)
                    final_active[addr] = (size, _int_field(seg, "stream", where, True))

        grow = _pair_events(dt, parsed, final_active)
        start = reserved_end - grow
        if start < 0:
            dt.notes.append("segment events add up to more than the final segments hold "
                            "(%d bytes): PyTorch's reserved timeline starts at 0" % -start)
            start = 0
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
    try:
        f = open(path, newline="", encoding="utf-8")
    except OSError as e:
        raise TraceError("%s: cannot read: %s" % (path, e.strerror or e)) from None
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


def write_trace(out, header, devices, source_name):
    """Writes the trace in headroom's text format to the text stream `out`."""
    w = out.write
    w("headroom-trace %d\n" % FORMAT_VERSION)
    w("source %s %s\n" % (header["source"], _clean(source_name) or "-"))
    w("alloc_conf %s\n" % (_clean(header.get("alloc_conf", "")) or "-"))
    for dt in devices:
        slot_of, n_slots = _assign_slots(dt)
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
        with open(path, "rb") as f:
            return f.read(6) == b"Thread"
    except OSError:
        return False


def import_file(path):
    """Reads a snapshot pickle or an RMM CSV; returns (header, devices)."""
    if _is_csv(path):
        return from_rmm_csv(path)
    return from_snapshot(load_snapshot(path), path)


def import_to(path, out_path):
    """Imports `path` and writes the trace to `out_path` (through a temporary
    file, so that a failed import leaves nothing behind). Returns the devices."""
    header, devices = import_file(path)
    tmp = "%s.tmp.%d" % (out_path, os.getpid())
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            write_trace(f, header, devices, os.path.basename(path))
        os.replace(tmp, out_path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise TraceError("%s: cannot write: %s" % (out_path, e.strerror or e)) from None
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
