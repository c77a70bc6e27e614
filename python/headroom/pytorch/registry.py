"""Residency for torch.nn.Modules: libheadroom's registry decides, the
modules move.

register() measures a module (its parameters' and buffers' storages, each
counted once; or takes estimated_bytes, for a module still to be loaded) and
gives the C registry an asset whose load and offload callbacks move it. A
module registered with partial=True is split into groups of whole
submodules (headroom.placement.split, the way accelerate's and diffusers'
group offloading split one): the C policy decides how many of its bytes stay
on the device, and the callbacks move whole groups, in order, until the
bytes on the device match; a group left on the host is brought in for its
own forward and sent back after it, so a partly loaded module still runs.

``with registry.use(unet, vae, working_bytes=..., upcoming=[...]) as plan:``
makes them resident with that much working memory to spare. The modules are
busy inside the block: nothing offloads them, neither the policy nor a
reclaim. ``upcoming`` lists the next steps (each a module, a name or a list
of them, or a (modules, working_bytes) pair), which the lookahead policy
uses to offload what is needed furthest ahead. ``offload_after=True``
offloads them when the block ends (an image encoder whose embeddings are
computed). A refusal is ResidencyError, which says what would fit instead;
``allow_low_memory=True`` loads anyway and says what it risks.

Memory: the budget is fixed (budget_bytes) or read on each request: for a
CUDA device free memory plus the allocator's cached but unused bytes; with
``pool=`` (a headroom Pool) the pool's backend free memory plus its cache.
On a pool the registry is the pool's reclaimer: an allocation that fails
offloads idle modules and is retried. Under headroom.torch.install_allocator()
every registry on a CUDA device becomes the reclaimer of that device's pool.

When an offload gives back much less device memory than the module held,
the registry reports what still holds it (headroom.holders), as a
MemoryNotReturnedWarning and in ``last_holders``.
"""

import ctypes
import gc
import threading
import warnings

from .._c import lib as _lib
from .._c.pool import Pool, read_stats
from ..free import malloc_trim
from ..readings import procfs
from ..readings.units import fmt_bytes
from . import allocator, holders, placement, reclaim
from .reclaim import attach_torch_pools, registries, tag  # noqa: F401  (the API)
from .estimate import module_bytes  # noqa: F401  (part of this module's API)

POLICIES = ("auto", "comfy", "lru", "lookahead")
_ACTIONS = ("load", "load_partial", "offload", "offload_partial")
_SUGGESTIONS = ("variant", "partial", "cpu", "working", "unpin")
_ENOSPC, _EBUSY, _EDEVICE = -3, -11, -15
_U64 = (1 << 64) - 1
#: An offload that gives back less than this share of what it moved is reported.
RETURNED_SHARE = 0.5
#: ... when what it moved is at least this many bytes.
RETURNED_MIN_BYTES = 1 << 20

_c = ctypes
_NONE = frozenset()


class ResidencyError(_lib.HeadroomError):
    """The registry cannot make the modules resident. ``message`` is its
    reason, ``suggestions`` a list of sentences saying what would fit
    instead, ``short_bytes`` what was missing."""

    def __init__(self, code, where, message, suggestions=(), short_bytes=0):
        self.message = message
        self.suggestions = list(suggestions)
        self.short_bytes = short_bytes
        detail = message or _lib.load().hr_strerror(code).decode()
        if self.suggestions:
            detail += "\nsuggestions:\n" + "\n".join("  - " + s for s in self.suggestions)
        super().__init__(code, where, detail)

    def __str__(self):
        return self.detail


class LowMemoryWarning(UserWarning):
    """use(..., allow_low_memory=True) loaded modules that do not fit."""


class MemoryNotReturnedWarning(UserWarning):
    """An offload gave back much less device memory than the module held."""


class Plan:
    """What a use() did: actions as (kind, name, bytes), the totals,
    suggestions (a better variant that fits too), and, for a low-memory use,
    `risk` (what it risks, in words; "" otherwise)."""

    def __init__(self, actions, bytes_loaded, bytes_offloaded, capacity_bytes, used_bytes,
                 policy, suggestions=(), risk=""):
        self.actions = actions
        self.bytes_loaded = bytes_loaded
        self.bytes_offloaded = bytes_offloaded
        self.capacity_bytes = capacity_bytes
        self.used_bytes = used_bytes
        self.policy = policy
        self.suggestions = list(suggestions)
        self.risk = risk

    @property
    def low_memory(self):
        return bool(self.risk)

    def __repr__(self):
        f = fmt_bytes
        acts = ", ".join("%s %s %s" % (k, n, f(b)) for k, n, b in self.actions) or "nothing"
        return "Plan(%s; loaded %s, offloaded %s; %s of %s used%s)" % (
            acts, f(self.bytes_loaded), f(self.bytes_offloaded), f(self.used_bytes),
            f(self.capacity_bytes), "; " + self.risk if self.risk else "")


