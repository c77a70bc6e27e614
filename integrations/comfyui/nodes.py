"""The node classes. Each follows ComfyUI's conventions: INPUT_TYPES (a
classmethod), RETURN_TYPES, RETURN_NAMES, FUNCTION, CATEGORY, OUTPUT_NODE.
Output nodes return {"ui": {"text": [...]}, "result": (...)} so the report
shows on the node as well as on its output. Every FUNCTION checks its inputs
itself (ComfyUI's widget limits do not hold for values wired in) and raises
ValueError with the accepted values.
"""

import os
import sys
import time

try:
    import headroom
except ImportError:  # a link into a checkout: use its python/ folder
    _here = os.path.dirname(os.path.realpath(__file__))
    sys.path.insert(0, os.path.normpath(os.path.join(_here, "..", "..", "python")))
    import headroom

from headroom import comfy as _comfy, free as _free, manager as _manager
from headroom import stages as _stages
from headroom._c import cleanup as _cleanup
from headroom.pytorch import vram as _vram
from headroom.readings import procfs as _procfs
from headroom.readings.units import fmt_bytes

CATEGORY = "headroom"
MODES = list(_free.MODES)


class AnyType(str):
    """ComfyUI's wildcard type: equal to every type, so any output can be
    wired into a pass-through input."""

    def __ne__(self, other):
        return False

    def __eq__(self, other):
        return True

    __hash__ = str.__hash__


ANY = AnyType("*")


def _percent(value, label):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
        raise ValueError("%s must be a percentage in [0, 100]; got %r" % (label, value))
    return float(value)


def _nonneg(value, label):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError("%s must be a number >= 0; got %r" % (label, value))
    return float(value)


def _mode_input(default=None):
    """The mode input: the cleanup modes, each described by its row of
    libheadroom's table (the one `headroom watch --mode` reads), when the
    library is there."""
    spec = {} if default is None else {"default": default}
    try:
        spec["tooltip"] = "\n".join("%s: %s" % (m["name"], m["summary"])
                                    for m in _cleanup.modes())
    except Exception:  # no library: the modes still work, caches alone (free_memory says so)
        pass
    return (MODES, spec)


def _ui(text, *result):
    return {"ui": {"text": [text]}, "result": tuple(result)}


def _show(unique_id, text):
    """Sends `text` to the node's text widget (the web extension listens for
    "headroom.report"); for nodes whose outputs must stay a plain tuple."""
    srv = sys.modules.get("server")
    inst = getattr(getattr(srv, "PromptServer", None), "instance", None)
    if inst is None or unique_id is None:
        return
    try:
        inst.send_sync("headroom.report", {"node": str(unique_id), "text": text},
                       getattr(inst, "client_id", None))
    except Exception:  # the report is also on the node's output; a lost message is no error
        pass


def _always_run(cls):
    # NaN never equals itself, so ComfyUI never treats the node's last output
    # as cached: memory readings are stale the moment they are taken.
    cls.IS_CHANGED = classmethod(lambda c, **kw: float("nan"))
    return cls


def _cgroup():
    """This process's cgroup through libheadroom's probe, when the library is
    there and the cgroup has a memory limit; else None."""
    if not headroom.library_available():
        return None
    try:
        cg = headroom.snapshot(what=["cgroup"])["cgroup"]
    except headroom.HeadroomError:
        return None
    if cg.get("state") != "ok" or not isinstance(cg.get("limit_bytes"), int):
        return None
    if not isinstance(cg.get("usage_bytes"), int) or cg["limit_bytes"] <= 0:
        return None
    return cg


