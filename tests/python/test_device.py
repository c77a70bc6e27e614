"""select_device(): the decision on numbers, the CPU answer without CUDA, bad input."""

import pytest

import headroom
from headroom import device

GIB = 1 << 30


def test_decide_fits_offload_cpu():
    c = device.decide(2 * GIB, 4 * GIB, 0)
    assert c.device == "cuda:0" and c.offload_bytes == 0 and c.is_gpu
    c = device.decide(6 * GIB, 4 * GIB, 3 * GIB)
    assert c.device == "cuda:0" and c.offload_bytes == 2 * GIB
    assert "after offloading 2.0 GiB" in c.reason
    c = device.decide(8 * GIB, 4 * GIB, 3 * GIB)
    assert c.device == "cpu" and not c.is_gpu
    assert "8.0 GiB needed" in c.reason and "3.0 GiB offloadable" in c.reason
    c = device.decide(3 * GIB, 4 * GIB, 0, reserve=2 * GIB)
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
