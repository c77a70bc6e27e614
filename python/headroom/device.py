"""select_device(): the GPU when the work fits there, possibly after
offloading registered models, else the CPU; always with the reason."""

from . import _readings


class DeviceChoice:
    """device: "cuda:N" or "cpu"; reason: why, in words; offload_bytes: what
    must be offloaded first for the GPU choice (0 when it fits as it is)."""

    __slots__ = ("device", "reason", "offload_bytes")

    def __init__(self, device, reason, offload_bytes=0):
        self.device = device
        self.reason = reason
        self.offload_bytes = offload_bytes

    @property
    def is_gpu(self):
        return self.device.startswith("cuda")

    def __str__(self):
        return "%s (%s)" % (self.device, self.reason)

    __repr__ = __str__


def decide(bytes_needed, free_bytes, offloadable_bytes, device="cuda:0", reserve=0):
    """The decision alone, on numbers: the GPU when bytes_needed + reserve fit
    in free_bytes, or in free_bytes + offloadable_bytes after an offload; else
    the CPU."""
    f = _readings.fmt_bytes
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


def select_device(bytes_needed, device=0, registry=None, reserve=0):
    """Chooses where `bytes_needed` bytes of work go. Counts the device's free
    memory plus PyTorch's cached but unused bytes, and, with a headroom
    Registry, what it could offload. Returns a DeviceChoice; raises ValueError
    on a negative or non-integer size."""
    for label, v in (("bytes_needed", bytes_needed), ("reserve", reserve)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError("%s must be a non-negative integer of bytes; got %r" % (label, v))
    try:
        import torch
    except ImportError:
        return DeviceChoice("cpu", "torch is not installed")
    if not torch.cuda.is_available():
        return DeviceChoice("cpu", "no CUDA device (torch.cuda.is_available() is False)")
    if device < 0 or device >= torch.cuda.device_count():
        raise ValueError("device %d does not exist; %d CUDA device(s)" %
                         (device, torch.cuda.device_count()))
    free, _total = torch.cuda.mem_get_info(device)
    free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    offloadable = registry.offloadable_bytes("cuda:%d" % device) if registry is not None else 0
    return decide(bytes_needed, free, offloadable, "cuda:%d" % device, reserve)
