"""bench/gpu/cuda.sh, the GPU validation's cuda step, run here for real: on a
machine without a GPU it must skip cleanly (exit 77, a RESULT line last,
cuda.md saying why), and with the tests' fake driver (tests/fake_cuda) its
plain walks must run and be parsed into the table, still skipping because
compute-sanitizer is absent, and marked as not from a device."""

import json
import os
import shutil
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "bench", "gpu", "cuda.sh")


def build_dir():
    """A build with the test programs: the one named by HEADROOM_LIB, else
    build/debug, else build/release."""
    lib = os.environ.get("HEADROOM_LIB")
    cands = [os.path.dirname(os.path.abspath(lib))] if lib else []
    cands += [os.path.join(REPO, "build", d) for d in ("debug", "release")]
    for d in cands:
        if all(os.access(os.path.join(d, t), os.X_OK)
               for t in ("test_pool_cuda", "test_pool", "test_pool_stress")):
            return d
    pytest.skip("no build with test_pool_cuda, test_pool and test_pool_stress")


def run(tmp_path, **env):
    e = dict(os.environ, HR_BUILD=build_dir(), HR_GPU_BUILD="0", **env)
    e.pop("HEADROOM_LIBCUDA", None) if "HEADROOM_LIBCUDA" not in env else None
    p = subprocess.run([SCRIPT, "--out", str(tmp_path), "--quick"], env=e, capture_output=True,
                       text=True, timeout=300)
    return p, (tmp_path / "cuda.md").read_text(), json.loads((tmp_path / "cuda.json").read_text())


def have_real_driver():
    for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/local/nvidia/lib64"):
        if os.path.exists(os.path.join(d, "libcuda.so.1")):
            return True
    return False


def test_skips_without_a_device(tmp_path):
    if have_real_driver():
        pytest.skip("a CUDA driver is installed here: the step would really run")
    p, md, js = run(tmp_path)
    assert p.returncode == 77, p.stderr
    last = p.stdout.strip().splitlines()[-1]
    assert last.startswith("RESULT cuda SKIP "), p.stdout
    assert "no CUDA device" in last and "libcuda.so.1" in last
    assert md.startswith("## 2. cuda backend")
    assert "**SKIP**: no CUDA device" in md and "libcuda.so.1" in md
    assert js["verdict"] == "SKIP" and js["walks"] == []
    # The host-side pool tests still ran, and passed.
    ran = {t["test"]: t["exit"] for t in js["tests"]}
    assert ran.get("test_pool") == 0 and ran.get("test_pool_stress") == 0


def test_fake_driver_walks_are_parsed(tmp_path):
    fake = os.path.join(build_dir(), "helpers", "libfake-cuda.so")
    if not os.path.exists(fake):
        pytest.skip("fake driver not built: " + fake)
    if shutil.which("compute-sanitizer") or os.path.exists(
            "/usr/local/cuda/bin/compute-sanitizer"):
        pytest.skip("compute-sanitizer installed: it would run the memcheck half on the fake")
    p, md, js = run(tmp_path, HEADROOM_LIBCUDA=fake, FAKE_CUDA_TOTAL=str(4 << 30))
    assert p.returncode == 77, p.stderr + p.stdout
    assert p.stdout.strip().splitlines()[-1].startswith(
        "RESULT cuda SKIP compute-sanitizer not found"), p.stdout
    # Four configurations, three phases each, every one with blocks verified.
    assert len(js["walks"]) == 12, js["walks"]
    assert {w["conf"] for w in js["walks"]} == {
        "pytorch", "pytorch,expandable_segments:True", "default",
        "default,compact_mapping:False"}
    assert all(w["blocks_verified"] > 0 for w in js["walks"])
    assert sum(w["ooms"] for w in js["walks"] if w["phase"] == "device-oom") == 4
    assert all(w["run"] == "plain (fake driver)" for w in js["walks"])
    assert "| plain (fake driver) | `pytorch` | main |" in md
    assert "no result here is from a device" in md
    assert js["failures"] == []
