"""snapshot(): one reading of the machine's memory through libheadroom's
probe (hr_snapshot_take + hr_snapshot_json), as the dict that
``headroom status --json`` prints."""

import ctypes
import json

from . import _lib

HOST, CGROUP, PROCS, GPUS, PSS = 1, 2, 4, 8, 16
ALL = 0x1F
_NAMES = {"host": HOST, "cgroup": CGROUP, "procs": PROCS, "gpus": GPUS, "pss": PSS}


class _ProbeOptions(ctypes.Structure):
    _fields_ = [("root", ctypes.c_char_p), ("what", ctypes.c_uint), ("nvml_path", ctypes.c_char_p),
                ("err", ctypes.c_char_p), ("errlen", ctypes.c_size_t)]


_libc = None


def _free(ptr):
    """Frees memory the library malloc'd. `free` is looked up in the process's
    global namespace, not in libc by name, so that it is the same free the
    library's malloc pairs with when an allocator is interposed (a
    sanitizer, jemalloc through LD_PRELOAD)."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None)
        _libc.free.argtypes = [ctypes.c_void_p]
        _libc.free.restype = None
    _libc.free(ptr)


def _what_bits(what):
    if what is None:
        return 0
    if isinstance(what, int) and not isinstance(what, bool):
        if what < 0 or what & ~ALL:
            raise ValueError("what must be a combination of the probe bits (0..%d); got %r"
                             % (ALL, what))
        return what
    bits = 0
    for name in what:
        if name not in _NAMES:
            raise ValueError("unknown probe part %r; known: %s" % (name, ", ".join(_NAMES)))
        bits |= _NAMES[name]
    return bits


def snapshot(root=None, what=None, nvml_path=None):
    """Takes a snapshot and returns it as a dict.

    root: directory that /proc and /sys are read under (a fixture tree in
    tests); nvml_path: the NVML library to load. When None, each comes from
    the option table like the CLI's (config file, then HEADROOM_ROOT and
    HEADROOM_NVML_LIBRARY), else "/" and the driver's library. what: None for
    everything, or names from "host", "cgroup", "procs", "gpus", "pss" (or
    the bits). No GPU or NVML is a state in the dict, not an error. Raises HeadroomError when the host memory
    cannot be read, LibraryNotFoundError without the library."""
    lib = _lib.load()
    if root is None or nvml_path is None:
        # The same chain as the CLI: default < config file < HEADROOM_ROOT /
        # HEADROOM_NVML_LIBRARY < the arguments.
        from .options import Options

        with Options() as o:
            o.load_defaults()
            if root is None:
                root = o.get("root")
            if nvml_path is None:
                nvml_path = o.get("nvml_library") or None
    if not hasattr(lib, "hr_snapshot_json"):
        raise _lib.HeadroomError(-7, "snapshot",
                                 "this libheadroom (%s) has no probe: hr_snapshot_json is missing"
                                 % _lib.loaded_path())
    err = ctypes.create_string_buffer(512)
    opts = _ProbeOptions(root.encode() if root else None, _what_bits(what),
                         nvml_path.encode() if nvml_path else None,
                         ctypes.cast(err, ctypes.c_char_p), len(err))
    snap = ctypes.c_void_p()
    _lib.check(lib.hr_snapshot_take(ctypes.byref(opts), ctypes.byref(snap)), "hr_snapshot_take",
               err)
    text = ctypes.c_void_p()
    try:
        _lib.check(lib.hr_snapshot_json(snap, ctypes.byref(text)), "hr_snapshot_json")
        try:
            return json.loads(ctypes.string_at(text.value).decode())
        finally:
            _free(text.value)
    finally:
        lib.hr_snapshot_free(snap)
