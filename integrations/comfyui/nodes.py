"""The node classes. Each follows ComfyUI's conventions: INPUT_TYPES (a
classmethod, a tooltip on every input), RETURN_TYPES, RETURN_NAMES,
OUTPUT_TOOLTIPS, DESCRIPTION, FUNCTION, CATEGORY, OUTPUT_NODE. Output nodes
return {"ui": {"text": [...]}, "result": (...)} so the report shows on the
node as well as on its output. Every FUNCTION checks its inputs itself
(ComfyUI's widget limits do not hold for values wired in) and raises
ValueError with the accepted values.

ComfyUI keeps a node's object while the node stays in the workflow, so the
Memory Monitor's levels (with their hysteresis) and the VRAM Optimizer's
memory of a pass that freed nothing live on the object.
"""

import time

# .common first: it makes `headroom` importable from a checkout's python/.
from .common import (ANY, CATEGORY, PASS_IN, PASS_OUT, always_run, choice, level, level_word,
                     mode_input, no_levels, nonneg, percent, show, ui, vram_rows)
from . import processes as _processes

from headroom import comfy as _comfy, free as _free, manager as _manager
from headroom import stages as _stages
from headroom.comfy import pernode as _pernode, wait as _wait
from headroom.pytorch import vram as _vram
from headroom.readings import procfs as _procfs
from headroom.readings.units import fmt_bytes

_MIB = 1 << 20
_COOLDOWN = ("FLOAT", {"default": 0.0, "min": 0.0, "max": 3600.0, "step": 0.5,
                       "tooltip": "seconds: skip when the last free ran less than this long "
                                  "ago, which keeps per-frame use cheap"})


def _vram_line(r, lvl):
    f = fmt_bytes
    alloc = r["allocated_bytes"]
    return ("%sVRAM cuda:%d %s: device %s of %s used (%.1f%%, every process; %s); this process "
            "%s (%.1f%% of the device, %s%s); other processes %s" % (
                level_word(lvl), r["index"], r["name"], f(r["device_bytes"]),
                f(r["total_bytes"]), r["device_percent"], r["source"], f(r["process_bytes"]),
                r["process_percent"], r["process_label"],
                "; %s allocated" % f(alloc) if alloc is not None else "",
                f(max(0, r["device_bytes"] - r["process_bytes"]))))


