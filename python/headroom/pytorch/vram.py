"""VRAM as this process sees it: what PyTorch's caching allocator (or
headroom's pools, under install_allocator()) holds on each CUDA device, and
each device's free and total memory, from PyTorch when it has initialised
CUDA here, else from NVML through libheadroom's probe.

torch is never imported here and CUDA is never initialised: a process that has
not touched CUDA holds no VRAM that these readings could report, and creating
a CUDA context just to look would cost hundreds of MiB of VRAM.
"""

import sys

from .._c import lib as _lib
from ..readings import snapshot
from . import allocator


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


def by_device():
    """{device index: (allocated, reserved)} bytes of this process, as
    PyTorch's allocator (or headroom's pools, when installed) counts them;
    {} without CUDA or without the pools' statistics."""
    if allocator.installed():
        # PyTorch's own counters do not see a pluggable allocator: the pools'
        # statistics are the only reading, and without them there is none.
        try:
            pools = allocator.torch_pools()
        except allocator.AllocatorError:
            return {}
        out = {}
        for d in pools:
            st = allocator.pool_stats(d)
            out[d] = (st["allocated_bytes.all.current"], st["reserved_bytes.all.current"])
        return out
    torch = torch_cuda()
    if torch is None:
        return {}
    return {d: (torch.cuda.memory_allocated(d), torch.cuda.memory_reserved(d))
            for d in range(torch.cuda.device_count())}


def process_bytes():
    """(allocated, reserved) bytes of this process over every CUDA device;
    (None, None) without CUDA."""
    if allocator.installed():
        try:
            st = allocator.pool_stats()
        except allocator.AllocatorError:
            return None, None
        return st.get("allocated_bytes.all.current", 0), st.get("reserved_bytes.all.current", 0)
    if torch_cuda() is None:
        return None, None
    counts = by_device().values()
    return sum(a for a, _ in counts), sum(r for _, r in counts)


def devices():
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
    if not _lib.available():
        return [], "libheadroom not loaded"
    if not _lib.has("hr_snapshot_json"):
        return [], "libheadroom has no probe"
    try:
        gpu = snapshot.snapshot(what=["gpus"])["gpu"]
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


def status():
    """Why there is no VRAM reading, in words (for reports)."""
    why = _nvml_devices()[1]
    return "%s; NVML: %s" % (cuda_status(), why or "no devices")


def usage_percent():
    """The highest used percentage over the CUDA devices, or None without CUDA."""
    devs = devices()
    if not devs:
        return None
    return max(d["used_percent"] for d in devs)
