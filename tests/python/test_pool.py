"""The pool from Python: headroom.pool.Pool on the host and sim backends, its
statistics under torch.cuda.memory_stats() names, its errors, and the two
entry points PyTorch's pluggable allocator calls, driven on the host backend
(real memory; no GPU on the test machine)."""

import ctypes

import pytest

import headroom
from headroom._c import lib as _lib, pool
from headroom import torch as hr_torch

from conftest import run_python

MIB = 1 << 20


@pytest.fixture
def lib(fresh_loader, libpath):
    fresh_loader.setenv("HEADROOM_LIB", libpath)
    if not _lib.has("hr_pool_create"):
        pytest.skip("this libheadroom has no pool")
    return _lib.load()


def test_host_pool_alloc_write_free_release(lib):
    with pool.Pool("host", 64 * MIB) as p:
        a = p.alloc(3 * MIB)
        b = p.alloc(100)
        ctypes.memset(a, 0xAB, 3 * MIB)  # real memory: writing must not crash
        ctypes.memset(b, 0xCD, 100)
        assert ctypes.string_at(a + 3 * MIB - 4, 4) == b"\xab" * 4
        st = p.stats()
        assert st["allocation.all.current"] == 2
        assert st["allocated_bytes.all.current"] >= 3 * MIB + 100
        assert st["reserved_bytes.all.current"] >= st["allocated_bytes.all.current"]
        assert st["requested_bytes.all.current"] == 3 * MIB + 100
        p.free(a)
        p.free(b)
        st = p.stats()
        assert st["allocated_bytes.all.current"] == 0
        assert st["allocated_bytes.all.peak"] >= 3 * MIB + 100
        assert st["allocation.all.allocated"] == 2 and st["allocation.all.freed"] == 2
        reserved = st["reserved_bytes.all.current"]
        assert p.release_cached() == reserved > 0
        assert p.stats()["reserved_bytes.all.current"] == 0
        p.check()
        assert p.mem_info()[1] == 64 * MIB


def test_out_of_memory_carries_the_diagnosis(lib):
    with pool.Pool("sim", 16 * MIB) as p:
        p.alloc(8 * MIB)
        with pytest.raises(headroom.HeadroomError) as ei:
            p.alloc(32 * MIB)
        e = ei.value
        assert e.name == "HR_ENOMEM" and "out of memory" in str(e)
        assert "tried to allocate" in str(e) and e.detail == p.diagnosis()
        assert p.stats()["num_ooms"] == 1


def test_pool_errors(lib):
    with pytest.raises(ValueError, match="backend must be one of sim, host, cuda"):
        pool.Pool("tpu")
    with pytest.raises(ValueError, match="capacity"):
        pool.Pool("sim", -1)
    with pytest.raises(TypeError, match="must be a string"):
        pool.Pool("sim", conf=7)
    with pytest.raises(headroom.HeadroomError, match="max_split_size_mb") as ei:
        pool.Pool("sim", conf="max_split_size_mb:-4")
    assert ei.value.name == "HR_EINVAL"
    with pool.Pool("sim", 16 * MIB, conf="garbage_collection_threshold:0.6") as p:
        a = p.alloc(MIB)
        p.free(a)
        with pytest.raises(headroom.HeadroomError, match="HR_EINVAL"):
            p.free(a)  # twice
        with pytest.raises(ValueError, match="size must be"):
            p.alloc(-3)
    with pytest.raises(ValueError, match="closed"):
        p.alloc(1)
    for use in (lambda: p.free(0), p.stats, p.release_cached, p.check, p.mem_info,
                p.reset_peak):
        with pytest.raises(ValueError, match="the pool is closed"):
            use()
    p.close()  # twice is fine


def test_integers_out_of_range_raise_naming_the_argument(lib):
    top = (1 << 64) - 1
    with pytest.raises(ValueError, match=r"capacity must be an integer in \[0, %d\]; got %d"
                       % (top, top + 6)):
        pool.Pool("sim", capacity=(1 << 64) + 5)
    with pytest.raises(ValueError, match=r"device must be an integer in \[-2147483648, "):
        pool.Pool("sim", MIB, device=1 << 31)
    with pytest.raises(TypeError, match="capacity must be an integer"):
        pool.Pool("sim", capacity=1.5)
    with pool.Pool("sim", 16 * MIB) as p:
        with pytest.raises(ValueError, match=r"size must be an integer in \[0, %d\]; got %d"
                           % (top, (1 << 64) + 100)):
            p.alloc((1 << 64) + 100)
        assert p.stats()["allocation.all.allocated"] == 0  # nothing was allocated
        with pytest.raises(ValueError, match="size"):
            p.alloc(-1)
    # The check sits in the one ctypes module, under every declared function.
    with pytest.raises(ValueError, match=r"hr_pool_alloc: size must be an integer in"):
        lib.hr_pool_alloc(None, 1 << 64, None, None)
    with pytest.raises(ValueError, match=r"hr_backend_create: device must be an integer in"):
        lib.hr_backend_create(b"sim", -(1 << 40), 0, None)
    with pytest.raises(ValueError, match="priority must be an integer in"):
        _lib.make(_lib.AssetDesc, priority=1 << 31)