def monitor_report(ram_threshold, vram_threshold, process_filter=""):
    """The Memory Monitor's text: host RAM, this process, VRAM, matching processes."""
    f = fmt_bytes
    lines = []
    host = _procfs.host_memory()
    warn = host["used_percent"] >= ram_threshold
    lines.append("%sRAM: %s of %s used (%.1f%%), %s available" % (
        "WARNING " if warn else "", f(host["used_bytes"]), f(host["total_bytes"]),
        host["used_percent"], f(host["available_bytes"])))
    cg = _cgroup()
    if cg is not None:
        lines.append("%scontainer (cgroup v%d): %s of %s limit (%.1f%%)" % (
            "WARNING " if 100.0 * cg["usage_bytes"] / cg["limit_bytes"] >= ram_threshold else "",
            cg["version"], f(cg["usage_bytes"]), f(cg["limit_bytes"]),
            100.0 * cg["usage_bytes"] / cg["limit_bytes"]))
    lines.append("this process: RSS %s" % f(_procfs.rss_bytes()))
    devs = _vram.devices()
    if not devs:
        lines.append("VRAM: n/a (%s)" % _vram.status())
    for d in devs:
        used = d["total_bytes"] - d["free_bytes"]
        lines.append("%sVRAM cuda:%d %s: %s of %s used (%.1f%%, %s)" % (
            "WARNING " if d["used_percent"] >= vram_threshold else "", d["index"], d["name"],
            f(used), f(d["total_bytes"]), d["used_percent"], d["source"]))
    alloc, res = _vram.process_bytes()
    if alloc is not None:
        lines.append("this process: VRAM allocated %s, reserved %s" % (f(alloc), f(res)))
    terms = [t.strip() for t in process_filter.split(",") if t.strip()]
    if terms:
        procs, source = matching_processes(terms)
        lines.append("processes matching %s: %d (%s)" % (", ".join(terms), len(procs), source))
        for p in procs:
            gpu = p.get("gpu_bytes")
            lines.append("  %7d %-16s RSS %10s%s" % (p["pid"], p["name"][:16], f(p["rss_bytes"]),
                                                   "  GPU %s" % f(gpu) if gpu else ""))
    lines.append(_comfy.models_text())
    return "\n".join(lines)


def matching_processes(terms, top=10):
    """Processes whose name or command line contains one of `terms`, largest
    (GPU + RSS) first, and where the list came from: libheadroom's probe,
    which also knows each process's GPU memory, or /proc read here."""
    if headroom.library_available():
        try:
            snap = headroom.snapshot(what=["procs", "gpus"])
        except headroom.HeadroomError:
            snap = None
        if snap is not None:
            low = [t.lower() for t in terms]
            procs = [p for p in snap["processes"]
                     if any(t in p["name"].lower() or t in p["cmdline"].lower() for t in low)]
            procs.sort(key=lambda p: -((p.get("gpu_bytes") or 0) + (p.get("rss_bytes") or 0)))
            return procs[:top], "libheadroom probe"
    return _procfs.processes(terms, top=top), "/proc"


