"""ComfyUI's model management as headroom sees it: what is loaded, the prompt
queue, and the unloading steps headroom.free_memory() runs inside ComfyUI.

Inside ComfyUI, models live in comfy.model_management.current_loaded_models (a
list of LoadedModel, most recently used first), each holding a ModelPatcher.
Unloading one there (LoadedModel.model_unload, or free_memory, which unloads
least recently used models until enough is free) moves its weights to the
offload device and lets ComfyUI reload it when a node needs it again.
headroom unloads through those functions, never behind ComfyUI's back; the
unloading steps are here, and free_memory() (headroom.free) runs them, then
releases caches (soft_empty_cache, gc.collect(), malloc_trim) and says what
came back.

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

import gc
import sys
import threading
import time
import weakref

from ..pytorch import holders as _holders
from ..readings.units import fmt_bytes


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


def need():
    """comfy.model_management; raises ComfyAbsent outside ComfyUI."""
    mm = model_management()
    if mm is None:
        raise ComfyAbsent(absent_reason())
    return mm


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


def is_dynamic(patcher):
    """True when comfy-aimdo's dynamic VRAM manages the model."""
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
            "dynamic": is_dynamic(p), "currently_used": bool(getattr(lm, "currently_used", False)),
            "auxiliary_of": getattr(p, "headroom_parent", None)}


def loaded_models():
    """current_loaded_models as a list of model_info dicts, most recently used
    first. Raises ComfyAbsent outside ComfyUI."""
    mm = need()
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
    f = fmt_bytes
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


def prompt_queue():
    """ComfyUI's prompt queue (server.PromptServer.instance.prompt_queue), or
    None when there is no server, as in a script."""
    srv = sys.modules.get("server")
    inst = getattr(getattr(srv, "PromptServer", None), "instance", None)
    return getattr(inst, "prompt_queue", None)


def running_prompts():
    """Ids of the prompts ComfyUI is running now ([] when idle or when there
    is no server, as in a script)."""
    q = prompt_queue()
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
    q = prompt_queue()
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


# --- unloading: the steps headroom.free_memory() runs inside ComfyUI ---------------------


def running():
    """True when ComfyUI runs in this process (comfy.model_management is
    imported); unlike available() it tries no import, so it costs nothing on
    every call of free_memory()."""
    return sys.modules.get("comfy.model_management") is not None


def entries_for(mm, patcher):
    """The LoadedModels of `patcher` (itself or a clone sharing its module)
    and of the models ComfyUI loads with it: its additional models and its
    model patches' models (where register_auxiliary puts auxiliary models)."""
    want = [patcher]
    for attr in ("get_nested_additional_models", "model_patches_models"):
        more = getattr(patcher, attr, None)
        if more is not None:
            want += [m for m in more() if m not in want]
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


def unload_entries(mm, entries, res):
    """Unloads `entries` (LoadedModels) and takes them off the list, adding
    their model_info to res.unloaded (and the names of dynamic models, left
    to comfy-aimdo, to res.left_to_aimdo); returns (name, weak reference to
    the module) pairs for the still-referenced check."""
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
        _unloaded(res, refs, info, lm)
    return refs


def _unloaded(res, refs, info, lm):
    """Adds an unloaded model's info to res.unloaded and a weak reference to
    its module to `refs`, for the still-referenced check."""
    res.unloaded.append(info)
    try:
        refs.append((info["name"], weakref.ref(lm.model.model)))
    except (TypeError, AttributeError):  # no module, or one that takes no weak reference
        pass


def devices(mm):
    """The devices models are loaded on (ComfyUI's torch device when none is)."""
    seen = []
    for lm in list(mm.current_loaded_models):
        if lm.device not in seen:
            seen.append(lm.device)
    return seen or [mm.get_torch_device()]


def unload_patcher(patcher, res):
    """Unloads `patcher` (a ModelPatcher, or a clone sharing its module) and
    its auxiliary models; returns the refs of unload_entries(). Sets
    res.note when it was not loaded."""
    mm = need()
    entries = entries_for(mm, patcher)
    if not entries:
        res.note = ("%s was not loaded (not in current_loaded_models): nothing to unload"
                    % model_name(patcher))
    # No other reference to the entries is kept here, so the
    # still-referenced check sees only others'.
    refs = unload_entries(mm, entries, res)
    del entries[:]
    return refs


