"""What connects registries to headroom's pools and to free_memory(): the
list of open registries (for select_device, install_allocator and
free_memory), release_idle(), which offloads their idle modules (the one step
that the pool's reclaimer and free_memory() both run), one reclaimer
callback per pool that calls it for the registries attached to that pool,
and tags for the pools' allocations.

A pool calls its reclaimers, under no pool lock, when an allocation would
fail after its cache is released. One C callback per process (kept alive
for the life of the process, since a pool cannot unregister one) is added
once per pool; it runs release_idle() over the registries attached to that
pool until the bytes needed came back. A closed registry leaves the list; a
closed Pool's address may be reused by the next pool, which then gets the
callback again.
"""

import contextlib
import threading
import weakref

from .._c import lib as _lib
from . import allocator

_ENOSPC = -3

_reclaim_lock = threading.Lock()
_reclaim_targets = {}  # pool handle (int) -> (weakref to its Pool or None, WeakSet of Registry)
_all = weakref.WeakSet()  # every open Registry, for select_device and install_allocator


def track(reg):
    """Adds an open Registry to the list registries() returns."""
    _all.add(reg)


def release_idle(nbytes, regs=None, errors=None):
    """Offloads idle modules of `regs` (every open registry when None), each
    registry least valuable first under its policy (Registry.release), until
    `nbytes` were moved off their devices; returns the bytes moved, as the
    registries count them. A registry that fails is skipped; its exception is
    appended to `errors` when given."""
    got = 0
    for r in registries() if regs is None else regs:
        if got >= nbytes:
            break
        try:
            got += r.release(nbytes - got)
        except Exception as e:  # noqa: BLE001 - the others may still give back
            if errors is not None:
                errors.append(e)
    return got


def registry_of(module):
    """The open registry that holds `module` (a registered module or its
    name), or None."""
    for r in registries():
        try:
            r._aid(module)
        except (KeyError, TypeError):
            continue
        return r
    return None


def _reclaim(pool, needed, freed, arg):
    """hr_reclaim_fn of every pool a registry is attached to: offloads idle
    modules of the registries on that pool until `needed` bytes came back."""
    freed[0] = 0
    try:  # never let an exception cross into C
        with _reclaim_lock:
            entry = _reclaim_targets.get(pool or 0)
            regs = list(entry[1]) if entry else []
        got = release_idle(needed, regs)
        _lib.store(freed, got, "freed")  # checked before it is written
    except Exception:  # noqa: BLE001
        got = 0
    return 0 if got else _ENOSPC


_RECLAIM_CB = _lib.RECLAIM_FN(_reclaim)  # lives as long as the process


def attach(reg, pool_handle, owner=None):
    """Makes `reg` one of the reclaimers of the pool at `pool_handle`.
    `owner` is the Pool object (None for the pools behind PyTorch, which
    live as long as the process): a closed pool's address may be reused by
    the next one, which then needs the callback registered again."""
    lib = _lib.load()
    with _reclaim_lock:
        entry = _reclaim_targets.get(pool_handle)
        if entry is not None and (entry[0]() if entry[0] else None) is not owner:
            entry = None
        if entry is None:
            _lib.check(lib.hr_pool_add_reclaimer(pool_handle, _RECLAIM_CB, None),
                       "hr_pool_add_reclaimer")
            entry = _reclaim_targets[pool_handle] = (
                weakref.ref(owner) if owner is not None else None, weakref.WeakSet())
        entry[1].add(reg)


def registries(device=None):
    """The open registries, optionally only those on `device` ("cuda:1")."""
    out = [r for r in list(_all) if r._h]
    if device is not None:
        out = [r for r in out if str(r.device) == str(device)]
    return out


@allocator.when_installed
def attach_torch_pools():
    """Under headroom's allocator: attaches every registry on a CUDA device
    to the pool behind that device, once the pool exists. Returns how many
    registries are attached."""
    if not allocator.installed():
        return 0
    n = 0
    for r in registries():
        if r.device.type == "cuda" and r._attach_torch_pool():
            n += 1
    return n


_tag_state = threading.local()


def current_tag():
    return getattr(_tag_state, "tag", None)


@contextlib.contextmanager
def tag(name):
    """with headroom.tag("unet"): allocations of this thread from headroom's
    pools (PyTorch's under install_allocator(), or a Pool) are counted under
    "unet", and an out-of-memory message lists live bytes by tag."""
    if not isinstance(name, str) or not name:
        raise ValueError("tag name must be a non-empty string; got %r" % (name,))
    lib = _lib.load()
    if not hasattr(lib, "hr_pool_set_tag"):
        raise _lib.HeadroomError(-7, "tag", "this libheadroom (%s) has no pool tags"
                                 % _lib.loaded_path())
    prev = current_tag()
    _tag_state.tag = name
    lib.hr_pool_set_tag(name.encode())
    try:
        yield name
    finally:
        _tag_state.tag = prev
        lib.hr_pool_set_tag(prev.encode() if prev else None)


def detach(reg):
    """Takes a closing registry off every pool's list."""
    with _reclaim_lock:
        for _owner, regs in _reclaim_targets.values():
            regs.discard(reg)
