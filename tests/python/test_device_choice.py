"""select_device(): the decision on numbers, the CPU answer without CUDA, bad input."""

import pytest

import headroom
from headroom.pytorch import device_choice

GIB = 1 << 30


def test_decide_fits_offload_cpu():
    c = device_choice.decide(2 * GIB, 4 * GIB, 0)
    assert c.device == "cuda:0" and c.offload_bytes == 0 and c.is_gpu
    c = device_choice.decide(6 * GIB, 4 * GIB, 3 * GIB)
    assert c.device == "cuda:0" and c.offload_bytes == 2 * GIB
    assert "after offloading 2.0 GiB" in c.reason
    c = device_choice.decide(8 * GIB, 4 * GIB, 3 * GIB)
    assert c.device == "cpu" and not c.is_gpu
    assert "8.0 GiB needed" in c.reason and "3.0 GiB offloadable" in c.reason
    c = device_choice.decide(3 * GIB, 4 * GIB, 0, reserve=2 * GIB)
    assert c.device == "cpu"


def test_select_device_bad_input():
    for bad in (-1, 1.5, "1G", True):
        with pytest.raises(ValueError, match="non-negative integer"):
            headroom.select_device(bad)
    with pytest.raises(ValueError, match="reserve"):
        headroom.select_device(1, reserve=-5)


def test_select_device_without_cuda_is_the_cpu_with_a_reason():
    try:
        import torch
        has_cuda = torch.cuda.is_available()
    except ImportError:
        torch, has_cuda = None, False
    if has_cuda:
        pytest.skip("a CUDA device is present; this test checks the CPU answer")
    c = headroom.select_device(1 << 20)
    assert c.device == "cpu"
    if torch is None:
        assert c.reason == "torch is not installed"
    else:
        assert "no CUDA device" in c.reason


GPU = 24 << 30  # the stand-in NVML's devices


class StandInRegistry:
    """A stand-in for a Registry on a GPU this machine does not have: its
    device and what its idle models could give back."""

    def __init__(self, device, releasable):
        self.device, self._r = device, releasable

    def releasable_bytes(self):
        return self._r


def nvml_or_skip(libpath, monkeypatch, gpus, procs):
    import os

    try:
        import torch
        if torch.cuda.is_available():
            pytest.skip("a CUDA device is present; these tests read the stand-in NVML")
    except ImportError:
        pass
    p = os.path.join(os.path.dirname(libpath), "helpers", "libfake-nvml-v3.so")
    if not os.path.exists(p):
        pytest.skip("the stand-in NVML is not built at %s" % p)
    monkeypatch.setenv("HEADROOM_LIB", libpath)
    monkeypatch.setenv("FAKE_NVML_GPUS", str(gpus))
    monkeypatch.setenv("FAKE_NVML_PROCS", procs)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return p


def test_gpus_pytorch_cannot_use_are_never_chosen(fresh_loader, libpath):
    # tests/fake_nvml: three 24 GiB GPUs; GPU 0 holds 20000 MiB of another
    # process, GPU 1 nothing of ours (the stand-in always shows 512 MiB used
    # there), GPU 2 10000 MiB. This PyTorch has no CUDA: whatever NVML shows,
    # the choice is the CPU, and the reason says why.
    torch = pytest.importorskip("torch")
    nvml = nvml_or_skip(libpath, fresh_loader, 3, "0:111:20000,2:222:10000")
    c = headroom.select_device(8 * GIB, nvml_path=nvml)
    assert c.device == "cpu" and not c.is_gpu, c
    assert c.reason.startswith("NVML shows 3 GPUs (cuda:1 has the most usable memory, "), c
    if torch.version.cuda is None:
        assert "this PyTorch (%s) is built without CUDA" % torch.__version__ in c.reason
    else:
        assert "torch.cuda.is_available() is False" in c.reason
    assert c.reason.endswith("PyTorch could not use them")
    # What would work with CUDA stays readable: every GPU's numbers.
    free = {r["index"]: r["free_bytes"] for r in c.candidates}
    assert free[1] > free[2] > free[0] and len(c.candidates) == 3
    x = torch.ones(4).to(c.device)  # the device is usable as it is
    assert x.device.type == "cpu"
    # Idle models on GPU 2 are counted in its usable memory, still the CPU.
    reg = StandInRegistry("cuda:2", 12 * GIB)
    c = headroom.select_device(20 * GIB, registry=reg, nvml_path=nvml)
    assert c.device == "cpu" and "cuda:2 has the most usable memory" in c.reason, c
    assert {r["index"]: r["releasable_bytes"] for r in c.candidates}[2] == 12 * GIB
    # One GPU asked for by index: the CPU, saying so.
    c = headroom.select_device(GIB, device=0, nvml_path=nvml)
    assert c.device == "cpu" and c.reason.startswith("NVML shows 1 GPU (cuda:0 ")
    assert c.reason.endswith("PyTorch could not use it")
    with pytest.raises(ValueError, match="device 5 does not exist; 3 GPU"):
        headroom.select_device(GIB, device=5, nvml_path=nvml)
    with pytest.raises(ValueError, match="device must be None"):
        headroom.select_device(GIB, device="cuda:0", nvml_path=nvml)


