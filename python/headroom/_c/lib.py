"""The one ctypes module: loading libheadroom, every prototype and every
struct the package uses, the range check of every integer argument, and the
library's error codes as exceptions.

The library is looked for, in this order: the file named by $HEADROOM_LIB (an
explicit choice: if it cannot be loaded that is an error, not a reason to try
elsewhere), a libheadroom.so in the headroom package's folder (a pip install
puts it there), and the system's library path. Loading happens on first use, not at
import, so the parts of the package that need only the standard library
(``python3 -m headroom.trace``, stage logging, free_memory's cache release)
work on a machine without the library.

Every struct here mirrors one of the library's; STRUCTS maps the C name to
the ctypes class, and tests/python/test_abi.py compares each size and field
offset with the library's own table (hr_abi_structs), so a change on one side
that the other does not follow fails a test instead of corrupting memory.
Every function is declared once, with the names of its parameters. Functions
from parts of the library that are not in every build are declared only when
the library exports them; callers ask with ``has()``.

Every integer that crosses into C passes one check, check_int(), chosen by
the C type it lands in (to_c), instead of ctypes keeping the low bits (2**64
+ 100 would be 100): a function's argument (Function, from the
prototypes here), a struct's field (Struct, the base of every struct here;
positional and keyword construction and assignment alike), a value stored
through a pointer a callback was given (store) and an array's element
(array). Integer types take what has __index__ (int, numpy integers), within
the type's range; pointers (void *: addresses, streams, handles) take None,
a ctypes object, or an address in [0, 2**64 - 1]; a char * takes no number at
all. A bool, a float or anything else is a TypeError, a number out of range a
ValueError, each naming the parameter or field and the range.
"""

import ctypes
import ctypes.util
import operator
import os
import threading

from .._files import NotRegularFile, check_regular

#: The library version this package is written against. The library must have
#: the same major version and, before 1.0, the same minor version too.
API_VERSION = (0, 1)

_c = ctypes
_P = ctypes.POINTER

# ---- the one check of every integer that crosses into C ----

# ctypes' integer type codes; lower case is signed.
_INT_CODES = "bBhHiIlLqQ"
_ADDRESS = (0, (1 << (8 * _c.sizeof(_c.c_void_p))) - 1)


def int_range(ctype):
    """(low, high) of a ctypes integer type, or None for any other type."""
    code = getattr(ctype, "_type_", None)
    if not isinstance(code, str) or code not in _INT_CODES:
        return None
    bits = 8 * _c.sizeof(ctype)
    if code.islower():
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def _is_number(value):
    """True for what would reach C as a number: a bool, a float, or what has
    __index__ (int, numpy integers)."""
    return isinstance(value, (bool, float)) or hasattr(type(value), "__index__")


def check_int(value, name, low, high):
    """Returns `value` as an int when it is an integer (an int, or anything
    with __index__ but a bool: numpy integers) in [low, high]; else raises
    TypeError (not an integer) or ValueError (out of range), naming `name`
    and the range."""
    try:
        if isinstance(value, bool):
            raise TypeError
        v = operator.index(value)
    except TypeError:
        raise TypeError("%s must be an integer in [%d, %d]; got %r"
                        % (name, low, high, value)) from None
    if not low <= v <= high:
        raise ValueError("%s must be an integer in [%d, %d]; got %d" % (name, low, high, v))
    return v


def checked(ctype):
    """True when to_c() has something to check for C type `ctype`."""
    return int_range(ctype) is not None or ctype in (_c.c_void_p, _c.c_char_p)


def to_c(ctype, value, name, where=None):
    """`value` as ctypes should receive it for C type `ctype`: an integer
    type's value range-checked (check_int), a pointer (void *) as None, a
    ctypes object, bytes or an address in [0, 2**64 - 1], a char * never as a
    number; any other type's value unchanged. `where` (a function or struct
    name) begins the message."""
    label = "%s: %s" % (where, name) if where else name
    r = int_range(ctype)
    if r is not None:
        if isinstance(value, ctype):  # already a C value of that type
            return value
        return check_int(value, label, *r)
    if ctype is _c.c_void_p:
        if value is None or isinstance(value, (bytes, _c._SimpleCData, _c.Array,
                                               _c._Pointer)):
            return value
        if _is_number(value):
            return check_int(value, label + " (an address)", *_ADDRESS)
        return value  # byref() and the like: ctypes judges them
    if ctype is _c.c_char_p and _is_number(value):
        raise TypeError("%s must be bytes or None, not a number; got %r" % (label, value))
    return value


