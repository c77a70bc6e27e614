"""headroom's option table, through libheadroom.

Options() holds every default of the table; load_defaults() reads the config
file and the HEADROOM_* environment like the CLI does; set() applies a value
at API precedence. A bad name or value raises HeadroomError with the
library's message, which names the option and the accepted range.

process() is the process's own options (hr_options_process): defaults, the
config file and the environment, read once per process by the library, so a
caller that needs a setting on every call (snapshot) pays for no parsing.
"""

import ctypes
import threading

from . import lib as _lib

_TYPES = ["bool", "int", "size", "duration", "percent", "string", "enum"]
_SOURCES = ["default", "file", "env", "cli"]

_table = None  # the rows, read once: the table is static in the library
_process = None
_process_lock = threading.Lock()


def _s(b):
    return b.decode() if b is not None else None


def table():
    """Every option as a dict: name, env, type, default, min, max, choices, help."""
    global _table
    if _table is None:
        lib = _lib.load()
        n = ctypes.c_size_t(0)
        rows = lib.hr_options_table(ctypes.byref(n))
        out = []
        for i in range(n.value):
            r = rows[i]
            out.append({
                "name": _s(r.name), "env": _s(r.env), "type": _TYPES[r.type],
                "default": _s(r.deflt), "min": r.min, "max": r.max,
                "choices": _s(r.choices).split("|") if r.choices else None,
                "help": _s(r.help),
            })
        _table = out
    return [dict(r) for r in _table]


def _types():
    table()
    return {row["name"]: (i, row["type"]) for i, row in enumerate(_table)}


class _Reader:
    """Typed reads by name over an hr_options_t handle."""

    _kinds = None

    def _handle(self):
        raise NotImplementedError

    def _key(self, name):
        if _Reader._kinds is None:
            _Reader._kinds = _types()
        key = str(name).replace("-", "_")
        if key not in _Reader._kinds:
            raise KeyError("unknown option %r; known: %s"
                           % (name, ", ".join(sorted(_Reader._kinds))))
        return _Reader._kinds[key]

    def get(self, name):
        """The value, typed: bool, int, bytes (int), seconds (float), percent
        (float) or str. Raises ValueError when the options are closed."""
        k, t = self._key(name)
        h = self._handle()
        lib = self._lib
        if t == "bool":
            return bool(lib.hr_options_get_bool(h, k))
        if t == "int":
            return int(lib.hr_options_get_int(h, k))
        if t == "size":
            return int(lib.hr_options_get_size(h, k))
        if t in ("duration", "percent"):
            return float(lib.hr_options_get_double(h, k))
        return _s(lib.hr_options_get_str(h, k))

    def source(self, name):
        """Where the value came from: "default", "file", "env" or "cli"."""
        k, _ = self._key(name)
        return _SOURCES[self._lib.hr_options_source(self._handle(), k)]


class Options(_Reader, _lib.Handle):
    """A set of option values; starts with every default. close() (or the
    end of a with block) frees it; any use after that raises ValueError."""

    def __init__(self):
        self._h = None
        self._lib = _lib.load()
        h = ctypes.c_void_p()
        _lib.check(self._lib.hr_options_create(ctypes.byref(h)), "hr_options_create")
        self._h = h

    def _handle(self):
        if not self._h:
            raise ValueError("the Options are closed")
        return self._h

    def close(self):
        if getattr(self, "_h", None):
            self._lib.hr_options_destroy(self._h)
            self._h = None

    def __enter__(self):
        self._handle()  # a closed Options raises at the `with`, not later
        return self

    def load_defaults(self, path=None):
        """Reads the config file (`path`, or the default chain) and the environment."""
        err = ctypes.create_string_buffer(512)
        rc = self._lib.hr_options_load_defaults(self._handle(), path.encode() if path else None,
                                                err, len(err))
        _lib.check(rc, "hr_options_load_defaults", err)
        return self

    def set(self, name, value):
        """Sets `name` from `value` (text, or a number/bool turned into text) at
        API precedence. Raises HeadroomError naming the option on a bad value."""
        if isinstance(value, bool):
            value = "true" if value else "false"
        h = self._handle()
        err = ctypes.create_string_buffer(512)
        rc = self._lib.hr_options_set(h, str(name).encode(), str(value).encode(), 3, err,
                                      len(err))
        _lib.check(rc, "option %s" % name, err)


class ProcessOptions(_Reader):
    """The process's options (hr_options_process), owned by the library for
    the life of the process: read-only, nothing to close."""

    def __init__(self, lib, handle):
        self._lib = lib
        self._h = handle

    def _handle(self):
        return self._h


def process():
    """The options of this process, read once (defaults < config file <
    environment). Raises HeadroomError naming the option when the config
    file or the environment holds a bad value; the error is raised again on
    each call, since the library keeps it."""
    global _process
    if _process is not None:
        return _process
    with _process_lock:
        if _process is None:
            lib = _lib.load()
            h = ctypes.c_void_p()
            err = ctypes.create_string_buffer(512)
            _lib.check(lib.hr_options_process(ctypes.byref(h), err, len(err)),
                       "hr_options_process", err)
            _process = ProcessOptions(lib, h)
    return _process


@_lib.on_reset
def forget_process_options():
    """Drops this module's handle on the process's options (tests, through
    lib.reset_for_tests, after the library dropped its own)."""
    global _process
    with _process_lock:
        _process = None


def parse_size(text):
    """Bytes from "512M", "2G", "1048576"; raises HeadroomError on bad text."""
    out = ctypes.c_uint64()
    _lib.check(_lib.load().hr_parse_size(str(text).encode(), ctypes.byref(out)),
               "size %r" % text)
    return out.value


def parse_duration(text):
    """Seconds from "250ms", "5s", "10m"; raises HeadroomError on bad text."""
    out = ctypes.c_double()
    _lib.check(_lib.load().hr_parse_duration(str(text).encode(), ctypes.byref(out)),
               "duration %r" % text)
    return out.value
