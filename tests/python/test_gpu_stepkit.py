"""bench/gpu/stepkit.py, what the real-GPU step scripts share: a child that
dies says why, a child dies with its step (so a step killed by the driver's
timeout leaves no GPU memory held), and a step past its own budget ends as
FAIL with its files written and the RESULT line last."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO

GPU_DIR = os.path.join(REPO, "bench", "gpu")
sys.path.insert(0, GPU_DIR)


def test_a_child_that_dies_says_why():
    import stepkit as sk

    c = sk.Child("sys.stderr.write('no CUDA here\\n'); sys.exit(3)\n")
    with pytest.raises(RuntimeError, match=r"did not say 'ready' within 5 s \(exit 3\): no CUDA"):
        c.expect("ready", 5)
    ok = sk.Child("print('ready', os.getpid(), sys.argv[1], sys.argv[2], flush=True)\n"
                  "import time; time.sleep(30)\n", args=[7], tag="the-tag")
    assert ok.expect("ready", 10) == [str(ok.pid), "the-tag", "7"]
    ok.kill()
    assert ok.proc.returncode == -signal.SIGKILL and not os.path.exists(ok.script)


def test_a_child_dies_with_its_step(tmp_path):
    code = ("import sys; sys.path.insert(0, %r)\n"
            "import stepkit as sk\n"
            "c = sk.Child('print(\"ready\", flush=True)\\nimport time; time.sleep(60)\\n')\n"
            "c.expect('ready', 10)\n"
            "print(c.pid, flush=True)\n"
            "import time; time.sleep(60)\n" % GPU_DIR)
    step = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    pid = int(step.stdout.readline())
    os.kill(pid, 0)  # alive while the step is
    step.kill()
    step.wait()
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        # A zombie until its parent's parent reaps it: gone from the living.
        with open("/proc/%d/stat" % pid) as f:
            if f.read().split(") ")[1].startswith("Z"):
                break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
        pytest.fail("the child outlived its step")


def test_a_step_past_its_budget_fails_with_its_files(tmp_path):
    code = ("import sys, time; sys.path.insert(0, %r)\n"
            "import stepkit as sk\n"
            "s = sk.Step('demo', 9, 'Demo', 1, ['--out', %r])\n"
            "s.arm()\n"
            "try:\n"
            "    time.sleep(30)\n"
            "except sk.Overtime as e:\n"
            "    sys.exit(s.finish(sk.FAIL, str(e), 'The step %%s.' %% e, {'n': 1}))\n"
            % (GPU_DIR, str(tmp_path)))
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert time.monotonic() - t0 < 20
    assert r.returncode == 1
    assert r.stdout.strip().splitlines()[-1] == "RESULT demo FAIL ran past its own budget of 1 s"
    assert (tmp_path / "demo.md").read_text().startswith("## 9. Demo\n\nThe step ran past")
    data = json.loads((tmp_path / "demo.json").read_text())
    assert data["result"] == "FAIL" and data["n"] == 1 and data["step"] == "demo"
