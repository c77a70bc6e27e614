"""libheadroom's caching allocator from Python: Pool over the public pool API
(hr_backend_create, hr_pool_create, hr_pool_alloc, ...), the pools behind
PyTorch's allocator (hr_torch_pool), the list of open pools whose caches
headroom.free_memory() releases, and the decoding of hr_pool_stats_t into the
names torch.cuda.memory_stats() uses.

A Pool on the "sim" backend (address space only) or the "host" backend
(mmap'd memory) works on any machine; "cuda" needs the NVIDIA driver and
says HR_ENODRIVER without one.
"""

import ctypes
import weakref

from . import lib as _lib

STATS_VERSION = _lib.POOL_STATS_VERSION
BACKENDS = ("sim", "host", "cuda")
#: Devices hr_torch_pool() is asked about.
MAX_DEVICES = 64

_open = weakref.WeakSet()  # every Pool not yet closed


def stat_names():
    """The names of the {current, peak, total} triples of hr_pool_stats_t, in
    order, from the library's own list (loads the library)."""
    return _lib.pool_stats_type().stat_names


def __getattr__(name):
    # STAT_NAMES stays a module attribute, read from the library on first use.
    if name == "STAT_NAMES":
        return stat_names()
    raise AttributeError("module %r has no attribute %r" % (__name__, name))


def lib():
    """The library with the pool's prototypes declared; HeadroomError
    (HR_ENOTSUP) when this build has no pool."""
    lb = _lib.load()
    if not hasattr(lb, "hr_pool_create"):
        raise _lib.HeadroomError(-7, "pool", "this libheadroom (%s) has no pool"
                                 % _lib.loaded_path())
    return lb


def read_stats(handle):
    """hr_pool_stats() of a pool handle as a dict named like
    torch.cuda.memory_stats(): "<stat>.all.current", ".peak", ".allocated"
    (cumulative added) and ".freed" (cumulative removed), plus the counters."""
    lb = lib()
    cls = _lib.pool_stats_type()
    st = cls()
    st.size = ctypes.sizeof(cls)
    st.version = STATS_VERSION
    _lib.check(lb.hr_pool_stats(handle, ctypes.byref(st)), "hr_pool_stats")
    out = {}
    for n in cls.stat_names:
        s = getattr(st, n)
        out[n + ".all.current"] = s.current
        out[n + ".all.peak"] = s.peak
        out[n + ".all.allocated"] = s.total
        out[n + ".all.freed"] = s.total - s.current
    for n in ("num_alloc_retries", "num_ooms", "num_device_alloc", "num_device_free"):
        out[n] = getattr(st, n)
    return out


def parse_config(conf):
    """Checks a PYTORCH_CUDA_ALLOC_CONF-style string with hr_pool_config_parse;
    returns the opaque config buffer. HeadroomError names a bad key."""
    if not isinstance(conf, str):
        raise TypeError("pool configuration must be a string like 'max_split_size_mb:128'; "
                        "got %r" % (conf,))
    lb = lib()
    cfg = ctypes.create_string_buffer(4096)  # more than sizeof(hr_pool_config_t)
    err = ctypes.create_string_buffer(512)
    _lib.check(lb.hr_pool_config_parse(conf.encode(), cfg, err, len(err)), "pool configuration",
               err)
    return cfg


def torch_pools():
    """{device: pool handle} of the pools behind hr_torch_malloc, one per
    device that has allocated (hr_torch_pool). HeadroomError (HR_ENOTSUP)
    when this build does not export hr_torch_pool."""
    lb = lib()
    if not hasattr(lb, "hr_torch_pool"):
        raise _lib.HeadroomError(
            -7, "hr_torch_pool", "this libheadroom (%s) does not export hr_torch_pool(device), "
            "so the pools behind PyTorch's allocator cannot be reached" % _lib.loaded_path())
    out = {}
    for d in range(MAX_DEVICES):
        h = lb.hr_torch_pool(d)
        if h:
            out[d] = h
    return out