@always_run
class MemoryMonitor:
    DESCRIPTION = ("Reports host RAM, the container's limit, this process's RSS, and per GPU "
                   "the device's use beside this process's own, with levels from libheadroom's "
                   "classifier; lists matching processes and ComfyUI's loaded models.")

    def __init__(self):
        self._levels = {}  # reading -> level, kept while the node stays in the workflow

    @classmethod
    def INPUT_TYPES(cls):
        pct = "%: WARNING from this use on (CRITICAL from the option table's {0}_critical or " \
              "this, whichever is higher), by libheadroom's level classifier with hysteresis"
        return {
            "required": {
                "value": (ANY, {"tooltip": PASS_IN}),
                "ram_threshold": ("FLOAT", {"default": 85.0, "min": 0.0, "max": 100.0,
                                            "step": 1.0, "tooltip": "host RAM (and container) "
                                            "use " + pct.format("ram")}),
                "vram_threshold": ("FLOAT", {"default": 90.0, "min": 0.0, "max": 100.0,
                                             "step": 1.0, "tooltip": "each GPU's use by every "
                                             "process " + pct.format("vram")}),
                "process_filter": ("STRING", {"default": "python,comfy", "multiline": False,
                                              "tooltip": "comma-separated names: processes "
                                              "whose name or command line holds one are listed "
                                              "(the largest ten) with RSS and GPU memory; "
                                              "empty lists none"}),
            }
        }

    RETURN_TYPES = (ANY, "STRING")
    RETURN_NAMES = ("value", "report")
    OUTPUT_TOOLTIPS = (PASS_OUT, "RAM, the container's use against its limit, this process's "
                       "RSS, per GPU the device's use and this process's own, matching "
                       "processes, loaded models")
    FUNCTION = "run"
    CATEGORY = CATEGORY
    OUTPUT_NODE = True

    def _level(self, key, value, threshold, kind):
        lvl = level(self._levels.get(key), value, threshold, kind)
        self._levels[key] = lvl
        return lvl

    def report(self, ram_threshold, vram_threshold, process_filter=""):
        f = fmt_bytes
        host = _procfs.host_memory()
        lines = ["%sRAM: %s of %s used (%.1f%%), %s available" % (
            level_word(self._level("ram", host["used_percent"], ram_threshold, "ram")),
            f(host["used_bytes"]), f(host["total_bytes"]), host["used_percent"],
            f(host["available_bytes"]))]
        cg = _processes.cgroup()
        if cg is not None:
            pct = 100.0 * cg["usage_bytes"] / cg["limit_bytes"]
            lines.append("%scontainer (cgroup v%d): %s of %s limit (%.1f%%)" % (
                level_word(self._level("cgroup", pct, ram_threshold, "ram")), cg["version"],
                f(cg["usage_bytes"]), f(cg["limit_bytes"]), pct))
        rss = _procfs.rss_bytes()
        lines.append("this process: RSS %s (%.1f%% of host RAM)" % (
            f(rss), 100.0 * rss / host["total_bytes"]))
        rows = vram_rows()
        if not rows:
            lines.append("VRAM: n/a (%s)" % _vram.status())
        for r in rows:
            lines.append(_vram_line(r, self._level("vram%d" % r["index"], r["device_percent"],
                                                   vram_threshold, "vram")))
        if self._levels.get("ram") is None:
            lines.append("levels: %s" % no_levels())
        terms = [t.strip() for t in process_filter.split(",") if t.strip()]
        if terms:
            lines += _processes.lines(terms)
        lines.append(_comfy.models_text())
        return "\n".join(lines)

    def run(self, value, ram_threshold, vram_threshold, process_filter=""):
        ram_threshold = percent(ram_threshold, "ram_threshold")
        vram_threshold = percent(vram_threshold, "vram_threshold")
        if not isinstance(process_filter, str):
            raise ValueError("process_filter must be text (names separated by commas)")
        text = self.report(ram_threshold, vram_threshold, process_filter)
        return ui(text, value, text)


def _free_node(type_name, label):
    class FreeMemory:
        DESCRIPTION = ("Frees memory with a mode (headroom.free_memory) and passes its %s "
                       "through." % type_name)

        @classmethod
        def INPUT_TYPES(cls):
            return {
                "required": {
                    label: (type_name, {"tooltip": "passed through unchanged; the edge fixes "
                                                   "when the node runs"}),
                    "mode": mode_input("balanced"),
                    "cooldown": _COOLDOWN,
                }
            }

        RETURN_TYPES = (type_name, "STRING")
        RETURN_NAMES = (label, "report")
        OUTPUT_TOOLTIPS = (PASS_OUT, "RAM and VRAM before, after and freed, and what was done")
        FUNCTION = "run"
        CATEGORY = CATEGORY
        OUTPUT_NODE = False

        def run(self, mode="balanced", cooldown=0.0, **inputs):
            if label not in inputs:
                raise ValueError("missing input %r" % label)
            res = _free.free_memory(mode, cooldown=nonneg(cooldown, "cooldown"), in_prompt=True)
            return (inputs[label], str(res))

    FreeMemory.__name__ = FreeMemory.__qualname__ = "FreeMemory" + label.capitalize()
    return always_run(FreeMemory)


FreeMemoryImage = _free_node("IMAGE", "image")
FreeMemoryLatent = _free_node("LATENT", "latent")

def _free_outside_comfy(mode, cooldown):
    """What the unloading nodes do outside ComfyUI: the mode's pass, and why
    nothing was unloaded."""
    res = _free.free_memory(mode, cooldown=cooldown)
    return "%s\n%s: nothing unloaded" % (res, _comfy.absent_reason())


_TARGETS = {"this model": "input", "all models": "all", "LRU until amount free": "amount"}
_WHEN = ("now", "after this prompt")
_WHEN_TIP = ("'after this prompt' sets ComfyUI's unload_models and free_memory flags, as POST "
             "/free does: after the prompt it unloads every model and resets its output cache, "
             "which drops models only the cache still holds")
