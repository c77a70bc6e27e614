"""headroom: see where GPU and host memory go, and release it before it runs out.

The Python layer over libheadroom (loaded with ctypes on first use, so that
``import headroom`` and the standard-library-only parts, such as
``python3 -m headroom.trace``, work without the library):

- snapshot(): the machine's memory as a dict, as ``headroom status --json``.
- free_memory(mode): the one way to release what this process can (caches,
  idle registered modules, ComfyUI's models, by the cleanup mode's row of
  libheadroom's table), and say how much came back.
- stage(name) / stages.report(): which named stage keeps the memory the
  process gains.
- select_device(bytes_needed): the GPU if the work fits (and PyTorch can use
  it), else the CPU, with the reason.
- headroom.torch.install_allocator(): headroom's pool as PyTorch's allocator.
- Registry: residency for torch.nn.Modules under a byte budget (partial,
  lookahead, offload after use, the pool's reclaimer); tag(name) for allocations.
- estimate_bytes(x): a safetensors file's or a module's bytes before loading.
- Pool: libheadroom's caching allocator on the sim, host or cuda backend.
- agent.connect() / reserve(): this process as a client of the memory broker.

The package is in rooms: _c (the ctypes layer: the library, the option table,
the pool, the cleanup modes), readings (snapshot, /proc, the C heap, detection, attribution), pytorch
(allocator, registry, stages, device choice, VRAM), comfy (ComfyUI), agent
(the broker's client), and free and manager on top of them.

Errors from the library are HeadroomError (code, name, hr_strerror text);
LibraryNotFoundError says where the library was looked for.
"""

import sys

from . import agent, comfy
from ._c import options, pool
from ._c.lib import API_VERSION, HeadroomError, LibraryNotFoundError, VersionMismatchError
from ._c.lib import available as library_available
from ._c.lib import load as load_library
from ._c.pool import Pool
from .agent import reserve
from .free import MODES, FreeResult, free_memory
from .pytorch import allocator, stages
from .pytorch.device_choice import DeviceChoice, select_device
from .pytorch.estimate import estimate_bytes
from .pytorch.registry import (LowMemoryWarning, MemoryNotReturnedWarning, Registry,
                               ResidencyError, tag)
from .pytorch.stages import stage
from .readings.snapshot import snapshot

__version__ = "%d.%d.0" % API_VERSION

#: Module names the documentation uses, kept as aliases of where the code
#: lives: ``import headroom.torch`` and ``headroom.torch.install_allocator``
#: both reach headroom.pytorch.allocator. No file of the package is named
#: torch (one would shadow PyTorch inside the package), and none of these
#: imports PyTorch.
ALIASES = {"torch": allocator, "stages": stages, "pool": pool, "options": options}
torch = allocator
for _name, _module in ALIASES.items():
    sys.modules[__name__ + "." + _name] = _module
del _name, _module

__all__ = [
    "API_VERSION", "DeviceChoice", "FreeResult", "HeadroomError", "LibraryNotFoundError",
    "LowMemoryWarning", "MemoryNotReturnedWarning", "MODES", "Pool", "Registry",
    "ResidencyError", "VersionMismatchError", "agent", "comfy", "estimate_bytes",
    "free_memory", "library_available", "library_version", "load_library", "options", "pool",
    "reserve", "select_device", "snapshot", "stage", "stages", "tag", "torch",
]


def library_version():
    """The loaded libheadroom's version string; loads it (LibraryNotFoundError)."""
    return load_library().hr_version().decode()