def release_cached(handle):
    """Returns the cached free segments of the pool at `handle` to its
    backend (hr_pool_release_cached); returns the reserved bytes that went
    back, read from the pool's statistics before and after."""
    lb = lib()
    before = read_stats(handle)["reserved_bytes.all.current"]
    _lib.check(lb.hr_pool_release_cached(handle), "hr_pool_release_cached")
    return before - read_stats(handle)["reserved_bytes.all.current"]


def open_pools():
    """The Pool objects not yet closed."""
    return [p for p in list(_open) if p._pool]


class Pool(_lib.Handle):
    """A caching allocator on its own backend. Pointers are ints; on the
    "host" backend they are real memory the caller may write."""

    def __init__(self, backend="sim", capacity=1 << 30, conf=None, device=0):
        if backend not in BACKENDS:
            raise ValueError("backend must be one of %s; got %r" % (", ".join(BACKENDS), backend))
        self._pool = self._backend = None
        self._lib = lib()
        cfg = parse_config(conf) if conf is not None else None
        b = ctypes.c_void_p()
        _lib.check(self._lib.hr_backend_create(backend.encode(), device, capacity,
                                               ctypes.byref(b)), "backend %s" % backend)
        self._backend = b
        p = ctypes.c_void_p()
        try:
            _lib.check(self._lib.hr_pool_create(cfg, b, device, ctypes.byref(p)), "hr_pool_create")
        except _lib.HeadroomError:
            self.close()
            raise
        self._pool = p
        _open.add(self)

    def close(self):
        if getattr(self, "_pool", None):
            self._lib.hr_pool_destroy(self._pool)
            self._pool = None
        if getattr(self, "_backend", None):
            self._lib.hr_backend_destroy(self._backend)
            self._backend = None

    def _h(self):
        if not self._pool:
            raise ValueError("the pool is closed")
        return self._pool

    def alloc(self, size, stream=None):
        """Allocates `size` bytes; returns the address. HeadroomError
        HR_ENOMEM carries the pool's diagnosis."""
        ptr = ctypes.c_void_p()
        rc = self._lib.hr_pool_alloc(self._h(), size, stream, ctypes.byref(ptr))
        if rc < 0:
            raise _lib.HeadroomError(rc, "hr_pool_alloc(%d)" % size,
                                     self.diagnosis() if rc == -2 else "")
        return ptr.value or 0

    def free(self, ptr, stream=None):
        """Frees the block at address `ptr` (as alloc() returned it)."""
        _lib.check(self._lib.hr_pool_free(self._h(), ptr, stream), "hr_pool_free(%#x)" % ptr)

    def release_cached(self):
        """Returns fully free cached segments to the backend; returns the
        reserved bytes that went back. headroom.free_memory() does this for
        every open pool."""
        return release_cached(self._h())

    def stats(self):
        return read_stats(self._h())

    def reset_peak(self):
        _lib.check(self._lib.hr_pool_reset_peak(self._h()), "hr_pool_reset_peak")

    def check(self):
        """Verifies every invariant of the pool; HeadroomError when one broke."""
        _lib.check(self._lib.hr_pool_check(self._h()), "hr_pool_check")

    def diagnosis(self):
        """The text of the last out-of-memory diagnosis ("" when none)."""
        buf = ctypes.create_string_buffer(4096)
        rc = self._lib.hr_pool_last_diagnosis(self._h(), buf, len(buf))
        return buf.value.decode(errors="replace") if rc == 0 else ""

    def mem_info(self):
        """(free, total) bytes as the backend sees them."""
        self._h()
        f, t = ctypes.c_uint64(), ctypes.c_uint64()
        _lib.check(self._lib.hr_backend_mem_info(self._backend, ctypes.byref(f), ctypes.byref(t)),
                   "hr_backend_mem_info")
        return f.value, t.value