_BETWEEN = (" (ComfyUI unloads every model and resets its output cache, which drops models "
            "only the cache still holds)")
_last_model_free = [None]


@always_run
class FreeMemoryModel:
    """Unloads through ComfyUI's model management (the model on its input,
    all models, or least recently used ones until `amount` is free), then
    releases caches; passes the model through (ComfyUI reloads it when a
    later node needs it). Outside ComfyUI: headroom.free_memory only."""

    DESCRIPTION = ("Unloads a model (with its auxiliary models), every model, or least "
                   "recently used ones through ComfyUI's model management, then frees with a "
                   "mode; passes the MODEL through (ComfyUI loads it again when a node needs it).")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "passed through; with target 'this model', the "
                                               "model to unload (with its auxiliary models)"}),
                "mode": mode_input("balanced", "the pass after the unload"),
                "cooldown": ("FLOAT", dict(_COOLDOWN[1], tooltip="seconds: skip when this "
                                           "node's last free ran less than this long ago")),
            },
            "optional": {
                "target": (list(_TARGETS), {"default": "this model", "tooltip": "what to "
                           "unload; 'LRU until amount free' asks ComfyUI's own free_memory to "
                           "unload least recently used models until `amount` more is free"}),
                "amount": ("STRING", {"default": "2G", "multiline": False, "tooltip": "a size "
                           "for 'LRU until amount free': bytes, or a number with K, M, G, T"}),
                "when": (list(_WHEN), {"default": "now", "tooltip": _WHEN_TIP}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    RETURN_TYPES = ("MODEL", "STRING")
    RETURN_NAMES = ("model", "report")
    OUTPUT_TOOLTIPS = (PASS_OUT, "each model unloaded and its size on the device, RSS and VRAM "
                       "before and after, the models still referenced and what would drop them")
    FUNCTION = "run"
    CATEGORY = CATEGORY
    OUTPUT_NODE = False

    def run(self, model=None, mode="balanced", cooldown=0.0, target="this model", amount="2G",
            when="now", unique_id=None):
        _free.check_mode(mode)
        cooldown = nonneg(cooldown, "cooldown")
        choice(target, list(_TARGETS), "target")
        choice(when, _WHEN, "when")
        if _TARGETS[target] == "amount":
            amount = _comfy.parse_size(amount, "amount")
        if not _comfy.available():
            text = _free_outside_comfy(mode, cooldown)
            show(unique_id, text)
            return (model, text)
        if _TARGETS[target] == "input":
            _comfy.check_patcher(model, "model")
        now = time.monotonic()
        last = _last_model_free[0]
        if cooldown > 0 and last is not None and now - last < cooldown:
            text = "Free Memory (Model): skipped, within the cooldown (%.1f s)" % cooldown
        elif when == "after this prompt":
            text = _comfy.request_between_prompts(unload_models=True, free_memory=True) + _BETWEEN
            _last_model_free[0] = now
        else:
            res = _comfy.free(_TARGETS[target], model=model, amount=amount, mode=mode,
                              in_prompt=True)
            text = str(res)
            _last_model_free[0] = now
        show(unique_id, text)
        return (model, text)


@always_run
class FreeMemoryCLIP:
    DESCRIPTION = ("Unloads a CLIP text encoder through ComfyUI's model management once the "
                   "nodes wired into `after` have used it, frees with a mode, and passes the "
                   "CLIP through (a later text encode loads it again).")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "clip": ("CLIP", {"tooltip": "the text encoder to unload; passed through"}),
                "mode": mode_input("balanced", "the pass after the unload"),
                "cooldown": _COOLDOWN,
            },
            "optional": {
                "after": (ANY, {"tooltip": "wire the output of the last node that uses this "
                                           "CLIP (a CLIP Text Encode's CONDITIONING) so the "
                                           "unload runs after it; only orders the node"}),
                "when": (list(_WHEN), {"default": "now", "tooltip": _WHEN_TIP}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    RETURN_TYPES = ("CLIP", "STRING")
    RETURN_NAMES = ("clip", "report")
    OUTPUT_TOOLTIPS = (PASS_OUT, "the CLIP model unloaded and its size, RSS and VRAM before "
                       "and after, and whether something still holds it")
    FUNCTION = "run"
    CATEGORY = CATEGORY
    OUTPUT_NODE = False

    def run(self, clip, mode="balanced", cooldown=0.0, after=None, when="now", unique_id=None):
        _free.check_mode(mode)
        cooldown = nonneg(cooldown, "cooldown")
        choice(when, _WHEN, "when")
        if not _comfy.available():
            text = _free_outside_comfy(mode, cooldown)
        else:
            patcher = getattr(clip, "patcher", None)
            if not _comfy.is_patcher(patcher):
                raise ValueError("clip must be a ComfyUI CLIP (with a ModelPatcher in .patcher);"
                                 " got %s" % type(clip).__name__)
            if when == "after this prompt":
                text = _comfy.request_between_prompts(unload_models=True,
                                                      free_memory=True) + _BETWEEN
            else:
                text = str(_free.free_memory(mode, cooldown=cooldown, target="input",
                                             model=patcher, in_prompt=True))
        show(unique_id, text)
        return (clip, text)


@always_run
class VRAMOptimizer:
    DESCRIPTION = ("Frees memory with a mode when VRAM use is at or above the threshold: this "
                   "process's own use (what a free can lower) or the device's. A pass that "
                   "could not lower the reading is not repeated until the reading grows.")

    def __init__(self):
        self._level = None
        self._futile = None  # (bytes after a pass that freed nothing, when) until it grows

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "value": (ANY, {"tooltip": PASS_IN}),
                "mode": mode_input("balanced"),
                "threshold": ("FLOAT", {"default": 80.0, "min": 0.0, "max": 100.0, "step": 1.0,
                                        "tooltip": "% of the device: acts from this use on "
                                        "(libheadroom's level classifier, with hysteresis)"}),
                "cooldown": ("FLOAT", dict(_COOLDOWN[1], default=5.0)),
            },
            "optional": {
                "measure": (["this process", "device"], {"default": "this process",
                            "tooltip": "the use compared with the threshold: this process's "
                            "own (PyTorch's reserved memory; what a free can lower) or the "
                            "device's, other processes included"}),
            },
        }

    RETURN_TYPES = (ANY, "STRING")
    RETURN_NAMES = ("value", "report")
    OUTPUT_TOOLTIPS = (PASS_OUT, "this process's and the device's VRAM, labelled, and what was "
                       "done or why nothing")
    FUNCTION = "run"
    CATEGORY = CATEGORY
    OUTPUT_NODE = False

    def run(self, value, mode="balanced", threshold=80.0, cooldown=5.0, measure="this process"):
        _free.check_mode(mode)
        threshold = percent(threshold, "threshold")
        cooldown = nonneg(cooldown, "cooldown")
        key = {"this process": "process", "device": "device"}[
            choice(measure, ["this process", "device"], "measure")]
        rows = vram_rows()
        if not rows:
            return (value, "VRAM optimizer: no VRAM reading (%s); nothing done"
                    % _vram.status())
        return (value, "VRAM optimizer: " + self._decide(rows, key, mode, threshold, cooldown))

    def _decide(self, rows, key, mode, threshold, cooldown):
        f = fmt_bytes
        row = max(rows, key=lambda r: r[key + "_percent"])
        pct, used = row[key + "_percent"], row[key + "_bytes"]
        seen = "%s %.1f%% of cuda:%d (this process %s, %s; device %s, every process)" % (
            "this process" if key == "process" else "device", pct, row["index"],
            f(row["process_bytes"]), row["process_label"], f(row["device_bytes"]))
        lvl = level(self._level, pct, threshold, "vram")
        if lvl is None:
            return "%s; %s; nothing done" % (seen, no_levels())
        self._level = lvl
        if lvl == "ok":
            return "%s, under threshold %.1f%%; nothing done" % (seen, threshold)
        if self._futile is not None and used <= self._futile[0] + _MIB:
            return ("%s >= threshold %.1f%%, but the pass at %s could not lower it (%s after "
                    "it); not repeated until it grows" % (
                        seen, threshold, time.strftime("%H:%M:%S",
                                                       time.localtime(self._futile[1])),
                        f(self._futile[0])))
        res = _free.free_memory(mode, cooldown=cooldown, in_prompt=True)
        if res.skipped:
            return "%s >= threshold %.1f%%; %s" % (seen, threshold, res)
        after = [r for r in vram_rows() if r["index"] == row["index"]]
        now = after[0][key + "_bytes"] if after else used
        self._futile = (now, time.time()) if used - now < _MIB else None
        return "%s >= threshold %.1f%%; %s; reading %s -> %s%s" % (
            seen, threshold, res, f(used), f(now),
            " (not lowered: not repeated until it grows)" if self._futile else "")


@always_run
class WaitForMemory:
    DESCRIPTION = ("Waits until an amount of memory is free where the workflow computes (or "
                   "in host RAM), at most `patience` seconds, then passes its input through. In "
                   "a ComfyUI that runs coroutine nodes it awaits between reads, so other "
                   "branches of the graph run meanwhile.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "value": (ANY, {"tooltip": PASS_IN}),
                "amount": ("STRING", {"default": "1G", "multiline": False, "tooltip": "the "
                           "memory to wait for: bytes, or a number with K, M, G, T"}),
                "where": (list(_wait.WHERE), {"default": "compute device", "tooltip":
                          "'compute device': ComfyUI's free memory on its device (free VRAM "
                          "plus PyTorch's cache; on a CPU-only ComfyUI the available host "
                          "RAM); 'host RAM': the host's available memory"}),
                "patience": ("FLOAT", {"default": 60.0, "min": 0.0, "max": 3600.0, "step": 1.0,
                                       "tooltip": "seconds to wait at most"}),
                "poll": ("FLOAT", {"default": 0.5, "min": 0.05, "max": 60.0, "step": 0.05,
                                   "tooltip": "seconds between two reads"}),
                "on_timeout": (["continue", "error"], {"default": "continue", "tooltip":
                               "what happens when the patience runs out: go on (the report "
                               "says so) or fail the node"}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    RETURN_TYPES = (ANY, "STRING")
    RETURN_NAMES = ("value", "report")
    OUTPUT_TOOLTIPS = (PASS_OUT, "how much was free, after how long, or that the patience ran "
                       "out")
    # A coroutine where ComfyUI awaits node functions (its execution.execute
    # is a coroutine function from the version that runs async nodes on);
    # an older ComfyUI runs nodes one at a time in its worker thread, where
    # a sleep holds nothing else up.
    FUNCTION = "wait_async" if _pernode.async_nodes() else "wait"
    CATEGORY = CATEGORY
    OUTPUT_NODE = False

    @staticmethod
    def _check(patience, poll, on_timeout):
        choice(on_timeout, ["continue", "error"], "on_timeout")
        return nonneg(patience, "patience"), nonneg(poll, "poll")

    @staticmethod
    def _done(res, on_timeout, unique_id, value):
        text = str(res)
        if not res.ok and on_timeout == "error":
            raise RuntimeError(text)
        show(unique_id, text)
        return (value, text)

    def wait(self, value, amount="1G", where="compute device", patience=60.0, poll=0.5,
             on_timeout="continue", unique_id=None):
        patience, poll = self._check(patience, poll, on_timeout)
        res = _wait.wait_for_memory(amount, where, patience, poll)
        return self._done(res, on_timeout, unique_id, value)

    async def wait_async(self, value, amount="1G", where="compute device", patience=60.0,
                         poll=0.5, on_timeout="continue", unique_id=None):
        patience, poll = self._check(patience, poll, on_timeout)
        res = await _wait.wait_for_memory_async(amount, where, patience, poll)
        return self._done(res, on_timeout, unique_id, value)


def _manager_inputs():
    """The Smart Memory Manager's inputs, their defaults the option table's
    as the manager uses them (without libheadroom the manager cannot run,
    and none is shown)."""
    try:
        d = _manager.SmartMemoryManager.defaults()
    except Exception:
        d = {}

    def num(key, lo, hi, step, tip):
        spec = {"min": lo, "max": hi, "step": step, "tooltip": tip}
        if key in d:
            spec["default"] = float(d[key])
        return ("FLOAT", spec)

    lvl = "% of {0}: the level at which the manager {1} (libheadroom's classifier, with " \
          "the option table's hysteresis)"
    return {
        "enabled": ("BOOLEAN", {"default": True, "tooltip": "start the thread (or change its "
                                "settings while it runs) / stop it"}),
        "mode": mode_input(d.get("mode"), "what to free at critical (only aggressive unloads "
                           "models)"),
        "interval": num("interval", 0.1, 600.0, 0.1, "seconds between two samples"),
        "ram_warning": num("ram_warn", 0.0, 100.0, 1.0,
                           lvl.format("host RAM", "warns")),
        "ram_critical": num("ram_critical", 0.0, 100.0, 1.0,
                            lvl.format("host RAM", "frees memory")),
        "vram_warning": num("vram_warn", 0.0, 100.0, 1.0,
                            lvl.format("the fullest GPU", "warns")),
        "vram_critical": num("vram_critical", 0.0, 100.0, 1.0,
                             lvl.format("the fullest GPU", "frees memory")),
        "leak_mib_per_min": num("leak_mib_per_min", 0.0, 100000.0, 0.5, "MiB per minute: the "
                                "least rise of this process's RSS trend (over leak_window) "
                                "that the manager warns of; 0 turns that warning off (the "
                                "per-node verdict has thresholds per prompt of its own)"),
        "leak_window": num("window", 1.0, 7 * 86400.0, 1.0, "seconds of samples the leak "
                           "trend test looks at"),
        "cooldown": num("cooldown", 0.0, 86400.0, 1.0, "seconds: the least time between two "
                        "automatic frees"),
    }


@always_run
class SmartMemoryManager:
    DESCRIPTION = ("Starts (enabled) or stops the process's background manager: levels of "
                   "RAM and VRAM, frees at critical, this process's leak trend, and the "
                   "per-node leak verdict of the prompts ComfyUI ran.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": _manager_inputs(),
                "optional": {"value": (ANY, {"tooltip": PASS_IN})}}

    RETURN_TYPES = (ANY, "STRING")
    RETURN_NAMES = ("value", "status")
    OUTPUT_TOOLTIPS = (PASS_OUT, "running or stopped, the level, the last sample, the leak "
                       "verdict (the node that grows, when one does), frees, recent events")
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
        opt = lambda check, v, label: None if v is None else check(v, label)
        rate = opt(nonneg, leak_mib_per_min, "leak_mib_per_min")
        if enabled:
            m.start(interval=interval, ram_warn=opt(percent, ram_warning, "ram_warning"),
                    ram_critical=opt(percent, ram_critical, "ram_critical"),
                    vram_warn=opt(percent, vram_warning, "vram_warning"),
                    vram_critical=opt(percent, vram_critical, "vram_critical"), mode=mode,
                    leak_mib_per_min=rate, window=leak_window,
                    cooldown=opt(nonneg, cooldown, "cooldown"))
        else:
            m.stop()
        text = m.report() + "\n" + _pernode.tracker().verdict_text()
        return ui(text, value, text)


def _stage_node(kind):
    class StageNode:
        DESCRIPTION = ("%s one call of a named stage: samples RSS and VRAM; the Memory Report "
                       "judges the stages." % ("Begins" if kind == "begin" else "Ends"))

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"value": (ANY, {"tooltip": PASS_IN}),
                                 "stage": ("STRING", {"default": "unet", "tooltip": "the "
                                           "stage's name; Begin and End must use the same"})}}

        RETURN_TYPES = (ANY,)
        RETURN_NAMES = ("value",)
        OUTPUT_TOOLTIPS = (PASS_OUT,)
        FUNCTION = "run"
        CATEGORY = CATEGORY
        OUTPUT_NODE = False

        def run(self, value, stage):
            if not isinstance(stage, str) or not stage.strip():
                raise ValueError("stage must be a non-empty name")
            (_stages.begin if kind == "begin" else _stages.end)(stage.strip())
            return (value,)

    StageNode.__name__ = StageNode.__qualname__ = "Stage" + kind.capitalize()
    return always_run(StageNode)


StageBegin = _stage_node("begin")
StageEnd = _stage_node("end")


@always_run
class MemoryReport:
    DESCRIPTION = ("The per-stage table of memory growth, the memory of each node of the last "
                   "prompt, and the leak verdict (the stage or node whose growth stays, named "
                   "only when this process's memory trend rises).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"reset": ("BOOLEAN", {"default": False, "tooltip": "forget the "
                                                   "recorded stage calls after reporting"})},
                "optional": {"value": (ANY, {"tooltip": "only orders the node after its "
                                                        "input"})}}

    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("report",)
    OUTPUT_TOOLTIPS = ("per stage: calls, time, RSS and VRAM growth per call; per node of the "
                       "last prompt: RSS change; the leak verdict; the loaded models",)
    FUNCTION = "run"
    CATEGORY = CATEGORY
    OUTPUT_NODE = True

    def run(self, reset=False, value=None):
        text = str(_stages.report(file=None))
        tr = _pernode.tracker()
        if tr.installed:
            text += "\n" + tr.last_prompt_text()
        text += "\n" + tr.verdict_text()
        if _comfy.available():
            text += "\n" + _comfy.models_text()
        if reset:
            _stages.reset()
        return ui(text, text)


