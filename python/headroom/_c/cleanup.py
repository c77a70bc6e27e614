"""The cleanup modes: what conservative, balanced and aggressive do, read
from libheadroom's one table (hr_cleanup_modes), the table `headroom watch`
reads too.

A row says which actions run in that mode: for a process, the allocator
caches (caches), a garbage collection (collect), the idle modules of its
registries (idle_modules) and ComfyUI's models (models), repeated up to
max_passes times while a pass brings back min_pass_bytes; for watch, the
hooks and drop_caches. NAMES holds the rows' names so that a mode can be
checked without the library; tests/python/test_abi.py checks them against
the library's rows.
"""

import ctypes
import threading

from . import lib as _lib

#: The modes, gentlest first: the names of hr_cleanup_modes' rows.
NAMES = ("conservative", "balanced", "aggressive")
#: The yes/no columns of a row.
ACTIONS = ("caches", "collect", "idle_modules", "models", "hooks", "drop_caches")

_rows = None
_rows_lock = threading.Lock()


def check(mode):
    """Returns `mode` when it is one of NAMES; else raises ValueError."""
    if mode not in NAMES:
        raise ValueError("mode must be one of %s; got %r" % (", ".join(NAMES), mode))
    return mode


def _row(m):
    d = {"name": m.name.decode(), "summary": m.summary.decode()}
    d.update((a, bool(getattr(m, a))) for a in ACTIONS)
    d["max_passes"], d["min_pass_bytes"] = m.max_passes, m.min_pass_bytes
    return d


def modes():
    """Every row, gentlest first, as a dict: name, summary, the ACTIONS
    (True or False), max_passes, min_pass_bytes. Loads the library
    (LibraryNotFoundError without it; HeadroomError when it has no table)."""
    global _rows
    with _rows_lock:
        if _rows is None:
            lib = _lib.load()
            if not hasattr(lib, "hr_cleanup_modes"):
                raise _lib.HeadroomError(-7, "hr_cleanup_modes",
                                         "this libheadroom (%s) has no cleanup mode table"
                                         % _lib.loaded_path())
            n = ctypes.c_size_t()
            rows = lib.hr_cleanup_modes(ctypes.byref(n))
            _rows = [_row(rows[i]) for i in range(n.value)]
        return [dict(r) for r in _rows]


def mode(name):
    """The row of mode `name` (see modes()). ValueError for an unknown mode."""
    check(name)
    for r in modes():
        if r["name"] == name:
            return r
    raise ValueError("mode %r has no row in libheadroom's cleanup mode table (%s)"
                     % (name, _lib.loaded_path()))


@_lib.on_reset
def _forget():
    global _rows
    with _rows_lock:
        _rows = None
