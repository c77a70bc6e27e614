"""What the allocator benchmark (torch_bench.py) and the traces step
(traces.py) share beyond stepkit's step plumbing: the allocator settings and
their environments, the protocol of their children's result lines, the
models' default sizes, the largest-batch search, and memory readings
through NVML.

Everything here runs without torch and without a GPU, so the tests under
tests/python exercise it on the development machine. The step scripts
import torch only in their children.
"""

import json
import os
import statistics

import stepkit as sk

#: The allocator settings compared, in the order they run: name, the
#: PYTORCH_CUDA_ALLOC_CONF value (None: unset), and whether the child
#: installs headroom's pool right after importing torch.
ALLOCATORS = (
    ("native", None, False),
    ("expandable", "expandable_segments:True", False),
    ("cudaMallocAsync", "backend:cudaMallocAsync", False),
    ("headroom", None, True),
)
ALLOCATOR_NAMES = tuple(a[0] for a in ALLOCATORS)

#: A child's last stdout line with this prefix carries its JSON result; lines
#: with TRIAL_PREFIX record each batch tried by the largest-batch search, so
#: that a child that dies mid-search still tells what it had found.
RESULT_PREFIX = "CHILD-RESULT "
TRIAL_PREFIX = "CHILD-TRIAL "

#: Each model's sizes where a spec leaves them out (torch_models.build uses
#: the same).
MODEL_DEFAULTS = {
    "resnet50": {"batch": 32},
    "resnet_mini": {"batch": 8, "size": 64},
    "gpt2": {"batch": 8, "prompt": 128, "new": 64},
    "llama": {"batch": 8, "prompt": 128, "new": 64},
    "unet": {"batch": 1, "latent": 64, "ch": 192, "mults": [1, 2, 4, 4], "heads": 8, "steps": 20},
}


def spec_label(spec):
    """A short name for tables and file names: resnet50-b32, gpt2-b8-p128-n64."""
    m = spec["model"]
    s = dict(MODEL_DEFAULTS.get(m, {}), **spec)
    if m in ("resnet50", "resnet_mini"):
        return "%s-b%d" % (m, s["batch"])
    if m in ("gpt2", "llama"):
        return "%s-b%d-p%d-n%d" % (m, s["batch"], s["prompt"], s["new"])
    if m == "unet":
        return "unet-b%d-%dx%d" % (s["batch"], s["latent"], s["latent"])
    return m


# ---- children -----------------------------------------------------------------


def child_env(allocator, base=None):
    """The environment of a child for one allocator setting: PyTorch's
    variable set or unset, headroom's pool configuration unset (its default),
    and the repository's python/ on the path."""
    names = dict((a[0], a) for a in ALLOCATORS)
    if allocator not in names:
        raise ValueError("unknown allocator %r; known: %s" % (allocator, ", ".join(names)))
    env = dict(os.environ if base is None else base)
    conf = names[allocator][1]
    env.pop("PYTORCH_CUDA_ALLOC_CONF", None)
    env.pop("HEADROOM_ALLOC_CONF", None)
    if conf is not None:
        env["PYTORCH_CUDA_ALLOC_CONF"] = conf
    py = os.path.join(sk.REPO, "python")
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if py not in paths:
        env["PYTHONPATH"] = os.pathsep.join([py] + paths)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_child(cmd, env=None, timeout=60.0):
    """Runs `cmd` through stepkit.run (its own process group, killed at the
    timeout); never raises for what the child does. Returns a dict: status
    ("ok", "failed": non-zero exit or no result line, "crashed": killed by a
    signal, "timeout"), rc, seconds, result (the JSON of the last
    RESULT_PREFIX line, or None), trials (the JSON of every TRIAL_PREFIX
    line), the last lines of stderr, and `ended`: how a child that is not ok
    ended, in words."""
    r = sk.run(cmd, max(1.0, timeout), env=env, raise_on_timeout=False)
    result, trials = None, []
    for line in r.stdout.splitlines():
        try:
            if line.startswith(RESULT_PREFIX):
                result = json.loads(line[len(RESULT_PREFIX):])
            elif line.startswith(TRIAL_PREFIX):
                trials.append(json.loads(line[len(TRIAL_PREFIX):]))
        except ValueError:
            pass  # a line cut short by a crash
    if r.timed_out:
        status = "timeout"
    elif r.returncode < 0:
        status = "crashed"
    elif r.returncode != 0 or result is None:
        status = "failed"
    else:
        status = "ok"
    tail = "\n".join(r.stderr.strip().splitlines()[-15:])
    return {"status": status, "rc": r.returncode, "seconds": round(r.seconds, 2),
            "result": result, "trials": trials, "stderr_tail": tail,
            "ended": None if status == "ok" else sk.ended(r, timeout)}


