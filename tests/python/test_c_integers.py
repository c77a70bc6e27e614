"""Every integer that crosses into C passes one range check: each declared
function's integer and pointer arguments (addresses and streams included),
each struct field, what a callback writes through a pointer and each array
element. Hostile values (-1, 2**64, 2**64 + 7, floats, bools, numpy values)
are refused before anything reaches C; numpy integers in range are taken.
The table-driven part runs every prototype over a recorder standing in for
the C function, so a value that got through would be seen arriving."""

import ctypes

import pytest

from headroom._c import lib as _lib, pool

from test_pool import lib  # noqa: F401  (the fixture: the library, with a pool)

U64 = (1 << 64) - 1
HOSTILE_INTS = [-1, 1 << 64, (1 << 64) + 7]
NOT_INTS = [1.5, 2.0, True, False, "7", b"7"]


def _numpy():
    return pytest.importorskip("numpy")


class Recorder:
    """Stands in for a ctypes function: keeps the arguments it was called with."""

    def __init__(self):
        self.calls = []

    def __call__(self, *args):
        self.calls.append(args)
        return 0


def _good(ptype):
    """An argument of C type `ptype` that passes: 0 for numbers, None for pointers."""
    if _lib.int_range(ptype) is not None:
        return 0
    return None


def _checked_params():
    """(function name, params, index, parameter name, C type) of every
    integer or pointer parameter of every prototype."""
    out = []
    for name, _res, params in _lib._CORE + _lib._PARTS:
        for i, (pname, ptype) in enumerate(params):
            if _lib.checked(ptype):
                out.append((name, params, i, pname, ptype))
    return out


CHECKED = _checked_params()


def test_the_prototypes_have_integer_and_pointer_parameters_to_check():
    names = {(c[0], c[3]) for c in CHECKED}
    for want in [("hr_pool_free", "ptr"), ("hr_pool_free", "stream"), ("hr_pool_alloc", "size"),
                 ("hr_pool_alloc", "stream"), ("hr_backend_create", "device"),
                 ("hr_torch_malloc", "stream"), ("hr_asset_offload", "id"),
                 ("hr_leak_add", "pid"), ("hr_options_set", "errlen")]:
        assert want in names, want
    assert len(CHECKED) > 80


@pytest.mark.parametrize("name,params,i,pname,ptype", CHECKED,
                         ids=["%s.%s" % (c[0], c[3]) for c in CHECKED])
def test_every_argument_is_checked_before_c(name, params, i, pname, ptype):
    rec = Recorder()
    fn = _lib.Function(rec, name, params)
    args = [_good(t) for _, t in params]
    r = _lib.int_range(ptype)
    low, high = r if r is not None else (0, U64)
    bad = [v for v in HOSTILE_INTS + [low - 1, high + 1] if not low <= v <= high]
    if ptype is _lib._c.c_char_p:
        bad_types = [1, 0, 1 << 64, 1.5, True]
        bad = []
    else:
        bad_types = NOT_INTS if ptype is not _lib._c.c_void_p else [1.5, True, False]
    for v in bad:
        args[i] = v
        with pytest.raises(ValueError, match=r"^%s: %s( \(an address\))? must be an integer in "
                           r"\[%d, %d\]; got %d$" % (name, pname, low, high, v)):
            fn(*args)
    for v in bad_types:
        args[i] = v
        with pytest.raises(TypeError, match=r"^%s: %s" % (name, pname)):
            fn(*args)
    assert rec.calls == []  # nothing reached C
    if ptype is _lib._c.c_char_p:
        return
    for v in (low, high):
        args[i] = v
        fn(*args)
        assert rec.calls[-1][i] == v and type(rec.calls[-1][i]) is int


def test_numpy_integers_are_taken_in_range_and_numpy_bools_are_not():
    np = _numpy()
    rec = Recorder()
    fn = _lib.Function(rec, "hr_pool_alloc", [("pool", ctypes.c_void_p), ("size", ctypes.c_uint64),
                                              ("stream", ctypes.c_void_p),
                                              ("out", ctypes.POINTER(ctypes.c_void_p))])
    fn(None, np.uint64(U64), np.int64(7), None)
    assert rec.calls[-1][1:3] == (U64, 7) and type(rec.calls[-1][1]) is int
    with pytest.raises(ValueError, match="size must be an integer in"):
        fn(None, np.int64(-1), None, None)
    with pytest.raises(ValueError, match=r"stream \(an address\) must be"):
        fn(None, 1, np.int64(-5), None)
    for v in (np.bool_(True), np.float64(3.0)):
        with pytest.raises(TypeError, match="size must be an integer"):
            fn(None, v, None, None)
    assert len(rec.calls) == 1


