"""Residency for torch.nn.Modules: libheadroom's registry decides, the
modules move.

register() measures a module's bytes (its parameters' and buffers' storages,
each counted once) and gives the C registry an asset with load and offload
callbacks that call ``module.to(device)`` and ``module.to("cpu")``.
``with registry.use(unet, vae, working_bytes=...)`` asks the registry to make
them resident with that much working memory to spare; it offloads other
modules under its policy, or changes nothing and raises ResidencyError with
the registry's message and suggestions ("use unet:fp8 instead", "run vae on
the CPU", ...).

The budget is fixed (budget_bytes) or read on each request: for a CUDA device
from torch.cuda.mem_get_info() plus PyTorch's cached but unused bytes. A
registry on the CPU device (no CUDA) needs a fixed budget; its modules start
offloaded and the moves are no-ops for the data, which keeps the decisions,
refusals and suggestions testable without a GPU.
"""

import contextlib
import ctypes
import threading

from . import _lib, _readings

POLICIES = ("auto", "comfy", "lru", "lookahead")
_ACTIONS = ("load", "load_partial", "offload", "offload_partial")
_SUGGESTIONS = ("variant", "partial", "cpu", "working", "unpin")
_ENOSPC = -3
_EDEVICE = -15  # HR_EDEVICE: a callback's own failure, raised after the C call

_c = ctypes


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


def module_bytes(module):
    """Bytes of a module's parameters and buffers, each storage counted once
    (tied weights and views share one)."""
    seen, total = set(), 0
    for t in list(module.parameters()) + list(module.buffers()):
        st = t.untyped_storage() if hasattr(t, "untyped_storage") else t.storage()
        key = (st.device.type if hasattr(st, "device") else t.device.type, st.data_ptr())
        if key in seen:
            continue
        seen.add(key)
        total += st.nbytes()
    return total


def _module_device(module):
    for t in list(module.parameters()) + list(module.buffers()):
        return t.device
    return None


class Plan:
    """What a use() did: actions as (kind, name, bytes) and the totals."""

    def __init__(self, actions, bytes_loaded, bytes_offloaded, capacity_bytes, used_bytes,
                 policy):
        self.actions = actions
        self.bytes_loaded = bytes_loaded
        self.bytes_offloaded = bytes_offloaded
        self.capacity_bytes = capacity_bytes
        self.used_bytes = used_bytes
        self.policy = policy

    def __repr__(self):
        f = _readings.fmt_bytes
        acts = ", ".join("%s %s %s" % (k, n, f(b)) for k, n, b in self.actions) or "nothing"
        return "Plan(%s; loaded %s, offloaded %s; %s of %s used)" % (
            acts, f(self.bytes_loaded), f(self.bytes_offloaded), f(self.used_bytes),
            f(self.capacity_bytes))


