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


def test_the_gpu_with_the_most_usable_memory_wins(fresh_loader, libpath):
    # tests/fake_nvml: three 24 GiB GPUs; GPU 0 holds 20000 MiB of another
    # process, GPU 1 nothing of ours (the stand-in always shows 512 MiB used
    # there), GPU 2 10000 MiB.
    nvml = nvml_or_skip(libpath, fresh_loader, 3, "0:111:20000,2:222:10000")
    c = headroom.select_device(8 * GIB, nvml_path=nvml)
    assert c.device == "cuda:1", c
    assert "the most usable memory of 3 GPUs" in c.reason and "read through NVML" in c.reason
    free = {r["index"]: r["free_bytes"] for r in c.candidates}
    assert free[1] > free[2] > free[0]
    # Idle models on GPU 2 that could give back 12 GiB make it the roomiest.
    reg = StandInRegistry("cuda:2", 12 * GIB)
    c = headroom.select_device(20 * GIB, registry=reg, nvml_path=nvml)
    assert c.device == "cuda:2" and c.offload_bytes > 0, c
    assert "after offloading" in c.reason
    # Nothing has room for 40 GiB: the CPU, with every GPU's numbers.
    c = headroom.select_device(40 * GIB, registry=[reg], nvml_path=nvml)
    assert c.device == "cpu" and c.reason.count("cuda:") == 3 and "from idle models" in c.reason
    # One GPU asked for by index.
    c = headroom.select_device(GIB, device=0, nvml_path=nvml)
    assert c.device == "cuda:0"
    with pytest.raises(ValueError, match="device 5 does not exist; 3 GPU"):
        headroom.select_device(GIB, device=5, nvml_path=nvml)
    with pytest.raises(ValueError, match="device must be None"):
        headroom.select_device(GIB, device="cuda:0", nvml_path=nvml)


def test_cuda_visible_devices_limits_and_renumbers(fresh_loader, libpath):
    nvml = nvml_or_skip(libpath, fresh_loader, 3, "0:111:20000")
    fresh_loader.setenv("CUDA_VISIBLE_DEVICES", "2,0")
    c = headroom.select_device(GIB, nvml_path=nvml)
    # GPU 2 is cuda:0 to this process; GPU 1 is hidden.
    assert c.device == "cuda:0" and len(c.candidates) == 2, c
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
