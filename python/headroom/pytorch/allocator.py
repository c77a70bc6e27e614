"""headroom's pool as PyTorch's CUDA allocator.

install_allocator() hands libheadroom's two entry points (hr_torch_malloc,
hr_torch_free) to torch.cuda.memory.CUDAPluggableAllocator and makes it the
current allocator. PyTorch allows that only before its CUDA allocator has
been used, so it must run before the first CUDA tensor; after that, and on a
machine without CUDA or with a PyTorch older than 2.0 (which has no pluggable
allocators), it raises AllocatorError saying which of these it is.

Out of memory: PyTorch's pluggable allocator does not check what the
allocation function returns, so a NULL from hr_torch_malloc would become a
tensor at address 0 and the first kernel on it an illegal memory access that
ends the CUDA context. install_allocator() therefore hands libheadroom the
address of libc10's c10::detail::torchCheckFail (hr_torch_set_oom_raise), so
a failed allocation throws c10::Error instead and Python sees a RuntimeError
whose message starts "CUDA out of memory.". It is a RuntimeError, not
torch.OutOfMemoryError: libc10 exports no plain function that throws the
latter.

alloc_conf(**knobs) writes a PYTORCH_CUDA_ALLOC_CONF string in PyTorch's
syntax, checked by the pool's own parser.

This module does not import torch at import time: ``import headroom`` stays
cheap and works without torch. ``headroom.torch`` is an alias of this module
(the package names no module torch, which would shadow PyTorch's).
"""

import ctypes
import os
import sys
import warnings

from .._c import lib as _lib, pool

_installed = False
_when_installed = []  # callables run once the allocator is installed


class AllocatorError(RuntimeError):
    """install_allocator() cannot do what was asked; the message says why and what to do."""


def installed():
    """True when headroom's pool is PyTorch's CUDA allocator in this process."""
    return _installed


def when_installed(fn):
    """Adds fn() to what install_allocator() runs once it has installed the
    allocator (the registries attach to the pools behind it); returns fn."""
    _when_installed.append(fn)
    return fn


def _check_conf(conf):
    if conf is None:
        return None
    if not isinstance(conf, str):
        raise TypeError("conf must be a string like 'max_split_size_mb:128'; got %r" % (conf,))
    try:
        pool.parse_config(conf)
    except _lib.HeadroomError as e:
        if e.code == -7:  # no pool in this library
            raise AllocatorError(e.detail) from None
        raise
    return conf


#: c10::detail::torchCheckFail(const char *func, const char *file, uint32_t line,
#: const char *msg), mangled: the libc10 function that throws c10::Error.
CHECK_FAIL_SYMBOL = "_ZN3c106detail14torchCheckFailEPKcS2_jS2_"


def _loaded_libc10():
    """Paths of the libc10 files mapped into this process (/proc/self/maps)."""
    found = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split(None, 5)
                if len(parts) == 6:
                    path = parts[5].strip()
                    if os.path.basename(path).startswith("libc10.so") and path not in found:
                        found.append(path)
    except OSError:
        pass
    return found


def find_check_fail(torch):
    """The address of torchCheckFail in the libc10 that `torch` uses, and the
    file it came from: (address, path). Looks in torch/lib/libc10.so (where
    pip, conda and Debian put it; ``import torch`` has loaded it, so ctypes
    gets the same handle), then in every libc10 already mapped into the
    process. Raises AllocatorError naming every place it looked."""
    tried = []
    places = []
    base = os.path.dirname(getattr(torch, "__file__", None) or "")
    if base:
        places.append(os.path.join(base, "lib", "libc10.so"))
    places += [p for p in _loaded_libc10() if p not in places]
    for path in places:
        if not os.path.exists(path):
            tried.append("%s (no such file)" % path)
            continue
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            tried.append("%s (%s)" % (path, e))
            continue
        fn = getattr(lib, CHECK_FAIL_SYMBOL, None)
        if fn is None:
            tried.append("%s (no %s)" % (path, CHECK_FAIL_SYMBOL))
            continue
        return ctypes.cast(fn, ctypes.c_void_p).value, path
    raise AllocatorError(
        "cannot find c10::detail::torchCheckFail (%s) in PyTorch's libc10; looked in: %s. "
        "Without it an out-of-memory in headroom's pool would reach PyTorch as a NULL pointer "
        "and crash the process with an illegal memory access instead of raising; pass "
        "require_oom_raise=False to install_allocator() to accept that"
        % (CHECK_FAIL_SYMBOL, "; ".join(tried) or "nowhere (torch has no __file__ and no "
                                                   "libc10 is loaded)"))


def set_oom_raise(lib, address):
    """Gives libheadroom the function its PyTorch entry point calls on failure
    (hr_torch_set_oom_raise); None removes it. Raises AllocatorError when the
    library is too old to have the setter."""
    fn = getattr(lib, "hr_torch_set_oom_raise", None)
    if fn is None:
        raise AllocatorError("this libheadroom (%s) has no hr_torch_set_oom_raise, so an "
                             "out-of-memory would crash PyTorch instead of raising; rebuild it"
                             % _lib.loaded_path())
    fn(address)


