"""snapshot(): one reading of the machine's memory through libheadroom's
probe (hr_probe_snapshot + hr_snapshot_json), as the dict that
``headroom status --json`` prints.

Each thread reads processes through a probe context of its own (hr_probe_t,
as `headroom watch` does): a process already seen by the thread's last
snapshot is read the short way (statm; see hr_probe_create in probe.h for
what stays fresh every snapshot and what may be a few snapshots old), so
that a caller polling snapshot() does not read four /proc files per process
every time.

snapshot(what=["host"]), which a caller may take on every frame, reads the
host's figures through hr_host_mem_read into a struct instead: no snapshot
and no JSON between C and Python. The parts it does not read (cgroup, GPUs,
processes) are the library's own "not read" parts, taken from one
host-only snapshot's JSON the first time; the dict is the same.
"""

import ctypes
import json
import threading
import time

from .._c import lib as _lib, options

HOST, CGROUP, PROCS, GPUS, PSS = 1, 2, 4, 8, 16
ALL = 0x1F
#: What snapshot() reads when not told: everything but PSS, which reads
#: smaps_rollup of every process and costs milliseconds per large one.
DEFAULT = HOST | CGROUP | PROCS | GPUS
_NAMES = {"host": HOST, "cgroup": CGROUP, "procs": PROCS, "gpus": GPUS, "pss": PSS}

# The root, NVML path and cgroup (path, pid) of the process's options, encoded:
# those options are read once per process and never change, so none is looked
# up per call.
_process_paths = None
# Each thread's error buffer, struct and probe context: allocated once, not per
# call.
_local = threading.local()
# A host-only snapshot's parts besides "host" and "time", as the library
# writes them (learned once; see _host_only).
_not_read = None
_UNKNOWN, _UNLIMITED = (1 << 64) - 1, (1 << 64) - 2
_HOST_FIELDS = ("total_bytes", "available_bytes", "used_bytes", "free_bytes", "buffers_bytes",
                "cached_bytes", "shmem_bytes", "swap_total_bytes", "swap_free_bytes")


def _paths():
    global _process_paths
    if _process_paths is None:
        o = options.process()
        root, nvml, cg = o.get("root"), o.get("nvml_library"), o.get("cgroup")
        _process_paths = (root.encode() if root else None, nvml.encode() if nvml else None,
                          cg.encode() if cg else None, o.get("cgroup_pid"))
    return _process_paths


class _Context:
    """This thread's probe context (hr_probe_t), destroyed with the thread's
    locals."""

    __slots__ = ("lib", "h")

    def __init__(self, lib):
        self.lib, self.h = lib, ctypes.c_void_p()
        _lib.check(lib.hr_probe_create(ctypes.byref(self.h)), "hr_probe_create")

    def __del__(self):
        if self.h:
            self.lib.hr_probe_destroy(self.h)
            self.h = None


def _context(lib):
    """The calling thread's probe context for `lib`."""
    c = getattr(_local, "context", None)
    if c is None or c.lib is not lib:
        c = _local.context = _Context(lib)
    return c.h


def _err_buffer():
    """(buffer, its address as a char *) of this thread."""
    e = getattr(_local, "err", None)
    if e is None:
        buf = ctypes.create_string_buffer(512)
        e = _local.err = (buf, ctypes.cast(buf, ctypes.c_char_p))
    e[0][0] = b"\0"
    return e


@_lib.on_reset
def _forget():
    global _not_read
    _not_read = None


def _size(v):
    """A size as hr_snapshot_json writes it: null when unknown, "max" when unset."""
    return None if v == _UNKNOWN else "max" if v == _UNLIMITED else v


def _host_only(lib, root):
    """snapshot(root, what=["host"]) through hr_host_mem_read: the same dict
    as the JSON, host fields in the JSON's order, used_bytes as it computes
    it; the other parts copied from the library's (the first call takes one
    host-only snapshot through JSON to learn them)."""
    global _not_read
    if _not_read is None:
        # (an empty selection keeps that call off this path)
        d = snapshot(root=root, what=HOST, select=("", 0))
        _not_read = {k: v for k, v in d.items() if k not in ("time", "host")}
    e = getattr(_local, "host", None)
    if e is None or e[3] is not lib:
        m = _lib.HostMem()
        e = _local.host = (m, ctypes.byref(m), _lib.unchecked(lib.hr_host_mem_read), lib)
    m, ref, read, _ = e
    proot = _paths()[0]
    root_b = proot if root is None else root.encode()
    err, errp = _err_buffer()
    _lib.check(read(root_b or None, False, ref, errp, len(err)), "hr_host_mem_read", err)
    t = time.time()
    total, avail = m.total_bytes, m.available_bytes
    used = total - avail if total != _UNKNOWN and avail != _UNKNOWN and avail <= total \
        else _UNKNOWN
    host = {"state": "ok", "message": ""}
    for k, v in zip(_HOST_FIELDS, (total, avail, used, m.free_bytes, m.buffers_bytes,
                                   m.cached_bytes, m.shmem_bytes, m.swap_total_bytes,
                                   m.swap_free_bytes)):
        host[k] = _size(v)
    nr = _not_read
    gpu = dict(nr["gpu"], devices=[], processes=[])
    return {"schema_version": nr["schema_version"], "time": round(t, 3), "host": host,
            "cgroup": dict(nr["cgroup"]), "gpu": gpu, "processes": [],
            "processes_unreadable": nr["processes_unreadable"]}