@always_run
class AuxiliaryExample:
    """An example for node authors of headroom.comfy.register_auxiliary: a
    small preprocessing network (a 1x1 convolution that mixes the colour
    channels toward grey by `strength`) registered as an auxiliary model of
    the MODEL, so ComfyUI loads, counts and offloads it with its parent, and,
    being registered with offload_after_use, goes back to the offload device
    as soon as its output is computed."""

    DESCRIPTION = ("An example for node authors of headroom.comfy.register_auxiliary: a 1x1 "
                   "convolution registered as an auxiliary model of the MODEL, run on the "
                   "image, and offloaded once its output is computed.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL", {"tooltip": "the parent the network is registered on"}),
                             "image": ("IMAGE", {"tooltip": "the preprocessing network's "
                                                            "input"}),
                             "strength": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0,
                                                    "step": 0.05, "tooltip": "how far the "
                                                    "colours are mixed toward grey"})}}

    RETURN_TYPES = ("MODEL", "IMAGE", "STRING")
    RETURN_NAMES = ("model", "image", "report")
    OUTPUT_TOOLTIPS = ("a clone of the parent with the network registered as its auxiliary "
                       "model", "the network's output", "where the network ran and where it "
                       "is now")
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
                "registered on the output MODEL, so any load of it (the sampler's, or a "
                "node's load_models_gpu) loads it with its parent"
                % (aux.headroom_name, during, str(next(net.parameters()).device)))
        return ui(text, patched, out, text)


NODE_CLASS_MAPPINGS = {
    "HeadroomMemoryMonitor": MemoryMonitor,
    "HeadroomFreeMemoryImage": FreeMemoryImage,
    "HeadroomFreeMemoryLatent": FreeMemoryLatent,
    "HeadroomFreeMemoryCLIP": FreeMemoryCLIP,
    "HeadroomFreeMemoryModel": FreeMemoryModel,
    "HeadroomVRAMOptimizer": VRAMOptimizer,
    "HeadroomWaitForMemory": WaitForMemory,
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
    "HeadroomFreeMemoryCLIP": "Free Memory (CLIP)",
    "HeadroomFreeMemoryModel": "Free Memory (Model)",
    "HeadroomVRAMOptimizer": "VRAM Optimizer",
    "HeadroomWaitForMemory": "Wait for Memory (headroom)",
    "HeadroomSmartMemoryManager": "Smart Memory Manager",
    "HeadroomStageBegin": "Stage Begin (headroom)",
    "HeadroomStageEnd": "Stage End (headroom)",
    "HeadroomMemoryReport": "Memory Report (headroom)",
    "HeadroomAuxiliaryExample": "Auxiliary Model Example (headroom)",
}
