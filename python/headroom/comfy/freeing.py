"""What frees memory inside ComfyUI, all through headroom.free_memory():
free() and unload_index() (the nodes' and the panel's), and the smart
manager's action at a critical level. Each is an alias that names what to
unload; the mechanism, the cache release and the measuring are
headroom.free's.
"""

from .. import free as _free
from .. import manager as _manager
from .._c import cleanup
from .models import (PromptRunning, check_idle, check_patcher, model_management, need,
                     request_between_prompts, running_prompts)
from .models import available, unload_index as _unload_index


def free(target="input", model=None, amount=None, mode="balanced", in_prompt=False):
    """headroom.free_memory(mode, target=target, model=model, amount=amount,
    in_prompt=in_prompt) inside ComfyUI: "input" unloads `model` (a
    ModelPatcher) and its auxiliary models, "all" every model, "amount"
    least recently used models until `amount` more bytes are free (ComfyUI's
    own free_memory); then the mode's pass. Returns a FreeResult. Raises
    ComfyAbsent outside ComfyUI, NotAPatcher, PromptRunning (from outside
    the running prompt), ValueError (target, amount, mode)."""
    need()
    if target not in _free.TARGETS:
        raise ValueError("target must be one of %s; got %r" % (", ".join(_free.TARGETS), target))
    if target == "input":
        check_patcher(model)
    return _free.free_memory(mode, target=target, model=model, amount=amount,
                             in_prompt=in_prompt)


def unload_index(index, mode="balanced"):
    """Unloads current_loaded_models[index] and its auxiliary models (the
    panel's button), then the mode's pass: headroom.free.run with that
    model as its target. Refused while a prompt runs. Returns a FreeResult."""
    need()
    _free.check_mode(mode)
    check_idle("unload a model")
    if isinstance(index, bool) or not isinstance(index, int):
        raise ValueError("index must be an integer; got %r" % (index,))
    return _free.run(mode, lambda res, row: _unload_index(index, res), "index %d" % index)


def critical_action(mode, status=None):
    """What the smart manager runs at critical inside ComfyUI, in a mode that
    unloads models (the table's models column: aggressive): unloads least
    recently used models until VRAM is back under the warning level (or all
    of them, between prompts, through ComfyUI's flags while a prompt runs),
    asks for the output cache to be reset when host RAM is critical, then
    releases caches. In the other modes, and outside ComfyUI:
    headroom.free_memory(mode). Returns what the manager records as an
    event (its str())."""
    if not available() or not cleanup.mode(mode)["models"]:
        return _free.free_memory(mode)
    if status is None:
        status = _manager.manager().status()
    last, cfg = status.get("last", {}), status.get("settings", {})
    parts = []
    if last.get("vram_level") == "critical":
        parts += _under_warning(mode, cfg.get("vram_warn", 85.0))
    if last.get("ram_level") == "critical":
        parts.append(request_between_prompts(unload_models=False, free_memory=True))
    if not parts:
        parts.append(str(_free.free_memory(mode)))
    return "; ".join(parts)


def _under_warning(mode, warn):
    """Unloads least recently used models until VRAM is under `warn` percent
    (between prompts while one runs); returns what was done, in words."""
    if running_prompts():
        return [request_between_prompts(unload_models=True)]
    mm = model_management()
    dev = mm.get_torch_device()
    total = mm.get_total_memory(dev)
    want = max(0, int((total - mm.get_free_memory(dev)) - total * warn / 100.0))
    try:
        r = _free.free_memory(mode, target="amount", amount=want)
    except PromptRunning as e:  # a prompt started meanwhile
        return [request_between_prompts(unload_models=True), str(e)]
    return [str(r).split("\n")[0] + " (to bring VRAM under %.0f%%)" % warn]


def install_manager_action(m=None):
    """Makes the smart manager (headroom.manager.manager() unless `m`) run
    critical_action at critical. Returns False outside ComfyUI (the
    manager keeps headroom.free_memory)."""
    if not available():
        return False
    if m is None:
        m = _manager.manager()
    m.set_critical_action(lambda mode: critical_action(mode, m.status()))
    return True
