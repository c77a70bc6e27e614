"""free_memory(): the one way to free what this process holds, and to say
how much came back.

What runs is the cleanup mode's row of libheadroom's table
(hr_cleanup_modes, the table ``headroom watch --mode`` reads; see
docs/freeing-memory.md), in this order:

1. Unloading, when the row says so (idle_modules, models) or `target` asks
   for it in any mode: the idle modules of every open headroom Registry
   (Registry.release, least valuable first), and, when ComfyUI runs in this
   process, its models through comfy.model_management (LoadedModel
   .model_unload and ComfyUI's own free_memory), never behind ComfyUI's
   back: from outside the running prompt, ComfyUI is asked to unload
   between prompts instead.
2. A pass, repeated up to the row's max_passes while a pass brings back at
   least min_pass_bytes: a garbage collection (collect), then the caches
   (caches): ComfyUI's soft_empty_cache() inside ComfyUI, and PyTorch's
   synchronize / empty_cache / ipc_collect when CUDA is initialised here;
   the cached segments of headroom's pools (those behind PyTorch's
   allocator under install_allocator(), and every open Pool); malloc_trim(0),
   which hands glibc's free heap pages back to the kernel.

The result says what came back as the process's own readings show it: RAM is
its resident set, VRAM its reserved bytes (what the caching allocator holds
from the driver, which is what a release can give back), each read before
and after; never the bytes a step booked.

Without libheadroom the table cannot be read; every mode then releases the
caches alone (which every row of the table does) and the result says so.

The other public names that free are this one underneath:
headroom.comfy.free() and unload_index() call run() with their target; the
broker agent and the pool's reclaimer run the same steps (release_caches(),
and reclaim.release_idle() over Registry.release).
"""

import gc
import threading
import time

from ._c import cleanup, lib as _lib, pool as _pool
from .comfy import models as comfy_models
from .pytorch import allocator, reclaim, vram
from .readings import procfs
from .readings.units import fmt_bytes, parse_size

#: The cleanup modes, gentlest first (the rows of hr_cleanup_modes).
MODES = cleanup.NAMES
#: What free_memory() may be asked to unload beyond its mode.
TARGETS = ("input", "all", "amount")
_U64 = (1 << 64) - 1
_MIB = 1 << 20

_lock = threading.Lock()
_last_done = None  # monotonic time of the last call that ran

check_mode = cleanup.check


