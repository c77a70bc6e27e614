"""Sizes in text, both ways: fmt_bytes() writes bytes as every report of the
package shows them (812.0 MiB), parse_size() reads "512M", "1.5 GiB" or a
number of bytes (a node's or a caller's size argument).
"""

#: How much a size may be written with: bytes, or a number with one of these.
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20,
          "mb": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30,
          "t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40}


def fmt_bytes(n, signed=False):
    """A human size: 812.0 MiB, 1.50 GiB; "n/a" for None."""
    if n is None:
        return "n/a"
    sign = ""
    if signed:
        sign = "+" if n >= 0 else "-"
    elif n < 0:
        sign = "-"
    n = abs(n)
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div:
            return "%s%.1f %s" % (sign, n / div, unit)
    return "%s%d B" % (sign, n)


def parse_size(value, label="amount"):
    """Bytes from an int, a float, or text such as "512M", "1.5 GiB", "2048".
    Raises ValueError naming `label` for anything else or a negative size."""
    if isinstance(value, bool):
        raise ValueError("%s must be a size (bytes, or text like 512M or 1.5G); got %r"
                         % (label, value))
    if isinstance(value, (int, float)):
        n = float(value)
    elif isinstance(value, str):
        s = value.strip().lower().replace(" ", "")
        num = s.rstrip("kmgtibB")
        unit = s[len(num):]
        try:
            n = float(num) * _UNITS[unit]
        except (ValueError, KeyError):
            raise ValueError("%s must be a size (bytes, or text like 512M or 1.5G); got %r"
                             % (label, value)) from None
    else:
        raise ValueError("%s must be a size (bytes, or text like 512M or 1.5G); got %r"
                         % (label, value))
    if n != n or n < 0 or n == float("inf"):
        raise ValueError("%s must be a size >= 0; got %r" % (label, value))
    return int(n)