class Struct(_c.Structure):
    """The base of every struct here: each integer or pointer field passes
    to_c() when it is set, whether by the constructor (positional or
    keyword) or by assignment."""

    def __setattr__(self, name, value):
        ctype = _field_types(type(self)).get(name)
        if ctype is not None:
            value = to_c(ctype, value, name, type(self).__name__)
        super().__setattr__(name, value)


_FIELD_TYPES = {}


def _field_types(cls):
    """{field: C type} of the checked fields of struct class `cls`, cached."""
    types = _FIELD_TYPES.get(cls)
    if types is None:
        types = {}
        for klass in reversed(cls.__mro__):
            for f in klass.__dict__.get("_fields_", ()):
                if checked(f[1]):
                    types[f[0]] = f[1]
        _FIELD_TYPES[cls] = types
    return types


def store(pointer, value, name):
    """pointer[0] = value, checked against the pointed-to type first: what a
    callback hands back through a pointer C gave it (sizes it writes)."""
    pointer[0] = to_c(pointer._type_, value, name)


def array(ctype, values, name):
    """A ctypes array of `ctype` holding `values`, each checked (name[i])."""
    return (ctype * len(values))(*[to_c(ctype, v, "%s[%d]" % (name, i))
                                   for i, v in enumerate(values)])


# ---- structs: each mirrors the library's struct of the name in STRUCTS ----


class AbiField(Struct):
    _fields_ = [("name", _c.c_char_p), ("offset", _c.c_size_t), ("size", _c.c_size_t),
                ("align", _c.c_size_t)]


class AbiStruct(Struct):
    _fields_ = [("name", _c.c_char_p), ("size", _c.c_size_t), ("align", _c.c_size_t),
                ("fields", _P(AbiField)), ("n_fields", _c.c_size_t)]


class OptionInfo(Struct):
    _fields_ = [("name", _c.c_char_p), ("env", _c.c_char_p), ("type", _c.c_int),
                ("deflt", _c.c_char_p), ("min", _c.c_double), ("max", _c.c_double),
                ("choices", _c.c_char_p), ("help", _c.c_char_p)]


class ProbeOptions(Struct):
    _fields_ = [("root", _c.c_char_p), ("what", _c.c_uint), ("nvml_path", _c.c_char_p),
                ("err", _c.c_char_p), ("errlen", _c.c_size_t), ("cgroup", _c.c_char_p),
                ("cgroup_pid", _c.c_int), ("filter", _c.c_char_p), ("top", _c.c_size_t)]


class Pressure(Struct):
    _fields_ = [("avg10", _c.c_double), ("avg60", _c.c_double), ("avg300", _c.c_double),
                ("total_us", _c.c_uint64)]


class HostMem(Struct):
    _fields_ = [(n, _c.c_uint64) for n in (
        "total_bytes", "available_bytes", "free_bytes", "buffers_bytes", "cached_bytes",
        "swap_total_bytes", "swap_free_bytes", "shmem_bytes")] + [
        ("has_pressure", _c.c_bool), ("pressure_some", Pressure), ("pressure_full", Pressure)]


class Stat(Struct):
    _fields_ = [("current", _c.c_int64), ("peak", _c.c_int64), ("total", _c.c_uint64)]


class LeakConfig(Struct):
    _fields_ = [("window_s", _c.c_double), ("min_samples", _c.c_size_t),
                ("min_rate", _c.c_double), ("alpha", _c.c_double),
                ("max_points", _c.c_size_t)]


class LeakResult(Struct):
    _fields_ = [("suspected", _c.c_bool), ("n", _c.c_size_t), ("span_s", _c.c_double),
                ("slope_per_min", _c.c_double), ("z", _c.c_double), ("p", _c.c_double),
                ("confidence", _c.c_double), ("raised", _c.c_bool)]