def unload_index(index, res):
    """Unloads current_loaded_models[index] and its auxiliary models, keeping
    no reference to it; returns the refs of unload_entries(). ValueError for
    an index out of range."""
    mm = need()
    if isinstance(index, bool) or not isinstance(index, int):
        raise ValueError("index must be an integer; got %r" % (index,))
    n = len(mm.current_loaded_models)
    if not 0 <= index < n:
        raise ValueError("index %d is out of range: %d model%s loaded" % (
            index, n, "" if n == 1 else "s"))
    p = mm.current_loaded_models[index].model
    if p is None:
        raise ValueError("model %d is already gone" % index)
    entries = entries_for(mm, p)
    del p
    refs = unload_entries(mm, entries, res)
    del entries[:]
    return refs


def unload_lru(amount, res):
    """Unloads least recently used models through ComfyUI's own free_memory
    until `amount` more bytes are free on each device they are on, or all of
    them when `amount` is None (free_memory(1e30), as unload_all_models
    does); models comfy-aimdo manages are left to it. Returns the refs of
    unload_entries() and adds the calls made to res.actions."""
    mm = need()
    keep = [lm for lm in mm.current_loaded_models
            if lm.model is not None and is_dynamic(lm.model)]
    for lm in keep:
        res.left_to_aimdo.append(model_name(lm.model))
    infos = {id(lm): model_info(lm) for lm in mm.current_loaded_models}
    refs = []
    for dev in devices(mm) if amount is None or amount > 0 else []:
        want = 1e30 if amount is None else mm.get_free_memory(dev) + amount
        for lm in mm.free_memory(want, dev, keep_loaded=keep):
            info = infos.get(id(lm)) or model_info(lm)
            if info is not None:
                _unloaded(res, refs, info, lm)
        res.actions.append("free_memory(%s, %s)" % (
            "all" if amount is None else fmt_bytes(want), dev))
    del infos, keep
    return refs


def soft_empty_cache(actions):
    """ComfyUI's own cache release (the CUDA, MPS or XPU cache, whichever
    device it runs on)."""
    need().soft_empty_cache()
    actions.append("soft_empty_cache()")


#: How holder paths through ComfyUI's CacheSet begin (its .outputs, .ui and
#: .objects caches follow).
CACHES = "ComfyUI's caches"


def cache_root(o):
    """CACHES for ComfyUI's CacheSet (execution.CacheSet: the prompt
    executor's output, UI and node-object caches), else None: where
    holders_of() stops and names the cache."""
    t = type(o)
    if t.__name__ == "CacheSet" and t.__module__ == "execution":
        return CACHES
    return None


_cachesets = weakref.WeakSet()


def _cachesets_now(rescan):
    """ComfyUI's CacheSets alive (the prompt executor's), found with one pass
    over the process's objects when none is known yet or `rescan`."""
    if rescan or not len(_cachesets):
        for o in gc.get_objects():
            if cache_root(o) is not None:
                _cachesets.add(o)
    return list(_cachesets)


def output_cache_path(obj):
    """The path from ComfyUI's output cache down to `obj` ("ComfyUI's
    caches.outputs.cache[...][0][0].model"), or None when that cache does not
    hold it: a walk down the cache, not a search of the whole process."""
    for rescan in (False, True):
        for cs in _cachesets_now(rescan):
            hops = _holders.path_down(getattr(cs, "outputs", None), obj)
            if hops is not None:
                return CACHES + ".outputs" + hops
    return None


def holders_of(obj):
    """Who holds `obj` (an unloaded model's module): paths from where each
    reference starts. When ComfyUI's output cache holds it, the path through
    the cache alone (found by walking the cache); else a search of the
    process ("__main__.model", "local 'm' of run() (a.py:3)"); [] when
    nothing Python can see holds it."""
    path = output_cache_path(obj)
    if path is not None:
        return [path]
    return _holders.holder_paths(obj, roots=cache_root)


def in_output_cache(paths):
    """True when one of holders_of()'s paths goes through ComfyUI's output
    cache (what its free_memory flag resets)."""
    return any(p.startswith(CACHES + ".outputs") for p in paths)
