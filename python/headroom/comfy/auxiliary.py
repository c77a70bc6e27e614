"""Auxiliary models for node authors: a model beside the diffusion model (an
IP-Adapter's image encoder, a ControlNet preprocessor) registered with its
parent, so that ComfyUI loads, counts and offloads them together, and used
with offload_after_use so it leaves the device once its output is computed.

The registration is a model patch of the parent: an object under the
parent's transformer_options["patches"]["headroom_auxiliary"] whose models()
are the auxiliary ModelPatchers. ComfyUI's load_models_gpu loads the
models() of every patch of each model it is given (ModelPatcher
.model_patches_models), so every load of the parent loads them too: the
sampler's, and a node's own load_models_gpu([parent]). No model's forward
reads that patch name, so the patch is never called. A clone of the parent
(every LoRA or patch node clones) shares the registration.
"""

import contextlib

from .models import check_patcher, entries_for, model_name, need

#: The name under transformer_options["patches"] that holds the registrations.
PATCH_NAME = "headroom_auxiliary"


class Auxiliary:
    """One registration: the auxiliary patchers of `key`. ComfyUI calls
    models() when it loads the parent; a deep copy (ModelPatcher.clone copies
    model_options) is the registration itself, so clones share the patchers
    instead of loading copies of them."""

    def __init__(self, key, patchers):
        self.key = key
        self._patchers = list(patchers)

    def models(self):
        return list(self._patchers)

    def __deepcopy__(self, memo):
        return self

    def __repr__(self):
        return "<headroom auxiliary %r: %d model(s)>" % (self.key, len(self._patchers))


def register_auxiliary(patcher, key, modules, offload_after_use=True, name=None):
    """Wraps each torch.nn.Module of `modules` (one, or a list) in a
    ModelPatcher with the parent's load and offload devices and registers
    them as a model patch of `patcher` under `key` (a second registration
    with the same key replaces the first): every load_models_gpu of the
    parent, or of a clone of it, loads them with it, counts them in its
    memory estimate, and an unload of the parent through headroom unloads
    them too. offload_after_use marks them for using(), which sends a
    preprocessing model back to the offload device once its output is
    computed. Returns the list of auxiliary patchers. Register on a clone
    (patcher.clone()) so the loader's cached output is left as it was."""
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
    patches = patcher.model_options.setdefault("transformer_options", {}).setdefault(
        "patches", {})
    kept = [h for h in patches.get(PATCH_NAME, []) if getattr(h, "key", None) != key]
    patches[PATCH_NAME] = kept + [Auxiliary(key, aux)]
    return aux


def auxiliary_models(patcher):
    """The auxiliary patchers registered on `patcher` (or on the model it
    was cloned from), in registration order."""
    to = getattr(patcher, "model_options", {}).get("transformer_options", {})
    out = []
    for h in to.get("patches", {}).get(PATCH_NAME, []):
        if isinstance(h, Auxiliary):
            out += h.models()
    return out


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
