"""headroom.comfy: free and place models through ComfyUI's own model
management, from inside a ComfyUI process (the node pack's ground).

The ComfyUI room:

- models: what is loaded, the prompt queue, events, and the unloading steps
  headroom.free_memory() runs inside ComfyUI.
- freeing: free(), unload_index() and the smart manager's critical action,
  aliases of headroom.free_memory() that name what to unload.
- auxiliary: models registered with a parent (register_auxiliary, using).
- panel: what the node pack's panel shows (panel_state).
- pernode: each node's memory, prompt after prompt, through ComfyUI's own
  execution (installed by the node pack), and the per-node leak verdict.
- wait: waiting for free memory with patience (wait_for_memory, and the
  coroutine wait_for_memory_async).
- broker_client: ComfyUI as a client of the memory broker (started by the
  node pack).

Outside ComfyUI every function says that ComfyUI's model management is
absent (ComfyAbsent, or a report saying so) instead of failing in odd ways.
"""

from .freeing import critical_action, free, install_manager_action, unload_index
from .auxiliary import auxiliary_models, register_auxiliary, using
from .models import (ComfyAbsent, NotAPatcher, PromptRunning, absent_reason, available,
                     check_idle, check_patcher, dynamic_vram, events, is_patcher, loaded_models,
                     model_info, model_management, model_name, models_text, record,
                     request_between_prompts, running, running_prompts)
from .panel import panel_state
from .wait import wait_for_memory, wait_for_memory_async
from ..readings.units import parse_size

__all__ = [
    "ComfyAbsent", "NotAPatcher", "PromptRunning", "absent_reason", "available", "check_idle",
    "check_patcher", "critical_action", "dynamic_vram", "events", "free",
    "install_manager_action", "is_patcher", "auxiliary_models", "loaded_models", "model_info",
    "model_management", "model_name", "models_text", "panel_state", "parse_size", "record",
    "register_auxiliary", "request_between_prompts", "running", "running_prompts",
    "unload_index", "using", "wait_for_memory", "wait_for_memory_async",
]
