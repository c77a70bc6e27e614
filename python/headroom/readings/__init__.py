"""The readings room: what the package knows about memory, and the library's
tests that judge it.

- snapshot: the machine through libheadroom's probe (headroom.snapshot()).
- procfs: this process's RSS, the host's memory and processes, from /proc.
- heap: the C heap's live bytes (glibc's mallinfo2).
- detection: levels with hysteresis and leak detection (the trend test).
- attribution: which named part (a stage, a ComfyUI node) keeps the memory
  the process gains, on the trend test.
- units: sizes written and read as text.

PyTorch's and the pools' VRAM readings live in the PyTorch room
(headroom.pytorch.vram). Nothing here imports torch.
"""