# The registry's callbacks (hr_asset_load_fn, ...).
LOAD_FN = _c.CFUNCTYPE(_c.c_int, _c.c_uint32, _c.c_uint64, _P(_c.c_uint64), _c.c_void_p)
OFFLOAD_FN = _c.CFUNCTYPE(_c.c_int, _c.c_uint32, _c.c_uint64, _P(_c.c_uint64), _c.c_void_p)
DROP_FN = _c.CFUNCTYPE(None, _c.c_uint32, _c.c_void_p)
MEMINFO_FN = _c.CFUNCTYPE(_c.c_int, _c.c_void_p, _P(_c.c_uint64), _P(_c.c_uint64))
# The pool's reclaimer (hr_reclaim_fn).
RECLAIM_FN = _c.CFUNCTYPE(_c.c_int, _c.c_void_p, _c.c_uint64, _P(_c.c_uint64), _c.c_void_p)


class CleanupMode(Struct):
    _fields_ = [("name", _c.c_char_p), ("summary", _c.c_char_p), ("caches", _c.c_bool),
                ("collect", _c.c_bool), ("idle_modules", _c.c_bool), ("models", _c.c_bool),
                ("hooks", _c.c_bool), ("drop_caches", _c.c_bool), ("max_passes", _c.c_uint32),
                ("min_pass_bytes", _c.c_uint64)]


class ResidencyOptions(Struct):
    _fields_ = [("budget_bytes", _c.c_uint64), ("reserve_bytes", _c.c_uint64),
                ("patience_s", _c.c_double), ("poll_interval_s", _c.c_double),
                ("policy", _c.c_int), ("mem_info", MEMINFO_FN), ("mem_info_arg", _c.c_void_p),
                ("backend", _c.c_void_p), ("pool", _c.c_void_p)]


class AssetDesc(Struct):
    _fields_ = [("name", _c.c_char_p), ("variant", _c.c_char_p), ("device_bytes", _c.c_uint64),
                ("host_bytes", _c.c_uint64), ("parent", _c.c_uint32), ("pinned", _c.c_bool),
                ("partial", _c.c_bool), ("priority", _c.c_int), ("resident_bytes", _c.c_uint64),
                ("load", LOAD_FN), ("offload", OFFLOAD_FN), ("drop", DROP_FN),
                ("arg", _c.c_void_p)]


class AssetInfo(Struct):
    _fields_ = [("id", _c.c_uint32), ("parent", _c.c_uint32), ("group", _c.c_uint32),
                ("name", _c.c_char * 128), ("variant", _c.c_char * 32),
                ("device_bytes", _c.c_uint64), ("host_bytes", _c.c_uint64),
                ("resident_bytes", _c.c_uint64), ("pinned", _c.c_bool), ("partial", _c.c_bool),
                ("priority", _c.c_int), ("uses", _c.c_uint64), ("last_use", _c.c_uint64)]


class Action(Struct):
    _fields_ = [("kind", _c.c_int), ("id", _c.c_uint32), ("bytes", _c.c_uint64),
                ("resident_after", _c.c_uint64)]


class Suggestion(Struct):
    _fields_ = [("kind", _c.c_int), ("id", _c.c_uint32), ("alt", _c.c_uint32),
                ("bytes", _c.c_uint64), ("text", _c.c_char * 256)]


#: HR_PLAN_MAX_SUGGESTIONS
PLAN_MAX_SUGGESTIONS = 8


class Plan(Struct):
    _fields_ = [("policy", _c.c_int), ("actions", _P(Action)),
                ("n_actions", _c.c_size_t), ("cap_actions", _c.c_size_t),
                ("bytes_loaded", _c.c_uint64), ("bytes_offloaded", _c.c_uint64),
                ("loads", _c.c_uint32), ("partial_loads", _c.c_uint32),
                ("offloads", _c.c_uint32), ("partial_offloads", _c.c_uint32),
                ("capacity_bytes", _c.c_uint64), ("used_bytes", _c.c_uint64),
                ("short_bytes", _c.c_uint64), ("waited_s", _c.c_double),
                ("suggestions", Suggestion * PLAN_MAX_SUGGESTIONS),
                ("n_suggestions", _c.c_size_t), ("message", _c.c_char * 512)]


class Lookahead(Struct):
    _fields_ = [("ids", _P(_c.c_uint32)), ("steps", _P(_c.c_uint32)), ("n", _c.c_size_t),
                ("working", _P(_c.c_uint64))]


class ResidencyStats(Struct):
    _fields_ = [(n, _c.c_uint64) for n in (
        "capacity_bytes", "resident_bytes", "bytes_loaded", "bytes_offloaded", "loads",
        "offloads", "refusals", "timeouts", "reclaims")] + [("assets", _c.c_size_t)]


