"""headroom.torch.install_allocator(): its refusals. There is no GPU on the
test machine, so what is checked is that each refusal is the right one, with
a message that says what to do. Where a refusal cannot happen here (CUDA
present but too late), a stand-in torch module checks the decision logic;
it claims nothing about a GPU."""

import sys
import types

import pytest

import headroom
from headroom import torch as hr_torch

from conftest import torch_or_skip


@pytest.fixture(autouse=True)
def not_installed():
    hr_torch._installed = False
    yield
    hr_torch._installed = False


def test_refusal_on_this_machine(libpath, monkeypatch):
    monkeypatch.setenv("HEADROOM_LIB", libpath)
    try:
        import torch
    except ImportError:
        with pytest.raises(hr_torch.AllocatorError, match="needs PyTorch"):
            hr_torch.install_allocator()
        return
    with pytest.raises(hr_torch.AllocatorError) as ei:
        hr_torch.install_allocator()
    msg = str(ei.value)
    if not hasattr(torch.cuda.memory, "CUDAPluggableAllocator"):
        assert "CUDAPluggableAllocator" in msg and "2.0" in msg and torch.__version__ in msg
    elif not torch.cuda.is_available():
        assert msg.startswith("no CUDA device")
    assert not hr_torch.installed()


def test_pool_stats_refuse_when_not_installed():
    with pytest.raises(hr_torch.AllocatorError, match="not installed"):
        hr_torch.pool_stats()
    # Freeing has one way, headroom.free_memory(): no second one here.
    assert not hasattr(hr_torch, "release_cached")


def test_conf_must_be_text():
    with pytest.raises(TypeError, match="conf must be a string"):
        hr_torch.install_allocator(conf=128)


def _stand_in_torch(initialized, swap_error=None):
    calls = []

    class Pluggable:
        def __init__(self, path, malloc, free):
            calls.append(("pluggable", path, malloc, free))

    def change(alloc):
        if swap_error:
            raise RuntimeError(swap_error)
        calls.append(("change", alloc))

    mem = types.SimpleNamespace(CUDAPluggableAllocator=Pluggable, change_current_allocator=change)
    cuda = types.SimpleNamespace(memory=mem, is_available=lambda: True,
                                 is_initialized=lambda: initialized)
    return types.SimpleNamespace(cuda=cuda, __version__="2.1.0"), calls


def test_too_late_when_cuda_is_initialised(monkeypatch):
    fake, calls = _stand_in_torch(initialized=True)
    monkeypatch.setitem(sys.modules, "torch", fake)
    with pytest.raises(hr_torch.AllocatorError, match="^too late: CUDA is already initialised"):
        hr_torch.install_allocator()
    assert calls == [] and not hr_torch.installed()


def test_too_late_when_torch_refuses_the_swap(monkeypatch, libpath):
    monkeypatch.setenv("HEADROOM_LIB", libpath)
    from headroom._c import lib as _lib
    if not _lib.has("hr_torch_malloc"):
        fake, _ = _stand_in_torch(initialized=False)
        monkeypatch.setitem(sys.modules, "torch", fake)
        with pytest.raises(hr_torch.AllocatorError, match="has no pool"):
            hr_torch.install_allocator()
        return
    fake, calls = _stand_in_torch(initialized=False,
                                  swap_error="Can't swap an already initialized allocator")
    monkeypatch.setitem(sys.modules, "torch", fake)
    # The stand-in has no libc10 beside it: the out-of-memory hook (tested in
    # test_torch_oom_raise.py) is waived so the refusal under test is reached.
    with pytest.raises(hr_torch.AllocatorError, match="^too late: PyTorch refused"):
        hr_torch.install_allocator(require_oom_raise=False)
    assert calls and calls[0][2:] == ("hr_torch_malloc", "hr_torch_free")


def test_real_torch_has_no_cuda_here():
    torch = torch_or_skip()
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    assert headroom.select_device(1).device == "cpu"