class FreeResult:
    """What free_memory() did. Sizes are bytes, read from the process's own
    readings before and after; the vram_* fields are None when this process
    has no CUDA memory to read. unloaded: model_info dicts of the models
    unloaded (ComfyUI's, and a registered module asked for by name);
    still_referenced: names of unloaded models something still holds;
    held_by: {name: paths of what holds it} for those (holders_of());
    in_output_cache: the names among them that ComfyUI's output cache holds;
    left_to_aimdo: names of models comfy-aimdo manages, left to it."""

    __slots__ = ("mode", "target", "skipped", "passes", "actions", "unloaded",
                 "still_referenced", "held_by", "in_output_cache", "left_to_aimdo", "note",
                 "seconds", "ram_before", "ram_after", "vram_before", "vram_after", "vram_note")

    def __init__(self, mode, target=None):
        self.mode, self.target = mode, target
        self.skipped = False
        self.passes = 0
        self.actions, self.unloaded, self.still_referenced, self.left_to_aimdo = [], [], [], []
        self.held_by, self.in_output_cache = {}, []
        self.note = ""
        self.seconds = 0.0
        self.ram_before = self.ram_after = 0
        self.vram_before = self.vram_after = None
        self.vram_note = ""

    @property
    def ram_freed(self):
        return self.ram_before - self.ram_after

    @property
    def vram_freed(self):
        if self.vram_before is None or self.vram_after is None:
            return None
        return self.vram_before - self.vram_after

    def as_dict(self):
        d = {k: getattr(self, k) for k in self.__slots__}
        for k in ("actions", "unloaded", "still_referenced", "in_output_cache", "left_to_aimdo"):
            d[k] = list(d[k])
        d["held_by"] = {k: list(v) for k, v in self.held_by.items()}
        d["ram_freed"] = self.ram_freed
        d["vram_freed"] = self.vram_freed
        return d

    def __str__(self):
        f = fmt_bytes
        head = "free_memory(%s%s)" % (self.mode, ", %s" % self.target if self.target else "")
        if self.skipped:
            return head + ": skipped, within the cooldown"
        n = len(self.unloaded)
        models = "%d model%s unloaded; " % (n, "" if n == 1 else "s") \
            if self.target or n else ""
        ram = "RAM %s -> %s (freed %s)" % (f(self.ram_before), f(self.ram_after),
                                          f(self.ram_freed))
        if self.vram_before is None:
            vram_text = "VRAM n/a (%s)" % self.vram_note
        else:
            vram_text = "VRAM reserved %s -> %s (freed %s)" % (
                f(self.vram_before), f(self.vram_after), f(self.vram_freed))
        lines = ["%s: %s%s; %s; %d pass%s: %s" % (
            head, models, ram, vram_text, self.passes, "" if self.passes == 1 else "es",
            ", ".join(self.actions) or "nothing to do")]
        for m in self.unloaded:
            lines.append("  unloaded %s (%s) from %s: %s on device before" % (
                m["name"], m["class"], m["device"], f(m["loaded_bytes"])))
        for name in self.still_referenced:
            lines.append("  " + self._held_text(name))
        for name in self.left_to_aimdo:
            lines.append("  %s is managed by dynamic VRAM (comfy-aimdo): left to it" % name)
        if self.note:
            lines.append(self.note)
        return "\n".join(lines)

    __repr__ = __str__

    def _held_text(self, name):
        paths = self.held_by.get(name, [])
        head = "%s is still referenced after the unload (its weights stay in RAM)" % name
        if name in self.in_output_cache:
            return (head + ": ComfyUI's output cache keeps the loader's output (%s); ComfyUI's "
                    "free_memory flag (POST /free {\"free_memory\": true}, or this node with "
                    "when = after this prompt) resets the cache and drops the cache's reference"
                    % "; ".join(paths))
        if paths:
            return (head + ": held by %s; ComfyUI's output cache does not hold it: drop that "
                    "reference to free it" % "; ".join(paths))
        return head + ", by nothing Python can see (held from C++ or by the interpreter)"


def malloc_trim():
    """Calls malloc_trim(0) and returns a label of how it was called, or None
    when it is not available (a libc other than glibc). Through libheadroom's
    hr_malloc_trim() when the library is there, else the C library's own."""
    if _lib.available() and _lib.has("hr_malloc_trim"):
        _lib.load().hr_malloc_trim()
        return "malloc_trim(0) via libheadroom"
    fn = getattr(_lib.libc(), "malloc_trim", None)  # the process's, matching its malloc
    if fn is None:
        return None
    fn(0)
    return "malloc_trim(0) via libc"


def release_caches(actions):
    """The caches step of every mode: ComfyUI's soft_empty_cache() when
    ComfyUI runs here, PyTorch's synchronize / empty_cache / ipc_collect when
    CUDA is initialised; the cached segments of headroom's pools; then
    malloc_trim(0). Appends what it did to `actions`; returns {CUDA device
    index: reserved bytes that came back}, read from PyTorch's (or the
    pools') counters before and after."""
    before = vram.by_device()
    if comfy_models.running():  # its own device's cache (CUDA, MPS, XPU)
        comfy_models.soft_empty_cache(actions)
    torch = vram.torch_cuda()
    if torch is not None:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.ipc_collect()
        actions.append("torch.cuda synchronize/empty_cache/ipc_collect")
    if allocator.installed():
        try:
            got = sum(_pool.release_cached(h) for h in allocator.torch_pools().values())
            actions.append("headroom pool release (%s)" % fmt_bytes(got))
        except (allocator.AllocatorError, _lib.HeadroomError) as e:
            actions.append("headroom pool release unavailable: %s" % e)
    pools = _pool.open_pools()
    if pools:
        got = sum(p.release_cached() for p in pools)
        actions.append("headroom Pool release (%d pool%s, %s)" % (
            len(pools), "" if len(pools) == 1 else "s", fmt_bytes(got)))
    how = malloc_trim()
    if how:
        actions.append(how)
    after = vram.by_device()
    return {d: max(0, res - after.get(d, (0, 0))[1]) for d, (_a, res) in before.items()}


def _pass(row, actions):
    """One pass of the mode's row (None without the library: caches alone)."""
    if row is not None and row["collect"]:
        n = gc.collect()
        actions.append("gc.collect() (%d objects)" % n)
    if row is None or row["caches"]:
        release_caches(actions)


def _offload_idle(res, nbytes):
    """Offloads idle modules of every open registry until `nbytes` moved;
    returns the bytes moved, as the registries count them."""
    regs = reclaim.registries()
    if not regs:
        return 0
    errors = []
    got = reclaim.release_idle(nbytes, regs, errors)
    res.actions.append("offloaded idle modules of %d registr%s (%s moved)" % (
        len(regs), "y" if len(regs) == 1 else "ies", fmt_bytes(got)))
    res.actions.extend("a registry could not offload: %r" % e for e in errors)
    return got


def _comfy_unload(res, amount, in_prompt, asked):
    """ComfyUI's least recently used models (all when `amount` is None):
    now, or, from outside the running prompt, between prompts. `asked`: the
    caller named a target (then a running prompt was refused already)."""
    if not in_prompt and not asked and comfy_models.running_prompts():
        res.actions.append(comfy_models.request_between_prompts(unload_models=True))
        return []
    return comfy_models.unload_lru(amount, res)


def _unload_for(target, model, amount, in_prompt):
    """The unloading step of a call: a function of the result that unloads
    and returns (name, weak reference) pairs for the still-referenced check."""
    if target == "input":
        reg = reclaim.registry_of(model)
        if reg is not None:
            return lambda res, row: _offload_module(res, reg, model)
        return lambda res, row: comfy_models.unload_patcher(model, res)

    def unload(res, row):
        comfy = comfy_models.running()
        if target == "amount":
            got = _offload_idle(res, amount)
            if comfy and got < amount:
                return _comfy_unload(res, amount - got, in_prompt, True)
            return []
        everything = target == "all"
        if everything or (row is not None and row["idle_modules"]):
            _offload_idle(res, _U64)
        if comfy and (everything or (row is not None and row["models"])):
            return _comfy_unload(res, None, in_prompt, everything)
        return []

    return unload


def _offload_module(res, reg, module):
    info = reg.info(module)
    label = info["name"] + (":" + info["variant"] if info["variant"] else "")
    moved = reg.offload(module)
    res.unloaded.append({"name": label, "class": type(module).__name__,
                         "device": str(reg.device), "loaded_bytes": moved})
    return []


def _check_target(target, model, amount, in_prompt):
    """Checks what free_memory() was asked to unload; returns the amount in
    bytes (None unless target is "amount")."""
    if target is not None and target not in TARGETS:
        raise ValueError("target must be None (the mode's) or one of %s; got %r"
                         % (", ".join(TARGETS), target))
    if target == "input":
        if reclaim.registry_of(model) is None:
            if not comfy_models.is_patcher(model):
                raise comfy_models.NotAPatcher(
                    "model must be a module registered in an open headroom Registry or a "
                    "ComfyUI MODEL (a comfy.model_patcher.ModelPatcher); got %s"
                    % type(model).__name__)
            comfy_models.need()
            if not in_prompt:
                comfy_models.check_idle("unload models")
        return None
    if target is not None and not in_prompt and comfy_models.running():
        comfy_models.check_idle("unload models")
    return parse_size(amount) if target == "amount" else None


def free_memory(mode="balanced", cooldown=0.0, max_passes=None, *, target=None, model=None,
                amount=None, in_prompt=False):
    """Frees what this process can free and returns a FreeResult.

    mode: "conservative", "balanced" or "aggressive"; what each does is its
    row of libheadroom's cleanup mode table (module docstring;
    docs/freeing-memory.md). cooldown: seconds; a call within `cooldown` of
    the last call that ran returns at once with .skipped set, which keeps
    per-frame calls cheap. max_passes: at most this many passes (None: the
    mode's).
    target: what to unload beyond the mode, in any mode: "input" (`model`: a
    module registered in an open Registry, offloaded; or a ComfyUI
    ModelPatcher, unloaded with its auxiliary models), "all" (every idle
    registered module, every ComfyUI model), "amount" (`amount` bytes, or
    text like "2G": idle registered modules, then ComfyUI's least recently
    used models until that much more is free on their devices).
    in_prompt: True when the caller is a node of ComfyUI's running prompt:
    models may be unloaded at once (ComfyUI reloads what a later node
    needs). From outside it, while a prompt runs, a target raises
    PromptRunning and a mode that unloads models asks ComfyUI to unload
    between prompts instead.
    Raises ValueError on a wrong mode, target, amount, negative cooldown or
    max_passes < 1; NotAPatcher for a `model` that is neither; ComfyAbsent
    for a ComfyUI model outside ComfyUI."""
    check_mode(mode)
    amount = _check_target(target, model, amount, in_prompt)
    return run(mode, _unload_for(target, model, amount, in_prompt), target, cooldown,
               max_passes)


def _mode_row(res):
    """The mode's row, or None (with a note) without the library's table."""
    try:
        return cleanup.mode(res.mode)
    except _lib.HeadroomError as e:
        res.note = ("the cleanup mode table is unavailable (%s): only caches were released, "
                    "as every mode does" % e)
        return None


def _skip_within(cooldown):
    """True when the last call ran less than `cooldown` seconds ago; else
    marks this call as the last one that ran."""
    global _last_done
    now = time.monotonic()
    with _lock:
        if cooldown > 0 and _last_done is not None and now - _last_done < cooldown:
            return True
        _last_done = now
    return False


def run(mode, unload=None, target=None, cooldown=0.0, max_passes=None):
    """The mechanism under free_memory(), for the callers that choose what to
    unload themselves (headroom.comfy.unload_index: a model by its place in
    ComfyUI's list, which no frame may hold while it goes). `unload(res,
    row)` unloads, adding to `res`, and returns (name, weak reference)
    pairs; `target` labels the result. Returns a FreeResult."""
    check_mode(mode)
    if cooldown is None or cooldown < 0:
        raise ValueError("cooldown must be >= 0 seconds; got %r" % (cooldown,))
    if max_passes is not None and max_passes < 1:
        raise ValueError("max_passes must be >= 1; got %r" % (max_passes,))
    res = FreeResult(mode, target)
    if _skip_within(cooldown):
        res.skipped = True
        res.ram_before = res.ram_after = procfs.rss_bytes()
        return res
    t0 = time.perf_counter()
    row = _mode_row(res)
    res.ram_before = procfs.rss_bytes()
    res.vram_before = vram.process_bytes()[1]
    if res.vram_before is None:
        res.vram_note = vram.cuda_status()
    refs = unload(res, row) if unload is not None else []
    _passes(res, row, max_passes)
    if refs:
        gc.collect()  # so that only a real holder keeps an unloaded model
        res.still_referenced = [name for name, r in refs if r() is not None]
        for name, r in refs:
            if r() is not None:
                res.held_by[name] = comfy_models.holders_of(r())
        res.in_output_cache = [n for n, p in res.held_by.items()
                               if comfy_models.in_output_cache(p)]
        del refs
    res.ram_after, res.vram_after = procfs.rss_bytes(), vram.process_bytes()[1]
    res.seconds = time.perf_counter() - t0
    if comfy_models.running() and (target or res.unloaded):
        comfy_models.record("free", str(res).split("\n")[0])
    return res


def _passes(res, row, max_passes):
    """Runs the mode's pass, again while a pass brings back enough."""
    most = row["max_passes"] if row is not None else 1
    if max_passes is not None:
        most = min(most, max_passes)
    least = row["min_pass_bytes"] if row is not None else _MIB
    ram, vram_now = procfs.rss_bytes(), vram.process_bytes()[1]
    for _ in range(most):
        acts = []
        _pass(row, acts)
        res.passes += 1
        if res.passes == 1:  # later passes repeat the first one's actions
            res.actions.extend(acts)
        new_ram, new_vram = procfs.rss_bytes(), vram.process_bytes()[1]
        got = (ram - new_ram) + ((vram_now or 0) - (new_vram or 0))
        ram, vram_now = new_ram, new_vram
        if got < least:
            break
