"""Loading libheadroom through ctypes, and turning its error codes into exceptions.

The library is looked for, in this order: the file named by $HEADROOM_LIB (an
explicit choice: if it cannot be loaded that is an error, not a reason to try
elsewhere), a libheadroom.so next to this package (a pip install puts it
there), and the system's library path. Loading happens on first use, not at
import, so the parts of the package that need only the standard library
(``python3 -m headroom.trace``, stage logging, free_memory) work on a machine
without the library.

Functions from parts of the library that are not in every build are declared
only when the library exports them; callers ask with ``has()``.
"""

import ctypes
import ctypes.util
import os
import threading

#: The library version this package is written against. The library must have
#: the same major version and, before 1.0, the same minor version too.
API_VERSION = (0, 1)


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
    here = os.path.dirname(os.path.abspath(__file__))
    yield os.path.join(here, "libheadroom.so"), False
    found = ctypes.util.find_library("headroom")
    if found:
        yield found, False
    yield "libheadroom.so", False


def _c_char_p_fn(lib, name, argtypes):
    fn = getattr(lib, name)
    fn.restype = ctypes.c_char_p
    fn.argtypes = argtypes
    return fn


def _declare(lib):
    """Declares the prototypes of the functions the library exports."""
    c = ctypes
    _c_char_p_fn(lib, "hr_version", [])
    _c_char_p_fn(lib, "hr_strerror", [c.c_int])
    _c_char_p_fn(lib, "hr_err_name", [c.c_int])
    table = [
        ("hr_options_create", c.c_int, [c.POINTER(c.c_void_p)]),
        ("hr_options_destroy", None, [c.c_void_p]),
        ("hr_options_set", c.c_int,
         [c.c_void_p, c.c_char_p, c.c_char_p, c.c_int, c.c_char_p, c.c_size_t]),
        ("hr_options_load_defaults", c.c_int, [c.c_void_p, c.c_char_p, c.c_char_p, c.c_size_t]),
        ("hr_options_get_bool", c.c_bool, [c.c_void_p, c.c_int]),
        ("hr_options_get_int", c.c_int64, [c.c_void_p, c.c_int]),
        ("hr_options_get_size", c.c_uint64, [c.c_void_p, c.c_int]),
        ("hr_options_get_double", c.c_double, [c.c_void_p, c.c_int]),
        ("hr_options_get_str", c.c_char_p, [c.c_void_p, c.c_int]),
        ("hr_options_source", c.c_int, [c.c_void_p, c.c_int]),
        ("hr_options_table", c.c_void_p, [c.POINTER(c.c_size_t)]),
        ("hr_options_id", c.c_int, [c.c_char_p]),
        ("hr_options_process", c.c_int, [c.POINTER(c.c_void_p), c.c_char_p, c.c_size_t]),
        ("hr_parse_size", c.c_int, [c.c_char_p, c.POINTER(c.c_uint64)]),
        ("hr_parse_duration", c.c_int, [c.c_char_p, c.POINTER(c.c_double)]),
        # probe
        ("hr_snapshot_take", c.c_int, [c.c_void_p, c.POINTER(c.c_void_p)]),
        ("hr_snapshot_free", None, [c.c_void_p]),
        ("hr_snapshot_json", c.c_int, [c.c_void_p, c.POINTER(c.c_void_p)]),
        # pool
        ("hr_torch_malloc", c.c_void_p, [c.c_ssize_t, c.c_int, c.c_void_p]),
        ("hr_torch_free", None, [c.c_void_p, c.c_ssize_t, c.c_int, c.c_void_p]),
        ("hr_torch_set_oom_raise", None, [c.c_void_p]),
        ("hr_pool_config_parse", c.c_int, [c.c_char_p, c.c_void_p, c.c_char_p, c.c_size_t]),
    ]
    for name, res, args in table:
        fn = getattr(lib, name, None)
        if fn is not None:
            fn.restype = res
            fn.argtypes = args


def _check_version(lib, path):
    ver = lib.hr_version().decode()
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
    """Returns the loaded library (a ctypes.CDLL), loading it on the first call.
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


def _search():
    """Returns (library, path) from the first candidate that loads; raises
    LibraryNotFoundError listing every place tried, or VersionMismatchError."""
    tried = []
    for path, explicit in _candidates():
        if not explicit and os.sep in path and not os.path.exists(path):
            tried.append("%s (no such file)" % path)
            continue
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            if explicit:
                raise LibraryNotFoundError(
                    "libheadroom: HEADROOM_LIB=%s cannot be loaded: %s" % (path, e)) from None
            tried.append("%s (%s)" % (path, e))
            continue
        if not hasattr(lib, "hr_version"):
            if explicit:
                raise LibraryNotFoundError(
                    "libheadroom: HEADROOM_LIB=%s is not libheadroom (no hr_version)" % path)
            tried.append("%s (not libheadroom: no hr_version)" % path)
            continue
        _declare(lib)
        _check_version(lib, path)
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


def reset_for_tests():
    """Forgets the loaded library (or the failed search) so that a test can
    load another one."""
    global _lib, _path, _failure
    with _lock:
        _lib, _path, _failure = None, None, None
