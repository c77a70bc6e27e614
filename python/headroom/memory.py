"""free_memory(): release what this process can release, and say how much.

One pass, in order: the garbage collector (balanced and aggressive), then, when
PyTorch has initialised CUDA here, synchronize / empty_cache / ipc_collect,
then headroom's pool cache when the pool is PyTorch's allocator, then
malloc_trim(0), which hands glibc's free heap pages back to the kernel.
Aggressive mode repeats the pass until one brings back less than a MiB, at
most `max_passes` times: a gc pass can drop the last reference to tensors
that only the next empty_cache returns.

VRAM is this process's reserved bytes (what the caching allocator holds from
the driver, which is what a release can give back); RAM is its resident set.
"""

import gc
import threading
import time

from . import _lib, _readings

MODES = ("conservative", "balanced", "aggressive")
_MIB = 1 << 20

_lock = threading.Lock()
_last_done = None  # monotonic time of the last pass that ran


class Freed:
    """The bytes a freeing pass brought back, from the readings before and
    after it (ram_* and vram_*; vram_* are None without CUDA memory to read).
    Shared by free_memory()'s result and the ComfyUI bridge's."""

    __slots__ = ()

    @property
    def ram_freed(self):
        return self.ram_before - self.ram_after

    @property
    def vram_freed(self):
        if self.vram_before is None or self.vram_after is None:
            return None
        return self.vram_before - self.vram_after


class FreeResult(Freed):
    """What free_memory() did. Sizes are bytes; the vram_* fields are None
    when this process has no CUDA memory to read."""

    __slots__ = ("mode", "skipped", "passes", "actions", "seconds", "ram_before", "ram_after",
                 "vram_before", "vram_after", "vram_note")

    def __init__(self, mode):
        self.mode = mode
        self.skipped = False
        self.passes = 0
        self.actions = []
        self.seconds = 0.0
        self.ram_before = self.ram_after = 0
        self.vram_before = self.vram_after = None
        self.vram_note = ""

    def as_dict(self):
        d = {k: getattr(self, k) for k in self.__slots__}
        d["actions"] = list(self.actions)
        d["ram_freed"] = self.ram_freed
        d["vram_freed"] = self.vram_freed
        return d

    def __str__(self):
        f = _readings.fmt_bytes
        if self.skipped:
            return "free_memory(%s): skipped, within the cooldown" % self.mode
        ram = "RAM %s -> %s (freed %s)" % (f(self.ram_before), f(self.ram_after),
                                          f(self.ram_freed))
        if self.vram_before is None:
            vram = "VRAM n/a (%s)" % self.vram_note
        else:
            vram = "VRAM reserved %s -> %s (freed %s)" % (f(self.vram_before), f(self.vram_after),
                                                         f(self.vram_freed))
        return "free_memory(%s): %s; %s; %d pass%s: %s" % (
            self.mode, ram, vram, self.passes, "" if self.passes == 1 else "es",
            ", ".join(self.actions) or "nothing to do")

    __repr__ = __str__


def check_mode(mode):
    """Returns `mode` when it is one of MODES; else raises ValueError."""
    if mode not in MODES:
        raise ValueError("mode must be one of %s; got %r" % (", ".join(MODES), mode))
    return mode


def malloc_trim():
    """Calls malloc_trim(0) and returns a label of how it was called, or None
    when it is not available (a libc other than glibc).

    libheadroom has no wrapper for it, so this goes to the C library through
    ctypes; when libheadroom exports hr_malloc_trim() that is used instead."""
    if _lib.available() and _lib.has("hr_malloc_trim"):
        _lib.load().hr_malloc_trim()
        return "malloc_trim(0) via libheadroom"
    fn = getattr(_lib.libc(), "malloc_trim", None)  # the process's, matching its malloc
    if fn is None:
        return None
    fn(0)
    return "malloc_trim(0) via libc"


def _one_pass(mode, actions):
    if mode != "conservative":
        n = gc.collect()
        actions.append("gc.collect() (%d objects)" % n)
    torch = _readings.torch_cuda()
    from . import torch as hr_torch

    if torch is not None:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.ipc_collect()
        actions.append("torch.cuda synchronize/empty_cache/ipc_collect")
    if hr_torch.installed():
        try:
            freed = hr_torch.release_cached()
            actions.append("headroom pool release (%s)" % _readings.fmt_bytes(freed))
        except hr_torch.AllocatorError as e:
            actions.append("headroom pool release unavailable: %s" % e)
    how = malloc_trim()
    if how:
        actions.append(how)


def free_memory(mode="balanced", cooldown=0.0, max_passes=5):
    """Frees what this process can free and returns a FreeResult.

    mode: "conservative" (caches only: CUDA cache, pool cache, malloc_trim),
    "balanced" (+ gc.collect()), "aggressive" (balanced, repeated until a pass
    frees under 1 MiB, at most `max_passes` passes).
    cooldown: seconds; a call within `cooldown` of the last call that ran
    returns at once with .skipped set, which keeps per-frame calls cheap.
    Raises ValueError on a wrong mode, a negative cooldown or max_passes < 1."""
    global _last_done
    check_mode(mode)
    if cooldown is None or cooldown < 0:
        raise ValueError("cooldown must be >= 0 seconds; got %r" % (cooldown,))
    if max_passes < 1:
        raise ValueError("max_passes must be >= 1; got %r" % (max_passes,))
    res = FreeResult(mode)
    now = time.monotonic()
    with _lock:
        if cooldown > 0 and _last_done is not None and now - _last_done < cooldown:
            res.skipped = True
            res.ram_before = res.ram_after = _readings.rss_bytes()
            return res
        _last_done = now
    t0 = time.perf_counter()
    res.ram_before = _readings.rss_bytes()
    res.vram_before = _readings.vram_process()[1]
    if res.vram_before is None:
        res.vram_note = _readings.cuda_status()
    passes = max_passes if mode == "aggressive" else 1
    ram, vram = res.ram_before, res.vram_before
    for _ in range(passes):
        acts = []
        _one_pass(mode, acts)
        res.passes += 1
        if not res.actions:
            res.actions = acts
        new_ram, new_vram = _readings.rss_bytes(), _readings.vram_process()[1]
        got = (ram - new_ram) + ((vram or 0) - (new_vram or 0))
        ram, vram = new_ram, new_vram
        if got < _MIB:
            break
    res.ram_after, res.vram_after = ram, vram
    res.seconds = time.perf_counter() - t0
    return res
