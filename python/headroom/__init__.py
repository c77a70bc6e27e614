"""headroom: see where GPU and host memory go, and release it before it runs out.

The Python layer over libheadroom (loaded with ctypes on first use, so that
``import headroom`` and the standard-library-only parts, such as
``python3 -m headroom.trace``, work without the library):

- snapshot(): the machine's memory as a dict, as ``headroom status --json``.
- free_memory(mode): release what this process can, and say how much.
- stage(name) / stages.report(): memory growth per named stage.
- select_device(bytes_needed): the GPU if the work fits, else the CPU.
- headroom.torch.install_allocator(): headroom's pool as PyTorch's allocator.
- Registry: residency for torch.nn.Modules under a byte budget (partial,
  lookahead, offload after use, the pool's reclaimer); tag(name) for allocations.
- estimate_bytes(x): a safetensors file's or a module's bytes before loading.

Errors from the library are HeadroomError (code, name, hr_strerror text);
LibraryNotFoundError says where the library was looked for.
"""

from . import agent, stages
from .agent import reserve
from ._lib import (API_VERSION, HeadroomError, LibraryNotFoundError, VersionMismatchError)
from ._lib import available as library_available
from ._lib import load as load_library
from .device import DeviceChoice, select_device
from .memory import MODES, FreeResult, free_memory
from .estimate import estimate_bytes
from .probe import snapshot
from .registry import (LowMemoryWarning, MemoryNotReturnedWarning, Registry, ResidencyError,
                       tag)
from .stages import stage

__version__ = "%d.%d.0" % API_VERSION

__all__ = [
    "API_VERSION", "DeviceChoice", "FreeResult", "HeadroomError", "LibraryNotFoundError",
    "LowMemoryWarning", "MemoryNotReturnedWarning", "MODES", "Registry", "ResidencyError",
    "VersionMismatchError", "free_memory",
    "estimate_bytes", "library_available", "library_version", "load_library", "select_device",
    "snapshot", "stage", "stages", "tag",
]
__all__ += ["agent", "reserve"]


def library_version():
    """The loaded libheadroom's version string; loads it (LibraryNotFoundError)."""
    return load_library().hr_version().decode()