@_always_run
class MemoryMonitor:
    """Reports RAM and VRAM with thresholds and passes its input through."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "value": (ANY,),
                "ram_threshold": ("FLOAT", {"default": 85.0, "min": 0.0, "max": 100.0,
                                            "step": 1.0}),
                "vram_threshold": ("FLOAT", {"default": 90.0, "min": 0.0, "max": 100.0,
                                             "step": 1.0}),
                "process_filter": ("STRING", {"default": "python,comfy", "multiline": False}),
            }
        }

    RETURN_TYPES = (ANY, "STRING")
    RETURN_NAMES = ("value", "report")
    FUNCTION = "run"
    CATEGORY = CATEGORY
    OUTPUT_NODE = True

    def run(self, value, ram_threshold, vram_threshold, process_filter=""):
        ram_threshold = _percent(ram_threshold, "ram_threshold")
        vram_threshold = _percent(vram_threshold, "vram_threshold")
        if not isinstance(process_filter, str):
            raise ValueError("process_filter must be text (names separated by commas)")
        text = monitor_report(ram_threshold, vram_threshold, process_filter)
        return _ui(text, value, text)


def _free_node(type_name, label):
    class FreeMemory:
        @classmethod
        def INPUT_TYPES(cls):
            return {
                "required": {
                    label: (type_name,),
                    "mode": _mode_input("balanced"),
                    "cooldown": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 3600.0,
                                           "step": 0.5}),
                }
            }

        RETURN_TYPES = (type_name, "STRING")
        RETURN_NAMES = (label, "report")
        FUNCTION = "run"
        CATEGORY = CATEGORY
        OUTPUT_NODE = False

        def run(self, mode="balanced", cooldown=0.0, **inputs):
            if label not in inputs:
                raise ValueError("missing input %r" % label)
            res = headroom.free_memory(mode, cooldown=_nonneg(cooldown, "cooldown"),
                                       in_prompt=True)
            return (inputs[label], str(res))

    FreeMemory.__name__ = FreeMemory.__qualname__ = "FreeMemory" + label.capitalize()
    return _always_run(FreeMemory)


FreeMemoryImage = _free_node("IMAGE", "image")
FreeMemoryLatent = _free_node("LATENT", "latent")

_TARGETS = {"this model": "input", "all models": "all", "LRU until amount free": "amount"}
_WHEN = ("now", "after this prompt")
_last_model_free = [None]


@_always_run
class FreeMemoryModel:
    """Unloads through ComfyUI's model management (the model on its input,
    all models, or least recently used ones until `amount` is free), then
    releases caches; passes the model through (ComfyUI reloads it when a
    later node needs it). Outside ComfyUI: headroom.free_memory only."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL",),
                "mode": _mode_input("balanced"),
                "cooldown": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 3600.0,
                                       "step": 0.5}),
            },
            "optional": {
                "target": (list(_TARGETS), {"default": "this model"}),
                "amount": ("STRING", {"default": "2G", "multiline": False}),
                "when": (list(_WHEN), {"default": "now"}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    RETURN_TYPES = ("MODEL", "STRING")
    RETURN_NAMES = ("model", "report")
    FUNCTION = "run"
    CATEGORY = CATEGORY
    OUTPUT_NODE = False

    def run(self, model=None, mode="balanced", cooldown=0.0, target="this model", amount="2G",
            when="now", unique_id=None):
        _free.check_mode(mode)
        cooldown = _nonneg(cooldown, "cooldown")
        if target not in _TARGETS:
            raise ValueError("target must be one of %s; got %r" % (", ".join(_TARGETS), target))
        if when not in _WHEN:
            raise ValueError("when must be one of %s; got %r" % (", ".join(_WHEN), when))
        if _TARGETS[target] == "amount":
            amount = _comfy.parse_size(amount, "amount")
        if not _comfy.available():
            res = headroom.free_memory(mode, cooldown=cooldown)
            text = "%s\n%s: nothing unloaded" % (res, _comfy.absent_reason())
            _show(unique_id, text)
            return (model, text)
        if _TARGETS[target] == "input":
            _comfy.check_patcher(model, "model")
        now = time.monotonic()
        last = _last_model_free[0]
        if cooldown > 0 and last is not None and now - last < cooldown:
            text = "Free Memory (Model): skipped, within the cooldown (%.1f s)" % cooldown
        elif when == "after this prompt":
            text = _comfy.request_between_prompts(unload_models=True, free_memory=True) + (
                " (ComfyUI unloads every model and resets its output cache, which drops "
                "models only the cache still holds)")
            _last_model_free[0] = now
        else:
            res = _comfy.free(_TARGETS[target], model=model, amount=amount, mode=mode,
                              in_prompt=True)
            text = str(res)
            _last_model_free[0] = now
        _show(unique_id, text)
        return (model, text)


@_always_run
class VRAMOptimizer:
    """Frees memory with a mode, but only when VRAM use is above the threshold."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "value": (ANY,),
                "mode": _mode_input("balanced"),
                "threshold": ("FLOAT", {"default": 80.0, "min": 0.0, "max": 100.0,
                                        "step": 1.0}),
                "cooldown": ("FLOAT", {"default": 5.0, "min": 0.0, "max": 3600.0, "step": 0.5}),
            }
        }

    RETURN_TYPES = (ANY, "STRING")
    RETURN_NAMES = ("value", "report")
    FUNCTION = "run"
    CATEGORY = CATEGORY
    OUTPUT_NODE = False

    def run(self, value, mode="balanced", threshold=80.0, cooldown=5.0):
        _free.check_mode(mode)
        threshold = _percent(threshold, "threshold")
        cooldown = _nonneg(cooldown, "cooldown")
        used = _vram.usage_percent()
        if used is None:
            return (value, "VRAM optimizer: no VRAM reading (%s); nothing done"
                    % _vram.status())
        if used <= threshold:
            return (value, "VRAM optimizer: VRAM %.1f%% <= threshold %.1f%%; nothing done"
                    % (used, threshold))
        res = headroom.free_memory(mode, cooldown=cooldown, in_prompt=True)
        return (value, "VRAM optimizer: VRAM %.1f%% > threshold %.1f%%; %s"
                % (used, threshold, res))


@_always_run
class SmartMemoryManager:
    """Starts (enabled) or stops (disabled) the process's background manager."""

    @classmethod
    def INPUT_TYPES(cls):
        # The defaults shown are the option table's, as the manager uses them
        # (without libheadroom the manager cannot run, and none is shown).
        try:
            d = _manager.SmartMemoryManager.defaults()
        except Exception:
            d = {}

        def num(key, lo, hi, step=None):
            spec = {"min": lo, "max": hi}
            if key in d:
                spec["default"] = float(d[key])
            if step:
                spec["step"] = step
            return ("FLOAT", spec)

        pct = lambda key: num(key, 0.0, 100.0, 1.0)
        return {
            "required": {
                "enabled": ("BOOLEAN", {"default": True}),
                "mode": _mode_input(d.get("mode")),
                "interval": num("interval", 0.1, 600.0, 0.1),
                "ram_warning": pct("ram_warn"),
                "ram_critical": pct("ram_critical"),
                "vram_warning": pct("vram_warn"),
                "vram_critical": pct("vram_critical"),
                "leak_mib_per_min": num("leak_mib_per_min", 0.0, 1e6),
                "leak_window": num("window", 1.0, 7 * 86400.0),
                "cooldown": num("cooldown", 0.0, 86400.0),
            },
            "optional": {"value": (ANY,)},
        }

    RETURN_TYPES = (ANY, "STRING")
    RETURN_NAMES = ("value", "status")
    FUNCTION = "run"
    CATEGORY = CATEGORY
    OUTPUT_NODE = True

    def run(self, enabled=True, mode=None, interval=None, ram_warning=None, ram_critical=None,
            vram_warning=None, vram_critical=None, leak_mib_per_min=None, leak_window=None,
            cooldown=None, value=None):
        # An input not given is None: the manager takes it from the option table.
        m = _manager.manager()
        if enabled and _comfy.available():
            _comfy.install_manager_action(m)
        if enabled:
            opt = lambda check, v, label: None if v is None else check(v, label)
            m.start(interval=interval, ram_warn=opt(_percent, ram_warning, "ram_warning"),
                    ram_critical=opt(_percent, ram_critical, "ram_critical"),
                    vram_warn=opt(_percent, vram_warning, "vram_warning"),
                    vram_critical=opt(_percent, vram_critical, "vram_critical"), mode=mode,
                    leak_mib_per_min=opt(_nonneg, leak_mib_per_min, "leak_mib_per_min"),
                    window=leak_window, cooldown=opt(_nonneg, cooldown, "cooldown"))
        else:
            m.stop()
        text = m.report()
        return _ui(text, value, text)


def _stage_node(kind):
    class StageNode:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"value": (ANY,), "stage": ("STRING", {"default": "unet"})}}

        RETURN_TYPES = (ANY,)
        RETURN_NAMES = ("value",)
        FUNCTION = "run"
        CATEGORY = CATEGORY
        OUTPUT_NODE = False

        def run(self, value, stage):
            if not isinstance(stage, str) or not stage.strip():
                raise ValueError("stage must be a non-empty name")
            (_stages.begin if kind == "begin" else _stages.end)(stage.strip())
            return (value,)

    StageNode.__name__ = StageNode.__qualname__ = "Stage" + kind.capitalize()
    return _always_run(StageNode)


