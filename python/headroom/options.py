"""headroom's option table, through libheadroom.

Options() holds every default of the table; load_defaults() reads the config
file and the HEADROOM_* environment like the CLI does; set() applies a value
at API precedence. A bad name or value raises HeadroomError with the
library's message, which names the option and the accepted range.
"""

import ctypes

from . import _lib

_TYPES = ["bool", "int", "size", "duration", "percent", "string", "enum"]
_SOURCES = ["default", "file", "env", "cli"]


class _OptionInfo(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("env", ctypes.c_char_p),
        ("type", ctypes.c_int),
        ("deflt", ctypes.c_char_p),
        ("min", ctypes.c_double),
        ("max", ctypes.c_double),
        ("choices", ctypes.c_char_p),
        ("help", ctypes.c_char_p),
    ]


def _s(b):
    return b.decode() if b is not None else None


def table():
    """Every option as a dict: name, env, type, default, min, max, choices, help."""
    lib = _lib.load()
    n = ctypes.c_size_t(0)
    addr = lib.hr_options_table(ctypes.byref(n))
    rows = ctypes.cast(addr, ctypes.POINTER(_OptionInfo))
    out = []
    for i in range(n.value):
        r = rows[i]
        out.append({
            "name": _s(r.name), "env": _s(r.env), "type": _TYPES[r.type],
            "default": _s(r.deflt), "min": r.min, "max": r.max,
            "choices": _s(r.choices).split("|") if r.choices else None, "help": _s(r.help),
        })
    return out


class Options:
    """A set of option values; starts with every default."""

    def __init__(self):
        self._lib = _lib.load()
        self._types = {row["name"]: row["type"] for row in table()}
        h = ctypes.c_void_p()
        _lib.check(self._lib.hr_options_create(ctypes.byref(h)), "hr_options_create")
        self._h = h

    def close(self):
        if self._h:
            self._lib.hr_options_destroy(self._h)
            self._h = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: the library may be gone already
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def load_defaults(self, path=None):
        """Reads the config file (`path`, or the default chain) and the environment."""
        err = ctypes.create_string_buffer(512)
        rc = self._lib.hr_options_load_defaults(self._h, path.encode() if path else None, err,
                                                len(err))
        _lib.check(rc, "hr_options_load_defaults", err)
        return self

    def set(self, name, value):
        """Sets `name` from `value` (text, or a number/bool turned into text) at
        API precedence. Raises HeadroomError naming the option on a bad value."""
        if isinstance(value, bool):
            value = "true" if value else "false"
        err = ctypes.create_string_buffer(512)
        rc = self._lib.hr_options_set(self._h, name.encode(), str(value).encode(), 3, err,
                                      len(err))
        _lib.check(rc, "option %s" % name, err)

    def _type(self, name):
        key = name.replace("-", "_")
        if key not in self._types:
            raise KeyError("unknown option %r; known: %s" % (name, ", ".join(sorted(self._types))))
        return key, self._types[key]

    def get(self, name):
        """The value, typed: bool, int, bytes (int), seconds (float), percent
        (float) or str."""
        key, t = self._type(name)
        k = self._lib.hr_options_id(key.encode())
        if t == "bool":
            return bool(self._lib.hr_options_get_bool(self._h, k))
        if t == "int":
            return int(self._lib.hr_options_get_int(self._h, k))
        if t == "size":
            return int(self._lib.hr_options_get_size(self._h, k))
        if t in ("duration", "percent"):
            return float(self._lib.hr_options_get_double(self._h, k))
        return _s(self._lib.hr_options_get_str(self._h, k))

    def source(self, name):
        """Where the value came from: "default", "file", "env" or "cli"."""
        key, _ = self._type(name)
        return _SOURCES[self._lib.hr_options_source(self._h, self._lib.hr_options_id(key.encode()))]


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
