"""headroom's ComfyUI node pack: memory monitor, free-memory pass-through
nodes (the Model and CLIP ones unload through ComfyUI's model management),
VRAM optimizer, a wait for free memory, smart memory manager, per-stage and
per-node report, an auxiliary-model example, the /headroom/* routes, a web
panel (web/), and ComfyUI's agent for the memory broker
(headroom.comfy.broker_client).

ComfyUI loads this folder when it is linked or copied into custom_nodes/.
The nodes need the headroom Python package: installed with pip, or, when this
folder is a link into a headroom checkout, the checkout's python/ folder.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from . import routes as _routes
from headroom.comfy import broker_client as _broker_client, pernode as _pernode

WEB_DIRECTORY = "./web"

_routes.register()
# Measures each node's memory from now on, in every prompt (ComfyUI's
# execution hooked once per process; outside ComfyUI it does nothing).
_pernode.install()
# Registers ComfyUI with the memory broker of `headroom watch` whenever its
# socket exists, on a background thread (option comfy_agent; off with
# HEADROOM_COMFY_AGENT=0).
_broker_client.start()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
