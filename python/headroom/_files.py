"""Opening an input path that must be a regular file.

A reader handed a FIFO would wait for a writer forever, /dev/zero never
ends, and opening some devices does something. open_regular() refuses
anything but a regular file before reading: it looks at the path first
(nothing is opened for a FIFO or a device), then opens it without blocking
and looks again at what was opened, so a path swapped in between is refused
too. Standard library only.
"""

import os
import stat

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


class NotRegularFile(ValueError):
    """The path names something other than a regular file."""


def kind_of(mode):
    """What a st_mode is, in words ("a FIFO", "a directory", ...)."""
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def check_regular(path):
    """Raises NotRegularFile when `path` is there and is not a regular file
    (symbolic links followed), OSError when it cannot be looked at; for a
    path that another opener reads (ctypes.CDLL: dlopen would wait on a
    FIFO)."""
    _check_mode(os.stat(path).st_mode)


def open_regular(path, mode="rb", **kw):
    """Opens `path` for reading when it is a regular file (symbolic links
    followed); returns the file object (builtin open() on the descriptor, with
    `mode` and `kw`). Raises NotRegularFile (a ValueError) saying what it is
    instead, OSError when it cannot be opened."""
    check_regular(path)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        _check_mode(os.fstat(fd).st_mode)
        return open(fd, mode, **kw)
    except BaseException:
        os.close(fd)
        raise


def _check_mode(mode):
    if not stat.S_ISREG(mode):
        raise NotRegularFile("not a regular file (%s)" % kind_of(mode))
