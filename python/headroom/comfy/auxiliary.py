"""Auxiliary models for node authors: a model beside the diffusion model (an
IP-Adapter's image encoder, a ControlNet preprocessor) registered with its
parent, so that ComfyUI loads, counts and offloads them together, and used
with offload_after_use so it leaves the device once its output is computed.
"""

import contextlib

from .models import check_patcher, entries_for, model_name, need


def register_auxiliary(patcher, key, modules, offload_after_use=True, name=None):
    """Wraps each torch.nn.Module of `modules` (one, or a list) in a
    ModelPatcher with the parent's load and offload devices, and attaches
    them with patcher.set_additional_models(key, [...]): ComfyUI's sampler
    loads them with the parent (load_models_gpu of the parent and its
    get_nested_additional_models()), counts them in its memory estimate and
    offloads them with it. offload_after_use marks them for using(), which
    sends a preprocessing model back to the offload device once its output is
    computed. Returns the list of auxiliary patchers."""
    need()
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
    mm = need()
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
    mm = need()
    check_patcher(aux, "aux")
    mm.load_models_gpu([aux])
    try:
        yield aux.model
    finally:
        if getattr(aux, "headroom_offload_after_use", False):
            for lm in entries_for(mm, aux):
                if lm.model is aux:
                    lm.model_unload()
                    try:
                        mm.current_loaded_models.remove(lm)
                    except ValueError:
                        pass
