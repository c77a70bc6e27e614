"""The ctypes loader: where it looks, the version check, errors as exceptions."""

import os
import shutil
import subprocess

import pytest

import headroom
from headroom._c import lib as _lib, options

from conftest import PYDIR, run_python


def test_loads_from_headroom_lib(fresh_loader, libpath):
    fresh_loader.setenv("HEADROOM_LIB", libpath)
    lib = _lib.load()
    assert _lib.loaded_path() == libpath
    ver = headroom.library_version()
    assert tuple(int(x) for x in ver.split(".")[:2]) == headroom.API_VERSION
    assert lib is _lib.load()  # loaded once


def test_headroom_lib_missing_is_a_clear_error(fresh_loader, tmp_path):
    missing = str(tmp_path / "nope" / "libheadroom.so")
    fresh_loader.setenv("HEADROOM_LIB", missing)
    with pytest.raises(headroom.LibraryNotFoundError) as ei:
        _lib.load()
    assert "HEADROOM_LIB=" + missing in str(ei.value)
    assert isinstance(ei.value, headroom.HeadroomError)
    assert isinstance(ei.value, OSError)
    assert ei.value.name == "HR_ENOENT"
    assert not headroom.library_available()


def test_headroom_lib_not_libheadroom(fresh_loader):
    fresh_loader.setenv("HEADROOM_LIB", "libc.so.6")
    with pytest.raises(headroom.LibraryNotFoundError, match="not libheadroom"):
        _lib.load()


def test_version_mismatch(fresh_loader, tmp_path):
    if not shutil.which("gcc"):
        pytest.skip("gcc not found")
    src = tmp_path / "v.c"
    src.write_text('const char *hr_version(void) { return "9.4.1"; }\n'
                   'const char *hr_strerror(int c) { (void)c; return "x"; }\n'
                   'const char *hr_err_name(int c) { (void)c; return "HR_E?"; }\n')
    so = tmp_path / "libheadroom.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(so), str(src)], check=True)
    fresh_loader.setenv("HEADROOM_LIB", str(so))
    with pytest.raises(headroom.VersionMismatchError) as ei:
        _lib.load()
    assert "9.4.1" in str(ei.value) and "0.1.x" in str(ei.value)