class _Use:
    """What Registry.use() returns: a context manager whose __enter__ makes the
    modules resident and busy and returns the Plan, and whose __exit__ makes
    them idle. A class, not a generator, because use() runs on every step of
    a loop; one object serves one `with` block at a time."""

    __slots__ = ("registry", "modules", "working_bytes", "upcoming", "offload_after",
                 "allow_low_memory", "aids")

    def __init__(self, registry, modules, working_bytes, upcoming, offload_after,
                 allow_low_memory):
        self.registry, self.modules = registry, modules
        self.working_bytes, self.upcoming = working_bytes, upcoming
        self.offload_after, self.allow_low_memory = offload_after, allow_low_memory
        self.aids = None

    def __enter__(self):
        if self.aids is not None:
            raise RuntimeError("this use() block is already open; call use() again")
        return self.registry._enter(self)

    def __exit__(self, *exc):
        try:
            self.registry._leave(self)
        finally:
            self.aids = None
        return False


class _Asset:
    """One registered module: its groups and how it is used."""

    def __init__(self, aid, label, name, variant, module, loader, nbytes, partial, pinned):
        self.aid, self.label, self.name, self.variant = aid, label, name, variant
        self.module, self.loader = module, loader
        self.nbytes, self.partial, self.pinned = nbytes, partial, pinned
        self.units = None  # split on first move
        self.hooks = []
        self.uses = 0  # open use() blocks


def _check_bytes(label, v, allow_none=False):
    """A byte count as the C side takes it (uint64_t): the one range check,
    _lib.check_int, so every message reads alike."""
    if v is None and allow_none:
        return v
    return _lib.check_int(v, label, 0, _U64)


