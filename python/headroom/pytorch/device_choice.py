"""select_device(): the visible GPU with the most usable memory when the work
fits there, possibly after offloading registered models, else the CPU;
always with the reason.

Usable memory of a GPU is its free memory, plus what this process's
allocator holds cached but unused (PyTorch's cache, or headroom's pool under
install_allocator()), plus what the idle models of every open Registry on
that device could give back (Registry.releasable_bytes()). The readings come
from PyTorch when it sees CUDA (torch.cuda.mem_get_info, in CUDA's device
order), else from NVML through headroom.snapshot(), which lists the GPUs
CUDA_VISIBLE_DEVICES lets through (as indices; UUIDs are matched too).

The device returned is one this process's PyTorch can use: when NVML shows
GPUs but PyTorch has no CUDA (a CPU build, no driver it can load), the
choice is the CPU and the reason says what NVML shows and why PyTorch
cannot use it; the GPUs' numbers stay in .candidates.
"""

import os

from ..readings import snapshot
from ..readings.units import fmt_bytes
from . import allocator
from .reclaim import registries


class DeviceChoice:
    """device: "cuda:N" or "cpu"; reason: why, in words; offload_bytes: what
    must be offloaded first for the GPU choice (0 when it fits as it is);
    candidates: per GPU considered, a dict of index, free_bytes,
    cached_bytes, releasable_bytes, usable_bytes and source."""

    __slots__ = ("device", "reason", "offload_bytes", "candidates")

    def __init__(self, device, reason, offload_bytes=0, candidates=()):
        self.device = device
        self.reason = reason
        self.offload_bytes = offload_bytes
        self.candidates = list(candidates)

    @property
    def is_gpu(self):
        return self.device.startswith("cuda")

    def __str__(self):
        return "%s (%s)" % (self.device, self.reason)

    __repr__ = __str__


def decide(bytes_needed, free_bytes, offloadable_bytes, device="cuda:0", reserve=0):
    """The decision for one device, on numbers: the GPU when bytes_needed +
    reserve fit in free_bytes, or in free_bytes + offloadable_bytes after an
    offload; else the CPU."""
    f = fmt_bytes
    want = bytes_needed + reserve
    if want <= free_bytes:
        return DeviceChoice(device, "%s needed, %s free on %s" % (f(bytes_needed), f(free_bytes),
                                                                  device))
    if want <= free_bytes + offloadable_bytes:
        off = want - free_bytes
        return DeviceChoice(device, "%s needed, %s free on %s; fits after offloading %s of "
                            "registered models" % (f(bytes_needed), f(free_bytes), device, f(off)),
                            off)
    return DeviceChoice("cpu", "%s needed, but %s has %s free%s" % (
        f(bytes_needed), device, f(free_bytes),
        " and %s offloadable" % f(offloadable_bytes) if offloadable_bytes else ""))


def choose(bytes_needed, candidates, reserve=0):
    """The choice among GPUs, on numbers: `candidates` is a list of dicts with
    index, free_bytes and releasable_bytes (cached_bytes optional). Picks the
    one with the most usable memory (free + cached + releasable); the GPU
    when the work fits there, else the CPU naming every GPU's numbers."""
    f = fmt_bytes
    rows = []
    for c in candidates:
        c = dict(c)
        c.setdefault("cached_bytes", 0)
        c["usable_bytes"] = c["free_bytes"] + c["cached_bytes"] + c["releasable_bytes"]
        rows.append(c)
    if not rows:
        return DeviceChoice("cpu", "no GPU is visible")
    best = max(rows, key=lambda c: (c["usable_bytes"], -c["index"]))
    dev = "cuda:%d" % best["index"]
    free = best["free_bytes"] + best["cached_bytes"]
    choice = decide(bytes_needed, free, best["releasable_bytes"], dev, reserve)
    choice.candidates = rows
    others = [c for c in rows if c is not best]
    if choice.is_gpu:
        if others:
            choice.reason += "; the most usable memory of %d GPUs (%s)" % (
                len(rows), ", ".join("cuda:%d %s" % (c["index"], f(c["usable_bytes"]))
                                     for c in rows))
        return choice
    choice.reason = "%s needed%s, but no GPU has room: %s" % (
        f(bytes_needed), " with %s kept free" % f(reserve) if reserve else "", "; ".join(
            "cuda:%d %s usable (%s free, %s cached, %s from idle models)" % (
                c["index"], f(c["usable_bytes"]), f(c["free_bytes"]), f(c["cached_bytes"]),
                f(c["releasable_bytes"])) for c in rows))
    return choice