#: HR_POOL_STATS_VERSION
POOL_STATS_VERSION = 1
_pool_stats_type = None


def _make_pool_stats(stat_names):
    """hr_pool_stats_t, whose {current, peak, total} triples are named by the
    library's own list (the HR_POOL_STATS X-macro), not retyped here."""
    class PoolStats(Struct):
        _fields_ = ([("size", _c.c_uint32), ("version", _c.c_uint32)]
                    + [(n, Stat) for n in stat_names]
                    + [("num_alloc_retries", _c.c_uint64), ("num_ooms", _c.c_uint64),
                       ("num_device_alloc", _c.c_uint64), ("num_device_free", _c.c_uint64),
                       ("reserved_", _c.c_uint64 * 16)])
    PoolStats.stat_names = tuple(stat_names)
    return PoolStats


def pool_stats_type():
    """The ctypes class of hr_pool_stats_t, built when the library is loaded
    (it needs the library's stat names). Loads the library."""
    load()
    return _pool_stats_type


def structs():
    """{C struct name: ctypes class} for every struct this package mirrors.
    Loads the library (hr_pool_stats_t is built from it)."""
    return {
        "hr_abi_field_t": AbiField, "hr_abi_struct_t": AbiStruct,
        "hr_option_info_t": OptionInfo, "hr_probe_options_t": ProbeOptions,
        "hr_pressure_t": Pressure, "hr_host_mem_t": HostMem,
        "hr_stat_t": Stat, "hr_pool_stats_t": pool_stats_type(),
        "hr_leak_config_t": LeakConfig, "hr_leak_result_t": LeakResult,
        "hr_residency_options_t": ResidencyOptions, "hr_asset_desc_t": AssetDesc,
        "hr_asset_info_t": AssetInfo, "hr_action_t": Action, "hr_suggestion_t": Suggestion,
        "hr_plan_t": Plan, "hr_lookahead_t": Lookahead,
        "hr_residency_stats_t": ResidencyStats, "hr_cleanup_mode_t": CleanupMode,
    }


def library_layout():
    """The library's own layout table (hr_abi_structs) as {struct name:
    (size, align, [(field, offset, size, align), ...])}."""
    lib = load()
    n = _c.c_size_t()
    rows = lib.hr_abi_structs(_c.byref(n))
    out = {}
    for i in range(n.value):
        s = rows[i]
        out[s.name.decode()] = (s.size, s.align, [
            (s.fields[j].name.decode(), s.fields[j].offset, s.fields[j].size, s.fields[j].align)
            for j in range(s.n_fields)])
    return out


