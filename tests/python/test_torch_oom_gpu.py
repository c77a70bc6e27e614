"""Out of memory with headroom's pool as PyTorch's CUDA allocator
(bench/gpu/oom.py, step 7 of the real-GPU validation): the failure must
reach Python as a RuntimeError that starts "CUDA out of memory." and leave
the CUDA context alive. The child needs PyTorch >= 2.0 with CUDA and a
device and skips with the reason everywhere else; the step's judgement is
checked here on made-up child output (the CPU parts of the raise are in
test_torch_oom_raise.py and tests/unit/test_torch_oom.cpp)."""

import os
import sys

import pytest

from conftest import REPO, run_python, torch_or_skip

sys.path.insert(0, os.path.join(REPO, "bench", "gpu"))
import oom  # noqa: E402

GOOD = ("raised RuntimeError\nheld 15\nalive True\nooms 1\n"
        "message CUDA out of memory. Tried to allocate 256.00 MiB on device 0. headroom's pool\n")


def test_a_good_child_passes_the_judgement():
    checks, seen = oom.judge(GOOD)
    assert all(ok for _, _, ok in checks), checks
    assert seen["held"] == "15"


@pytest.mark.parametrize("broken", [
    ("raised RuntimeError", "raised AcceleratorError"),  # an illegal address, say
    ("held 15", "held 0"),
    ("alive True", "alive False"),
    ("ooms 1", "ooms 0"),
    ("message CUDA out of memory.", "message CUDA error: an illegal memory access."),
    ("alive True\n", ""),  # the child died before it could say
])
def test_each_failure_is_caught(broken):
    checks, _ = oom.judge(GOOD.replace(*broken))
    assert [ok for _, _, ok in checks].count(False) == 1, checks


def test_oom_raises_and_the_context_survives(libpath):
    torch = torch_or_skip()
    if not hasattr(torch.cuda, "memory") or not hasattr(torch.cuda.memory,
                                                         "CUDAPluggableAllocator"):
        pytest.skip("PyTorch %s has no CUDAPluggableAllocator (2.0 or later needed)"
                    % torch.__version__)
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: torch.cuda.is_available() is False")
    r = run_python(oom.CHILD, env={"HEADROOM_LIB": libpath})
    assert r.returncode == 0, (r.stdout, r.stderr[-4000:])
    checks, _ = oom.judge(r.stdout)
    assert all(ok for _, _, ok in checks), (checks, r.stderr[-4000:])
