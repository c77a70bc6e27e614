"""Waiting for memory with patience: until `amount` bytes are free where a
workflow is about to need them, or the patience runs out, reading again
every `poll` seconds. Freed memory shows as free only after a while (a
driver returning pages, another process unloading between its prompts), so
a node that needs room waits for it instead of failing or sleeping a fixed
time.

Two forms share one step (_Wait.step): wait_for_memory() sleeps between
reads (or calls `on_poll` in place of sleeping, which hands the wait to the
caller's own loop), and wait_for_memory_async() awaits asyncio.sleep, which
hands control back to the event loop: in a ComfyUI whose node functions may
be coroutines (execution.execute is one), other branches of the graph run
while the node waits.

"Free" is ComfyUI's own count when ComfyUI runs here
(comfy.model_management.get_free_memory of its compute device: the device's
free memory plus what PyTorch holds cached; on a CPU-only ComfyUI the
host's available RAM); outside ComfyUI the first CUDA device's free memory,
or the host's available RAM.
"""

import asyncio
import time

from ..pytorch import vram
from ..readings import procfs
from ..readings.units import fmt_bytes, parse_size
from .models import model_management

WHERE = ("compute device", "host RAM")


def free_bytes(where="compute device"):
    """(bytes free, what was read, in words) for `where` (see WHERE)."""
    if where not in WHERE:
        raise ValueError("where must be one of %s; got %r" % (", ".join(WHERE), where))
    if where == "compute device":
        mm = model_management()
        if mm is not None:
            dev = mm.get_torch_device()
            return int(mm.get_free_memory(dev)), "ComfyUI's free memory on %s" % dev
        devs = vram.devices()
        if devs:
            return devs[0]["free_bytes"], "free VRAM on cuda:%d" % devs[0]["index"]
    return procfs.host_memory()["available_bytes"], "available host RAM"


class WaitResult:
    """What a wait saw: ok (the amount was free), waited_s, reads, the last
    free bytes and what they were."""

    def __init__(self, amount, where):
        self.amount, self.where = amount, where
        self.ok = False
        self.waited_s = 0.0
        self.reads = 0
        self.free = None
        self.source = ""

    def __str__(self):
        f = fmt_bytes
        head = "wait for %s free (%s)" % (f(self.amount), self.source or self.where)
        if self.ok:
            return "%s: %s free after %.1f s (%d read%s)" % (
                head, f(self.free), self.waited_s, self.reads, "" if self.reads == 1 else "s")
        return "%s: only %s free when the patience (%.1f s, %d reads) ran out" % (
            head, f(self.free), self.waited_s, self.reads)


class _Wait:
    def __init__(self, amount, where, patience, poll, clock):
        self.amount = parse_size(amount, "amount")
        for label, v in (("patience", patience), ("poll", poll)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
                raise ValueError("%s must be a number of seconds >= 0; got %r" % (label, v))
        if poll <= 0:
            raise ValueError("poll must be > 0 seconds; got %r" % (poll,))
        free_bytes(where)  # checks `where` before any wait
        self.res = WaitResult(self.amount, where)
        self.patience, self.poll, self.clock = float(patience), float(poll), clock
        self.t0 = clock()

    def step(self):
        """Reads once; returns None when the wait is over (res says how), else
        the seconds to wait before the next read."""
        r = self.res
        r.free, r.source = free_bytes(r.where)
        r.reads += 1
        r.waited_s = self.clock() - self.t0
        if r.free >= self.amount:
            r.ok = True
            return None
        left = self.patience - r.waited_s
        if left <= 0:
            return None
        return min(self.poll, left)


def wait_for_memory(amount, where="compute device", patience=60.0, poll=0.5, on_poll=None,
                    clock=time.monotonic):
    """Waits until `amount` (bytes, or text like "2G") is free at `where`,
    at most `patience` seconds, reading every `poll` seconds. on_poll:
    called with the seconds to wait in place of time.sleep (a caller with a
    loop of its own does its work there and returns). Returns a WaitResult
    (its ok says whether the amount was free). ValueError on bad input."""
    w = _Wait(amount, where, patience, poll, clock)
    sleep = on_poll if on_poll is not None else time.sleep
    while True:
        delay = w.step()
        if delay is None:
            return w.res
        sleep(delay)


async def wait_for_memory_async(amount, where="compute device", patience=60.0, poll=0.5,
                                clock=time.monotonic):
    """wait_for_memory() as a coroutine: awaits asyncio.sleep between reads,
    so the event loop runs other work meanwhile."""
    w = _Wait(amount, where, patience, poll, clock)
    while True:
        delay = w.step()
        if delay is None:
            return w.res
        await asyncio.sleep(delay)