def test_a_wrong_number_of_arguments_is_a_type_error():
    fn = _lib.Function(Recorder(), "hr_pool_free", [("pool", ctypes.c_void_p),
                                                    ("ptr", ctypes.c_void_p),
                                                    ("stream", ctypes.c_void_p)])
    with pytest.raises(TypeError, match="hr_pool_free takes 3 arguments"):
        fn(None, 1)


def test_pointer_arguments_take_ctypes_objects_and_none():
    rec = Recorder()
    fn = _lib.Function(rec, "f", [("p", ctypes.c_void_p)])
    buf = ctypes.create_string_buffer(8)
    for v in (None, buf, ctypes.c_void_p(5), ctypes.byref(buf), b"xy"):
        fn(v)
        assert rec.calls[-1][0] is v


# ---- the real library ----


def test_every_declared_function_with_numbers_or_pointers_is_checked(lib):
    declared = 0
    for name, _res, params in _lib._CORE + _lib._PARTS:
        if not hasattr(lib, name):
            continue
        declared += 1
        f = getattr(lib, name)
        if any(_lib.checked(t) for _, t in params):
            assert isinstance(f, _lib.Function), name
        else:
            assert not isinstance(f, _lib.Function), name  # nothing to check: called directly
    assert declared > 50
    assert issubclass(_lib.pool_stats_type(), _lib.Struct)  # built from the library's names
    c = _lib.libc()
    assert isinstance(c.free, _lib.Function)
    with pytest.raises(ValueError, match=r"free: ptr \(an address\) must be"):
        c.free(1 << 64)  # refused: free() never sees it
    c.free(None)


def test_a_pointer_past_2_64_frees_nothing(lib):
    with pool.Pool("host", 16 << 20) as p:
        a = p.alloc(4096)
        for bad in (a + (1 << 64), a - (1 << 64), -1, (1 << 64) + 7):
            with pytest.raises(ValueError, match=r"hr_pool_free: ptr \(an address\) must be an "
                               r"integer in \[0, %d\]" % U64):
                p.free(bad)
        for bad in (float(a), True):
            with pytest.raises(TypeError, match=r"hr_pool_free: ptr"):
                p.free(bad)
        assert p.stats()["allocation.all.current"] == 1
        p.free(a)
        assert p.stats()["allocation.all.current"] == 0


def test_streams_sizes_and_devices_out_of_range_are_refused(lib):
    with pool.Pool("sim", 16 << 20) as p:
        for bad in ((1 << 64) + 7, 1 << 64, -1):
            with pytest.raises(ValueError, match=r"hr_pool_alloc: stream \(an address\)"):
                p.alloc(4096, stream=bad)
        with pytest.raises(TypeError, match="hr_pool_alloc: stream"):
            p.alloc(4096, stream=1.5)
        with pytest.raises(TypeError, match="hr_pool_alloc: size"):
            p.alloc(True)
        for bad in HOSTILE_INTS:
            with pytest.raises(ValueError, match="hr_pool_alloc: size must be"):
                p.alloc(bad)
        assert p.stats()["allocation.all.allocated"] == 0  # nothing was allocated
        a = p.alloc(4096, stream=7)  # a stream in range is one
        with pytest.raises(ValueError, match=r"hr_pool_free: stream \(an address\)"):
            p.free(a, stream=(1 << 64) + 7)
        p.free(a, stream=7)
    for dev in (1 << 31, -(1 << 31) - 1, 1 << 64):
        with pytest.raises(ValueError, match=r"hr_backend_create: device must be an integer in "
                           r"\[-2147483648, 2147483647\]"):
            pool.Pool("sim", 1 << 20, device=dev)
    for dev in (0.0, True):
        with pytest.raises(TypeError, match="hr_backend_create: device"):
            pool.Pool("sim", 1 << 20, device=dev)
    with pytest.raises(ValueError, match="hr_torch_malloc: size"):
        lib.hr_torch_malloc(1 << 63, 0, None)
    with pytest.raises(ValueError, match=r"hr_torch_free: ptr \(an address\)"):
        lib.hr_torch_free(-1, 0, 0, None)


