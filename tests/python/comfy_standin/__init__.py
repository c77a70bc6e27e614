"""A stand-in for the few parts of ComfyUI that headroom.comfy calls:
comfy.model_management (current_loaded_models, LoadedModel, load_models_gpu,
free_memory, get_free_memory, soft_empty_cache...), comfy.model_patcher
(ModelPatcher), comfy.memory_management (aimdo_enabled), comfy_aimdo.control
and server.PromptServer.instance.prompt_queue. It is NOT ComfyUI: it models
their behaviour as ComfyUI's source defines it (least recently used models
unloaded first, weak references from LoadedModel to its patcher, flags on the
prompt queue), without torch, so the bridge's logic can be tested anywhere.
The real thing is checked against ComfyUI itself (integrations/comfyui/VERIFIED.md).

install(monkeypatch) puts the stand-in modules into sys.modules for one test
and returns them.
"""

import copy
import sys
import types
import weakref


class FakeModule:
    """A module of `nbytes` bytes of weights; `device` is where they are."""

    def __init__(self, nbytes, device="cpu"):
        self.nbytes = nbytes
        self.device = device
        self.calls = 0

    def state_dict(self):
        return {"weight": self}

    def to(self, device):
        self.device = device
        return self

    def __call__(self, x):
        self.calls += 1
        return x


def _model_patcher_module(mm):
    mod = types.ModuleType("comfy.model_patcher")

    class ModelPatcher:
        def __init__(self, model, load_device, offload_device, size=0):
            self.model = model
            self.load_device = load_device
            self.offload_device = offload_device
            self.size = size
            self.additional_models = {}
            self.model_options = {"transformer_options": {}}
            self.parent = None
            if not hasattr(model, "model_loaded_weight_memory"):
                model.model_loaded_weight_memory = 0
            if not hasattr(model, "device"):
                model.device = offload_device

        def model_size(self):
            if self.size:
                return self.size
            if hasattr(self.model, "nbytes"):
                return self.model.nbytes
            return sum(t.nelement() * t.element_size() for t in self.model.state_dict().values())

        def loaded_size(self):
            return self.model.model_loaded_weight_memory

        def clone(self):
            n = ModelPatcher(self.model, self.load_device, self.offload_device, self.size)
            n.additional_models = {k: list(v) for k, v in self.additional_models.items()}
            n.model_options = copy.deepcopy(self.model_options)
            n.parent = self
            return n

        def is_clone(self, other):
            return hasattr(other, "model") and self.model is other.model

        def partially_load(self, device, extra):
            self.model.to(device)
            self.model.model_loaded_weight_memory = self.model_size()
            return self.model_size()

        def detach(self, unpatch_all=True):
            self.model.to(self.offload_device)
            self.model.model_loaded_weight_memory = 0
            return self.model

        def set_additional_models(self, key, models):
            self.additional_models[key] = models

        def get_additional_models(self):
            return [m for ms in self.additional_models.values() for m in ms]

        def model_patches_models(self):
            # As ComfyUI's: the models() of every patch, replacement patch
            # and the model function wrapper that has one.
            to = self.model_options["transformer_options"]
            out = []
            for patch_list in to.get("patches", {}).values():
                out += [m for p in patch_list if hasattr(p, "models") for m in p.models()]
            for patch_map in to.get("patches_replace", {}).values():
                out += [m for p in patch_map.values() if hasattr(p, "models")
                        for m in p.models()]
            wrap = self.model_options.get("model_function_wrapper")
            if hasattr(wrap, "models"):
                out += wrap.models()
            return out

        def get_nested_additional_models(self):
            out, todo = [], self.get_additional_models()
            while todo:
                m = todo.pop(0)
                if m not in out:
                    out.append(m)
                    todo += m.get_additional_models()
            return out

    mod.ModelPatcher = ModelPatcher
    return mod


