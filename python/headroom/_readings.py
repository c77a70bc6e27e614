"""Cheap readings of this process's memory: RSS from /proc, host memory from
/proc/meminfo, and PyTorch's CUDA numbers when torch is already imported and
CUDA is initialised in this process.

torch is never imported here and CUDA is never initialised: a process that has
not touched CUDA holds no VRAM that these readings could report, and creating
a CUDA context just to look would cost hundreds of MiB of VRAM.
"""

import os
import sys

_PAGE = os.sysconf("SC_PAGE_SIZE")


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


def rss_bytes():
    """This process's resident set size in bytes (from /proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


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


def torch_cuda():
    """The torch module when it is imported and has initialised CUDA in this
    process; else None."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            return torch
    except Exception:  # a broken driver is "no CUDA" for readings
        return None
    return None


def cuda_status():
    """Why there is or is not a CUDA reading, in words."""
    torch = sys.modules.get("torch")
    if torch is None:
        return "torch not imported"
    try:
        if not torch.cuda.is_available():
            return "no CUDA device (torch.cuda.is_available() is False)"
        if not torch.cuda.is_initialized():
            return "CUDA not initialised in this process"
    except Exception as e:
        return "CUDA error: %s" % e
    return "ok"


def vram_process():
    """(allocated, reserved) bytes of this process over every CUDA device, as
    PyTorch's allocator (or headroom's pool, when installed) counts them;
    (None, None) without CUDA."""
    from . import torch as hr_torch  # headroom.torch; imports no torch itself

    if hr_torch.installed():
        # PyTorch's own counters do not see a pluggable allocator: the pool's
        # statistics are the only reading, and without them there is none.
        try:
            st = hr_torch.pool_stats()
        except hr_torch.AllocatorError:
            return None, None
        return st.get("allocated_bytes.all.current", 0), st.get("reserved_bytes.all.current", 0)
    torch = torch_cuda()
    if torch is None:
        return None, None
    alloc = res = 0
    for d in range(torch.cuda.device_count()):
        alloc += torch.cuda.memory_allocated(d)
        res += torch.cuda.memory_reserved(d)
    return alloc, res


def vram_devices():
    """Per device: dict(index, name, free_bytes, total_bytes, used_percent,
    source). From cudaMemGetInfo when PyTorch has initialised CUDA here, else
    from NVML through libheadroom's probe when the library is there (this
    process need not touch CUDA to see the device's memory); [] otherwise."""
    torch = torch_cuda()
    if torch is None:
        return _nvml_devices()[0]
    out = []
    for d in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(d)
        out.append({"index": d, "name": torch.cuda.get_device_name(d), "free_bytes": free,
                    "total_bytes": total, "used_percent": 100.0 * (total - free) / total,
                    "source": "torch"})
    return out


def _nvml_devices():
    """(devices, why) from the probe's GPU part; ([], reason) when there are none."""
    from . import _lib

    if not _lib.available():
        return [], "libheadroom not loaded"
    if not _lib.has("hr_snapshot_json"):
        return [], "libheadroom has no probe"
    from . import probe

    try:
        gpu = probe.snapshot(what=["gpus"])["gpu"]
    except _lib.HeadroomError as e:
        return [], str(e)
    out = []
    for d in gpu.get("devices", []):
        total, free = d.get("total_bytes"), d.get("free_bytes")
        if d.get("state") != "ok" or not isinstance(total, int) or not total \
                or not isinstance(free, int):
            continue
        out.append({"index": d["index"], "name": d["name"], "free_bytes": free,
                    "total_bytes": total, "used_percent": 100.0 * (total - free) / total,
                    "source": "nvml"})
    return out, gpu.get("message") or gpu.get("state", "")


def vram_status():
    """Why there is no VRAM reading, in words (for reports)."""
    why = _nvml_devices()[1]
    return "%s; NVML: %s" % (cuda_status(), why or "no devices")


def vram_usage_percent():
    """The highest used percentage over the CUDA devices, or None without CUDA."""
    devs = vram_devices()
    if not devs:
        return None
    return max(d["used_percent"] for d in devs)


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
