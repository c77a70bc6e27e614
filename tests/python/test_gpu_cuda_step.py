"""bench/gpu/cuda.sh, the GPU validation's cuda step, run here for real: on a
machine without a GPU it must skip cleanly (exit 77, a RESULT line last,
cuda.md saying why), and with the tests' fake driver (tests/fake_cuda) its
plain walks must run and be parsed into the table, still skipping because
compute-sanitizer is absent, and marked as not from a device. A stand-in
compute-sanitizer (a shell script that runs the program and prints the
summary line the real one prints) drives the memcheck half: a clean summary
passes, errors fail the step and show in the table."""

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
    for k in ("HEADROOM_LIBCUDA", "HR_CUDA_OPS", "HR_CUDA_SAN_OPS"):
        if k not in env:
            e.pop(k, None)
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
    p, md, js = run(tmp_path, HEADROOM_LIBCUDA=fake, FAKE_CUDA_TOTAL=str(4 << 30), HR_CUDA_OPS="500")
    assert p.returncode == 77, p.stderr + p.stdout
    assert p.stdout.strip().splitlines()[-1].startswith(
        "RESULT cuda SKIP compute-sanitizer not found"), p.stdout
    # Five configurations, three phases each, every one with blocks verified.
    assert len(js["walks"]) == 15, js["walks"]
    assert {w["conf"] for w in js["walks"]} == {
        "pytorch", "pytorch,expandable_segments:True", "default",
        "default,compact_mapping:False",
        "pytorch,max_split_size_mb:32,garbage_collection_threshold:0.7,memory_fraction:0.9"}
    assert all(w["blocks_verified"] > 0 for w in js["walks"])
    assert sum(w["ooms"] for w in js["walks"] if w["phase"] == "device-oom") == 5
    assert all(w["run"] == "plain (fake driver)" for w in js["walks"])
    assert "| plain (fake driver) | `pytorch` | main |" in md
    assert "no result here is from a device" in md
    assert js["failures"] == []


FAKE_SANITIZER = r"""#!/bin/sh
# Stand-in for compute-sanitizer: skips its options, runs the program, and
# ends as the real one does, with FAKE_SAN_ERRORS errors (default 0).
while [ $# -gt 0 ]; do
  case "$1" in
    --tool|--leak-check|--error-exitcode|--print-limit|--report-api-errors) shift 2 ;;
    *) break ;;
  esac
done
echo "========= COMPUTE-SANITIZER (stand-in)"
"$@"
rc=$?
n=${FAKE_SAN_ERRORS:-0}
if [ "$n" -gt 0 ]; then
  echo "========= Program hit CUDA_ERROR_INVALID_VALUE (error 1) on CUDA API call to cuMemMap."
fi
echo "========= ERROR SUMMARY: $n errors"
[ "$n" -gt 0 ] && exit 1
exit $rc
"""


def fake_sanitizer_env(tmp_path, errors):
    fake = os.path.join(build_dir(), "helpers", "libfake-cuda.so")
    if not os.path.exists(fake):
        pytest.skip("fake driver not built: " + fake)
    if os.path.exists("/usr/local/cuda/bin/compute-sanitizer") and not shutil.which(
            "compute-sanitizer"):
        pytest.skip("the real compute-sanitizer would be found first")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    san = bindir / "compute-sanitizer"
    san.write_text(FAKE_SANITIZER)
    san.chmod(0o755)
    return dict(HEADROOM_LIBCUDA=fake, FAKE_CUDA_TOTAL=str(4 << 30), HR_CUDA_OPS="300",
                HR_CUDA_SAN_OPS="200", FAKE_SAN_ERRORS=str(errors),
                PATH=str(bindir) + os.pathsep + os.environ.get("PATH", ""))


def test_memcheck_half_clean_passes(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    p, md, js = run(out, **fake_sanitizer_env(tmp_path, 0))
    assert p.returncode == 0, p.stderr + p.stdout
    assert p.stdout.strip().splitlines()[-1].startswith("RESULT cuda PASS "), p.stdout
    runs = {w["run"] for w in js["walks"]}
    assert runs == {"plain (fake driver)", "memcheck (fake driver)",
                    "memcheck, API errors off (fake driver)"}, runs
    mem = [w for w in js["walks"] if w["run"] == "memcheck (fake driver)"]
    assert len(mem) == 10 and all(w["sanitizer_errors"] == 0 for w in mem)
    assert all(w["phase"] != "device-oom" for w in mem)
    off = [w for w in js["walks"] if w["run"] == "memcheck, API errors off (fake driver)"]
    assert [w["phase"] for w in off] == ["device-oom"] * 5
    assert {t["test"] for t in js["tests"] if t["run"] == "memcheck (fake driver)"} >= {
        "test_pool_cuda", "test_pool", "test_pool_stress"}
    assert "| memcheck (fake driver) | `default` | main |" in md
    assert "not a device result" in p.stdout


def test_memcheck_errors_fail(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    p, md, js = run(out, **fake_sanitizer_env(tmp_path, 2))
    assert p.returncode == 1, p.stderr + p.stdout
    last = p.stdout.strip().splitlines()[-1]
    assert last.startswith("RESULT cuda FAIL ") and "2 errors" in last, last
    assert any(w["sanitizer_errors"] == 2 for w in js["walks"])
    assert js["api_errors"].get("CUDA_ERROR_INVALID_VALUE", 0) > 0
    assert "CUDA_ERROR_INVALID_VALUE" in md and "**FAIL**" in md