def _what_bits(what, pss):
    if what is None:
        bits = DEFAULT
    elif isinstance(what, int) and not isinstance(what, bool):
        if what <= 0 or what & ~ALL:
            raise ValueError("what must be a combination of the probe bits (1..%d); got %r"
                             % (ALL, what))
        bits = what
    else:
        if isinstance(what, str):
            raise TypeError("what must be a list of names such as ['host', 'procs']; got %r"
                            % (what,))
        bits = 0
        for name in what:
            if name not in _NAMES:
                raise ValueError("unknown probe part %r; known: %s" % (name, ", ".join(_NAMES)))
            bits |= _NAMES[name]
        if not bits:
            raise ValueError("what names no probe part; known: %s" % ", ".join(_NAMES))
    if pss:
        bits |= PSS | PROCS
    return bits


def _select(select):
    """(filter bytes or None, top) for the probe's options."""
    if select is None:
        return None, 0
    try:
        filt, top = select
    except (TypeError, ValueError):
        raise ValueError("select must be a (filter, top) pair; got %r" % (select,)) from None
    if not isinstance(filt, str):
        raise ValueError("select's filter must be text (words separated by commas); got %r"
                         % (filt,))
    return filt.encode() or None, _lib.check_int(top, "select's top", 0, 1 << 20)


def snapshot(root=None, what=None, nvml_path=None, pss=False, select=None):
    """Takes a snapshot and returns it as a dict.

    root: directory that /proc and /sys are read under (a fixture tree in
    tests); nvml_path: the NVML library to load. When None, each comes from
    the process's options like the CLI's (config file, then HEADROOM_ROOT and
    HEADROOM_NVML_LIBRARY, read once per process), else "/" and the driver's
    library. what: None for host, cgroup, processes and GPUs, or names from
    "host", "cgroup", "procs", "gpus", "pss" (or the bits). PSS (smaps_rollup
    of every process) is read only when asked: "pss" in what, or pss=True.
    No GPU or NVML is a state in the dict, not an error.
    select: (filter, top) to have "processes" hold only the probe's one
    selection (hr_snapshot_select, as status and watch show them): every
    process holding GPU memory, then the `top` largest by RSS, among those
    whose name or command line holds one of the comma-separated words of
    `filter` ("" for all; a non-empty filter never matches this process).
    Raises HeadroomError when the host memory cannot be read,
    LibraryNotFoundError without the library, ValueError for a bad select."""
    bits = _what_bits(what, pss)
    filt, top = _select(select)
    lib = _lib.load()
    if not hasattr(lib, "hr_snapshot_json"):
        raise _lib.HeadroomError(-7, "snapshot",
                                 "this libheadroom (%s) has no probe: hr_snapshot_json is missing"
                                 % _lib.loaded_path())
    if bits == HOST and select is None and hasattr(lib, "hr_host_mem_read"):
        return _host_only(lib, root)
    # The same chain as the CLI: default < config file < HEADROOM_* variables
    # < the arguments; the cgroup to read (cgroup, cgroup_pid) as the CLI's.
    proot, pnvml, cgroup, cgroup_pid = _paths()
    root_b = proot if root is None else root.encode()
    nvml_b = pnvml if nvml_path is None else nvml_path.encode()
    err, errp = _err_buffer()
    opts = _lib.ProbeOptions(root_b or None, bits, nvml_b or None, errp, len(err), cgroup,
                             cgroup_pid, filt, top)
    snap = ctypes.c_void_p()
    ctx = _context(lib) if bits & PROCS else None
    _lib.check(lib.hr_probe_snapshot(ctx, ctypes.byref(opts), ctypes.byref(snap)),
               "hr_probe_snapshot", err)
    text = ctypes.c_void_p()
    free = _lib.libc().free
    try:
        writer = "hr_snapshot_json" if select is None else "hr_snapshot_json_selected"
        _lib.check(getattr(lib, writer)(snap, ctypes.byref(text)), writer)
        try:
            return json.loads(ctypes.string_at(text.value))
        finally:
            free(text.value)
    finally:
        lib.hr_snapshot_free(snap)
