"""This process's and the host's memory, read from /proc: this process's
resident set (statm), the host's memory (meminfo) and processes by name.
Cheap enough to call on every frame; nothing here needs libheadroom.
"""

import os
import threading

_PAGE = os.sysconf("SC_PAGE_SIZE")
_statm = {"pid": None, "fd": None}
_statm_lock = threading.Lock()


def rss_bytes():
    """This process's resident set size in bytes (from /proc/self/statm).
    The file stays open and is read again from its start (cheaper than an
    open per reading, for stages read on every call); reopened after a fork,
    since /proc/self named the parent when it was opened."""
    with _statm_lock:
        pid = os.getpid()
        if _statm["pid"] != pid:
            if _statm["fd"] is not None and _statm["pid"] is not None:
                try:
                    os.close(_statm["fd"])
                except OSError:
                    pass
            _statm["fd"], _statm["pid"] = os.open("/proc/self/statm", os.O_RDONLY), pid
        data = os.pread(_statm["fd"], 256, 0)
    return int(data.split()[1]) * _PAGE


def host_memory(root="/"):
    """Host memory: dict with total_bytes, available_bytes, used_bytes and
    used_percent, from <root>/proc/meminfo. Raises OSError when unreadable."""
    vals = {}
    with open(os.path.join(root, "proc/meminfo")) as f:
        for line in f:
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                vals[key] = int(parts[0]) * 1024
    total = vals.get("MemTotal")
    if not total:
        raise OSError("%s: no MemTotal line" % os.path.join(root, "proc/meminfo"))
    avail = vals.get("MemAvailable", vals.get("MemFree", 0))
    used = total - avail
    return {"total_bytes": total, "available_bytes": avail, "used_bytes": used,
            "used_percent": 100.0 * used / total}


def processes(terms=(), root="/", top=10):
    """Processes whose name or command line contains one of `terms` (all
    processes when empty), largest RSS first: dicts with pid, name, rss_bytes,
    cmdline. Processes that vanish or cannot be read while scanning are
    skipped: /proc changes under the reader."""
    out = []
    proc = os.path.join(root, "proc")
    terms = [t.lower() for t in terms if t]
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        base = os.path.join(proc, entry)
        try:
            with open(os.path.join(base, "comm")) as f:
                name = f.read().strip()
            with open(os.path.join(base, "cmdline"), "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            with open(os.path.join(base, "statm")) as f:
                rss = int(f.read().split()[1]) * _PAGE
        except (OSError, ValueError, IndexError):
            continue
        if terms and not any(t in name.lower() or t in cmd.lower() for t in terms):
            continue
        out.append({"pid": int(entry), "name": name, "rss_bytes": rss, "cmdline": cmd})
    out.sort(key=lambda p: -p["rss_bytes"])
    return out[:top]