def install_allocator(conf=None, require_oom_raise=True):
    """Makes libheadroom's pool PyTorch's CUDA allocator.

    conf: pool configuration in PYTORCH_CUDA_ALLOC_CONF syntax, checked here
    and given to the pool through HEADROOM_ALLOC_CONF. Call it right after
    ``import torch``, before anything touches CUDA. Raises AllocatorError when
    torch is missing or too old, when there is no CUDA device, when the
    library has no pool, or when it is too late; HeadroomError on a bad conf.

    require_oom_raise: the pool reports a failed allocation by calling
    libc10's torchCheckFail, which throws, so PyTorch raises RuntimeError
    ("CUDA out of memory. ..."). PyTorch does not check the pointer an
    allocator returns: without the hook a failure returns NULL and the next
    kernel writes to address 0, an illegal memory access that kills the CUDA
    context and usually the process. So when the function cannot be found
    this raises AllocatorError, unless require_oom_raise=False, which
    installs the allocator anyway and accepts that crash.

    Every open headroom.Registry on a CUDA device becomes a reclaimer of that
    device's pool (when the pool exists: at once, else at the registry's
    next use()), so an allocation that fails offloads idle registered
    modules and is retried inside the pool's out-of-memory path; allocations
    made inside ``with headroom.tag("unet"):`` are counted under that tag in
    the out-of-memory message."""
    global _installed
    if _installed:
        return
    _check_conf(conf)
    try:
        import torch
    except ImportError as e:
        raise AllocatorError("install_allocator needs PyTorch: %s" % e) from None
    mem = getattr(torch.cuda, "memory", None)
    if mem is None or not hasattr(mem, "CUDAPluggableAllocator"):
        raise AllocatorError(
            "PyTorch %s has no torch.cuda.memory.CUDAPluggableAllocator (it arrived in "
            "PyTorch 2.0); headroom's pool cannot be its allocator" % torch.__version__)
    if not torch.cuda.is_available():
        raise AllocatorError("no CUDA device: torch.cuda.is_available() is False, so there is "
                             "no CUDA allocator to replace")
    if torch.cuda.is_initialized():
        raise AllocatorError(
            "too late: CUDA is already initialised in this process, so PyTorch's own allocator "
            "may hold memory and cannot be swapped; call headroom.torch.install_allocator() "
            "right after 'import torch', before the first CUDA tensor")
    lib = _lib.load()
    if not hasattr(lib, "hr_torch_malloc"):
        raise AllocatorError("this libheadroom (%s) has no pool: hr_torch_malloc is missing"
                             % _lib.loaded_path())
    hook = None
    try:
        hook, _ = find_check_fail(torch)
        set_oom_raise(lib, hook)
    except AllocatorError:
        if require_oom_raise:
            raise
        hook = None
    if conf is not None:
        os.environ["HEADROOM_ALLOC_CONF"] = conf
    alloc = mem.CUDAPluggableAllocator(_lib.loaded_path(), "hr_torch_malloc", "hr_torch_free")
    try:
        mem.change_current_allocator(alloc)
    except RuntimeError as e:
        if hook:
            set_oom_raise(lib, None)
        raise AllocatorError("too late: PyTorch refused to change its allocator (%s); call "
                             "headroom.torch.install_allocator() before the first CUDA tensor"
                             % e) from None
    _installed = True
    # Every Registry on a CUDA device becomes the reclaimer of that device's
    # pool: now for pools that exist, and at its next use() for the others
    # (a device's pool is made by its first allocation).
    for fn in _when_installed:
        fn()


def torch_pools():
    """{device: handle} of the pools behind hr_torch_malloc, one per device
    that has allocated. Raises AllocatorError when the library cannot say."""
    try:
        return pool.torch_pools()
    except _lib.HeadroomError as e:
        if e.code == -7:
            raise AllocatorError(e.detail) from None
        raise


def pool_stats(device=None):
    """The pool's statistics as a dict named like torch.cuda.memory_stats()
    ("allocated_bytes.all.current", ...), for one device or (None) summed
    over devices. PyTorch's own memory_stats() does not see a pluggable
    allocator. Raises AllocatorError when the allocator is not installed."""
    if not _installed:
        raise AllocatorError("headroom's allocator is not installed in this process; call "
                             "headroom.torch.install_allocator() first")
    pools = torch_pools()
    if device is not None:
        if device not in pools:
            raise AllocatorError("no pool on device %r: nothing was allocated there" % (device,))
        return pool.read_stats(pools[device])
    total = {}
    for h in pools.values():
        for k, v in pool.read_stats(h).items():
            # Peaks of different devices do not add up to a peak, but for one
            # device (the common case) the sum is exact.
            total[k] = total.get(k, 0) + v
    return total