StageBegin = _stage_node("begin")
StageEnd = _stage_node("end")


@_always_run
class MemoryReport:
    """The per-stage table of memory growth (headroom.stages.report())."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"reset": ("BOOLEAN", {"default": False})},
                "optional": {"value": (ANY,)}}

    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("report",)
    FUNCTION = "run"
    CATEGORY = CATEGORY
    OUTPUT_NODE = True

    def run(self, reset=False, value=None):
        text = _stages.report(file=None)
        if _comfy.available():
            text += "\n" + _comfy.models_text()
        if reset:
            _stages.reset()
        return _ui(text, text)


@_always_run
class AuxiliaryExample:
    """An example for node authors of headroom.comfy.register_auxiliary: a
    small preprocessing network (a 1x1 convolution that mixes the colour
    channels toward grey by `strength`) registered as an auxiliary model of
    the MODEL, so ComfyUI loads, counts and offloads it with its parent, and,
    being registered with offload_after_use, goes back to the offload device
    as soon as its output is computed."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "image": ("IMAGE",),
                             "strength": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0,
                                                    "step": 0.05})}}

    RETURN_TYPES = ("MODEL", "IMAGE", "STRING")
    RETURN_NAMES = ("model", "image", "report")
    FUNCTION = "run"
    CATEGORY = CATEGORY
    OUTPUT_NODE = True

    def run(self, model, image, strength=0.5):
        if not _comfy.available():
            raise RuntimeError(_comfy.absent_reason() + ": the example needs ComfyUI")
        _comfy.check_patcher(model, "model")
        if (isinstance(strength, bool) or not isinstance(strength, (int, float))
                or not 0 <= strength <= 1):
            raise ValueError("strength must be a number in [0, 1]; got %r" % (strength,))
        import torch

        if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] != 3:
            raise ValueError("image must be an IMAGE tensor [batch, height, width, 3]")
        net = torch.nn.Conv2d(3, 3, 1, bias=False)
        with torch.no_grad():
            grey = torch.full((3, 3), 1.0 / 3.0)
            net.weight.copy_(((1 - strength) * torch.eye(3) + strength * grey)[:, :, None, None])
        patched = model.clone()
        (aux,) = _comfy.register_auxiliary(patched, "headroom_example", [net],
                                           offload_after_use=True, name="example colour mix")
        with _comfy.using(aux) as m:
            during = str(next(m.parameters()).device)
            x = image.movedim(-1, 1).to(next(m.parameters()).device)
            with torch.no_grad():
                out = m(x).movedim(1, -1).to(image.device).clamp(0, 1)
        text = ("auxiliary model %r: ran on %s, now on %s (offload after use); it stays "
                "attached to the output MODEL, so the sampler loads it with its parent"
                % (aux.headroom_name, during, str(next(net.parameters()).device)))
        return _ui(text, patched, out, text)