def test_numpy_sizes_reach_the_pool(lib):
    np = _numpy()
    with pool.Pool("host", np.uint64(16 << 20)) as p:
        a = p.alloc(np.int64(4096), stream=np.uint64(3))
        assert p.stats()["requested_bytes.all.current"] == 4096
        p.free(np.uint64(a), stream=np.int32(3))
        with pytest.raises(TypeError):
            p.alloc(np.bool_(True))


# ---- structs, callbacks' pointers, arrays ----


def test_struct_fields_are_checked_however_they_are_set():
    with pytest.raises(ValueError, match=r"AssetDesc: priority must be an integer in "
                       r"\[-2147483648, 2147483647\]; got 2147483648"):
        _lib.make(_lib.AssetDesc, priority=1 << 31)
    with pytest.raises(ValueError, match="LeakConfig: min_samples must be"):
        _lib.LeakConfig(1.0, 1 << 64)  # positional
    opts = _lib.ResidencyOptions()
    for field in ("budget_bytes", "pool", "backend", "mem_info_arg"):
        with pytest.raises(ValueError, match="ResidencyOptions: %s" % field):
            setattr(opts, field, (1 << 64) + 7)
        with pytest.raises(TypeError, match="ResidencyOptions: %s" % field):
            setattr(opts, field, 2.5)
        assert not getattr(opts, field)  # unchanged
    opts.budget_bytes = U64
    assert opts.budget_bytes == U64
    with pytest.raises(TypeError, match="ProbeOptions: root must be bytes or None, not a number"):
        _lib.ProbeOptions(root=5)  # a char * set to an address
    assert all(issubclass(cls, _lib.Struct) for cls in (
        _lib.AbiField, _lib.AbiStruct, _lib.OptionInfo, _lib.ProbeOptions, _lib.Stat,
        _lib.LeakConfig, _lib.LeakResult, _lib.CleanupMode, _lib.ResidencyOptions,
        _lib.AssetDesc, _lib.AssetInfo, _lib.Action, _lib.Suggestion, _lib.Plan,
        _lib.Lookahead, _lib.ResidencyStats))


def test_struct_fields_take_numpy_integers():
    np = _numpy()
    d = _lib.make(_lib.AssetDesc, device_bytes=np.uint64(U64), priority=np.int32(-3))
    assert d.device_bytes == U64 and d.priority == -3


def test_what_a_callback_writes_through_a_pointer_is_checked():
    cell = (ctypes.c_uint64 * 1)(5)
    ptr = ctypes.cast(cell, ctypes.POINTER(ctypes.c_uint64))
    for bad in ((1 << 64) + 9, -1):
        with pytest.raises(ValueError, match="freed must be an integer in"):
            _lib.store(ptr, bad, "freed")
    with pytest.raises(TypeError, match="freed must be an integer"):
        _lib.store(ptr, 3.5, "freed")
    assert cell[0] == 5  # unchanged: checked before written
    _lib.store(ptr, U64, "freed")
    assert cell[0] == U64


def test_array_elements_are_checked():
    a = _lib.array(ctypes.c_uint32, [1, 2, (1 << 32) - 1], "ids")
    assert list(a) == [1, 2, (1 << 32) - 1]
    with pytest.raises(ValueError, match=r"ids\[2\] must be an integer in \[0, 4294967295\]; "
                       r"got 4294967296"):
        _lib.array(ctypes.c_uint32, [1, 2, 1 << 32], "ids")
    with pytest.raises(TypeError, match=r"ids\[0\]"):
        _lib.array(ctypes.c_uint32, [True], "ids")


def test_the_reclaimer_writes_nothing_out_of_range(monkeypatch):
    from headroom.pytorch import reclaim

    monkeypatch.setattr(reclaim, "release_idle", lambda needed, regs: (1 << 64) + 5)
    cell = (ctypes.c_uint64 * 1)(77)
    ptr = ctypes.cast(cell, ctypes.POINTER(ctypes.c_uint64))
    assert reclaim._reclaim(None, 10, ptr, None) == reclaim._ENOSPC
    assert cell[0] == 0  # not the low bits of 2**64 + 5