def test_found_next_to_the_package(tmp_path, libpath):
    pkg = tmp_path / "site"
    shutil.copytree(os.path.join(PYDIR, "headroom"), pkg / "headroom",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(libpath, pkg / "headroom" / "libheadroom.so")
    r = run_python("import headroom, headroom._c.lib as l; headroom.load_library(); "
                   "print(l.loaded_path())", env={"HEADROOM_LIB": None, "PYTHONPATH": str(pkg)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(pkg / "headroom" / "libheadroom.so")


def test_not_found_anywhere_lists_places(tmp_path):
    pkg = tmp_path / "site"
    shutil.copytree(os.path.join(PYDIR, "headroom"), pkg / "headroom",
                    ignore=shutil.ignore_patterns("__pycache__"))
    r = run_python("import headroom\n"
                   "try:\n  headroom.load_library()\n"
                   "except headroom.LibraryNotFoundError as e:\n  print('ERR', e)\n",
                   env={"HEADROOM_LIB": None, "PYTHONPATH": str(pkg),
                        "LD_LIBRARY_PATH": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ERR libheadroom not found")
    assert str(pkg / "headroom" / "libheadroom.so") in r.stdout


def test_import_works_without_the_library():
    # Without the library the cleanup mode table cannot be read: every mode
    # releases the caches alone (what every row of the table does), no
    # garbage collection, one pass, and the result says so.
    code = ("import headroom, headroom.stages, headroom.free, headroom.manager, headroom.torch\n"
            "assert not headroom.library_available()\n"
            "with headroom.stage('s'):\n  pass\n"
            "r = headroom.free_memory('aggressive')\n"
            "print(r.mode, r.passes, 'only caches were released' in r.note,\n"
            "      any(a.startswith('gc.') for a in r.actions), 'only caches' in str(r))\n")
    r = run_python(code, env={"HEADROOM_LIB": "/nonexistent/libheadroom.so"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "aggressive 1 True False True"


def test_import_does_not_import_torch():
    r = run_python("import sys, headroom; print('torch' in sys.modules)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def test_option_errors_carry_strerror_text(fresh_loader, libpath):
    fresh_loader.setenv("HEADROOM_LIB", libpath)
    o = options.Options()
    with pytest.raises(headroom.HeadroomError) as ei:
        o.set("mode", "wild")
    e = ei.value
    assert e.code == -1 and e.name == "HR_EINVAL" and e.text == "invalid argument"
    assert "conservative|balanced|aggressive" in str(e)
    assert "invalid argument" in str(e)
    with pytest.raises(headroom.HeadroomError) as ei:
        o.set("no_such_option", "1")
    assert ei.value.name == "HR_ENOENT" and "no_such_option" in str(ei.value)
    with pytest.raises(headroom.HeadroomError, match="interval"):
        o.set("interval", "-3s")


def test_options_values_and_sources(fresh_loader, libpath, tmp_path):
    fresh_loader.setenv("HEADROOM_LIB", libpath)
    fresh_loader.setenv("HEADROOM_INTERVAL", "250ms")
    conf = tmp_path / "h.conf"
    conf.write_text("reserve = 1G\nmode = balanced\n")
    o = options.Options()
    assert o.get("interval") == 1.0 and o.source("interval") == "default"
    o.load_defaults(str(conf))
    assert o.get("interval") == 0.25 and o.source("interval") == "env"
    assert o.get("reserve") == 1 << 30 and o.source("reserve") == "file"
    assert o.get("mode") == "balanced"
    o.set("top", 7)
    assert o.get("top") == 7 and o.source("top") == "cli"
    with pytest.raises(KeyError, match="unknown option"):
        o.get("nope")
    names = [row["name"] for row in options.table()]
    assert "mode" in names and "interval" in names
    o.close()


def test_bad_config_file_names_the_line(fresh_loader, libpath, tmp_path):
    fresh_loader.setenv("HEADROOM_LIB", libpath)
    conf = tmp_path / "bad.conf"
    conf.write_text("mode = balanced\nreserve = lots\n")
    with pytest.raises(headroom.HeadroomError) as ei:
        options.Options().load_defaults(str(conf))
    assert "bad.conf:2" in str(ei.value)


def test_parse_size_and_duration(fresh_loader, libpath):
    fresh_loader.setenv("HEADROOM_LIB", libpath)
    assert options.parse_size("2G") == 2 << 30
    assert options.parse_duration("250ms") == 0.25
    with pytest.raises(headroom.HeadroomError, match="HR_EINVAL"):
        options.parse_size("12Q")


def test_a_failed_search_is_remembered(fresh_loader, tmp_path):
    fresh_loader.setenv("HEADROOM_LIB", str(tmp_path / "missing.so"))
    with pytest.raises(headroom.LibraryNotFoundError) as first:
        _lib.load()
    # Even once the variable changes, the process keeps its answer: callers on
    # a hot path ask available() every frame and must not search each time.
    fresh_loader.setenv("HEADROOM_LIB", "/elsewhere/libheadroom.so")
    with pytest.raises(headroom.LibraryNotFoundError) as second:
        _lib.load()
    assert second.value is first.value
    assert not _lib.available()


def test_a_closed_options_raises_instead_of_crashing(fresh_loader, libpath):
    fresh_loader.setenv("HEADROOM_LIB", libpath)
    o = options.Options()
    assert o.get("top") == 10
    o.close()
    for use in (lambda: o.get("top"), lambda: o.source("top"), lambda: o.set("top", 3),
                o.load_defaults):
        with pytest.raises(ValueError, match="the Options are closed"):
            use()
    o.close()
    with options.Options() as o2:
        o2.set("top", 4)
        assert o2.get("top") == 4
    with pytest.raises(ValueError, match="closed"):
        o2.get("top")
    with pytest.raises(ValueError, match="closed"):
        with o2:
            pass
