"""bench/gpu/stepkit.py, what every real-GPU step script shares: a child that
dies says why, a child dies with its step (so a step killed by the driver's
timeout leaves no GPU memory held), a child past its timeout goes with its
whole process group, a step past its own budget ends as FAIL with its files
written and the RESULT line last, the SKIP and missing-CLI reports, one
answer to "is torch with CUDA usable here" whether asked in the process or
of a child, out-of-memory errors told from others, and the tables."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, cli_or_skip, run_step

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


def test_lines_written_at_once_are_read_one_by_one():
    import stepkit as sk

    c = sk.Child("print('a 1\\nb 2\\nready 3', flush=True)\nimport time; time.sleep(30)\n")
    try:
        assert c.readline(10) == "a 1"
        # Buffered beside the first: no new data arrives, yet they are there.
        assert c.readline(0.5) == "b 2"
        assert c.expect("ready", 0.5) == ["3"]
        assert c.readline(0.2) is None  # nothing more within the time
    finally:
        c.kill()
    argv = sk.Child(argv=[sys.executable, "-c", "print('CHILD-RESULT {\"x\": 1}')"])
    assert argv.expect_line("CHILD-RESULT ", 10) == 'CHILD-RESULT {"x": 1}'
    assert argv.wait(10) == 0
    argv.kill()


def test_run_kills_the_whole_group_at_its_timeout():
    import stepkit as sk

    py = sys.executable
    # The grandchild keeps the pipes open: the whole process group must go.
    grand = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', "
             "'import time; time.sleep(60)']); time.sleep(60)")
    t0 = time.monotonic()
    r = sk.run([py, "-c", grand], 1, raise_on_timeout=False)
    assert r.timed_out and r.returncode == -signal.SIGKILL and time.monotonic() - t0 < 20
    assert sk.ended(r, 1) == "killed after its 1 s timeout"
    with pytest.raises(subprocess.TimeoutExpired):
        sk.run([py, "-c", grand], 1)
    r = sk.run([py, "-c", "import sys; print('out'); sys.stderr.write('one\\nboom\\n'); "
                "sys.exit(3)"], 30)
    assert (r.returncode, r.stdout, r.timed_out) == (3, "out\n", False) and r.seconds < 30
    assert sk.ended(r) == "failed (exit 3): boom"
    r = sk.run([py, "-c", "import os; os.abort()"], 30)
    assert sk.ended(r) == "crashed (SIGABRT)"
    r = sk.run([py, "-c", "import os; print(os.environ.get('HR_X'))"], 30,
               env=dict(os.environ, HR_X="whole environment"))
    assert r.stdout == "whole environment\n"


def test_skip_and_missing_cli_reports(tmp_path):
    import stepkit as sk

    s = sk.Step("demo", 7, "Demo", 100, ["--out", str(tmp_path / "a"), "--quick"],
                quick_budget_s=10)
    assert s.args.quick and s.budget_s == 10 and 9 < s.left() <= 10
    assert s.skip("no GPU here", {"n": 2}) == 77
    assert (tmp_path / "a" / "demo.md").read_text() == "## 7. Demo\n\nNot run: no GPU here.\n"
    data = json.loads((tmp_path / "a" / "demo.json").read_text())
    assert (data["result"], data["skipped"], data["n"], data["quick"]) == \
        ("SKIP", "no GPU here", 2, True)
    s = sk.Step("demo", 7, "Demo", 100, ["--out", str(tmp_path / "b")], quick_budget_s=10)
    assert s.budget_s == 100
    assert s.no_cli() == 1
    assert "Not run: no headroom CLI" in (tmp_path / "b" / "demo.md").read_text()
    assert s.error(ValueError(""), {"k": 1}) == 1
    assert "Error: ValueError('')" in (tmp_path / "b" / "demo.md").read_text()


# The step scripts: (script, step, heading), and what each needs to skip.
SCRIPTS = [("probe.py", "probe", "## 1. Probe against nvidia-smi"),
           ("torch_bench.py", "torch", "## 3. PyTorch allocators side by side"),
           ("traces.py", "traces", "## 4. Real traces replayed"),
           ("residency.py", "residency", "## 5. Residency with real modules"),
           ("leak.py", "leak", "## 6. Leak detection"),
           ("oom.py", "oom", "## 7. Out of memory under PyTorch")]


@pytest.mark.parametrize("script", [s[0] for s in SCRIPTS])
def test_scripts_refuse_bad_usage(tmp_path, script):
    path = os.path.join(GPU_DIR, script)
    r = subprocess.run([sys.executable, path], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--out" in r.stderr
    r = subprocess.run([sys.executable, path, "--out", str(tmp_path), "--bogus"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--bogus" in r.stderr


@pytest.mark.parametrize("script,step,title", SCRIPTS[1:])
def test_scripts_skip_without_cuda(tmp_path, script, step, title):
    import stepkit as sk

    env = dict(os.environ, PYTHONPATH=os.path.join(REPO, "python"), HEADROOM_CLI=cli_or_skip())
    env.pop("HEADROOM_CONFIG", None)
    reason = sk.cuda_unavailable_reason()
    if reason is None:
        pytest.skip("this machine has a CUDA device: the SKIP path does not apply")
    assert reason.startswith("torch ")
    if sk.torch_cuda()[0] is not None:
        assert "sees no CUDA device" in reason
    extra = ["--traces-dir", str(tmp_path / "t")] if step == "traces" else []
    r, last = run_step(script, tmp_path, "--quick", *extra, env=env)
    assert r.returncode == 77, r.stdout + r.stderr
    assert last == "RESULT %s SKIP %s" % (step, reason)
    md = (tmp_path / (step + ".md")).read_text()
    assert md == "%s\n\nNot run: %s.\n" % (title, reason)
    data = json.loads((tmp_path / (step + ".json")).read_text())
    assert (data["result"], data["step"], data["skipped"]) == ("SKIP", step, reason)


def test_the_cuda_check_says_the_same_in_a_child():
    import stepkit as sk

    torch, why = sk.torch_cuda()
    if why:
        assert (torch is None) == why.startswith("torch is not importable (")
    assert sk.cuda_unavailable_reason() == why


def test_is_oom():
    import stepkit as sk

    assert sk.is_oom(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert sk.is_oom(MemoryError("out of memory"))
    assert not sk.is_oom(RuntimeError("CUDA error: an illegal memory access was encountered"))
    assert not sk.is_oom(ValueError("out of memory"))

    class OutOfMemoryError(RuntimeError):
        pass

    assert sk.is_oom(OutOfMemoryError("whatever the text"))
    try:
        try:
            raise OutOfMemoryError("inner")
        except OutOfMemoryError as inner:
            raise KeyError("load failed") from inner
    except KeyError as outer:
        assert sk.is_oom(outer)
    assert not sk.is_oom(KeyError("load failed"))


def test_tables_and_sizes():
    import stepkit as sk

    t = sk.table(["a", "b", "c"], [[1, "x|y", "two\nlines"], ["short"]], right={1, 2})
    assert t == ("| a | b | c |\n| --- | ---: | ---: |\n| 1 | x/y | two lines |\n"
                 "| short |  |  |\n")
    assert sk.table(["k"], []) == "| k |\n| --- |\n"
    assert sk.fmt_mib(3 * sk.MIB // 2) == "1.5 MiB" and sk.fmt_mib(None) == "-"
    assert sk.fmt_mib(1536 * sk.MIB, 0, unit=False, none="n/a") == "1536"
    assert sk.fmt_ratio(None) == "n/a" and sk.fmt_ratio(sk.ratio(1, 3)) == "0.333"
    assert sk.ratio(1, 0) is None and sk.ratio(None, 2) is None