def test_cuda_backend_without_a_driver(lib):
    try:
        with pool.Pool("cuda", 0):
            pass
    except headroom.HeadroomError as e:
        assert e.name == "HR_ENODRIVER", str(e)
        assert "driver not found" in str(e)
    else:
        pytest.skip("a CUDA driver is present here")


def test_install_allocator_checks_conf_first(lib):
    with pytest.raises(headroom.HeadroomError, match="max_split_size_mb"):
        hr_torch.install_allocator(conf="max_split_size_mb:-4")
    assert not hr_torch.installed()


def test_installed_but_library_without_hr_torch_pool(lib, monkeypatch):
    if _lib.has("hr_torch_pool"):
        pytest.skip("this libheadroom exports hr_torch_pool")
    monkeypatch.setattr(hr_torch, "_installed", True)
    with pytest.raises(hr_torch.AllocatorError, match="does not export hr_torch_pool"):
        hr_torch.pool_stats()


TORCH_ENTRY = r"""
import ctypes, os
lib = ctypes.CDLL(os.environ["HEADROOM_LIB"])
lib.hr_torch_malloc.restype = ctypes.c_void_p
lib.hr_torch_malloc.argtypes = [ctypes.c_ssize_t, ctypes.c_int, ctypes.c_void_p]
lib.hr_torch_free.restype = None
lib.hr_torch_free.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t, ctypes.c_int, ctypes.c_void_p]
ptrs = [lib.hr_torch_malloc(n, 0, None) for n in (1 << 20, 512, 5 << 20)]
for p, n in zip(ptrs, (1 << 20, 512, 5 << 20)):
    if p:
        ctypes.memset(p, 0x5A, n)
print("ptrs", all(ptrs), len(set(ptrs)))
print("negative", lib.hr_torch_malloc(-1, 0, None))
for p, n in zip(ptrs, (1 << 20, 512, 5 << 20)):
    lib.hr_torch_free(p, n, 0, None)
again = lib.hr_torch_malloc(1 << 20, 0, None)
print("reused", again == ptrs[0])
"""


def test_pytorch_entry_points_on_the_host_backend(lib, libpath):
    r = run_python(TORCH_ENTRY, env={"HEADROOM_LIB": libpath, "HEADROOM_POOL_BACKEND": "host"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:3] == ["ptrs True 3", "negative None", "reused True"]


def test_pytorch_entry_points_refuse_a_bad_conf(lib, libpath):
    r = run_python(TORCH_ENTRY, env={"HEADROOM_LIB": libpath, "HEADROOM_POOL_BACKEND": "host",
                                     "HEADROOM_ALLOC_CONF": "max_split_size_mb:oops"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ptrs False")  # every allocation fails: NULL, not a crash


def test_free_memory_with_the_allocator_installed_but_unreachable(lib, monkeypatch):
    # The state after install_allocator() with a library that does not export
    # hr_torch_pool: free_memory must say so, not fail.
    if _lib.has("hr_torch_pool"):
        pytest.skip("this libheadroom exports hr_torch_pool")
    monkeypatch.setattr(hr_torch, "_installed", True)
    res = headroom.free_memory("conservative")
    assert any(a.startswith("headroom pool release unavailable: this libheadroom")
               for a in res.actions)
    assert res.vram_before is None


TORCH_STATS = r"""
import ctypes, os
import headroom
from headroom import torch as hr_torch
from headroom._c import lib as _lib
lib = _lib.load()
# install_allocator() needs CUDA; the entry points and the statistics do not:
# drive them on the host backend and mark the allocator as installed.
hr_torch._installed = True
a = lib.hr_torch_malloc(3 << 20, 0, None)
ctypes.memset(a, 1, 3 << 20)
st = hr_torch.pool_stats()
print("alloc", st["allocated_bytes.all.current"] >= 3 << 20, st["allocation.all.current"])
lib.hr_torch_free(a, 3 << 20, 0, None)
# The pool's cached segments go back through the one way to free.
res = headroom.free_memory("conservative")
print("freed", any(a.startswith("headroom pool release (") and "B)" in a for a in res.actions),
      hr_torch.pool_stats(0)["reserved_bytes.all.current"], res.vram_freed > 0)
"""


def test_pool_stats_of_the_pytorch_pool(lib, libpath):
    if not _lib.has("hr_torch_pool"):
        pytest.skip("this libheadroom does not export hr_torch_pool(device) yet")
    r = run_python(TORCH_STATS, env={"HEADROOM_LIB": libpath, "HEADROOM_POOL_BACKEND": "host"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == ["alloc True 1", "freed True 0 True"]