class Registry(_lib.Handle):
    """Residency for torch.nn.Modules on one device.

    device: "cuda:N", "cuda" or "cpu"; None picks cuda:0 when CUDA is there,
    else the CPU. budget_bytes: a fixed budget (required on the CPU without a
    pool); None reads free memory on each request. reserve_bytes: kept free.
    policy: "auto", "comfy", "lru" or "lookahead". patience: seconds to wait
    for offloaded memory to show as free. pool: a headroom.pool.Pool whose
    memory the host can address ("host" backend): modules on the "device"
    are modules whose tensors live in the pool, and the registry is the
    pool's reclaimer."""

    def __init__(self, device=None, budget_bytes=None, reserve_bytes=0, policy="auto",
                 patience=None, pool=None):
        import torch

        self._torch = torch
        self._h = None
        if pool is not None:
            if device not in (None, "cpu"):
                raise ValueError("a registry on a pool places tensors in host-addressable pool "
                                 "memory: device must be None or 'cpu'; got %r" % (device,))
            device = "cpu"
        if device is None:
            device = "cuda:0" if torch.cuda.is_available() else "cpu"
        if not isinstance(device, (str, torch.device)):
            raise TypeError("device must be a string like 'cuda:0' or a torch.device; got %r"
                            % (device,))
        try:
            self.device = torch.device(device)
        except RuntimeError as e:
            raise ValueError("device %r: %s" % (device, e)) from None
        if self.device.type not in ("cuda", "cpu"):
            raise ValueError("device must be a CUDA device or the CPU; got %r" % (device,))
        if self.device.type == "cuda":
            if not torch.cuda.is_available():
                raise ValueError("device %s: no CUDA device (torch.cuda.is_available() is "
                                 "False); use device='cpu' with a budget_bytes" % device)
            if self.device.index is None:
                self.device = torch.device("cuda", torch.cuda.current_device())
        _check_bytes("budget_bytes", budget_bytes, allow_none=True)
        _check_bytes("reserve_bytes", reserve_bytes)
        if self.device.type == "cpu" and not budget_bytes and pool is None:
            raise ValueError("a registry on the CPU needs a budget_bytes (there is no device "
                             "memory to read)")
        if policy not in POLICIES:
            raise ValueError("policy must be one of %s; got %r" % (", ".join(POLICIES), policy))
        if patience is not None and (isinstance(patience, bool) or
                                     not isinstance(patience, (int, float)) or patience < 0):
            raise ValueError("patience must be >= 0 seconds; got %r" % (patience,))
        self.pool = pool
        if pool is not None:
            if not isinstance(pool, Pool):
                raise TypeError("pool must be a headroom.pool.Pool; got %s" % type(pool).__name__)
            self._place = placement.PoolPlacement(torch, pool)
        else:
            self._place = placement.TorchPlacement(torch, self.device)
        self._lib = _lib.load()
        self._lock = threading.RLock()
        self._assets = {}  # asset id -> _Asset
        self._ids = {}  # id(module) -> asset id
        self._error = None  # an exception raised inside a callback
        # Asset ids of the last require, until their block ends: a frozenset,
        # replaced rather than changed (use() sets it to a cached one each step).
        self._c_active = frozenset()
        # Roots of groups whose use() blocks ended while the C registry still
        # marks them busy: the next call into the library marks them idle
        # first (_settle), or keeps them busy when it is a use() of them.
        self._idle_later = ()
        self._low = {}  # asset id -> units loaded by a low-memory use, outside the budget
        self._torch_pool = None
        self._cuda = self.device.type == "cuda"
        self._forget_groups()
        self._variants = False  # whether two registered modules share a name
        # The hot path (use() on every step) calls these unchecked: its
        # integers are asset ids and a checked working_bytes.
        self._c_require = _lib.unchecked(self._lib.hr_residency_require)
        self._c_use = _lib.unchecked(self._lib.hr_residency_use)
        self._c_busy = _lib.unchecked(self._lib.hr_asset_set_busy)
        # require's result, one struct for the registry's life: each
        # hr_residency_require frees the previous one's arrays, close() the last.
        self._plan = _lib.Plan()
        self._plan_ref = _c.byref(self._plan)
        self.last_holders = None
        self._dropping = False  # release() on host memory: offloads drop modules with a loader
        opts = _lib.ResidencyOptions()
        self._lib.hr_residency_options_default(None, _c.byref(opts))
        opts.budget_bytes = budget_bytes or 0
        opts.reserve_bytes = reserve_bytes
        if patience is not None:
            opts.patience_s = patience
        pol = _c.c_int()
        _lib.check(self._lib.hr_policy_parse(policy.encode(), _c.byref(pol)), "policy")
        opts.policy = pol.value
        # Keep every callback object alive as long as the registry: C holds
        # their addresses.
        self._cb_load = _lib.LOAD_FN(self._on_load)
        self._cb_offload = _lib.OFFLOAD_FN(self._on_offload)
        self._cb_drop = _lib.DROP_FN(self._on_drop)
        self._cb_meminfo = _lib.MEMINFO_FN(self._on_meminfo)
        if not budget_bytes:
            opts.mem_info = self._cb_meminfo
        h = _c.c_void_p()
        _lib.check(self._lib.hr_residency_create(_c.byref(opts), _c.byref(h)),
                   "hr_residency_create")
        self._h = h
        reclaim.track(self)
        if pool is not None:
            reclaim.attach(self, pool._h().value, pool)

    # ---- callbacks (run by the C registry, with its lock held) ----

    def _on_meminfo(self, arg, free, total):
        try:
            if self.pool is not None:
                f, tot = self.pool.mem_info()
                st = self.pool.stats()
                f += st["reserved_bytes.all.current"] - st["allocated_bytes.all.current"]
            else:
                t = self._torch
                d = self.device.index
                f, tot = t.cuda.mem_get_info(d)
                if allocator.installed():
                    h = self._attach_torch_pool()
                    if h:
                        st = read_stats(h)
                        f += st["reserved_bytes.all.current"] - st["allocated_bytes.all.current"]
                else:
                    # PyTorch's cache is free memory to the next PyTorch allocation.
                    f += t.cuda.memory_reserved(d) - t.cuda.memory_allocated(d)
            _lib.store(free, f, "free")
            _lib.store(total, tot, "total")
            return 0
        except Exception as e:  # reported after the C call returns
            self._error = e
            return _EDEVICE

    def _units(self, a):
        if a.units is None:
            if a.module is None:
                m = a.loader()
                if not isinstance(m, self._torch.nn.Module):
                    raise TypeError("the loader of %s returned %s, not a torch.nn.Module"
                                    % (a.label, type(m).__name__))
                a.module = m
                self._ids[id(m)] = a.aid
            a.units = placement.split(a.module, a.max_groups if a.partial else 1)
            if a.partial and len(a.units) > 1:
                self._stream_hooks(a)
            for u in a.units:
                ts = placement.unit_tensors(u)
                u.on = bool(ts) and self._place.moves and all(self._place.on_device(t)
                                                               for t in ts)
        return a.units

    def _stream_hooks(self, a):
        """A group left on the host is brought in for its own forward and sent
        back after it, so that a partly loaded module runs on the device."""
        place = self._place

        def pre(unit):
            def hook(mod, args):
                if not unit.on:
                    placement.move_unit(unit, place.to_device)
            return hook

        def post(unit):
            def hook(mod, args, out):
                if not unit.on:
                    placement.move_unit(unit, place.to_host)
            return hook

        for u in a.units:
            a.hooks.append(u.module.register_forward_pre_hook(pre(u)))
            a.hooks.append(u.module.register_forward_hook(post(u)))

    def _tag(self, label):
        if self._lib and hasattr(self._lib, "hr_pool_set_tag"):
            self._lib.hr_pool_set_tag(label.encode() if label else None)

    def _on_load(self, aid, budget, loaded, arg):
        a = self._assets[aid]
        loaded[0] = 0
        prev = reclaim.current_tag()
        try:
            self._tag(a.label)
            units = self._units(a)
            # A whole module loads whole whatever its measured size; a partial
            # one takes whole groups, in order, while they fit in the budget.
            have = sum(u.nbytes for u in units if u.on)
            for u in units:
                if u.on or (a.partial and have + u.nbytes > budget):
                    continue
                placement.move_unit(u, self._place.to_device)
                u.on = True
                have += u.nbytes
            _lib.store(loaded, min(have, a.nbytes) if a.partial else a.nbytes, "loaded")
            return 0
        except Exception as e:
            self._error = e
            on = sum(u.nbytes for u in (a.units or ()) if u.on)
            loaded[0] = min(on, a.nbytes) if a.partial or not on else a.nbytes
            return _EDEVICE
        finally:
            self._tag(prev)

    def _on_offload(self, aid, to_free, freed, arg):
        a = self._assets[aid]
        freed[0] = 0
        try:
            if self._dropping and a.loader is not None:
                _lib.store(freed, self._drop_module(a), "freed")
                return 0
            _lib.store(freed, self._offload_units(a, to_free), "freed")
            return 0
        except Exception as e:
            self._error = e
            return _EDEVICE

    def _offload_units(self, a, to_free):
        """Moves groups of `a` to the host, last first, until `to_free` bytes
        are off the device; returns the bytes moved. Reports what still holds
        device memory when much less came back."""
        units = self._units(a)
        on = [u for u in units if u.on]
        if not a.partial or to_free >= sum(u.nbytes for u in on):
            chosen = on
        else:
            chosen, got = [], 0
            for u in reversed(on):
                if got >= to_free:
                    break
                chosen.append(u)
                got += u.nbytes
        ptrs = set()
        for u in chosen:
            for t in placement.unit_tensors(u):
                if self._place.moves and self._place.on_device(t) and t.numel():
                    ptrs.add(_storage_ptr(t))
        before = self._place.allocated()
        moved = 0
        for u in chosen:
            placement.move_unit(u, self._place.to_host)
            u.on = False
            moved += u.nbytes
        self._place.after_offload()
        if not a.partial:
            moved = a.nbytes if moved or not units else 0
        after = self._place.allocated()
        if before is not None and after is not None and moved >= RETURNED_MIN_BYTES \
                and before - after < RETURNED_SHARE * moved and ptrs:
            self._report_holders(a, moved, before - after, ptrs)
        return moved

    def _report_holders(self, a, moved, returned, ptrs):
        h = holders.find_holders(ptrs)
        after = self._place.allocated()
        f = fmt_bytes
        text = ("offloading %s moved %s to the host but gave back only %s of device memory; "
                "after a garbage collection %s is still held\n%s"
                % (a.label, f(moved), f(max(returned, 0)), f(h.bytes_alive), h.text()))
        h.module = a.label
        h.moved_bytes, h.returned_bytes = moved, max(returned, 0)
        h.allocated_after = after
        self.last_holders = h
        warnings.warn(text, MemoryNotReturnedWarning, stacklevel=2)

    def _on_drop(self, aid, arg):
        pass

    def _drop_module(self, a):
        """Lets go of a module that has a loader (release() on host memory):
        its tensors go with its last reference, and the next use loads it
        again. Returns the bytes it was registered with (what C books)."""
        for hk in a.hooks:
            hk.remove()
        a.hooks = []
        if a.module is not None:
            self._ids.pop(id(a.module), None)
        a.module, a.units = None, None
        return a.nbytes

    # ---- the API ----

    def _aid(self, m):
        if isinstance(m, str):
            for aid, a in self._assets.items():
                if a.label == m:
                    return aid
            raise KeyError("no module registered as %r; registered: %s"
                           % (m, ", ".join(sorted(a.label for a in self._assets.values()))
                              or "none"))
        aid = self._ids.get(id(m))
        if aid is None:
            raise KeyError("module %s is not registered; call register(module, name) first"
                           % type(m).__name__)
        return aid

    def register(self, module, name, variant=None, group=None, pinned=False, priority=0,
                 partial=False, estimated_bytes=None, groups=None):
        """Registers `module` as name[:variant] and returns its bytes.

        module: a torch.nn.Module, or a callable that returns one, called on
        the first load (then estimated_bytes is required; headroom.estimate_bytes
        of its safetensors file gives it). group: a registered module (or its
        name) whose group it joins: it is then always loaded with that one.
        pinned: never offloaded by the policy. partial: may stay on the device
        in part (groups of whole submodules). estimated_bytes: the device
        bytes to plan with instead of measuring (a module on the meta device,
        or one still to be loaded). groups: how many groups a partial module
        is split into at most (default 16; more groups follow the policy's
        byte counts more closely, each move is smaller)."""
        self._handle()
        is_mod = isinstance(module, self._torch.nn.Module)
        if not is_mod and not callable(module):
            raise TypeError("register needs a torch.nn.Module or a callable that returns one; "
                            "got %s" % type(module).__name__)
        if not isinstance(name, str) or not name:
            raise ValueError("name must be a non-empty string; got %r" % (name,))
        if variant is not None and not isinstance(variant, str):
            raise TypeError("variant must be a string or None; got %r" % (variant,))
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise TypeError("priority must be an integer; got %r" % (priority,))
        _lib.check_int(priority, "priority", *_lib.int_range(_c.c_int))
        _check_bytes("estimated_bytes", estimated_bytes, allow_none=True)
        if groups is not None:
            if isinstance(groups, bool) or not isinstance(groups, int):
                raise TypeError("groups must be an integer in [1, 4096]; got %r" % (groups,))
            _lib.check_int(groups, "groups", 1, 4096)
        if not is_mod and not estimated_bytes:
            raise ValueError("register(%r): a loader needs estimated_bytes (the module's size "
                             "before it is loaded; headroom.estimate_bytes(path) reads it from "
                             "a safetensors header)" % name)
        if estimated_bytes is not None:
            nbytes = estimated_bytes
        else:
            nbytes = module_bytes(module)
        if nbytes == 0:
            raise ValueError("module %r has no parameters or buffers: nothing to place" % name)
        label = name + (":" + variant if variant else "")
        with self._lock:
            if is_mod and id(module) in self._ids:
                raise ValueError("this module is already registered as %r"
                                 % self._assets[self._ids[id(module)]].label)
            parent = self._aid(group) if group is not None else 0
            on_device = 0
            if is_mod and self._place.moves:
                ts = placement.unit_tensors(placement.Unit(module, True, 0))
                if ts and all(self._place.on_device(t) for t in ts):
                    on_device = nbytes
            desc = _lib.make(_lib.AssetDesc, name=name.encode(),
                             variant=variant.encode() if variant else None,
                             device_bytes=nbytes, host_bytes=nbytes, parent=parent,
                             pinned=bool(pinned), partial=bool(partial), priority=priority,
                             resident_bytes=on_device, load=self._cb_load,
                             offload=self._cb_offload, drop=self._cb_drop)
            aid = _c.c_uint32()
            _lib.check(self._lib.hr_asset_register(self._h, _c.byref(desc), _c.byref(aid)),
                       "register %s" % label)
            aid = aid.value
            a = _Asset(aid, label, name, variant, module if is_mod else None,
                       None if is_mod else module, nbytes, bool(partial), bool(pinned))
            a.max_groups = groups or placement.MAX_GROUPS
            self._variants = self._variants or any(b.name == name for b in self._assets.values())
            self._assets[aid] = a
            self._forget_groups()
            if is_mod:
                self._ids[id(module)] = aid
        return nbytes

    def unregister(self, module):
        with self._lock:
            aid = self._aid(module)
            a = self._assets[aid]
            if a.uses:
                raise RuntimeError("%s is in use" % a.label)
            h = self._handle()
            if self._idle_later:
                self._settle(h)
            _lib.check(self._lib.hr_asset_unregister(h, aid), "unregister")
            for hk in a.hooks:
                hk.remove()
            self._assets.pop(aid)
            self._forget_groups()
            names = [b.name for b in self._assets.values()]
            self._variants = len(set(names)) < len(names)
            if a.module is not None:
                self._ids.pop(id(a.module), None)
            self._c_active = self._c_active - {aid}

    def _info(self, aid):
        inf = _lib.AssetInfo()
        _lib.check(self._lib.hr_asset_info(self._handle(), aid, _c.byref(inf)), "hr_asset_info")
        return inf

    def info(self, module):
        """dict: name, variant, device_bytes, resident_bytes, pinned, partial,
        uses, group, groups (how many groups it moves in; None before its
        first load), busy (inside a use() block)."""
        with self._lock:
            aid = self._aid(module)
            inf = self._info(aid)
            a = self._assets[aid]
            grp = self._assets.get(inf.group)
            return {"name": inf.name.decode(), "variant": inf.variant.decode() or None,
                    "device_bytes": inf.device_bytes, "resident_bytes": inf.resident_bytes,
                    "pinned": inf.pinned, "partial": inf.partial, "uses": inf.uses,
                    "group": grp.label if grp else None,
                    "groups": len(a.units) if a.units is not None else None,
                    "busy": a.uses > 0}

    def resident(self):
        """Names of the modules resident on the device now (in part or whole)."""
        with self._lock:
            return sorted(a.label for aid, a in self._assets.items()
                          if self._info(aid).resident_bytes > 0)

    def _idle_aids(self):
        """Ids of the modules a reclaim may offload: resident, unpinned, not
        busy and not the set of a require still under way."""
        out = []
        for aid, a in self._assets.items():
            if a.uses or aid in self._c_active:
                continue
            inf = self._info(aid)
            if not inf.pinned and inf.resident_bytes:
                out.append((aid, inf.resident_bytes))
        return out

    def _on_host(self):
        """True when the modules live in the process's own host memory (the
        CPU, no pool): moving them elsewhere there gives nothing back, so
        release() drops those that have a loader instead. (A pool's memory
        is the registry's device: offloading out of it frees pool memory.)"""
        return self.device.type == "cpu" and self.pool is None

    def _reading(self):
        """What release() measures before and after: the process's resident
        bytes on the host, the device's (or the pool's) allocated bytes
        otherwise (None when not measurable)."""
        return procfs.rss_bytes() if self._on_host() else self._place.allocated()

    def releasable_bytes(self):
        """Bytes the idle registered modules could give back now: resident,
        unpinned, not inside a use() block; on the CPU without a pool only
        those registered with a loader (release() drops them, the next use
        loads them again), since moving a module within the host frees
        nothing."""
        with self._lock:
            self._handle()
            host = self._on_host()
            return sum(b for aid, b in self._idle_aids()
                       if not host or self._assets[aid].loader is not None)

    offloadable_bytes = releasable_bytes  # the earlier name

    def release(self, nbytes):
        """Gives back at least `nbytes` if it can: offloads idle modules to
        the host (from a CUDA device or a pool), or on the CPU without a
        pool drops the idle modules that have a loader (loaded again on next
        use; the others stay), least valuable first under the policy (lru
        for lookahead: there is no upcoming sequence here). Returns the
        bytes that actually came back, measured before and after (the
        process's resident memory on the CPU, after a collection and
        malloc_trim; the device's or the pool's allocated bytes otherwise),
        never the bytes booked: 0 when nothing was idle or nothing came
        back. The step that headroom.free_memory() runs on
        every open registry (aggressive mode, or target "all" or "amount"),
        and what the broker agent calls; to free what the whole process can,
        call headroom.free_memory()."""
        _check_bytes("nbytes", nbytes)
        with self._lock:
            h = self._handle()
            if nbytes == 0:
                return 0
            if self._idle_later:
                self._settle(h)
            host = self._on_host()
            if host:  # what was garbage already is not this release's doing
                gc.collect()
                malloc_trim()
            before = self._reading()
            # On the host, modules without a loader are held busy meanwhile,
            # so that the policy passes them over.
            held = [aid for aid, _ in self._idle_aids()
                    if self._assets[aid].loader is None] if host else []
            freed = _c.c_uint64()
            self._error = None
            self._dropping = host
            try:
                for aid in held:
                    self._lib.hr_asset_set_busy(h, aid, True)
                rc = self._lib.hr_residency_reclaim(None, nbytes, _c.byref(freed), h)
            finally:
                self._dropping = False
                for aid in held:
                    self._lib.hr_asset_set_busy(h, aid, False)
            self._raise_callback_error("release")
            if rc < 0 and rc != _ENOSPC:
                _lib.check(rc, "release")
            if not freed.value:
                return 0  # nothing was given back: what moved meanwhile is not this call's
            if host:
                gc.collect()
                malloc_trim()
            after = self._reading()
            if before is None or after is None:
                return freed.value
            return max(0, before - after)

    def offload(self, *modules):
        """Offloads the modules now (whole), pinned or not; returns the bytes
        freed. RuntimeError for a module inside a use() block."""
        if not modules:
            raise ValueError("offload() needs at least one registered module")
        total = 0
        with self._lock:
            h = self._handle()
            for m in modules:
                aid = self._aid(m)
                a = self._assets[aid]
                if a.uses:
                    raise RuntimeError("%s is in use (inside a use() block); it is offloaded "
                                       "when the block ends with offload_after=True" % a.label)
                total += self._offload_one(h, aid)
        return total

    def _offload_one(self, h, aid):
        if self._idle_later:
            self._settle(h)
        freed = _c.c_uint64()
        self._error = None
        rc = self._lib.hr_asset_offload(h, aid, _U64, _c.byref(freed))
        self._c_active = self._c_active - {aid}
        self._raise_callback_error("offload")
        _lib.check(rc, "offload %s" % self._assets[aid].label)
        return freed.value

    def _raise_callback_error(self, where):
        if self._error is not None:
            err, self._error = self._error, None
            raise ResidencyError(_EDEVICE, where, "moving a module failed: %r" % (err,)) from err

    def stats(self):
        st = _lib.ResidencyStats()
        _lib.check(self._lib.hr_residency_stats(self._handle(), _c.byref(st)),
                   "hr_residency_stats")
        return {n: getattr(st, n) for n, _ in _lib.ResidencyStats._fields_}

    def _lookahead(self, upcoming, working_bytes):
        """hr_lookahead_t of `upcoming`: a list of steps, each a module, a
        name, a list or tuple of them, or a (modules, working_bytes) pair
        written as a dict {"use": [...], "working_bytes": n}."""
        if upcoming is None:
            return None, ()
        if isinstance(upcoming, (str, bytes)) or not hasattr(upcoming, "__iter__"):
            raise TypeError("upcoming must be a list of steps (each a module, a name or a list "
                            "of them); got %r" % (upcoming,))
        ids, steps, work = [], [], []
        for k, step in enumerate(upcoming, 1):
            w = working_bytes
            if isinstance(step, dict):
                extra = set(step) - {"use", "working_bytes"}
                if extra or "use" not in step:
                    raise ValueError("upcoming[%d]: a dict step has 'use' and optionally "
                                     "'working_bytes'; got keys %s" % (k - 1, sorted(step)))
                w = _check_bytes("upcoming[%d].working_bytes" % (k - 1),
                                 step.get("working_bytes", working_bytes))
                step = step["use"]
            members = step if isinstance(step, (list, tuple)) else [step]
            for m in members:
                ids.append(self._aid(m))
                steps.append(k)
                work.append(w)
        n = len(ids)
        keep = (_lib.array(_c.c_uint32, ids, "ids"), _lib.array(_c.c_uint32, steps, "steps"),
                _lib.array(_c.c_uint64, work, "working_bytes"))
        la = _lib.Lookahead(_c.cast(keep[0], _c.POINTER(_c.c_uint32)),
                            _c.cast(keep[1], _c.POINTER(_c.c_uint32)), n,
                            _c.cast(keep[2], _c.POINTER(_c.c_uint64)))
        return la, keep

    def require(self, *modules, working_bytes=0, upcoming=None):
        """Makes the modules resident with working_bytes to spare; returns a
        Plan. Raises ResidencyError (what would fit instead) when they cannot
        fit, KeyError for a module that is not registered."""
        working_bytes = _check_bytes("working_bytes", working_bytes)
        if not modules:
            raise ValueError("use() needs at least one registered module")
        with self._lock:
            h = self._handle()
            return self._require(h, tuple([self._aid(m) for m in modules]), working_bytes,
                                 upcoming, self._c_require)

    def _require(self, h, aids, working_bytes, upcoming, fn):
        """require() of asset ids, under the lock, by `fn`: hr_residency_require,
        or hr_residency_use, which leaves their groups busy too."""
        la = None
        if upcoming is not None:
            la, _keep = self._lookahead(upcoming, working_bytes)
        ids, roots, group = self._set_of(aids)
        if self._idle_later:
            self._settle(h, roots if fn is self._c_use else ())
        plan = self._plan
        self._error = None
        try:
            rc = fn(h, ids, len(aids), working_bytes, _c.byref(la) if la is not None else None,
                    self._plan_ref)
            if rc >= 0:
                self._idle_later = ()  # what was left is this set's: busy again
            if self._error is not None:
                err, self._error = self._error, None
                raise ResidencyError(rc if rc < 0 else _EDEVICE, "use",
                                     "moving a module failed: %r" % (err,)) from err
            if rc < 0:
                sugg = [plan.suggestions[i].text.decode()
                        for i in range(min(plan.n_suggestions, _lib.PLAN_MAX_SUGGESTIONS))]
                raise ResidencyError(rc, "use", plan.message.decode(), sugg, plan.short_bytes)
            n = plan.n_actions
            acts = [(_ACTIONS[a.kind], self._label(a.id), a.bytes)
                    for a in plan.actions[:n]] if n else []
            self._c_active = group
            out = Plan(acts, plan.bytes_loaded, plan.bytes_offloaded, plan.capacity_bytes,
                       plan.used_bytes, POLICIES[plan.policy])
            if self._variants:
                out.suggestions = self._better_variants(aids, out)
            return out
        finally:
            if self._cuda and self._torch_pool is None:
                self._attach_torch_pool()

    def _label(self, aid):
        a = self._assets.get(aid)
        return a.label if a else "#%d" % aid

    def _forget_groups(self):
        """Drops what _groups and _set_of cached: a module was registered or
        unregistered."""
        self._roots = None  # asset id -> its group's root
        self._members = None  # group root -> ids of its members
        self._sets = {}  # tuple of asset ids -> _set_of's answer

    def _groups(self):
        """(asset id -> its group's root, root -> its members' ids), cached:
        groups change only when modules are registered or unregistered."""
        if self._roots is None:
            roots = {aid: self._info(aid).group for aid in self._assets}
            members = {}
            for aid, root in roots.items():
                members.setdefault(root, []).append(aid)
            self._members = {root: frozenset(m) for root, m in members.items()}
            self._roots = roots
        return self._roots, self._members

    def _set_of(self, aids):
        """For a tuple of asset ids: (their uint32 array, the roots of their
        groups, the ids of every member of those groups), cached until a
        module is registered or unregistered (at most 256 sets)."""
        got = self._sets.get(aids)
        if got is None:
            roots, members = self._groups()
            rts = tuple(sorted({roots[a] for a in aids}))
            if len(self._sets) >= 256:
                self._sets.clear()
            got = self._sets[aids] = ((_c.c_uint32 * len(aids))(*aids), rts,
                                      frozenset(m for r in rts for m in members[r]))
        return got

    def _better_variants(self, aids, plan):
        """Suggestions of a larger variant (higher quality) of a module just
        made resident, when it would fit in what is free after this plan."""
        spare = plan.capacity_bytes - plan.used_bytes if plan.capacity_bytes > plan.used_bytes \
            else 0
        f = fmt_bytes
        out = []
        for aid in aids:
            a = self._assets[aid]
            for b in self._assets.values():
                if b is a or b.name != a.name or b.nbytes <= a.nbytes:
                    continue
                extra = b.nbytes - a.nbytes
                if extra <= spare:
                    out.append("%s fits with %s to spare: %s (%s) fits too, with %s to spare"
                               % (a.label, f(spare), b.label, f(b.nbytes), f(spare - extra)))
        return out

    def _set_busy(self, h, root, busy):
        """Marks the group of `root` busy or idle in the C registry."""
        rc = self._c_busy(h, root, busy)
        if rc:
            _lib.check(rc, "busy")

    def _settle(self, h, keep=()):
        """Marks idle in the C registry the groups whose use() blocks ended
        since the last call into it, but those whose roots are in `keep`
        (they stay in _idle_later). Every call into the library that could
        act on busy marks (require, reclaim, offload, unregister) settles
        first, so the marks it reads are the blocks that are open."""
        later = self._idle_later
        self._idle_later = tuple([r for r in later if r in keep])
        for root in later:
            if root not in keep:
                self._set_busy(h, root, False)

    def use(self, *modules, working_bytes=0, upcoming=None, offload_after=False,
            allow_low_memory=False):
        """with registry.use(unet, vae, working_bytes=2 << 30) as plan: ...

        The modules are resident and busy inside the block: neither the
        policy nor a reclaim offloads them. upcoming: the next steps, for the
        lookahead policy (see require). offload_after: offload them when the
        block ends. allow_low_memory: when they do not fit, load them anyway
        (offloading every idle module first) instead of raising; the plan's
        `risk` and a LowMemoryWarning say what that risks."""
        return _Use(self, modules, working_bytes, upcoming, offload_after, allow_low_memory)

    def _enter(self, u):
        """use()'s start: require and the groups busy, in one C call."""
        w = u.working_bytes
        if w.__class__ is not int or not 0 <= w <= _U64:
            w = _check_bytes("working_bytes", w)
        if not u.modules:
            raise ValueError("use() needs at least one registered module")
        with self._lock:
            h = self._handle()
            ids = self._ids
            # A registered module by its id, else _aid (a name, or the error).
            mods = u.modules
            aids = (ids.get(id(mods[0])) or self._aid(mods[0]),) if len(mods) == 1 else \
                tuple([ids.get(id(m)) or self._aid(m) for m in mods])
            try:
                plan = self._require(h, aids, w, u.upcoming, self._c_use)
            except ResidencyError as e:
                if not u.allow_low_memory or e.code != _ENOSPC:
                    raise
                plan = self._low_memory(u.modules, w, e)
                for root in self._set_of(aids)[1]:
                    self._set_busy(h, root, True)
            assets = self._assets
            for a in aids:
                assets[a].uses += 1
            u.aids = aids
        return plan

    def _leave(self, u):
        """use()'s end: each group none of whose members is still in a use()
        block becomes idle (and goes back to the host when it was loaded
        outside the budget, or offload_after asked). The C registry learns it
        at the next call into the library (_settle): a loop that uses the
        same modules step after step calls the library once a step."""
        with self._lock:
            assets = self._assets
            for a in u.aids:
                assets[a].uses -= 1
            h = self._h
            if not h:
                return
            members = self._groups()[1]
            for root in self._set_of(u.aids)[1]:
                group = members[root]
                if any([assets[m].uses for m in group]):
                    continue
                self._idle_later += (root,)
                active = self._c_active
                if active:
                    self._c_active = _NONE if active <= group else active - group
                if self._low:
                    self._end_low_memory(group)
                if u.offload_after:
                    for a in u.aids:
                        if a in group:
                            self._offload_one(h, a)

    def _low_memory(self, modules, working_bytes, refusal):
        """Loads `modules` although the registry refused them: first with less
        working memory when that is all that is missing, else by offloading
        every idle module and moving the modules in outside the budget (they
        go back to the host when the block ends)."""
        f = fmt_bytes
        short = refusal.short_bytes
        if short <= working_bytes:
            plan = self.require(*modules, working_bytes=working_bytes - short)
            plan.risk = ("loaded with %s of working memory instead of %s: the computation may "
                         "run out of memory (%s short)" % (f(working_bytes - short),
                                                          f(working_bytes), f(short)))
        else:
            freed = self.release(_U64)
            with self._lock:
                moved = 0
                for m in modules:
                    aid = self._aid(m)
                    a = self._assets[aid]
                    units = self._units(a)
                    done = self._low.setdefault(aid, [])
                    for u in units:
                        if not u.on:
                            placement.move_unit(u, self._place.to_device)
                            u.on = True
                            done.append(u)
                            moved += u.nbytes
            plan = Plan([("load_low_memory", self._label(self._aid(m)), 0) for m in modules],
                        moved, freed, 0, 0, "low_memory")
            plan.risk = ("loaded outside the budget: %s short even after offloading every idle "
                         "module (%s freed); an allocation may fail with out of memory, and the "
                         "modules go back to the host when the block ends"
                         % (f(short), f(freed)))
        plan.suggestions = refusal.suggestions
        warnings.warn("%s\nwhat would fit instead:\n%s" % (
            plan.risk, "\n".join("  - " + s for s in refusal.suggestions) or "  nothing"),
            LowMemoryWarning, stacklevel=4)
        return plan

    def _end_low_memory(self, idle):
        for aid in idle:
            units = self._low.pop(aid, None)
            for u in units or ():
                placement.move_unit(u, self._place.to_host)
                u.on = False

    def _attach_torch_pool(self):
        """Under headroom's allocator, attaches this registry (a CUDA one) as
        the reclaimer of its device's pool once that pool exists; returns the
        pool handle or None."""
        if self._torch_pool or self.device.type != "cuda":
            return self._torch_pool
        if not allocator.installed() or not hasattr(self._lib, "hr_torch_pool"):
            return None
        h = self._lib.hr_torch_pool(self.device.index)
        if h:
            reclaim.attach(self, h)
            self._torch_pool = h
        return self._torch_pool

    def _handle(self):
        if not getattr(self, "_h", None):
            raise ValueError("the Registry is closed")
        return self._h

    def close(self):
        if getattr(self, "_h", None):
            reclaim.detach(self)
            for a in self._assets.values():
                for hk in a.hooks:
                    hk.remove()
            self._lib.hr_residency_destroy(self._h)
            self._h = None
            self._lib.hr_plan_free(self._plan_ref)


def _storage_ptr(t):
    st = t.untyped_storage() if hasattr(t, "untyped_storage") else t.storage()
    return st.data_ptr()


