"""bench/gpu/probe.py (step 1 of the real-GPU validation) on this machine: its
comparison runs for real against the project's stand-in NVML
(tests/fake_nvml, loaded by `headroom status` through dlopen) and a stand-in
nvidia-smi on PATH that tells the same story, then one that disagrees on
purpose, which the step must report as FAIL. The stand-ins say nothing about
a real GPU; the children that hold real GPU memory need torch with CUDA and
are left out here (the report says so)."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, cli_or_skip, run_step

STEP = os.path.join(REPO, "bench", "gpu", "probe.py")
FAKE_SMI = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_nvidia_smi.py")


def fake_nvml(cli):
    p = os.path.join(os.path.dirname(cli), "helpers", "libfake-nvml-v3.so")
    if not os.path.exists(p):
        pytest.skip("the probe's stand-in NVML is not built at %s" % p)
    return p


@pytest.fixture
def env(tmp_path):
    """PATH with the stand-in nvidia-smi first, the stand-in NVML for
    headroom, two fake GPUs and two processes that exist (this one and a
    sleeping child), so local pids map as on a real host."""
    cli = cli_or_skip()
    bindir = tmp_path / "bin"
    bindir.mkdir()
    smi = bindir / "nvidia-smi"
    smi.write_text("#!/bin/sh\nexec '%s' '%s' \"$@\"\n" % (sys.executable, FAKE_SMI))
    smi.chmod(0o755)
    sleeper = subprocess.Popen(["sleep", "60"])
    e = dict(os.environ)
    e.update({"PATH": "%s:%s" % (bindir, os.environ.get("PATH", "")),
              "HEADROOM_CLI": cli, "HEADROOM_NVML_LIBRARY": fake_nvml(cli),
              "FAKE_NVML_GPUS": "2",
              "FAKE_NVML_PROCS": "0:%d:1024,1:%d:3072" % (os.getpid(), sleeper.pid),
              "XDG_CONFIG_HOME": str(tmp_path)})
    e.pop("HEADROOM_CONFIG", None)
    e.pop("FAKE_SMI_BREAK", None)
    yield e
    sleeper.kill()
    sleeper.wait()


def test_agreeing_readings_pass(env, tmp_path):
    r, last = run_step("probe.py", tmp_path / "out", "--quick", "--rounds", "3", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert last.startswith("RESULT probe PASS "), last
    md = (tmp_path / "out" / "probe.md").read_text()
    assert md.startswith("## 1. Probe against nvidia-smi\n")
    for field in ("gpu0 name", "gpu1 uuid", "gpu0 total", "gpu1 used", "gpu0 reserved"):
        assert "| %s |" % field in md, field
    assert "**FAIL**" not in md
    assert "not started (torch" in md  # no CUDA here: the children are left out, said so
    data = json.loads((tmp_path / "out" / "probe.json").read_text())
    assert data["result"] == "PASS" and len(data["rounds"]) == 3
    rows = {row["key"]: row for row in data["table"]}
    assert rows["gpu0 total"]["headroom"] == "24576.0 MiB" and rows["gpu0 total"]["worst"] == 0
    # The processes were compared, by NVML's pid, on both GPUs.
    assert rows["pid %d on GPU-fake-0000 used" % os.getpid()]["rounds_ok"] == 3
    assert any(k.startswith("pid ") and "GPU-fake-0001" in k for k in rows)
    assert rows["gpu0 used"]["headroom"] == "1536.0 MiB"


@pytest.mark.parametrize("broken,row", [
    ("uuid", "gpu0 uuid"), ("name", "gpu0 name"), ("total", "gpu0 total"),
    ("used", "gpu0 used"), ("reserved", "gpu0 reserved"), ("proc", "pid %d on GPU-fake-0000 used"),
    ("proc_used", "pid %d on GPU-fake-0000 used")])
def test_a_disagreement_fails(env, tmp_path, broken, row):
    env["FAKE_SMI_BREAK"] = broken
    r, last = run_step("probe.py", tmp_path / "out", "--quick", env=env)
    assert r.returncode == 1, r.stdout + r.stderr
    assert last.startswith("RESULT probe FAIL differs: "), last
    if "%d" in row:
        row = row % os.getpid()
    assert row in last
    md = (tmp_path / "out" / "probe.md").read_text()
    line = [ln for ln in md.splitlines() if ln.startswith("| %s |" % row)]
    assert line and "**FAIL**" in line[0], md


def test_no_nvidia_smi_skips(env, tmp_path):
    env["PATH"] = str(tmp_path / "empty")
    r, last = run_step("probe.py", tmp_path / "out", "--quick", env=env)
    assert r.returncode == 77 and last == "RESULT probe SKIP nvidia-smi not found (no NVIDIA " \
        "driver here)", r.stdout + r.stderr
    assert (tmp_path / "out" / "probe.md").read_text().startswith("## 1. Probe")


def test_headroom_blind_to_the_gpu_fails(env, tmp_path):
    # nvidia-smi sees GPUs, headroom's NVML is missing: a real disagreement.
    env["HEADROOM_NVML_LIBRARY"] = str(tmp_path / "no-libnvidia-ml.so")
    r, last = run_step("probe.py", tmp_path / "out", "--quick", env=env)
    assert r.returncode == 1 and "GPU count" in last, r.stdout + r.stderr


def _round(procs, smi_apps):
    dev = {"index": 0, "name": "G", "uuid": "GPU-a", "total": 80 << 30, "used": 5 << 30,
           "reserved": 1 << 28, "state": "ok", "message": ""}
    h = {"devices": [dev], "procs": procs}
    return {"h1": h, "h2": h, "smi_apps": smi_apps,
            "smi_gpus": [{"index": 0, "name": "G", "uuid": "GPU-a", "total_mib": 80 << 10,
                          "used_mib": 5 << 10, "reserved_mib": 256}]}


def test_children_are_judged_by_what_they_hold():
    # The children's part needs CUDA to run; its judging runs here on made-up
    # readings: a child must be listed by both with at least what it holds.
    sys.path.insert(0, os.path.dirname(STEP))
    import probe

    gib = 1 << 30
    child = [{"pid": 4242, "allocated": gib}]
    held = [{"pid": 4242, "local_pid": 4242, "uuid": "GPU-a", "used": gib + (500 << 20)}]
    smi = [{"pid": 4242, "uuid": "GPU-a", "used_mib": 1024 + 500}]

    def verdict(rd):
        rows = probe.aggregate([probe.compare_round(rd, child)])
        return {r["key"]: (r["judged"], r["rounds_ok"] == r["rounds"]) for r in rows}

    key = "child 4242 (holds 1024.0 MiB) listed"
    v = verdict(_round(held, smi))
    assert v[key] == (True, True) and all(ok for _, ok in v.values()), v
    assert verdict(_round(held, []))[key] == (True, False)  # nvidia-smi does not list it
    small = [dict(held[0], used=gib // 2)]
    assert verdict(_round(small, [dict(smi[0], used_mib=512)]))[key] == (True, False)
    other = [dict(held[0], pid=7, local_pid=7)]
    assert verdict(_round(other, [dict(smi[0], pid=7)]))[key] == (True, False)
    # In a PID namespace NVML's host pids have no local pid: shown, not judged;
    # the processes are still compared by NVML's pid.
    hidden = [dict(held[0], pid=990001, local_pid=0)]
    v = verdict(_round(hidden, [dict(smi[0], pid=990001)]))
    assert v[key] == (False, True)
    assert v["pid 990001 on GPU-a used"] == (True, True)