class Registry:
    """Residency for torch.nn.Modules on one device.

    device: "cuda:N", "cuda" or "cpu"; None picks cuda:0 when CUDA is there,
    else the CPU. budget_bytes: a fixed budget (required on the CPU); None
    reads free memory on each request. reserve_bytes: kept free. policy:
    "auto", "comfy", "lru" or "lookahead". patience: seconds to wait for
    offloaded memory to show as free."""

    def __init__(self, device=None, budget_bytes=None, reserve_bytes=0, policy="auto",
                 patience=None):
        import torch

        self._torch = torch
        if device is None:
            device = "cuda:0" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if self.device.type not in ("cuda", "cpu"):
            raise ValueError("device must be a CUDA device or the CPU; got %r" % (device,))
        if self.device.type == "cuda":
            if not torch.cuda.is_available():
                raise ValueError("device %s: no CUDA device (torch.cuda.is_available() is "
                                 "False); use device='cpu' with a budget_bytes" % device)
            if self.device.index is None:
                self.device = torch.device("cuda", torch.cuda.current_device())
        for label, v in (("budget_bytes", budget_bytes), ("reserve_bytes", reserve_bytes)):
            if v is not None:
                _lib.check_int(v, label, 0, (1 << 64) - 1)
        if self.device.type == "cpu" and not budget_bytes:
            raise ValueError("a registry on the CPU needs a budget_bytes (there is no device "
                             "memory to read)")
        if policy not in POLICIES:
            raise ValueError("policy must be one of %s; got %r" % (", ".join(POLICIES), policy))
        if patience is not None and patience < 0:
            raise ValueError("patience must be >= 0 seconds; got %r" % (patience,))
        self._lib = _lib.load()
        self._lock = threading.RLock()
        self._modules = {}  # id -> module
        self._ids = {}  # id(module) -> asset id
        self._names = {}  # asset id -> "name[:variant]"
        self._active = {}  # asset id -> count of open use() blocks
        self._bytes = {}  # asset id -> measured bytes
        self._error = None  # an exception raised inside a callback
        self._offload_device = torch.device("cpu")
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

    # ---- callbacks (run by the C registry, with its lock held) ----

    def _on_meminfo(self, arg, free, total):
        try:
            t = self._torch
            d = self.device.index
            f, tot = t.cuda.mem_get_info(d)
            # PyTorch's cache is free memory to the next PyTorch allocation.
            f += t.cuda.memory_reserved(d) - t.cuda.memory_allocated(d)
            free[0], total[0] = f, tot
            return 0
        except Exception as e:  # reported after the C call returns
            self._error = e
            return _EDEVICE

    def _move(self, aid, target):
        m = self._modules[aid]
        m.to(target)
        if target.type == "cpu" and self.device.type == "cuda":
            # The freed blocks stay in PyTorch's cache otherwise; the budget
            # counts them as free already, but other processes do not.
            self._torch.cuda.empty_cache()

    def _moved(self, aid, target, out):
        """Moves module `aid` to `target` and reports its bytes through `out`;
        an exception is kept for the caller and becomes HR_EDEVICE for C."""
        try:
            self._move(aid, target)
            out[0] = self._bytes[aid]
            return 0
        except Exception as e:
            self._error = e
            out[0] = 0
            return _EDEVICE

    def _on_load(self, aid, budget, loaded, arg):
        return self._moved(aid, self.device, loaded)

    def _on_offload(self, aid, to_free, freed, arg):
        return self._moved(aid, self._offload_device, freed)

    def _on_drop(self, aid, arg):
        pass

    # ---- the API ----

    def _aid(self, m):
        if isinstance(m, str):
            for aid, name in self._names.items():
                if name == m:
                    return aid
            raise KeyError("no module registered as %r; registered: %s"
                           % (m, ", ".join(sorted(self._names.values())) or "none"))
        aid = self._ids.get(id(m))
        if aid is None:
            raise KeyError("module %s is not registered; call register(module, name) first"
                           % type(m).__name__)
        return aid

    def register(self, module, name, variant=None, group=None, pinned=False, priority=0):
        """Registers `module` as name[:variant] and returns its bytes.
        group: a registered module (or its name) whose group it joins: it is
        then always loaded with that one. pinned: never offloaded."""
        if not isinstance(module, self._torch.nn.Module):
            raise TypeError("register needs a torch.nn.Module; got %s" % type(module).__name__)
        if not isinstance(name, str) or not name:
            raise ValueError("name must be a non-empty string; got %r" % (name,))
        nbytes = module_bytes(module)
        if nbytes == 0:
            raise ValueError("module %r has no parameters or buffers: nothing to place" % name)
        with self._lock:
            if id(module) in self._ids:
                raise ValueError("this module is already registered as %r"
                                 % self._names[self._ids[id(module)]])
            parent = self._aid(group) if group is not None else 0
            dev = _module_device(module)
            on_device = (self.device.type != "cpu" and dev is not None and dev == self.device)
            desc = _lib.make(_lib.AssetDesc, name=name.encode(),
                             variant=variant.encode() if variant else None,
                             device_bytes=nbytes, host_bytes=nbytes, parent=parent,
                             pinned=bool(pinned), partial=False, priority=priority,
                             resident_bytes=nbytes if on_device else 0, load=self._cb_load,
                             offload=self._cb_offload, drop=self._cb_drop)
            aid = _c.c_uint32()
            label = name + (":" + variant if variant else "")
            _lib.check(self._lib.hr_asset_register(self._handle(), _c.byref(desc),
                                                   _c.byref(aid)),
                       "register %s" % label)
            aid = aid.value
            self._modules[aid] = module
            self._ids[id(module)] = aid
            self._names[aid] = label
            self._bytes[aid] = nbytes
        return nbytes

    def unregister(self, module):
        with self._lock:
            aid = self._aid(module)
            if self._active.get(aid):
                raise RuntimeError("%s is in use" % self._names[aid])
            _lib.check(self._lib.hr_asset_unregister(self._handle(), aid), "unregister")
            m = self._modules.pop(aid)
            self._ids.pop(id(m), None)
            self._names.pop(aid)
            self._bytes.pop(aid)

    def info(self, module):
        """dict: name, variant, device_bytes, resident_bytes, pinned, uses, group."""
        with self._lock:
            aid = self._aid(module)
            inf = _lib.AssetInfo()
            _lib.check(self._lib.hr_asset_info(self._handle(), aid, _c.byref(inf)), "hr_asset_info")
            return {"name": inf.name.decode(), "variant": inf.variant.decode() or None,
                    "device_bytes": inf.device_bytes, "resident_bytes": inf.resident_bytes,
                    "pinned": inf.pinned, "uses": inf.uses,
                    "group": self._names.get(inf.group)}

    def resident(self):
        """Names of the modules resident on the device now."""
        with self._lock:
            return sorted(self._names[a] for a in self._modules
                          if self.info(self._modules[a])["resident_bytes"] > 0)

    def offloadable_bytes(self, device=None):
        """Bytes the registry could free on its device: resident, unpinned
        modules not inside a use() block."""
        with self._lock:
            total = 0
            for aid, m in self._modules.items():
                if self._active.get(aid):
                    continue
                inf = self.info(m)
                if not inf["pinned"]:
                    total += inf["resident_bytes"]
            return total

    def stats(self):
        st = _lib.ResidencyStats()
        _lib.check(self._lib.hr_residency_stats(self._handle(), _c.byref(st)),
                   "hr_residency_stats")
        return {n: getattr(st, n) for n, _ in _lib.ResidencyStats._fields_}

    def require(self, *modules, working_bytes=0):
        """Makes the modules resident with working_bytes to spare; returns a
        Plan. Raises ResidencyError (what would fit instead) when they cannot
        fit, KeyError for a module that is not registered."""
        _lib.check_int(working_bytes, "working_bytes", 0, (1 << 64) - 1)
        if not modules:
            raise ValueError("use() needs at least one registered module")
        with self._lock:
            aids = [self._aid(m) for m in modules]
            arr = (_c.c_uint32 * len(aids))(*aids)
            plan = _lib.Plan()
            self._error = None
            rc = self._lib.hr_residency_require(self._handle(), arr, len(aids), working_bytes, None,
                                                _c.byref(plan))
            try:
                if self._error is not None:
                    err, self._error = self._error, None
                    raise ResidencyError(rc if rc < 0 else _EDEVICE, "use",
                                         "moving a module failed: %r" % (err,)) from err
                if rc < 0:
                    sugg = [plan.suggestions[i].text.decode()
                            for i in range(min(plan.n_suggestions, 8))]
                    raise ResidencyError(rc, "use", plan.message.decode(), sugg,
                                         plan.short_bytes)
                acts = [(_ACTIONS[a.kind], self._names.get(a.id, "#%d" % a.id), a.bytes)
                        for a in plan.actions[:plan.n_actions]]
                return Plan(acts, plan.bytes_loaded, plan.bytes_offloaded, plan.capacity_bytes,
                            plan.used_bytes, POLICIES[plan.policy])
            finally:
                self._lib.hr_plan_free(_c.byref(plan))

    @contextlib.contextmanager
    def use(self, *modules, working_bytes=0):
        """with registry.use(unet, vae, working_bytes=2 << 30) as plan: ...
        The modules are resident inside the block and are not offloaded for
        select_device's estimate while it runs."""
        plan = self.require(*modules, working_bytes=working_bytes)
        with self._lock:
            aids = [self._aid(m) for m in modules]
            for a in aids:
                self._active[a] = self._active.get(a, 0) + 1
        try:
            yield plan
        finally:
            with self._lock:
                for a in aids:
                    self._active[a] -= 1

    def _handle(self):
        if not getattr(self, "_h", None):
            raise ValueError("the Registry is closed")
        return self._h

    def close(self):
        """Frees the C registry; the modules stay where they are. Any use
        after that raises ValueError."""
        lock = getattr(self, "_lock", None)
        if lock is None:
            return
        with lock:
            if getattr(self, "_h", None):
                self._lib.hr_residency_destroy(self._h)
                self._h = None

    def __enter__(self):
        self._handle()
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass
