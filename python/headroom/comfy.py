"""headroom.comfy: free and place models through ComfyUI's own model management.

Inside ComfyUI, models live in comfy.model_management.current_loaded_models (a
list of LoadedModel, most recently used first), each holding a ModelPatcher.
Unloading one there (LoadedModel.model_unload, or free_memory, which unloads
least recently used models until enough is free) moves its weights to the
offload device and lets ComfyUI reload it when a node needs it again. This
module does its freeing through those functions, never behind ComfyUI's back,
then releases caches (soft_empty_cache, gc.collect(), malloc_trim) and says
what came back.

A model can only give its memory back to the host when nothing else holds it.
ComfyUI's output cache keeps the output of every node of the last prompt, so a
loader's MODEL outlives its unload; the report names each such model and what
would drop it (ComfyUI's free_memory flag, which resets the cache between
prompts).

Freeing from outside the prompt that runs (an HTTP route, the smart manager's
thread) must not pull a model from under a running node: while a prompt runs,
such callers either are refused (PromptRunning) or set the flags ComfyUI's own
POST /free sets, which the prompt worker acts on between prompts.

Outside ComfyUI every function says that ComfyUI's model management is absent
(ComfyAbsent, or a report saying so) instead of failing in odd ways.

Where comfy-aimdo's dynamic VRAM manages a model, its weights are faulted in
and evicted by aimdo itself: the views report it and the freeing functions
leave such models to aimdo.
"""

import contextlib
import gc
import sys
import threading
import time
import weakref

from . import _readings, memory

#: How much a size may be written with: bytes, or a number with one of these.
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20,
          "mb": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30,
          "t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40}
TARGETS = ("input", "all", "amount")


class ComfyAbsent(RuntimeError):
    """ComfyUI's model management cannot be imported (a plain script)."""


class PromptRunning(RuntimeError):
    """An unload was asked for from outside the running prompt."""


class NotAPatcher(TypeError):
    """A value that should be a ComfyUI ModelPatcher is not one."""


_events_lock = threading.Lock()
_events = []  # (unix time, kind, text), newest last, at most 100


def record(kind, text):
    """Adds an event (kind: "free", "critical", "warning", "leak", "oom",
    "refused") to the list the panel and /headroom/snapshot show."""
    with _events_lock:
        _events.append((time.time(), kind, text))
        del _events[:-100]


def events():
    """The recorded events as dicts (time, kind, text), oldest first."""
    with _events_lock:
        return [{"time": t, "kind": k, "text": x} for t, k, x in _events]


def _import(name):
    try:
        __import__(name)
    except Exception as e:  # ImportError, or a ComfyUI that fails to start outside its main
        return None, "%s: %s" % (type(e).__name__, e)
    return sys.modules[name], ""


def model_management():
    """comfy.model_management, or None when it cannot be imported."""
    return _import("comfy.model_management")[0]


def absent_reason():
    """Why ComfyUI's model management is absent, in words ("" when present)."""
    mm, why = _import("comfy.model_management")
    if mm is not None:
        return ""
    return "ComfyUI's model management is absent (import comfy.model_management: %s)" % why


def available():
    return model_management() is not None


def _need():
    mm = model_management()
    if mm is None:
        raise ComfyAbsent(absent_reason())
    return mm


def parse_size(value, label="amount"):
    """Bytes from an int, a float, or text such as "512M", "1.5 GiB", "2048".
    Raises ValueError naming `label` for anything else or a negative size."""
    if isinstance(value, bool):
        raise ValueError("%s must be a size (bytes, or text like 512M or 1.5G); got %r"
                         % (label, value))
    if isinstance(value, (int, float)):
        n = float(value)
    elif isinstance(value, str):
        s = value.strip().lower().replace(" ", "")
        num = s.rstrip("kmgtibB")
        unit = s[len(num):]
        try:
            n = float(num) * _UNITS[unit]
        except (ValueError, KeyError):
            raise ValueError("%s must be a size (bytes, or text like 512M or 1.5G); got %r"
                             % (label, value)) from None
    else:
        raise ValueError("%s must be a size (bytes, or text like 512M or 1.5G); got %r"
                         % (label, value))
    if n != n or n < 0 or n == float("inf"):
        raise ValueError("%s must be a size >= 0; got %r" % (label, value))
    return int(n)


def is_patcher(obj):
    """True when `obj` is a ComfyUI ModelPatcher (or, outside ComfyUI, has
    the methods of one that this module calls)."""
    mp, _ = _import("comfy.model_patcher")
    cls = getattr(mp, "ModelPatcher", None) if mp is not None else None
    if cls is not None:
        return isinstance(obj, cls)
    return all(hasattr(obj, a) for a in ("model", "model_size", "loaded_size", "load_device",
                                         "offload_device", "set_additional_models"))


def check_patcher(obj, label="model"):
    if not is_patcher(obj):
        raise NotAPatcher("%s must be a ComfyUI MODEL (a comfy.model_patcher.ModelPatcher); got "
                          "%s" % (label, type(obj).__name__))
    return obj


# --- what is loaded -----------------------------------------------------------------------


def _dynamic(patcher):
    f = getattr(patcher, "is_dynamic", None)
    if f is None:
        return False
    try:
        return bool(f())
    except Exception:
        return False


def model_name(patcher):
    """A label for a patcher: the name given to register_auxiliary, else the
    model config's class (SDXL, Flux...) or the module's class."""
    p, seen = patcher, 0
    while p is not None and seen < 16:  # clones keep the name through .parent
        name = getattr(p, "headroom_name", None)
        if name:
            return name
        p, seen = getattr(p, "parent", None), seen + 1
    inner = getattr(patcher, "model", None)
    cfg = getattr(inner, "model_config", None)
    if cfg is not None:
        return type(cfg).__name__
    return type(inner).__name__


def model_info(lm, index=None):
    """One LoadedModel as a dict: index, class, name, total_bytes,
    loaded_bytes (on its device), offloaded_bytes, device, offload_device,
    dynamic (comfy-aimdo manages it), currently_used; None for a dead entry."""
    p = lm.model
    if p is None or getattr(p, "model", None) is None:
        return None
    total = int(p.model_size())
    loaded = int(p.loaded_size())
    return {"index": index, "class": type(p.model).__name__, "name": model_name(p),
            "total_bytes": total, "loaded_bytes": loaded,
            "offloaded_bytes": max(0, total - loaded), "device": str(lm.device),
            "offload_device": str(getattr(p, "offload_device", "")),
            "dynamic": _dynamic(p), "currently_used": bool(getattr(lm, "currently_used", False)),
            "auxiliary_of": getattr(p, "headroom_parent", None)}


def loaded_models():
    """current_loaded_models as a list of model_info dicts, most recently used
    first. Raises ComfyAbsent outside ComfyUI."""
    mm = _need()
    out = []
    for i, lm in enumerate(list(mm.current_loaded_models)):
        info = model_info(lm, i)
        if info is not None:
            out.append(info)
    return out


def dynamic_vram():
    """comfy-aimdo's state: {"enabled", "usage_bytes", "note"}. enabled is
    False where ComfyUI has no dynamic VRAM (or it is off)."""
    mem, _ = _import("comfy.memory_management")
    on = bool(getattr(mem, "aimdo_enabled", False)) if mem is not None else False
    if not on:
        return {"enabled": False, "usage_bytes": None,
                "note": "dynamic VRAM (comfy-aimdo) not active in this ComfyUI"}
    ctl, why = _import("comfy_aimdo.control")
    usage = None
    note = "comfy-aimdo manages dynamic models: it faults weights in and evicts them itself"
    if ctl is not None:
        try:
            usage = int(ctl.get_total_vram_usage())
        except Exception as e:
            note += "; its usage could not be read (%s)" % e
    else:
        note += "; comfy_aimdo.control not importable (%s)" % why
    return {"enabled": True, "usage_bytes": usage, "note": note}


def models_text():
    """The loaded models in a few lines, for the nodes' reports."""
    if not available():
        return absent_reason()
    f = _readings.fmt_bytes
    ms = loaded_models()
    lines = ["ComfyUI loaded models: %d" % len(ms)]
    for m in ms:
        lines.append("  %s (%s) on %s: %s, %s on device, %s offloaded%s%s" % (
            m["name"], m["class"], m["device"], f(m["total_bytes"]), f(m["loaded_bytes"]),
            f(m["offloaded_bytes"]), ", dynamic VRAM (comfy-aimdo)" if m["dynamic"] else "",
            ", auxiliary of %s" % m["auxiliary_of"] if m["auxiliary_of"] else ""))
    dv = dynamic_vram()
    if dv["enabled"]:
        lines.append("dynamic VRAM: %s in use by comfy-aimdo; %s" % (f(dv["usage_bytes"]),
                                                                      dv["note"]))
    return "\n".join(lines)


# --- the prompt queue ---------------------------------------------------------------------


def _prompt_queue():
    srv = sys.modules.get("server")
    inst = getattr(getattr(srv, "PromptServer", None), "instance", None)
    return getattr(inst, "prompt_queue", None)


def running_prompts():
    """Ids of the prompts ComfyUI is running now ([] when idle or when there
    is no server, as in a script)."""
    q = _prompt_queue()
    if q is None:
        return []
    running = getattr(q, "currently_running", {}) or {}
    ids = []
    for item in list(running.values()):
        try:
            ids.append(str(item[1]))
        except Exception:
            ids.append("?")
    return ids


def check_idle(what):
    """Raises PromptRunning when a prompt is running: `what` would pull a
    model from under one of its nodes."""
    ids = running_prompts()
    if ids:
        raise PromptRunning(
            "cannot %s while a prompt is running (%s): it would pull models from under its "
            "nodes; wait for it to finish, or ask for it after the prompt (ComfyUI's "
            "unload_models / free_memory flags, as POST /free sets them)" % (what, ", ".join(ids)))


def request_between_prompts(unload_models=True, free_memory=False):
    """Sets the flags ComfyUI's POST /free sets; the prompt worker unloads
    all models (and with free_memory also resets its output cache) after the
    running prompt, or at once when idle. Returns what was asked, in words.
    Raises ComfyAbsent when there is no prompt queue."""
    q = _prompt_queue()
    if q is None:
        raise ComfyAbsent("ComfyUI's prompt queue is absent (no server.PromptServer.instance)")
    asked = []
    if unload_models:
        q.set_flag("unload_models", True)
        asked.append("unload_models")
    if free_memory:
        q.set_flag("free_memory", True)
        asked.append("free_memory")
    text = "asked ComfyUI to act between prompts: %s" % ", ".join(asked or ["nothing"])
    record("free", text)
    return text


# --- freeing ------------------------------------------------------------------------------


class ComfyFreeResult(memory.Freed):
    """What free() did. Sizes are bytes; vram_* are None without CUDA."""

    def __init__(self, target):
        self.target = target
        self.unloaded = []  # model_info dicts of the models unloaded
        self.still_referenced = []  # names of unloaded models something still holds
        self.left_to_aimdo = []  # names of dynamic models left to comfy-aimdo
        self.actions = []
        self.ram_before = self.ram_after = 0
        self.vram_before = self.vram_after = None
        self.note = ""

    def as_dict(self):
        return {"target": self.target, "unloaded": list(self.unloaded),
                "still_referenced": list(self.still_referenced),
                "left_to_aimdo": list(self.left_to_aimdo), "actions": list(self.actions),
                "ram_before": self.ram_before, "ram_after": self.ram_after,
                "ram_freed": self.ram_freed, "vram_before": self.vram_before,
                "vram_after": self.vram_after, "vram_freed": self.vram_freed, "note": self.note}

    def __str__(self):
        f = _readings.fmt_bytes
        lines = ["ComfyUI free (%s): %d model%s unloaded" % (
            self.target, len(self.unloaded), "" if len(self.unloaded) == 1 else "s")]
        for m in self.unloaded:
            lines.append("  unloaded %s (%s) from %s: %s on device before" % (
                m["name"], m["class"], m["device"], f(m["loaded_bytes"])))
        lines.append("RAM (RSS) %s -> %s (freed %s); VRAM %s" % (
            f(self.ram_before), f(self.ram_after), f(self.ram_freed),
            "reserved %s -> %s (freed %s)" % (f(self.vram_before), f(self.vram_after),
                                               f(self.vram_freed))
            if self.vram_before is not None else "n/a (%s)" % _readings.cuda_status()))
        for name in self.still_referenced:
            lines.append("  %s is still referenced after the unload (its weights stay in RAM): "
                         "ComfyUI's output cache keeps the loader's output; ComfyUI's "
                         "free_memory flag (POST /free {\"free_memory\": true}, or this node "
                         "with when = after this prompt) resets the cache and drops it" % name)
        for name in self.left_to_aimdo:
            lines.append("  %s is managed by dynamic VRAM (comfy-aimdo): left to it" % name)
        if self.note:
            lines.append(self.note)
        lines.append("then: " + ", ".join(self.actions))
        return "\n".join(lines)

    __repr__ = __str__


def _entries_for(mm, patcher):
    """The LoadedModels of `patcher` (itself or a clone sharing its module)
    and of its auxiliary models."""
    want = [patcher]
    nested = getattr(patcher, "get_nested_additional_models", None)
    if nested is not None:
        want += list(nested())
    out = []
    for lm in list(mm.current_loaded_models):
        p = lm.model
        if p is None:
            continue
        for w in want:
            same = p is w
            if not same and hasattr(p, "is_clone"):
                try:
                    same = bool(p.is_clone(w))
                except Exception:
                    same = False
            if same:
                out.append(lm)
                break
    return out


def _unload_entries(mm, entries, res):
    """Unloads `entries` (LoadedModels) and takes them off the list; keeps
    weak references to their modules for the still-referenced check."""
    refs = []
    for lm in entries:
        info = model_info(lm)
        if info is None:
            continue
        if info["dynamic"]:
            res.left_to_aimdo.append(info["name"])
            continue
        lm.model_unload()
        try:
            mm.current_loaded_models.remove(lm)
        except ValueError:
            pass
        res.unloaded.append(info)
        try:
            refs.append((info["name"], weakref.ref(lm.model.model)))
        except (TypeError, AttributeError):
            pass
    return refs


def _devices(mm):
    seen = []
    for lm in list(mm.current_loaded_models):
        if lm.device not in seen:
            seen.append(lm.device)
    return seen or [mm.get_torch_device()]


def free(target="input", model=None, amount=None, mode="balanced", in_prompt=False):
    """Frees through ComfyUI's model management and returns a ComfyFreeResult.

    target: "input" unloads `model` (a ModelPatcher) and its auxiliary
    models; "all" unloads every model (free_memory(1e30) on each device, as
    unload_all_models does); "amount" unloads least recently used models
    until `amount` more bytes are free on the device (ComfyUI's own
    free_memory, asked for what is free now plus `amount`).
    Then soft_empty_cache(), and headroom.free_memory(mode) (gc.collect(),
    the CUDA cache, malloc_trim).
    in_prompt: True when the caller is a node of the running prompt (it may
    unload; ComfyUI reloads what a later node needs); else a running prompt
    raises PromptRunning.
    Raises ComfyAbsent, NotAPatcher, ValueError (target, amount, mode)."""
    mm = _need()
    if target not in TARGETS:
        raise ValueError("target must be one of %s; got %r" % (", ".join(TARGETS), target))
    memory.check_mode(mode)
    if target == "input":
        check_patcher(model)
    if target == "amount":
        amount = parse_size(amount)
    if not in_prompt:
        check_idle("unload models")
    if target == "input":
        entries = _entries_for(mm, model)
        note = "" if entries else (
            "%s was not loaded (not in current_loaded_models): nothing to unload"
            % model_name(model))
        return _free_entries(mm, "input", entries, mode, note)
    return _free_lru(mm, target, amount, mode)


def _measure_before(res):
    gc.collect()
    res.ram_before = _readings.rss_bytes()
    res.vram_before = _readings.vram_process()[1]


def _finish(mm, res, refs, mode):
    """Releases caches, then looks which unloaded models something still
    holds (`refs`: name and weak reference to the module) and measures."""
    mm.soft_empty_cache()
    res.actions.append("soft_empty_cache()")
    fr = memory.free_memory(mode)
    res.actions.extend(fr.actions)
    gc.collect()
    res.still_referenced = [name for name, r in refs if r() is not None]
    res.ram_after = _readings.rss_bytes()
    res.vram_after = _readings.vram_process()[1]
    record("free", str(res).split("\n")[0])
    return res


def _free_entries(mm, target, entries, mode, note=""):
    """Unloads the LoadedModels `entries`; the caller keeps no other
    reference to them, so the still-referenced check sees only others'."""
    res = ComfyFreeResult(target)
    res.note = note
    _measure_before(res)
    refs = _unload_entries(mm, entries, res)
    del entries[:]
    return _finish(mm, res, refs, mode)


def _free_lru(mm, target, amount, mode):
    res = ComfyFreeResult(target)
    _measure_before(res)
    # Dynamic models are left to comfy-aimdo: keep them out of free_memory.
    keep = [lm for lm in mm.current_loaded_models
            if lm.model is not None and _dynamic(lm.model)]
    for lm in keep:
        res.left_to_aimdo.append(model_name(lm.model))
    infos = {id(lm): model_info(lm) for lm in mm.current_loaded_models}
    refs = []
    for dev in _devices(mm) if target == "all" or amount > 0 else []:
        need = 1e30 if target == "all" else mm.get_free_memory(dev) + amount
        for lm in mm.free_memory(need, dev, keep_loaded=keep):
            info = infos.get(id(lm)) or model_info(lm)
            if info is None:
                continue
            res.unloaded.append(info)
            try:
                refs.append((info["name"], weakref.ref(lm.model.model)))
            except (TypeError, AttributeError):
                pass
        res.actions.append("free_memory(%s, %s)" % (
            "all" if target == "all" else _readings.fmt_bytes(need), dev))
    del infos, keep
    return _finish(mm, res, refs, mode)


def unload_index(index, mode="balanced"):
    """Unloads current_loaded_models[index] and its auxiliary models (the
    panel's button). Refused while a prompt runs. Returns a ComfyFreeResult."""
    mm = _need()
    if isinstance(index, bool) or not isinstance(index, int):
        raise ValueError("index must be an integer; got %r" % (index,))
    check_idle("unload a model")
    n = len(mm.current_loaded_models)
    if not 0 <= index < n:
        raise ValueError("index %d is out of range: %d model%s loaded" % (
            index, n, "" if n == 1 else "s"))
    p = mm.current_loaded_models[index].model
    if p is None:
        raise ValueError("model %d is already gone" % index)
    entries = _entries_for(mm, p)
    del p
    return _free_entries(mm, "index %d" % index, entries, mode)


# --- auxiliary models ---------------------------------------------------------------------


def register_auxiliary(patcher, key, modules, offload_after_use=True, name=None):
    """Wraps each torch.nn.Module of `modules` (one, or a list) in a
    ModelPatcher with the parent's load and offload devices, and attaches
    them with patcher.set_additional_models(key, [...]): ComfyUI's sampler
    loads them with the parent (load_models_gpu of the parent and its
    get_nested_additional_models()), counts them in its memory estimate and
    offloads them with it. offload_after_use marks them for using(), which
    sends a preprocessing model back to the offload device once its output is
    computed. Returns the list of auxiliary patchers."""
    _need()
    check_patcher(patcher, "patcher")
    if not isinstance(key, str) or not key:
        raise ValueError("key must be a non-empty string; got %r" % (key,))
    import comfy.model_patcher as mp

    mods = list(modules) if isinstance(modules, (list, tuple)) else [modules]
    if not mods:
        raise ValueError("modules must hold at least one torch.nn.Module")
    aux = []
    parent = model_name(patcher)
    for i, m in enumerate(mods):
        if not hasattr(m, "state_dict") or not hasattr(m, "to"):
            raise ValueError("modules[%d] must be a torch.nn.Module; got %s"
                             % (i, type(m).__name__))
        p = mp.ModelPatcher(m, load_device=patcher.load_device,
                            offload_device=patcher.offload_device)
        p.headroom_name = name or "%s:%s%s" % (key, type(m).__name__,
                                               "[%d]" % i if len(mods) > 1 else "")
        p.headroom_parent = parent
        p.headroom_offload_after_use = bool(offload_after_use)
        aux.append(p)
    patcher.set_additional_models(key, aux)
    return aux


def load_with_auxiliary(patcher, memory_required=0):
    """Loads `patcher` and its auxiliary models in one load_models_gpu call,
    as ComfyUI's sampler does."""
    mm = _need()
    check_patcher(patcher, "patcher")
    models = [patcher] + list(patcher.get_nested_additional_models())
    mm.load_models_gpu(models, memory_required=memory_required)
    return models


@contextlib.contextmanager
def using(aux):
    """Loads the auxiliary patcher `aux` (if it is not loaded) and yields its
    module on the load device; on leaving, when it was registered with
    offload_after_use, unloads it to the offload device so its VRAM is free
    for the parent's sampling."""
    mm = _need()
    check_patcher(aux, "aux")
    mm.load_models_gpu([aux])
    try:
        yield aux.model
    finally:
        if getattr(aux, "headroom_offload_after_use", False):
            for lm in _entries_for(mm, aux):
                if lm.model is aux:
                    lm.model_unload()
                    try:
                        mm.current_loaded_models.remove(lm)
                    except ValueError:
                        pass


# --- the smart manager's action -----------------------------------------------------------


def critical_action(mode, status=None):
    """What the smart manager runs at critical inside ComfyUI: unloads least
    recently used models until VRAM is back under the warning level (or all
    of them, between prompts, through ComfyUI's flags while a prompt runs),
    asks for the output cache to be reset when host RAM is critical, then
    releases caches. Returns text, which the manager records as an event.
    Outside ComfyUI: headroom.free_memory(mode)."""
    if not available():
        return memory.free_memory(mode)
    if status is None:
        from . import manager as _manager

        status = _manager.manager().status()
    last, cfg = status.get("last", {}), status.get("settings", {})
    parts = []
    mm = model_management()
    if last.get("vram_level") == "critical":
        running = running_prompts()
        if running:
            parts.append(request_between_prompts(unload_models=True))
        else:
            dev = mm.get_torch_device()
            total = mm.get_total_memory(dev)
            free_now = mm.get_free_memory(dev)
            want = max(0, int((total - free_now) - total * cfg.get("vram_warn", 85.0) / 100.0))
            try:
                r = free("amount", amount=want, mode=mode)
                parts.append(str(r).split("\n")[0] + " (to bring VRAM under %.0f%%)"
                             % cfg.get("vram_warn", 85.0))
            except PromptRunning as e:  # a prompt started meanwhile
                parts.append(request_between_prompts(unload_models=True))
                parts.append(str(e))
    if last.get("ram_level") == "critical":
        parts.append(request_between_prompts(unload_models=False, free_memory=True))
    if not parts:
        parts.append(str(memory.free_memory(mode)))
    return "; ".join(parts)  # the manager records it among its events


def install_manager_action(m=None):
    """Makes the smart manager (headroom.manager.manager() unless `m`) run
    critical_action at critical. Returns False outside ComfyUI (the
    manager keeps headroom.free_memory)."""
    if not available():
        return False
    if m is None:
        from . import manager as _manager

        m = _manager.manager()
    m.set_critical_action(lambda mode: critical_action(mode, m.status()))
    return True


# --- the panel's view ---------------------------------------------------------------------


def panel_state(machine=True):
    """Everything the panel and GET /headroom/snapshot show, as a dict:
    comfy (present, or why not), models, dynamic_vram, running prompts,
    this process (RSS, CUDA allocated/reserved), host memory, and with
    `machine` libheadroom's snapshot reduced to this GPU's devices and the
    processes holding them, the container (cgroup) and its OOM counters;
    events: what this module and the smart manager recorded."""
    from . import _lib, manager as _manager

    here = available()
    alloc, reserved = _readings.vram_process()
    out = {"time": time.time(), "comfy": here, "comfy_note": "" if here else absent_reason(),
           "models": loaded_models() if here else [],
           "dynamic_vram": dynamic_vram() if here else None,
           "running_prompts": running_prompts(),
           "process": {"rss_bytes": _readings.rss_bytes(), "cuda_allocated_bytes": alloc,
                       "cuda_reserved_bytes": reserved, "cuda_note": _readings.cuda_status()},
           "host": _readings.host_memory(), "gpu": None, "cgroup": None, "machine_note": ""}
    if machine:
        if not _lib.available():
            out["machine_note"] = "libheadroom not loaded: no GPU processes or container view"
        else:
            try:
                from . import probe

                snap = probe.snapshot(what=["host", "cgroup", "procs", "gpus"])
                names = {p["pid"]: p.get("name", "") for p in snap.get("processes", [])}
                gpu = dict(snap.get("gpu") or {})
                gpu["processes"] = [dict(p, name=names.get(p.get("pid"), ""))
                                    for p in gpu.get("processes", [])]
                out["gpu"] = gpu
                out["cgroup"] = snap.get("cgroup")
            except Exception as e:  # a failed probe is shown, not raised into the panel
                out["machine_note"] = "libheadroom snapshot failed: %s" % e
    ev = events()
    st = _manager.manager().status()
    for t, text in st["events"]:
        kind = "leak" if "leak" in text else text.split(":", 1)[0]
        ev.append({"time": t, "kind": kind, "text": "smart manager: " + text})
    cg = out["cgroup"] or {}
    for key in ("oom_events", "oom_kill_events"):
        if isinstance(cg.get(key), int) and cg[key] > 0:
            ev.append({"time": out["time"], "kind": "oom",
                       "text": "container %s: %d" % (key, cg[key])})
    ev.sort(key=lambda e: e["time"])
    out["events"] = ev[-30:]
    out["manager"] = {"running": st["running"], "level": st["level"], "leak": st["leak"]}
    return out