def _visible(indices_uuids):
    """Filters (index, uuid) pairs by CUDA_VISIBLE_DEVICES (indices or UUIDs),
    in its order; all when it is not set."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is None:
        return list(indices_uuids)
    out = []
    for tok in (t.strip() for t in env.split(",")):
        if not tok:
            break
        for idx, uuid in indices_uuids:
            if tok == str(idx) or (uuid and (tok == uuid or uuid.startswith(tok))):
                out.append((idx, uuid))
                break
        else:
            break  # CUDA stops at the first entry it cannot use
    return out


def _torch_readings(torch):
    rows = []
    for i in range(torch.cuda.device_count()):
        free, _total = torch.cuda.mem_get_info(i)
        cached = 0
        if allocator.installed():
            try:
                st = allocator.pool_stats(i)
                cached = st["reserved_bytes.all.current"] - st["allocated_bytes.all.current"]
            except Exception:  # noqa: BLE001 - no pool on that device yet
                cached = 0
        else:
            cached = torch.cuda.memory_reserved(i) - torch.cuda.memory_allocated(i)
        rows.append({"index": i, "free_bytes": free, "cached_bytes": cached,
                     "source": "torch.cuda.mem_get_info"})
    return rows


def _nvml_readings(nvml_path):
    snap = snapshot.snapshot(what=["gpus"], nvml_path=nvml_path)
    gpu = snap.get("gpu") or {}
    devs = [d for d in gpu.get("devices", ()) if d.get("state") == "ok"]
    by_index = {d["index"]: d for d in devs}
    rows = []
    for cuda_index, (idx, _uuid) in enumerate(_visible([(d["index"], d.get("uuid"))
                                                         for d in devs])):
        d = by_index[idx]
        rows.append({"index": cuda_index, "free_bytes": d["free_bytes"], "cached_bytes": 0,
                     "source": "NVML (%s)" % d.get("name", "GPU %d" % idx)})
    return rows, gpu.get("state"), gpu.get("message")


def _no_cuda_reason(torch):
    """Why this process's PyTorch cannot use a CUDA device, in words."""
    if torch is None:
        return "torch is not installed"
    if getattr(getattr(torch, "version", None), "cuda", None) is None:
        return "this PyTorch (%s) is built without CUDA" % getattr(torch, "__version__", "?")
    return "torch.cuda.is_available() is False (no usable driver or device for this PyTorch)"


def _nvml_only(rows, torch, bytes_needed, reserve, registries_):
    """The CPU, when NVML shows GPUs this process's PyTorch cannot use: the
    reason names what NVML shows and why PyTorch cannot have it."""
    why = _no_cuda_reason(torch)
    _releasable(rows, registries_)
    seen = choose(bytes_needed, rows, reserve)
    best = max(seen.candidates, key=lambda c: (c["usable_bytes"], -c["index"]))
    return DeviceChoice("cpu", "NVML shows %d GPU%s (cuda:%d has the most usable memory, %s), "
                        "but %s: PyTorch could not use %s" % (
                            len(rows), "" if len(rows) == 1 else "s", best["index"],
                            fmt_bytes(best["usable_bytes"]), why,
                            "it" if len(rows) == 1 else "them"), 0, seen.candidates)


def _releasable(rows, registries_):
    for row in rows:
        dev = "cuda:%d" % row["index"]
        row["releasable_bytes"] = sum(r.releasable_bytes() for r in registries_
                                      if str(r.device) == dev)


def select_device(bytes_needed, device=None, registry=None, reserve=0, nvml_path=None):
    """Chooses where `bytes_needed` bytes of work go: the visible GPU with
    the most usable memory (or GPU `device` alone, an int), when the work
    plus `reserve` fits there, else the CPU. Only a device this process's
    PyTorch can use is ever returned: GPUs NVML shows while PyTorch has no
    CUDA are listed in .candidates and named in the reason, and the choice is
    the CPU. registry: a Registry (or a list of them) to count beyond the
    open ones. nvml_path: the NVML library to read GPUs through when PyTorch
    sees no CUDA. Returns a DeviceChoice; raises ValueError or TypeError
    naming a bad argument."""
    for label, v in (("bytes_needed", bytes_needed), ("reserve", reserve)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError("%s must be a non-negative integer of bytes; got %r" % (label, v))
    if device is not None and (isinstance(device, bool) or not isinstance(device, int)
                               or device < 0):
        raise ValueError("device must be None (every GPU) or a GPU index >= 0; got %r"
                         % (device,))
    try:
        import torch
    except ImportError:
        torch = None
    cuda = False
    if torch is not None:
        try:
            cuda = bool(torch.cuda.is_available())
        except Exception:  # noqa: BLE001 - a broken driver is no CUDA
            cuda = False
    if cuda:
        rows = _torch_readings(torch)
    else:
        try:
            rows, state, message = _nvml_readings(nvml_path)
        except Exception as e:  # noqa: BLE001 - no library: say why
            rows, state, message = [], "error", str(e)
        if not rows:
            if torch is None:
                return DeviceChoice("cpu", "torch is not installed")
            return DeviceChoice("cpu", "no CUDA device (%s%s)" % (
                _no_cuda_reason(torch), "; NVML: %s" % (message or state)
                if state not in (None, "ok") else ""))
    if device is not None:
        if device >= len(rows):
            raise ValueError("device %d does not exist; %d GPU(s) visible" % (device, len(rows)))
        rows = [rows[device]]
    extra = registry if isinstance(registry, (list, tuple)) else (
        [registry] if registry is not None else [])
    regs = list({id(r): r for r in list(registries()) + list(extra)}.values())
    if not cuda:
        return _nvml_only(rows, torch, bytes_needed, reserve, regs)
    _releasable(rows, regs)
    return choose(bytes_needed, rows, reserve)
