"""The C heap's live bytes: what malloc has handed out and not been given
back (glibc's mallinfo2: in-use bytes of the arenas plus blocks mapped on
their own), whatever pages they sit on.

RSS says how much memory the process holds; where it grows depends on where
the allocator finds room (a block one stage keeps can make the next stage's
buffer land on fresh pages). Live heap bytes grow where the allocation that
stays was made, so the attribution engine names a part by them when they
can be read. PyTorch's and NumPy's CPU tensors, and Python objects over 512
bytes, are allocated there; Python's small objects are not.

mallinfo2 walks the allocator's free lists: cheap on a usual heap
(microseconds), slow on a heavily fragmented one. A reading that takes
more CPU time than SLOW_S turns the readings off for the rest of the process
(live_bytes() then returns None and status() says why).
"""

import threading
import time

from .._c import lib as _lib

#: A reading that costs more CPU time than this (seconds, of this thread:
#: time waiting for the CPU on a loaded machine does not count) turns heap
#: readings off.
SLOW_S = 0.005

_lock = threading.Lock()
_state = {"off": None}  # why readings are off, or None


def live_bytes():
    """The heap's live bytes now, or None where they cannot be read (no
    glibc mallinfo2, or turned off as too slow)."""
    if _state["off"] is not None:
        return None
    fn = _state.get("fn")
    if fn is None:
        fn = _state["fn"] = getattr(_lib.libc(), "mallinfo2", None)
    if fn is None:
        _off("this C library has no mallinfo2 (glibc 2.33 or later)")
        return None
    t0 = time.thread_time()
    m = fn()
    dt = time.thread_time() - t0
    if dt > SLOW_S:
        _off("mallinfo2 took %.1f ms of CPU (over %.1f ms: the heap is too fragmented to "
             "read at every call)" % (dt * 1e3, SLOW_S * 1e3))
        return None
    return m.uordblks + m.hblkhd


def _off(why):
    with _lock:
        if _state["off"] is None:
            _state["off"] = why


def status():
    """"ok", or why heap readings are off."""
    return _state["off"] or "ok"