# ---- PYTORCH_CUDA_ALLOC_CONF ----

#: PyTorch's own keys that alloc_conf() writes, in PyTorch's order.
ALLOC_CONF_KEYS = ("backend", "max_split_size_mb", "garbage_collection_threshold",
                   "expandable_segments", "roundup_power2_divisions",
                   "pinned_use_cuda_host_register", "pinned_num_register_threads",
                   "release_lock_on_cudamalloc")
_BACKENDS = ("native", "cudaMallocAsync")
_BOOL_KEYS = ("expandable_segments", "pinned_use_cuda_host_register",
              "release_lock_on_cudamalloc")


class AllocConfWarning(UserWarning):
    """PYTORCH_CUDA_ALLOC_CONF was set after CUDA was initialised: PyTorch read
    it already, so the new value has no effect in this process."""


def _conf_value(key, v):
    """One knob in PyTorch's syntax; TypeError or ValueError naming it."""
    if key in _BOOL_KEYS:
        if not isinstance(v, bool):
            raise TypeError("%s must be True or False; got %r" % (key, v))
        return "True" if v else "False"
    if key == "backend":
        if v not in _BACKENDS:
            raise ValueError("backend must be one of %s; got %r" % (", ".join(_BACKENDS), v))
        return v
    if key == "garbage_collection_threshold":
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError("garbage_collection_threshold must be a number in (0.0, 1.0); got %r"
                            % (v,))
        return repr(float(v))
    if key == "roundup_power2_divisions":
        if isinstance(v, dict):
            parts = []
            for k, d in v.items():
                if k != ">" and (isinstance(k, bool) or not isinstance(k, int)):
                    raise TypeError("roundup_power2_divisions: an interval is an integer of MiB "
                                    "or '>'; got %r" % (k,))
                if isinstance(d, bool) or not isinstance(d, int):
                    raise TypeError("roundup_power2_divisions: divisions of %r must be an "
                                    "integer; got %r" % (k, d))
                parts.append("%s:%d" % (k, d))
            return "[" + ",".join(parts) + "]"
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError("roundup_power2_divisions must be an integer or a dict "
                            "{interval_mb: divisions, '>': divisions}; got %r" % (v,))
        return str(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError("%s must be an integer; got %r" % (key, v))
    return str(v)


def alloc_conf(apply=False, **knobs):
    """A PYTORCH_CUDA_ALLOC_CONF string in PyTorch's syntax from knobs:
    alloc_conf(expandable_segments=True, garbage_collection_threshold=0.8,
    max_split_size_mb=512, roundup_power2_divisions={256: 1, 512: 2, ">": 8}).

    The values are checked with the pool's own parser (hr_pool_config_parse),
    so the ranges are the pool's: an unknown knob or a value out of range is
    a ValueError (a wrong type a TypeError) naming it. apply=True also sets
    os.environ["PYTORCH_CUDA_ALLOC_CONF"], and warns (AllocConfWarning) when
    CUDA is already initialised in this process, since PyTorch has then
    read it already and the new value has no effect."""
    if not isinstance(apply, bool):
        raise TypeError("apply must be True or False; got %r" % (apply,))
    unknown = sorted(set(knobs) - set(ALLOC_CONF_KEYS))
    if unknown:
        raise ValueError("unknown PYTORCH_CUDA_ALLOC_CONF knob %s; PyTorch's knobs are: %s"
                         % (", ".join(repr(k) for k in unknown), ", ".join(ALLOC_CONF_KEYS)))
    parts = [(k, _conf_value(k, knobs[k])) for k in ALLOC_CONF_KEYS if k in knobs]
    text = ",".join("%s:%s" % kv for kv in parts)
    # The pool's parser holds the ranges; backend is PyTorch's choice of
    # allocator, which the pool (itself an allocator) refuses as a key.
    checked = ",".join("%s:%s" % kv for kv in parts if kv[0] != "backend")
    try:
        pool.parse_config(checked)
    except _lib.HeadroomError as e:
        if e.code == -7:
            raise AllocatorError(e.detail) from None
        raise ValueError("PYTORCH_CUDA_ALLOC_CONF %r: %s" % (text, e.detail)) from None
    if apply:
        _warn_if_late("PYTORCH_CUDA_ALLOC_CONF")
        os.environ["PYTORCH_CUDA_ALLOC_CONF"] = text
    return text


def _warn_if_late(name):
    torch = sys.modules.get("torch")
    if torch is None:
        return
    try:
        late = torch.cuda.is_initialized()
    except Exception:  # noqa: BLE001 - a torch without CUDA support
        late = False
    if late:
        warnings.warn("%s is set after CUDA was initialised in this process: PyTorch has read it "
                      "already, so the new value has no effect here; set it before the first "
                      "CUDA call (or in the environment of a new process)" % name,
                      AllocConfWarning, stacklevel=3)