def _model_management_module():
    mm = types.ModuleType("comfy.model_management")
    mm.current_loaded_models = []
    mm.capacity = {"cpu": 8 << 30}  # per device: what get_free_memory counts from
    mm.calls = []

    class LoadedModel:
        def __init__(self, model):
            self._model = weakref.ref(model)
            self.device = model.load_device
            self.currently_used = True

        @property
        def model(self):
            return self._model()

        def model_memory(self):
            return self.model.model_size()

        def model_loaded_memory(self):
            return self.model.loaded_size()

        def model_offloaded_memory(self):
            return self.model.model_size() - self.model.loaded_size()

        def model_unload(self, memory_to_free=None, unpatch_weights=True):
            self.model.detach(unpatch_weights)
            return True

        def __eq__(self, other):
            return self.model is other.model

    mm.LoadedModel = LoadedModel

    def get_torch_device():
        return "cpu"

    def get_free_memory(dev=None):
        used = sum(lm.model_loaded_memory() for lm in mm.current_loaded_models
                   if lm.model is not None and lm.device == dev)
        return mm.capacity.get(dev, 0) - used

    def get_total_memory(dev=None):
        return mm.capacity.get(dev, 0)

    def soft_empty_cache(force=False):
        mm.calls.append("soft_empty_cache")

    def free_memory(memory_required, device, keep_loaded=[]):
        mm.calls.append(("free_memory", memory_required, device))
        unloaded = []
        for lm in list(reversed(mm.current_loaded_models)):  # least recently used first
            if lm.device != device or lm in keep_loaded or lm.model is None:
                continue
            if get_free_memory(device) > memory_required:
                break
            if lm.model_unload():
                mm.current_loaded_models.remove(lm)
                unloaded.append(lm)
        return unloaded

    def load_models_gpu(models, memory_required=0, **kw):
        mm.calls.append(("load_models_gpu", len(models)))
        todo = []  # ComfyUI takes each model and its patches' models (a set)
        for m in models:
            for x in [m] + m.model_patches_models():
                if x not in todo:
                    todo.append(x)
        for m in todo:
            lm = LoadedModel(m)
            if lm in mm.current_loaded_models:  # loaded already: now most recently used
                mm.current_loaded_models.remove(lm)
            m.partially_load(m.load_device, 1e32)
            mm.current_loaded_models.insert(0, lm)

    def unload_all_models():
        free_memory(1e30, get_torch_device())

    for f in (get_torch_device, get_free_memory, get_total_memory, soft_empty_cache,
              free_memory, load_models_gpu, unload_all_models):
        setattr(mm, f.__name__, f)
    return mm


class PromptQueue:
    def __init__(self):
        self.currently_running = {}
        self.flags = {}

    def set_flag(self, name, data):
        self.flags[name] = data


def install(monkeypatch, aimdo=False):
    """Puts the stand-in into sys.modules (undone by monkeypatch) and returns
    a namespace: mm, mp, queue, server, sent (messages sent to the front end),
    aimdo (the control stand-in, or None)."""
    comfy = types.ModuleType("comfy")
    comfy.__path__ = []
    mm = _model_management_module()
    mp = _model_patcher_module(mm)
    mem = types.ModuleType("comfy.memory_management")
    mem.aimdo_enabled = aimdo
    comfy.model_management, comfy.model_patcher, comfy.memory_management = mm, mp, mem
    server = types.ModuleType("server")
    queue = PromptQueue()
    sent = []

    class PromptServer:
        instance = types.SimpleNamespace(prompt_queue=queue, client_id="c1", routes=None,
                                         send_sync=lambda ev, data, cid=None: sent.append(
                                             (ev, data)))

    server.PromptServer = PromptServer
    mods = {"comfy": comfy, "comfy.model_management": mm, "comfy.model_patcher": mp,
            "comfy.memory_management": mem, "server": server}
    ctl = None
    if aimdo:
        pkg = types.ModuleType("comfy_aimdo")
        pkg.__path__ = []
        ctl = types.ModuleType("comfy_aimdo.control")
        ctl.get_total_vram_usage = lambda: 3 << 30
        pkg.control = ctl
        mods.update({"comfy_aimdo": pkg, "comfy_aimdo.control": ctl})
    for name, m in mods.items():
        monkeypatch.setitem(sys.modules, name, m)
    return types.SimpleNamespace(mm=mm, mp=mp, queue=queue, server=server, sent=sent,
                                 aimdo=ctl, FakeModule=FakeModule)


def execution(sync=False):
    """A fresh stand-in of ComfyUI's execution module (comfy_standin/execution.py,
    NOT ComfyUI): its execute a coroutine function, or with sync=True a plain
    function, as in ComfyUI before its async nodes."""
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "execution.py")
    spec = importlib.util.spec_from_file_location("execution", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    if sync:
        mod.execute = mod.execute_sync
        mod.PromptExecutor.sync = True
    return mod
