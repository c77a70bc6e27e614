"""headroom's ComfyUI node pack: memory monitor, free-memory pass-through
nodes, VRAM optimizer, smart memory manager, per-stage report.

ComfyUI loads this folder when it is linked or copied into custom_nodes/.
The nodes need the headroom Python package: installed with pip, or, when this
folder is a link into a headroom checkout, the checkout's python/ folder.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