class Handle:
    """What every owner of a library handle shares: a `with` block closes it,
    and so does garbage collection. Subclasses give close(), which must be
    safe to call twice, and raise ValueError from their own accessor once
    closed."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: the library may be gone already
            pass


def make(cls, **values):
    """An instance of struct `cls` with `values` set (each checked as
    Struct says)."""
    return cls(**values)


class Function:
    """A library function whose integer and pointer arguments pass to_c()
    before ctypes converts them (ctypes keeps only the low bits)."""

    __slots__ = ("fn", "name", "nargs", "_checks")

    def __init__(self, fn, name, params):
        self.fn = fn
        self.name = name
        self.nargs = len(params)
        self._checks = tuple((i, pname, ptype) for i, (pname, ptype) in enumerate(params)
                             if checked(ptype))

    def __call__(self, *args):
        if len(args) != self.nargs:
            raise TypeError("%s takes %d arguments (%d given)" % (self.name, self.nargs,
                                                                  len(args)))
        args = list(args)
        for i, pname, ptype in self._checks:
            args[i] = to_c(ptype, args[i], pname, self.name)
        return self.fn(*args)

    def __repr__(self):
        return "<libheadroom %s>" % self.name


def unchecked(fn):
    """The ctypes function under a library function, without the range checks
    of its integer arguments: for a hot path whose caller passed only integers
    it checked itself or got from the library."""
    return fn.fn if isinstance(fn, Function) else fn


class Library:
    """The loaded library: one attribute per declared function (a Function
    when it has integer or pointer parameters to check, else the ctypes
    function), plus `cdll` (the ctypes.CDLL) and `path`."""

    def __init__(self, cdll, path):
        self.cdll = cdll
        self.path = path


# ---- the C library's own functions that the package calls ----

_libc = None


class MallInfo2(ctypes.Structure):
    """glibc's struct mallinfo2 (glibc 2.33 and later): uordblks is the
    bytes of the heap's arenas in use, hblkhd the bytes of blocks mapped on
    their own."""

    _fields_ = [(n, _c.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                           "usmblks", "fsmblks", "uordblks", "fordblks",
                                           "keepcost")]


def libc():
    """The process's C library, as a Library with free(), malloc_trim() and
    mallinfo2() declared (no attribute for those the libc lacks: malloc_trim,
    mallinfo2). Looked up in the process's global namespace, not in libc by
    name, so that `free` is the one the library's malloc pairs with when an
    allocator is interposed (a sanitizer, jemalloc through LD_PRELOAD)."""
    global _libc
    if _libc is None:
        c = ctypes.CDLL(None)
        out = Library(c, None)
        for name, res, params in (("free", None, [("ptr", _c.c_void_p)]),
                                  ("malloc_trim", _c.c_int, [("pad", _c.c_size_t)]),
                                  ("mallinfo2", MallInfo2, [])):
            fn = getattr(c, name, None)
            if fn is not None:
                fn.restype, fn.argtypes = res, [t for _, t in params]
                setattr(out, name, Function(fn, name, params) if params else fn)
        _libc = out
    return _libc


# ---- prototypes: (name, result, [(parameter, type), ...]) ----

_vp, _u64, _sz, _i, _u32 = _c.c_void_p, _c.c_uint64, _c.c_size_t, _c.c_int, _c.c_uint32
_err = [("err", _c.c_char_p), ("errlen", _sz)]

_CORE = [
    ("hr_version", _c.c_char_p, []),
    ("hr_strerror", _c.c_char_p, [("code", _i)]),
    ("hr_err_name", _c.c_char_p, [("code", _i)]),
    ("hr_abi_structs", _P(AbiStruct), [("n", _P(_sz))]),
    ("hr_abi_pool_stat_names", _P(_c.c_char_p), [("n", _P(_sz))]),
    # options
    ("hr_options_create", _i, [("out", _P(_vp))]),
    ("hr_options_destroy", None, [("options", _vp)]),
    ("hr_options_set", _i, [("options", _vp), ("name", _c.c_char_p), ("value", _c.c_char_p),
                            ("source", _i)] + _err),
    ("hr_options_load_defaults", _i, [("options", _vp), ("path", _c.c_char_p)] + _err),
    ("hr_options_process", _i, [("out", _P(_vp))] + _err),
    ("hr_options_process_reload", None, []),
    ("hr_options_get_bool", _c.c_bool, [("options", _vp), ("id", _i)]),
    ("hr_options_get_int", _c.c_int64, [("options", _vp), ("id", _i)]),
    ("hr_options_get_size", _u64, [("options", _vp), ("id", _i)]),
    ("hr_options_get_double", _c.c_double, [("options", _vp), ("id", _i)]),
    ("hr_options_get_str", _c.c_char_p, [("options", _vp), ("id", _i)]),
    ("hr_options_source", _i, [("options", _vp), ("id", _i)]),
    ("hr_options_table", _P(OptionInfo), [("n", _P(_sz))]),
    ("hr_options_id", _i, [("name", _c.c_char_p)]),
    ("hr_parse_size", _i, [("text", _c.c_char_p), ("out", _P(_u64))]),
    ("hr_parse_duration", _i, [("text", _c.c_char_p), ("out", _P(_c.c_double))]),
]

# Parts that may be missing from a build; declared when exported.
_PARTS = [
    # probe
    ("hr_snapshot_take", _i, [("options", _P(ProbeOptions)), ("out", _P(_vp))]),
    ("hr_snapshot_free", None, [("snapshot", _vp)]),
    ("hr_probe_create", _i, [("out", _P(_vp))]),
    ("hr_probe_destroy", None, [("probe", _vp)]),
    ("hr_probe_snapshot", _i, [("probe", _vp), ("options", _P(ProbeOptions)), ("out", _P(_vp))]),
    ("hr_snapshot_json", _i, [("snapshot", _vp), ("out", _P(_vp))]),
    ("hr_host_mem_read", _i, [("root", _c.c_char_p), ("pressure", _c.c_bool),
                              ("out", _P(HostMem))] + _err),
    ("hr_snapshot_json_selected", _i, [("snapshot", _vp), ("out", _P(_vp))]),
    # backend and pool
    ("hr_backend_create", _i, [("backend", _c.c_char_p), ("device", _i), ("capacity", _u64),
                               ("out", _P(_vp))]),
    ("hr_backend_destroy", None, [("backend", _vp)]),
    ("hr_backend_mem_info", _i, [("backend", _vp), ("free", _P(_u64)), ("total", _P(_u64))]),
    ("hr_pool_config_parse", _i, [("conf", _c.c_char_p), ("out", _vp)] + _err),
    ("hr_pool_create", _i, [("config", _vp), ("backend", _vp), ("device", _i),
                            ("out", _P(_vp))]),
    ("hr_pool_destroy", None, [("pool", _vp)]),
    ("hr_pool_alloc", _i, [("pool", _vp), ("size", _u64), ("stream", _vp), ("out", _P(_vp))]),
    ("hr_pool_free", _i, [("pool", _vp), ("ptr", _vp), ("stream", _vp)]),
    ("hr_pool_release_cached", _i, [("pool", _vp)]),
    ("hr_pool_stats", _i, [("pool", _vp), ("stats", _vp)]),
    ("hr_pool_reset_peak", _i, [("pool", _vp)]),
    ("hr_pool_check", _i, [("pool", _vp)]),
    ("hr_pool_last_diagnosis", _i, [("pool", _vp), ("buf", _c.c_char_p), ("len", _sz)]),
    ("hr_torch_malloc", _vp, [("size", _c.c_ssize_t), ("device", _i), ("stream", _vp)]),
    ("hr_torch_free", None, [("ptr", _vp), ("size", _c.c_ssize_t), ("device", _i),
                             ("stream", _vp)]),
    ("hr_torch_set_oom_raise", None, [("fn", _vp)]),
    ("hr_torch_pool", _vp, [("device", _i)]),
    ("hr_malloc_trim", _i, []),
    # levels and the leak trend test
    ("hr_level_update", _i, [("cur", _i), ("pct", _c.c_double), ("warn", _c.c_double),
                             ("crit", _c.c_double), ("hyst", _c.c_double)]),
    ("hr_leak_create", _i, [("config", _P(LeakConfig)), ("out", _P(_vp))]),
    ("hr_leak_destroy", None, [("detector", _vp)]),
    ("hr_leak_add", _i, [("detector", _vp), ("pid", _i), ("start_ticks", _u64), ("series", _i),
                         ("t", _c.c_double), ("bytes", _u64), ("out", _P(LeakResult))]),
    ("hr_leak_evaluate", _i, [("config", _P(LeakConfig)), ("t", _P(_c.c_double)),
                              ("y", _P(_c.c_double)), ("n", _sz), ("out", _P(LeakResult))]),
    # the cleanup modes
    ("hr_cleanup_modes", _P(CleanupMode), [("n", _P(_sz))]),
    ("hr_cleanup_mode", _P(CleanupMode), [("name", _c.c_char_p)]),
    # residency
    ("hr_residency_options_default", None, [("table", _vp), ("out", _P(ResidencyOptions))]),
    ("hr_residency_create", _i, [("options", _P(ResidencyOptions)), ("out", _P(_vp))]),
    ("hr_residency_destroy", None, [("registry", _vp)]),
    ("hr_asset_register", _i, [("registry", _vp), ("desc", _P(AssetDesc)), ("out", _P(_u32))]),
    ("hr_asset_unregister", _i, [("registry", _vp), ("id", _u32)]),
    ("hr_asset_info", _i, [("registry", _vp), ("id", _u32), ("out", _P(AssetInfo))]),
    ("hr_residency_require", _i, [("registry", _vp), ("ids", _P(_u32)), ("n", _sz),
                                  ("working_bytes", _u64), ("lookahead", _P(Lookahead)),
                                  ("plan", _P(Plan))]),
    ("hr_residency_use", _i, [("registry", _vp), ("ids", _P(_u32)), ("n", _sz),
                              ("working_bytes", _u64), ("lookahead", _P(Lookahead)),
                              ("plan", _P(Plan))]),
    ("hr_plan_free", None, [("plan", _P(Plan))]),
    ("hr_residency_stats", _i, [("registry", _vp), ("out", _P(ResidencyStats))]),
    ("hr_policy_parse", _i, [("text", _c.c_char_p), ("out", _P(_i))]),
    ("hr_asset_set_busy", _i, [("registry", _vp), ("id", _u32), ("busy", _c.c_bool)]),
    ("hr_asset_touch", _i, [("registry", _vp), ("id", _u32)]),
    ("hr_asset_offload", _i, [("registry", _vp), ("id", _u32), ("bytes", _u64),
                              ("freed", _P(_u64))]),
    ("hr_residency_estimate", _i, [("registry", _vp), ("ids", _P(_u32)), ("n", _sz),
                                   ("working_bytes", _u64), ("need", _P(_u64)),
                                   ("can_free", _P(_u64))]),
    ("hr_residency_reclaim", _i, [("pool", _vp), ("needed", _u64), ("freed", _P(_u64)),
                                  ("registry", _vp)]),
    ("hr_pool_add_reclaimer", _i, [("pool", _vp), ("fn", RECLAIM_FN), ("arg", _vp)]),
    ("hr_pool_remove_reclaimer", _i, [("pool", _vp), ("fn", RECLAIM_FN), ("arg", _vp)]),
    ("hr_pool_set_tag", None, [("tag", _c.c_char_p)]),
]


def _declare(cdll, path):
    """A Library with every prototype declared: the core ones must be there,
    the others are declared when exported."""
    global _pool_stats_type
    lib = Library(cdll, path)
    for table, required in ((_CORE, True), (_PARTS, False)):
        for name, res, params in table:
            fn = getattr(cdll, name, None)
            if fn is None:
                if required:
                    raise LibraryNotFoundError("libheadroom: %s does not export %s; it is older "
                                               "than this package, rebuild it" % (path, name))
                continue
            fn.restype = res
            fn.argtypes = [t for _, t in params]
            wrapped = Function(fn, name, params)
            # A function without integer or pointer parameters has nothing
            # to check: it is called directly, at no cost over ctypes.
            setattr(lib, name, wrapped if wrapped._checks else fn)
    if _pool_stats_type is None:
        n = _c.c_size_t()
        names = lib.hr_abi_pool_stat_names(_c.byref(n))
        _pool_stats_type = _make_pool_stats([names[i].decode() for i in range(n.value)])
    return lib


class HeadroomError(RuntimeError):
    """An error from libheadroom: ``code`` is the negative HR_E* code, ``name``
    its name ("HR_EINVAL"), ``text`` the library's hr_strerror() text and
    ``detail`` the message the call wrote, when it wrote one."""

    def __init__(self, code, where, detail=""):
        self.code = code
        self.where = where
        self.detail = detail
        self.name = _err_name(code)
        self.text = _strerror(code)
        if detail:
            msg = "%s (%s: %s)" % (detail, self.name, self.text)
        else:
            msg = "%s: %s (%s)" % (where, self.text, self.name)
        super().__init__(msg)


class LibraryNotFoundError(HeadroomError, OSError):
    """libheadroom could not be found or loaded; the message lists where it looked."""

    def __init__(self, message):
        self.code = -4
        self.where = "load"
        self.detail = message
        self.name = "HR_ENOENT"
        self.text = "not found"
        RuntimeError.__init__(self, message)

    def __str__(self):
        return self.detail


class VersionMismatchError(HeadroomError):
    """The library loaded is not the version this package was written for."""

    def __init__(self, message):
        self.code = -16
        self.where = "load"
        self.detail = message
        self.name = "HR_EVERSION"
        self.text = "version mismatch"
        RuntimeError.__init__(self, message)

    def __str__(self):
        return self.detail


_lock = threading.Lock()
_lib = None
_path = None
# The error of a failed search, kept so that callers that only ask whether
# the library is there (free_memory on every frame) do not search again:
# find_library() runs ldconfig, which costs milliseconds.
_failure = None


def _candidates():
    """Yields (path, explicit) pairs in search order."""
    env = os.environ.get("HEADROOM_LIB")
    if env:
        yield env, True
        return
    # The package's own folder (headroom/, where a pip install puts it), one
    # above this room.
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    yield os.path.join(here, "libheadroom.so"), False
    found = ctypes.util.find_library("headroom")
    if found:
        yield found, False
    yield "libheadroom.so", False


def _check_version(cdll, path):
    cdll.hr_version.restype = ctypes.c_char_p
    cdll.hr_version.argtypes = []
    ver = cdll.hr_version().decode()
    try:
        major, minor = (int(x) for x in ver.split(".")[:2])
    except ValueError:
        raise VersionMismatchError("%s reports version %r, which is not MAJOR.MINOR.PATCH"
                                   % (path, ver)) from None
    want_major, want_minor = API_VERSION
    if major != want_major or (major == 0 and minor != want_minor):
        raise VersionMismatchError(
            "%s is libheadroom %s, but this Python package needs %d.%d.x; rebuild the library "
            "or point HEADROOM_LIB at a matching one" % (path, ver, want_major, want_minor))
    return ver


def load():
    """Returns the loaded library (a Library), loading it on the first call.
    Raises LibraryNotFoundError listing every place it looked, or
    VersionMismatchError when the version is wrong."""
    global _lib, _path, _failure
    if _lib is not None:
        return _lib
    with _lock:
        if _lib is not None:
            return _lib
        if _failure is not None:
            raise _failure
        try:
            _lib, _path = _search()
        except HeadroomError as e:
            _failure = e
            raise
        return _lib


def _not_a_file(path):
    """Why the library at `path` is not loaded: it is there and is not a
    regular file (dlopen would wait on a FIFO for ever); None when it is one,
    is missing (CDLL says so), or is a bare name the loader searches for."""
    if os.sep not in path:
        return None
    try:
        check_regular(path)
    except NotRegularFile as e:
        return str(e)
    except OSError:
        return None
    return None


def _search():
    """Returns (library, path) from the first candidate that loads; raises
    LibraryNotFoundError listing every place tried, or VersionMismatchError."""
    tried = []
    for path, explicit in _candidates():
        if not explicit and os.sep in path and not os.path.exists(path):
            tried.append("%s (no such file)" % path)
            continue
        why = _not_a_file(path)
        if why and explicit:
            raise LibraryNotFoundError("libheadroom: HEADROOM_LIB=%s: %s" % (path, why))
        if why:
            tried.append("%s (%s)" % (path, why))
            continue
        try:
            cdll = ctypes.CDLL(path)
        except OSError as e:
            if explicit:
                raise LibraryNotFoundError(
                    "libheadroom: HEADROOM_LIB=%s cannot be loaded: %s" % (path, e)) from None
            tried.append("%s (%s)" % (path, e))
            continue
        if not hasattr(cdll, "hr_version"):
            if explicit:
                raise LibraryNotFoundError(
                    "libheadroom: HEADROOM_LIB=%s is not libheadroom (no hr_version)" % path)
            tried.append("%s (not libheadroom: no hr_version)" % path)
            continue
        _check_version(cdll, path)
        lib = _declare(cdll, path)
        return lib, path
    raise LibraryNotFoundError(
        "libheadroom not found; build it (cmake -S . -B build/release && cmake --build "
        "build/release) and set HEADROOM_LIB to build/release/libheadroom.so, or install "
        "the package with pip. Looked in: " + "; ".join(tried))


def loaded_path():
    """The path the library was loaded from, or None before it is loaded."""
    return _path


def available():
    """True when the library can be loaded (loading it if needed)."""
    try:
        load()
        return True
    except HeadroomError:
        return False


def has(name):
    """True when the loaded library exports `name` (parts of it land separately)."""
    return hasattr(load(), name)


def _strerror(code):
    if _lib is None:
        return "error %d" % code
    return _lib.hr_strerror(code).decode()


def _err_name(code):
    if _lib is None:
        return "HR_E?"
    return _lib.hr_err_name(code).decode()


def check(rc, where, err=None):
    """Raises HeadroomError when `rc` is a negative code; `err` is the
    ctypes buffer the call wrote its message into, if any."""
    if rc >= 0:
        return rc
    detail = ""
    if err is not None:
        detail = err.value.decode(errors="replace")
    raise HeadroomError(rc, where, detail)


# What else holds on to the loaded library's state, forgotten with it
# (options.process()'s handle): callables added by the modules that keep one.
_on_reset = []


def on_reset(fn):
    """Adds fn() to what reset_for_tests() calls after forgetting the library;
    returns fn."""
    _on_reset.append(fn)
    return fn


def reset_for_tests():
    """Forgets the loaded library (or the failed search) so that a test can
    load another one."""
    global _lib, _path, _failure, _pool_stats_type
    with _lock:
        if _lib is not None:
            # The process's options were read once from the environment the
            # test is about to change: read them again on next use.
            _lib.hr_options_process_reload()
        _lib, _path, _failure, _pool_stats_type = None, None, None, None
    for fn in _on_reset:
        fn()