def emit(obj, prefix=RESULT_PREFIX):
    """In a child: prints one result or trial line for the parent."""
    print(prefix + json.dumps(obj, sort_keys=True, default=str), flush=True)


# ---- out-of-memory and the largest-batch search -------------------------------


def find_max_batch(try_batch, start=1, cap=1 << 16, deadline=None, on_trial=None):
    """The largest batch size b in [start, cap] for which try_batch(b) runs
    without running out of memory: doubling from `start` until a failure or
    the cap, then bisection between the last success and the first failure,
    to the exact size. try_batch raises on failure; out-of-memory errors
    (stepkit.is_oom) are the expected failure, anything else stops the search.
    deadline(): True when no more trials may start.

    Returns a dict: max_batch (the largest success, 0 when even `start`
    failed), first_failure (the smallest size known to fail, None if none),
    exact (True when max_batch + 1 is known to fail or max_batch is the cap),
    capped, stopped ("deadline", "error" or None), error (text of a non-OOM
    error), trials ([batch, "ok"|"oom"|"error"] in order)."""
    if start < 1 or cap < start:
        raise ValueError("need 1 <= start <= cap; got start=%r cap=%r" % (start, cap))
    trials = []
    state = {"stopped": None, "error": None}

    def attempt(b):
        if deadline is not None and deadline():
            state["stopped"] = "deadline"
            return None
        try:
            try_batch(b)
            outcome = "ok"
        except Exception as e:  # noqa: BLE001 -- judged below
            if sk.is_oom(e):
                outcome = "oom"
            else:
                outcome = "error"
                state["stopped"] = "error"
                state["error"] = "%s: %s" % (type(e).__name__, str(e).strip().splitlines()[0][:200]
                                             if str(e).strip() else "")
        trials.append([b, outcome])
        if on_trial:
            on_trial(b, outcome)
        return outcome

    lo, hi = 0, None  # lo: largest success; hi: smallest failure
    b = start
    while True:
        o = attempt(b)
        if o is None or o == "error":
            break
        if o == "ok":
            lo = b
            if b == cap:
                break
            b = min(2 * b, cap)
        else:
            hi = b
            break
    while state["stopped"] is None and hi is not None and hi - lo > 1:
        mid = (lo + hi) // 2
        o = attempt(mid)
        if o is None or o == "error":
            break
        if o == "ok":
            lo = mid
        else:
            hi = mid
    exact = (hi is not None and hi == lo + 1) or lo == cap
    return {"max_batch": lo, "first_failure": hi, "exact": bool(exact and not state["stopped"]),
            "capped": lo == cap, "stopped": state["stopped"], "error": state["error"],
            "trials": trials}


# ---- measurements ---------------------------------------------------------------


def median_rate(seconds):
    """Iterations per second from the median of per-iteration times."""
    xs = [s for s in seconds if s > 0]
    if not xs:
        return None
    return 1.0 / statistics.median(xs)


def nvml_process_used(pid=None):
    """GPU memory NVML reports for process `pid` (default: this one), summed
    over devices, as (bytes, source); (None, why) when it cannot be read.
    Uses pynvml (nvidia-ml-py), else `headroom status --json`."""
    pid = os.getpid() if pid is None else pid
    why = []
    try:
        import pynvml
    except ImportError as e:
        why.append("pynvml: %s" % e)
    else:
        try:
            pynvml.nvmlInit()
            try:
                total, seen = 0, False
                for i in range(pynvml.nvmlDeviceGetCount()):
                    h = pynvml.nvmlDeviceGetHandleByIndex(i)
                    for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(h):
                        if proc.pid == pid and proc.usedGpuMemory is not None:
                            total += proc.usedGpuMemory
                            seen = True
                if seen:
                    return total, "nvml"
                why.append("pynvml: pid %d not among the compute processes" % pid)
            finally:
                pynvml.nvmlShutdown()
        except Exception as e:  # noqa: BLE001 -- NVML errors are reported, not fatal
            why.append("pynvml: %s" % e)
    cli = sk.cli_path()
    if cli:
        try:
            r = sk.run([cli, "status", "--json"], 20)
            doc = json.loads(r.stdout)
            for p in doc.get("processes", []):
                if p.get("pid") == pid and p.get("gpu_bytes"):
                    return int(p["gpu_bytes"]), "headroom status"
            why.append("headroom status: pid %d has no GPU bytes" % pid)
        except (OSError, ValueError, sk.subprocess.TimeoutExpired) as e:
            why.append("headroom status: %s" % e)
    return None, "; ".join(why) or "no NVML reader"


def mib_cell(b):
    """A cell of the steps' tables, whose headers name MiB: whole MiB, n/a
    for a missing reading."""
    return sk.fmt_mib(b, 0, unit=False, none="n/a")