def test_without_torch_nvml_gpus_are_not_chosen_either(fresh_loader, libpath, monkeypatch):
    import sys

    nvml = nvml_or_skip(libpath, fresh_loader, 2, "0:111:20000")
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch raises ImportError
    c = headroom.select_device(GIB, nvml_path=nvml)
    assert c.device == "cpu" and c.reason.endswith(
        "but torch is not installed: PyTorch could not use them"), c


def test_the_gpu_with_the_most_usable_memory_wins(monkeypatch):
    # With CUDA, the readings are PyTorch's: a stand-in torch.cuda with three
    # devices (free bytes) and nothing cached.
    import sys
    import types

    free = {0: 4 * GIB, 1: 20 * GIB, 2: 12 * GIB}
    cuda = types.SimpleNamespace(
        is_available=lambda: True, device_count=lambda: 3,
        mem_get_info=lambda i: (free[i], 24 * GIB), memory_reserved=lambda i: 0,
        memory_allocated=lambda i: 0)
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    c = headroom.select_device(8 * GIB)
    assert c.device == "cuda:1" and c.reason.startswith("8.0 GiB needed, 20.0 GiB free on "
                                                        "cuda:1; the most usable memory of 3")
    reg = StandInRegistry("cuda:2", 12 * GIB)
    c = headroom.select_device(22 * GIB, registry=reg)
    assert c.device == "cuda:2" and c.offload_bytes == 10 * GIB and "after offloading" in c.reason
    c = headroom.select_device(40 * GIB, registry=[reg])
    assert c.device == "cpu" and c.reason.count("cuda:") == 3 and "from idle models" in c.reason
    assert headroom.select_device(GIB, device=0).device == "cuda:0"


def test_cuda_visible_devices_limits_and_renumbers(fresh_loader, libpath):
    pytest.importorskip("torch")
    nvml = nvml_or_skip(libpath, fresh_loader, 3, "0:111:20000")
    fresh_loader.setenv("CUDA_VISIBLE_DEVICES", "2,0")
    c = headroom.select_device(GIB, nvml_path=nvml)
    # GPU 2 is cuda:0 to this process; GPU 1 is hidden.
    assert c.device == "cpu" and len(c.candidates) == 2, c
    assert [r["source"] for r in c.candidates] == ["NVML (Fake GPU 2)", "NVML (Fake GPU 0)"]
    fresh_loader.setenv("CUDA_VISIBLE_DEVICES", "")
    c = headroom.select_device(GIB, nvml_path=nvml)
    assert c.device == "cpu" and "no CUDA device" in c.reason


def test_choose_on_numbers():
    rows = [{"index": 0, "free_bytes": 4 * GIB, "releasable_bytes": 0},
            {"index": 1, "free_bytes": 2 * GIB, "releasable_bytes": 3 * GIB,
             "cached_bytes": GIB}]
    c = device_choice.choose(5 * GIB, rows)
    assert c.device == "cuda:1" and c.offload_bytes == 2 * GIB
    assert device_choice.choose(GIB, []).reason == "no GPU is visible"
    c = device_choice.choose(7 * GIB, rows, reserve=GIB)
    assert c.device == "cpu" and "with 1.0 GiB kept free" in c.reason
