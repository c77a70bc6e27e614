"""headroom.torch.alloc_conf(): PYTORCH_CUDA_ALLOC_CONF in PyTorch's syntax,
checked by the pool's own parser, and a warning when it is set too late."""

import pytest

from headroom import torch as hrtorch


@pytest.fixture
def lib(fresh_loader, libpath):
    fresh_loader.setenv("HEADROOM_LIB", libpath)
    return fresh_loader


def test_knobs_in_pytorch_syntax(lib):
    s = hrtorch.alloc_conf(expandable_segments=True, garbage_collection_threshold=0.8,
                           max_split_size_mb=512,
                           roundup_power2_divisions={256: 1, 512: 2, ">": 8})
    assert s == ("max_split_size_mb:512,garbage_collection_threshold:0.8,"
                 "expandable_segments:True,roundup_power2_divisions:[256:1,512:2,>:8]")
    assert hrtorch.alloc_conf() == ""
    assert hrtorch.alloc_conf(roundup_power2_divisions=4, backend="native",
                              pinned_use_cuda_host_register=False) == \
        "backend:native,roundup_power2_divisions:4,pinned_use_cuda_host_register:False"


@pytest.mark.parametrize("knobs,exc,message", [
    ({"max_split_size_mb": 10}, ValueError, r"max_split_size_mb: '10' is not an integer in \(20"),
    ({"garbage_collection_threshold": 1.5}, ValueError,
     r"garbage_collection_threshold: '1.5' is not a number in \(0.0, 1.0\)"),
    ({"garbage_collection_threshold": 0}, ValueError, "garbage_collection_threshold"),
    ({"roundup_power2_divisions": {300: 1}}, ValueError, "'300' is not a power of two"),
    ({"roundup_power2_divisions": 3}, ValueError, "roundup_power2_divisions"),
    ({"memory_fraction": 0.5}, ValueError, "unknown PYTORCH_CUDA_ALLOC_CONF knob 'memory_fraction'"),
    ({"max_split_mb": 64}, ValueError, "knob 'max_split_mb'; PyTorch's knobs are: backend"),
    ({"backend": "cuda"}, ValueError, "backend must be one of native, cudaMallocAsync"),
    ({"expandable_segments": "yes"}, TypeError, "expandable_segments must be True or False"),
    ({"max_split_size_mb": 1.5}, TypeError, "max_split_size_mb must be an integer"),
    ({"garbage_collection_threshold": "0.5"}, TypeError, "garbage_collection_threshold"),
    ({"roundup_power2_divisions": {256: "1"}}, TypeError, "divisions of 256"),
    ({"roundup_power2_divisions": {"x": 1}}, TypeError, "an interval is an integer"),
])
def test_bad_knobs_are_named(lib, knobs, exc, message):
    with pytest.raises(exc, match=message):
        hrtorch.alloc_conf(**knobs)


def test_apply_sets_the_environment_and_warns_when_late(lib):
    lib.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    s = hrtorch.alloc_conf(apply=True, max_split_size_mb=128)
    import os

    assert os.environ["PYTORCH_CUDA_ALLOC_CONF"] == s == "max_split_size_mb:128"
    with pytest.raises(TypeError, match="apply must be True or False"):
        hrtorch.alloc_conf(apply="yes")
    try:
        import torch
    except ImportError:
        pytest.skip("torch is not importable: nothing to be late for")
    # A stand-in for a process whose CUDA is initialised (none is here).
    lib.setattr(torch.cuda, "is_initialized", lambda: True)
    with pytest.warns(hrtorch.AllocConfWarning, match="after CUDA was initialised"):
        hrtorch.alloc_conf(apply=True, expandable_segments=True)
    assert os.environ["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
