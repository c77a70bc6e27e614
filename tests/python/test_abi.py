"""Every struct the ctypes module mirrors matches the library's own layout
(hr_abi_structs: sizeof, offsetof and _Alignof as the library was compiled):
the same struct names on both sides, the same size, and for every field the
same name, offset and size, in the same order."""

import ctypes

import pytest

from headroom._c import lib as _lib, pool


@pytest.fixture
def lib(fresh_loader, libpath):
    fresh_loader.setenv("HEADROOM_LIB", libpath)
    return _lib.load()


def differences(cname, cls, layout):
    """What differs between ctypes class `cls` and the library's row for
    `cname`, as sentences; [] when they match."""
    size, align, fields = layout
    out = []
    if ctypes.sizeof(cls) != size:
        out.append("%s: sizeof %d in Python, %d in C" % (cname, ctypes.sizeof(cls), size))
    if ctypes.alignment(cls) != align:
        out.append("%s: alignment %d in Python, %d in C" % (cname, ctypes.alignment(cls), align))
    py = [(f[0], getattr(cls, f[0]).offset, getattr(cls, f[0]).size) for f in cls._fields_]
    c = [(name, off, sz) for name, off, sz, _ in fields]
    if [p[0] for p in py] != [x[0] for x in c]:
        out.append("%s: fields %s in Python, %s in C" % (cname, [p[0] for p in py],
                                                          [x[0] for x in c]))
    cmap = {x[0]: x for x in c}
    for name, off, sz in py:
        if name in cmap and cmap[name][1:] != (off, sz):
            out.append("%s.%s: offset %d size %d in Python, offset %d size %d in C"
                       % (cname, name, off, sz, cmap[name][1], cmap[name][2]))
    return out


def test_every_struct_matches_the_library(lib):
    layout = _lib.library_layout()
    mine = _lib.structs()
    assert sorted(mine) == sorted(layout), "structs mirrored in Python and described by C differ"
    problems = []
    for cname, cls in mine.items():
        problems += differences(cname, cls, layout[cname])
    assert problems == []


def test_the_comparison_finds_a_missing_or_moved_field(lib):
    layout = _lib.library_layout()["hr_asset_info_t"]

    class Missing(ctypes.Structure):  # hr_asset_info_t without `uses`
        _fields_ = [f for f in _lib.AssetInfo._fields_ if f[0] != "uses"]

    class Moved(ctypes.Structure):  # `pinned` and `partial` swapped
        f = list(_lib.AssetInfo._fields_)
        i = [n for n, _ in f].index("pinned")
        f[i], f[i + 1] = f[i + 1], f[i]
        _fields_ = f

    class Wider(ctypes.Structure):  # `priority` as a 64-bit integer
        _fields_ = [(n, ctypes.c_int64 if n == "priority" else t)
                    for n, t in _lib.AssetInfo._fields_]

    assert any("fields" in d for d in differences("hr_asset_info_t", Missing, layout))
    assert any("fields" in d for d in differences("hr_asset_info_t", Moved, layout))
    assert any("priority" in d for d in differences("hr_asset_info_t", Wider, layout))


def test_stat_names_come_from_the_library(lib):
    n = ctypes.c_size_t()
    names = lib.hr_abi_pool_stat_names(ctypes.byref(n))
    want = tuple(names[i].decode() for i in range(n.value))
    assert pool.stat_names() == want == pool.STAT_NAMES
    assert "allocated_bytes" in want and "reserved_bytes" in want


def test_every_function_is_declared_in_the_one_module(lib):
    # Other modules use what headroom._c.lib declares; none sets argtypes of
    # its own.
    import glob
    import os

    pkg = os.path.dirname(os.path.dirname(_lib.__file__))
    for path in glob.glob(os.path.join(pkg, "**", "*.py"), recursive=True):
        if path == _lib.__file__:
            continue
        text = open(path).read()
        assert "argtypes" not in text and "ctypes.Structure" not in text \
            and "_c.Structure" not in text, path
