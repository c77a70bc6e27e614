"""libheadroom's caching allocator from Python: Pool over the public pool API
(hr_backend_create, hr_pool_create, hr_pool_alloc, ...), and the decoding of
hr_pool_stats_t into the names torch.cuda.memory_stats() uses.

A Pool on the "sim" backend (address space only) or the "host" backend
(mmap'd memory) works on any machine; "cuda" needs the NVIDIA driver and
says HR_ENODRIVER without one.
"""

import ctypes

from . import _lib

#: The {current, peak, total} triples of hr_pool_stats_t, in order.
STAT_NAMES = ("allocated_bytes", "reserved_bytes", "active_bytes", "inactive_split_bytes",
              "requested_bytes", "allocation", "segment", "active", "inactive_split")
STATS_VERSION = 1
BACKENDS = ("sim", "host", "cuda")


class _Stat(ctypes.Structure):
    _fields_ = [("current", ctypes.c_int64), ("peak", ctypes.c_int64), ("total", ctypes.c_uint64)]


class _PoolStats(ctypes.Structure):
    _fields_ = ([("size", ctypes.c_uint32), ("version", ctypes.c_uint32)]
                + [(n, _Stat) for n in STAT_NAMES]
                + [("num_alloc_retries", ctypes.c_uint64), ("num_ooms", ctypes.c_uint64),
                   ("num_device_alloc", ctypes.c_uint64), ("num_device_free", ctypes.c_uint64),
                   ("reserved_", ctypes.c_uint64 * 16)])


def _declare(lib):
    c = ctypes
    for name, res, args in [
        ("hr_backend_create", c.c_int, [c.c_char_p, c.c_int, c.c_uint64, c.POINTER(c.c_void_p)]),
        ("hr_backend_destroy", None, [c.c_void_p]),
        ("hr_backend_mem_info", c.c_int, [c.c_void_p, c.POINTER(c.c_uint64),
                                          c.POINTER(c.c_uint64)]),
        ("hr_pool_create", c.c_int, [c.c_void_p, c.c_void_p, c.c_int, c.POINTER(c.c_void_p)]),
        ("hr_pool_destroy", None, [c.c_void_p]),
        ("hr_pool_alloc", c.c_int, [c.c_void_p, c.c_uint64, c.c_void_p, c.POINTER(c.c_void_p)]),
        ("hr_pool_free", c.c_int, [c.c_void_p, c.c_void_p, c.c_void_p]),
        ("hr_pool_release_cached", c.c_int, [c.c_void_p]),
        ("hr_pool_stats", c.c_int, [c.c_void_p, c.POINTER(_PoolStats)]),
        ("hr_pool_reset_peak", c.c_int, [c.c_void_p]),
        ("hr_pool_check", c.c_int, [c.c_void_p]),
        ("hr_pool_last_diagnosis", c.c_int, [c.c_void_p, c.c_char_p, c.c_size_t]),
        ("hr_torch_pool", c.c_void_p, [c.c_int]),
    ]:
        fn = getattr(lib, name, None)
        if fn is not None:
            fn.restype, fn.argtypes = res, args
    return lib


def lib():
    """The library with the pool's prototypes declared; HeadroomError
    (HR_ENOTSUP) when this build has no pool."""
    lb = _lib.load()
    if not hasattr(lb, "hr_pool_create"):
        raise _lib.HeadroomError(-7, "pool", "this libheadroom (%s) has no pool"
                                 % _lib.loaded_path())
    return _declare(lb)


def read_stats(handle):
    """hr_pool_stats() of a pool handle as a dict named like
    torch.cuda.memory_stats(): "<stat>.all.current", ".peak", ".allocated"
    (cumulative added) and ".freed" (cumulative removed), plus the counters."""
    lb = lib()
    st = _PoolStats()
    st.size = ctypes.sizeof(_PoolStats)
    st.version = STATS_VERSION
    _lib.check(lb.hr_pool_stats(handle, ctypes.byref(st)), "hr_pool_stats")
    out = {}
    for n in STAT_NAMES:
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


class Pool:
    """A caching allocator on its own backend. Pointers are ints; on the
    "host" backend they are real memory the caller may write."""

    def __init__(self, backend="sim", capacity=1 << 30, conf=None, device=0):
        if backend not in BACKENDS:
            raise ValueError("backend must be one of %s; got %r" % (", ".join(BACKENDS), backend))
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
            raise ValueError("capacity must be a non-negative integer of bytes; got %r"
                             % (capacity,))
        self._lib = lib()
        self._pool = self._backend = None
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

    def close(self):
        if self._pool:
            self._lib.hr_pool_destroy(self._pool)
            self._pool = None
        if self._backend:
            self._lib.hr_backend_destroy(self._backend)
            self._backend = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass

    def _h(self):
        if not self._pool:
            raise ValueError("the pool is closed")
        return self._pool

    def alloc(self, size, stream=None):
        """Allocates `size` bytes; returns the address. HeadroomError
        HR_ENOMEM carries the pool's diagnosis."""
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError("size must be a non-negative integer of bytes; got %r" % (size,))
        ptr = ctypes.c_void_p()
        rc = self._lib.hr_pool_alloc(self._h(), size, stream, ctypes.byref(ptr))
        if rc < 0:
            raise _lib.HeadroomError(rc, "hr_pool_alloc(%d)" % size,
                                     self.diagnosis() if rc == -2 else "")
        return ptr.value or 0

    def free(self, ptr, stream=None):
        _lib.check(self._lib.hr_pool_free(self._h(), ptr, stream), "hr_pool_free(%#x)" % ptr)

    def release_cached(self):
        """Returns fully free cached segments to the backend; returns the
        reserved bytes that went back."""
        before = self.stats()["reserved_bytes.all.current"]
        _lib.check(self._lib.hr_pool_release_cached(self._h()), "hr_pool_release_cached")
        return before - self.stats()["reserved_bytes.all.current"]

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
        f, t = ctypes.c_uint64(), ctypes.c_uint64()
        _lib.check(self._lib.hr_backend_mem_info(self._backend, ctypes.byref(f), ctypes.byref(t)),
                   "hr_backend_mem_info")
        return f.value, t.value
