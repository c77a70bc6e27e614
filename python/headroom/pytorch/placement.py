"""Where a registered module's tensors live, and how a module is split into
groups that move one at a time.

A placement moves one tensor to the device and back to the host:

- TorchPlacement: ``tensor.to(device)``; the device is a CUDA device, or the
  CPU, where the moves change nothing (decisions stay testable without a GPU).
- PoolPlacement: the "device" is a headroom Pool (any backend whose memory
  the host can address: ``host``). A tensor on it is a tensor whose storage
  is a block of the pool (torch.frombuffer over the block); the block goes
  back to the pool when the last tensor using that storage is gone, so a
  reference kept elsewhere keeps the memory, as on a GPU. The whole
  reclaimer path of the pool (an allocation that fails offloads idle
  registered modules and retries) runs on the CPU this way.

Groups: a module is split the way accelerate's and diffusers' group
offloading split one, into units of whole submodules in registration order
(close to execution order). Starting from the module, the largest unit that
has children and holds more than 1/max_groups of the bytes is replaced by
its own direct tensors (when it has any) and its children, until there are
max_groups units or none can be split. Each storage counts in the first unit
that holds it, so the units' bytes add up to the module's.
"""

import ctypes
import threading

from . import allocator
from .estimate import module_tensors

#: Units a partial module is split into, at most.
MAX_GROUPS = 16


class Unit:
    """One group: `module`, whether it covers its submodules (`recurse`), its
    bytes, and whether it is on the device now."""

    __slots__ = ("module", "recurse", "nbytes", "on")

    def __init__(self, module, recurse, nbytes):
        self.module, self.recurse, self.nbytes, self.on = module, recurse, nbytes, False

    def __repr__(self):
        return "Unit(%s%s, %d bytes, %s)" % (type(self.module).__name__,
                                               "" if self.recurse else " own tensors",
                                               self.nbytes, "on" if self.on else "off")


def _key(t):
    if t.device.type == "meta":
        return ("meta", id(t))
    st = t.untyped_storage() if hasattr(t, "untyped_storage") else t.storage()
    return (t.device.type, t.device.index, st.data_ptr())


def _nbytes(t):
    if t.device.type == "meta":
        return t.numel() * t.element_size()
    st = t.untyped_storage() if hasattr(t, "untyped_storage") else t.storage()
    return st.nbytes()


def _own_bytes(m, recurse, seen):
    total = 0
    for t in module_tensors(m, recurse):
        k = _key(t)
        if k in seen:
            continue
        seen.add(k)
        total += _nbytes(t)
    return total


def split(module, max_groups=MAX_GROUPS):
    """The units of `module` (a list of Unit), in order; one unit holding the
    whole module when max_groups is 1."""
    units = [(module, True)]
    total = _own_bytes(module, True, set())
    while len(units) < max_groups:
        best, best_bytes = None, -1
        for i, (m, rec) in enumerate(units):
            if not rec or not any(True for _ in m.children()):
                continue
            b = _own_bytes(m, True, set())
            if b > best_bytes and b * max_groups > total:
                best, best_bytes = i, b
        if best is None:
            break
        m = units[best][0]
        parts = []
        if module_tensors(m, recurse=False):
            parts.append((m, False))
        parts += [(c, True) for c in m.children()]
        units[best:best + 1] = parts
    seen, out = set(), []
    for m, rec in units:
        b = _own_bytes(m, rec, seen)
        if b > 0:
            out.append(Unit(m, rec, b))
    return out


def _each_slot(unit):
    """(owner module, dict, name) of every parameter and buffer of a unit."""
    mods = unit.module.modules() if unit.recurse else (unit.module,)
    for m in mods:
        for name in list(m._parameters):
            if m._parameters[name] is not None:
                yield m, m._parameters, name
        for name in list(m._buffers):
            if m._buffers[name] is not None:
                yield m, m._buffers, name


def move_unit(unit, fn):
    """Replaces every tensor of `unit` by fn(tensor): a parameter keeps its
    object (its .data changes, so optimizers and tied references follow),
    a buffer is replaced. Each tensor object is moved once."""
    done = set()
    for _m, d, name in _each_slot(unit):
        t = d[name]
        if id(t) in done:
            continue
        done.add(id(t))
        new = fn(t.data if hasattr(t, "data") else t)
        if new is None:
            continue
        if d is _m._parameters:
            t.data = new
        else:
            d[name] = new


def unit_tensors(unit):
    return [d[n] for _m, d, n in _each_slot(unit)]


class TorchPlacement:
    """Tensors move with ``tensor.to(device)``."""

    def __init__(self, torch, device):
        self.torch = torch
        self.device = device
        self.host = torch.device("cpu")
        self.moves = device.type != "cpu"

    def on_device(self, t):
        return t.device == self.device

    def to_device(self, t):
        if not self.moves or t.device == self.device:
            return None
        return t.to(self.device)

    def to_host(self, t):
        if not self.moves or t.device.type == "cpu":
            return None
        return t.to(self.host)

    def allocated(self):
        """Bytes allocated on the device now, or None when not measurable."""
        if self.device.type == "cuda":
            if allocator.installed():
                return allocator.pool_stats(self.device.index)["allocated_bytes.all.current"]
            return self.torch.cuda.memory_allocated(self.device.index)
        return None

    def after_offload(self):
        if self.device.type == "cuda" and not allocator.installed():
            # The freed blocks stay in PyTorch's cache otherwise; the budget
            # counts them as free already, but other processes do not.
            self.torch.cuda.empty_cache()


class _Block:
    """A pool block owned by the buffer a tensor's storage was made from; it
    goes back to the pool when that buffer is collected."""

    __slots__ = ("placement", "addr", "size", "__weakref__")

    def __init__(self, placement, addr, size):
        self.placement, self.addr, self.size = placement, addr, size

    def __del__(self):
        try:
            self.placement._release(self.addr)
        except Exception:  # interpreter shutdown
            pass


class PoolPlacement:
    """Tensors on a headroom Pool whose memory the host can address."""

    def __init__(self, torch, pool):
        self.torch = torch
        self.pool = pool
        self.device = torch.device("cpu")
        self.moves = True
        self._live = {}  # block address -> size
        self._lock = threading.Lock()

    def on_device(self, t):
        if t.device.type != "cpu" or t.numel() == 0:
            return False
        p = t.data_ptr()
        with self._lock:
            for a, n in self._live.items():
                if a <= p < a + n:
                    return True
        return False

    def to_device(self, t):
        if t.device.type != "cpu":
            raise ValueError("a pool placement holds CPU-addressable tensors; got one on %s"
                             % t.device)
        n = t.numel() * t.element_size()
        if n == 0 or self.on_device(t):
            return None
        addr = self.pool.alloc(n)
        with self._lock:
            self._live[addr] = n
        buf = (ctypes.c_char * n).from_address(addr)
        buf._hr_block = _Block(self, addr, n)  # freed with the buffer
        new = self.torch.frombuffer(buf, dtype=t.dtype, count=t.numel()).view(t.shape)
        new.copy_(t)
        return new

    def to_host(self, t):
        if not self.on_device(t):
            return None
        return t.detach().clone()

    def _release(self, addr):
        with self._lock:
            if self._live.pop(addr, None) is None:
                return
        self.pool.free(addr)

    def allocated(self):
        return self.pool.stats()["allocated_bytes.all.current"]

    def after_offload(self):
        pass

    def live_blocks(self):
        with self._lock:
            return dict(self._live)
