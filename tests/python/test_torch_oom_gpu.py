"""Out of memory with headroom's pool as PyTorch's CUDA allocator, on a real
GPU: the failure must reach Python as a RuntimeError that starts "CUDA out
of memory." and leave the CUDA context alive, so that after freeing tensors
the same process allocates and runs kernels again. Without the raise hook a
failure would be a NULL tensor and an illegal memory access. Needs PyTorch
>= 2.0 with CUDA and a device; skips with the reason everywhere else (the
CPU parts are in test_torch_oom_raise.py and tests/unit/test_torch_oom.cpp)."""

import pytest

from conftest import run_python, torch_or_skip

CHILD = r"""
import torch
from headroom import torch as hr_torch
hr_torch.install_allocator(conf="memory_fraction:0.05")
chunk = 256 << 20
xs, msg = [], None
try:
    for _ in range(100000):
        xs.append(torch.empty(chunk, dtype=torch.uint8, device="cuda"))
except RuntimeError as e:
    msg = str(e)
print("caught", type(msg).__name__, len(xs) > 0, flush=True)
print("message", (msg or "").startswith("CUDA out of memory. Tried to allocate 256.00 MiB"),
      flush=True)
del xs[: len(xs) // 2 + 1]
y = torch.ones(chunk, dtype=torch.uint8, device="cuda")
z = y.to(torch.int64).sum().item()
torch.cuda.synchronize()
print("alive", z == chunk, flush=True)
st = hr_torch.pool_stats(0)
print("ooms", st["num_ooms"] >= 1, flush=True)
print("MESSAGE", msg)
"""


def test_oom_raises_and_the_context_survives(libpath):
    torch = torch_or_skip()
    if not hasattr(torch.cuda, "memory") or not hasattr(torch.cuda.memory,
                                                         "CUDAPluggableAllocator"):
        pytest.skip("PyTorch %s has no CUDAPluggableAllocator (2.0 or later needed)"
                    % torch.__version__)
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: torch.cuda.is_available() is False")
    r = run_python(CHILD, env={"HEADROOM_LIB": libpath})
    assert r.returncode == 0, (r.stdout, r.stderr[-4000:])
    assert r.stdout.split("\n")[:4] == ["caught str True", "message True", "alive True",
                                        "ooms True"], (r.stdout, r.stderr[-4000:])
