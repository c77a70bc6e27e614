"""install_allocator()'s out-of-memory hook: finding c10::detail::torchCheckFail
in PyTorch's libc10 and handing it to libheadroom (hr_torch_set_oom_raise).
The lookup and the setter run for real against Debian's torch (1.13, CPU
only): a child process sets the hook and makes the pool fail, and libc10
throws c10::Error with headroom's message (with no C++ caller to catch it
there, the child ends in std::terminate, which shows the type and the text).
install_allocator() itself needs CUDA, so its order of calls and its refusal
when the symbol is missing are checked with a stand-in torch module; that
claims nothing about a GPU."""

import ctypes
import os
import shutil
import signal
import sys
import types

import pytest

from headroom._c import lib as _lib
from headroom import torch as hr_torch

from conftest import run_python, torch_or_skip


@pytest.fixture
def lib(fresh_loader, libpath):
    fresh_loader.setenv("HEADROOM_LIB", libpath)
    if not _lib.has("hr_torch_set_oom_raise"):
        pytest.skip("this libheadroom has no hr_torch_set_oom_raise")
    yield _lib.load()
    _lib.load().hr_torch_set_oom_raise(None)


@pytest.fixture(autouse=True)
def not_installed():
    hr_torch._installed = False
    yield
    hr_torch._installed = False


def _stand_in_torch(torch_file, swap_error=None):
    calls = []

    class Pluggable:
        def __init__(self, path, malloc, free):
            calls.append(("pluggable", malloc, free))

    def change(alloc):
        if swap_error:
            raise RuntimeError(swap_error)
        calls.append(("change",))

    mem = types.SimpleNamespace(CUDAPluggableAllocator=Pluggable, change_current_allocator=change)
    cuda = types.SimpleNamespace(memory=mem, is_available=lambda: True,
                                 is_initialized=lambda: False)
    fake = types.ModuleType("torch")
    fake.__file__ = torch_file
    fake.__version__ = "2.11.0"
    fake.cuda = cuda
    return fake, calls


def _mapped_file(addr):
    """The file mapped at `addr` in this process, from /proc/self/maps."""
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            if lo <= addr < hi and len(parts) == 6:
                return parts[5].strip()
    return None


def test_lookup_finds_torch_check_fail_in_debian_libc10(lib):
    torch = torch_or_skip()
    addr, path = hr_torch.find_check_fail(torch)
    assert path == os.path.join(os.path.dirname(torch.__file__), "lib", "libc10.so")
    want = ctypes.cast(getattr(ctypes.CDLL(path), hr_torch.CHECK_FAIL_SYMBOL), ctypes.c_void_p)
    assert addr == want.value
    # The address lies in the libc10 that import torch mapped, not another copy.
    mapped = _mapped_file(addr)
    assert mapped and os.path.realpath(mapped) == os.path.realpath(path)
    hr_torch.set_oom_raise(lib, addr)  # the setter takes it; the fixture removes it


RAISE_CHILD = r"""
import ctypes, os, sys
import torch
from headroom import torch as hr_torch
from headroom._c import lib as _lib
lib = _lib.load()
addr, path = hr_torch.find_check_fail(torch)
hr_torch.set_oom_raise(lib, addr)
ok = lib.hr_torch_malloc(1 << 20, 0, None)
print("first", bool(ok), flush=True)
print("zero", lib.hr_torch_malloc(0, 0, None), flush=True)
lib.hr_torch_malloc(1 << 40, 0, None)  # past the pool's limit: torchCheckFail throws
print("returned", flush=True)
"""


def test_hook_throws_c10_error_with_the_pools_message(lib, libpath):
    torch_or_skip()
    r = run_python(RAISE_CHILD, env={"HEADROOM_LIB": libpath, "HEADROOM_POOL_BACKEND": "sim",
                                     "HEADROOM_ALLOC_CONF": "memory_fraction:0.001"})
    assert r.stdout.split("\n")[:2] == ["first True", "zero None"], r.stderr
    assert "returned" not in r.stdout
    # Nothing in a Python process catches a C++ exception thrown under ctypes:
    # it reaches std::terminate, which names its type and its text.
    assert r.returncode == -signal.SIGABRT, (r.returncode, r.stderr)
    assert "terminate called after throwing an instance of 'c10::Error'" in r.stderr
    assert "CUDA out of memory. Tried to allocate 1.00 TiB on device 0." in r.stderr
    assert "Hint:" in r.stderr


def test_install_sets_the_hook_before_swapping(lib, monkeypatch):
    torch = torch_or_skip()
    fake, calls = _stand_in_torch(torch.__file__)
    monkeypatch.setitem(sys.modules, "torch", fake)
    real = hr_torch.set_oom_raise
    monkeypatch.setattr(hr_torch, "set_oom_raise",
                        lambda lib_, a: (calls.append(("hook", a)), real(lib_, a)))
    hr_torch.install_allocator()
    want, _ = hr_torch.find_check_fail(torch)
    assert [c[0] for c in calls] == ["hook", "pluggable", "change"]
    assert calls[0][1] == want and want
    assert hr_torch.installed()


def test_refused_swap_removes_the_hook(lib, monkeypatch):
    torch = torch_or_skip()
    fake, calls = _stand_in_torch(torch.__file__, swap_error="Can't swap an already "
                                  "initialized allocator")
    monkeypatch.setitem(sys.modules, "torch", fake)
    real = hr_torch.set_oom_raise
    monkeypatch.setattr(hr_torch, "set_oom_raise",
                        lambda lib_, a: (calls.append(("hook", a)), real(lib_, a)))
    with pytest.raises(hr_torch.AllocatorError, match="^too late: PyTorch refused"):
        hr_torch.install_allocator()
    hooks = [c[1] for c in calls if c[0] == "hook"]
    assert len(hooks) == 2 and hooks[0] and hooks[1] is None
    assert not hr_torch.installed()


def test_missing_symbol_refuses_unless_opted_out(lib, libpath, monkeypatch, tmp_path):
    # A torch directory whose lib/libc10.so is a library without torchCheckFail
    # (a copy of libheadroom), and no other libc10 mapped.
    (tmp_path / "torch" / "lib").mkdir(parents=True)
    shutil.copy(libpath, tmp_path / "torch" / "lib" / "libc10.so")
    fake, calls = _stand_in_torch(str(tmp_path / "torch" / "__init__.py"))
    monkeypatch.setitem(sys.modules, "torch", fake)
    monkeypatch.setattr(hr_torch, "_loaded_libc10", lambda: [])
    with pytest.raises(hr_torch.AllocatorError) as ei:
        hr_torch.install_allocator()
    msg = str(ei.value)
    assert msg.startswith("cannot find c10::detail::torchCheckFail")
    assert str(tmp_path / "torch" / "lib" / "libc10.so") + " (no " in msg
    assert "illegal memory access" in msg and "require_oom_raise=False" in msg
    assert calls == [] and not hr_torch.installed()

    hr_torch.install_allocator(require_oom_raise=False)
    assert [c[0] for c in calls] == ["pluggable", "change"] and hr_torch.installed()


def test_missing_libc10_file_is_named(monkeypatch, tmp_path):
    fake, _ = _stand_in_torch(str(tmp_path / "torch" / "__init__.py"))
    monkeypatch.setattr(hr_torch, "_loaded_libc10", lambda: [])
    with pytest.raises(hr_torch.AllocatorError,
                       match=r"looked in: .*/torch/lib/libc10\.so \(no such file\)"):
        hr_torch.find_check_fail(fake)