NODE_CLASS_MAPPINGS = {
    "HeadroomMemoryMonitor": MemoryMonitor,
    "HeadroomFreeMemoryImage": FreeMemoryImage,
    "HeadroomFreeMemoryLatent": FreeMemoryLatent,
    "HeadroomFreeMemoryModel": FreeMemoryModel,
    "HeadroomVRAMOptimizer": VRAMOptimizer,
    "HeadroomSmartMemoryManager": SmartMemoryManager,
    "HeadroomStageBegin": StageBegin,
    "HeadroomStageEnd": StageEnd,
    "HeadroomMemoryReport": MemoryReport,
    "HeadroomAuxiliaryExample": AuxiliaryExample,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "HeadroomMemoryMonitor": "Memory Monitor (headroom)",
    "HeadroomFreeMemoryImage": "Free Memory (Image)",
    "HeadroomFreeMemoryLatent": "Free Memory (Latent)",
    "HeadroomFreeMemoryModel": "Free Memory (Model)",
    "HeadroomVRAMOptimizer": "VRAM Optimizer",
    "HeadroomSmartMemoryManager": "Smart Memory Manager",
    "HeadroomStageBegin": "Stage Begin (headroom)",
    "HeadroomStageEnd": "Stage End (headroom)",
    "HeadroomMemoryReport": "Memory Report (headroom)",
    "HeadroomAuxiliaryExample": "Auxiliary Model Example (headroom)",
}
