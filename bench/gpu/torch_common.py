"""What the torch and traces steps of the GPU validation share: the step
interface (arguments, reports, the RESULT line and exit codes), children run
with a timeout, the allocator settings, the largest-batch search, memory
readings through NVML, and markdown tables.

Everything here runs without torch and without a GPU, so the tests under
tests/python exercise it on the development machine. The step scripts
(torch_bench.py, traces.py) import torch only in their children.
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

EXIT_PASS, EXIT_FAIL, EXIT_SKIP = 0, 1, 77

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


GIB = float(1 << 30)
MIB = float(1 << 20)


# ---- step interface ---------------------------------------------------------


def parse_args(step, argv=None, traces_dir=False):
    p = argparse.ArgumentParser(prog="bench/gpu/%s" % step,
                                description="GPU validation step '%s'" % step)
    p.add_argument("--out", required=True, help="folder for %s.md and %s.json" % (step, step))
    p.add_argument("--quick", action="store_true", help="a short run to check the plumbing")
    if traces_dir:
        p.add_argument("--traces-dir", help="folder the recorded snapshots are copied to")
    p.add_argument("--child", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def log(step, msg):
    print("%s: %s" % (step, msg), file=sys.stderr, flush=True)


def finish(step, out, md, data, verdict, summary):
    """Writes OUT/<step>.md and OUT/<step>.json, prints the RESULT line last
    on stdout and returns the exit code for `verdict` (PASS, FAIL or SKIP)."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, step + ".md"), "w") as f:
        f.write(md.rstrip("\n") + "\n")
    data = dict(data, step=step, result=verdict, summary=summary)
    with open(os.path.join(out, step + ".json"), "w") as f:
        json.dump(data, f, indent=1, sort_keys=True, default=str)
        f.write("\n")
    sys.stdout.flush()
    print("RESULT %s %s %s" % (step, verdict, " ".join(summary.split())), flush=True)
    return {"PASS": EXIT_PASS, "FAIL": EXIT_FAIL, "SKIP": EXIT_SKIP}[verdict]


def skip(step, out, title, reason):
    """The report of a step that cannot run here, and its exit code (77)."""
    md = "%s\n\nNot run: %s.\n" % (title, reason)
    return finish(step, out, md, {"skipped": reason}, "SKIP", reason)


def cuda_unavailable_reason(python=None, timeout=120):
    """None when a child Python sees a CUDA device through torch; otherwise
    why not (torch missing, no device). Asked of a child so that this process
    never initialises CUDA itself."""
    code = ("import sys\n"
            "try:\n import torch\n"
            "except Exception as e:\n print('torch is not importable: %s' % e); sys.exit(0)\n"
            "if not torch.cuda.is_available():\n"
            " print('no CUDA device: torch %s reports torch.cuda.is_available() False'"
            " % torch.__version__); sys.exit(0)\n"
            "print('OK')\n")
    try:
        r = subprocess.run([python or sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return "checking for CUDA took over %d s" % timeout
    line = (r.stdout.strip().splitlines() or ["the check printed nothing: %s"
                                              % r.stderr.strip()[-200:]])[-1]
    return None if line == "OK" else line


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
    py = os.path.join(ROOT, "python")
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if py not in paths:
        env["PYTHONPATH"] = os.pathsep.join([py] + paths)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_child(cmd, env=None, timeout=60.0):
    """Runs `cmd` in its own process group with a timeout; never raises for
    what the child does. Returns a dict: status ("ok", "failed": non-zero
    exit, "crashed": killed by a signal, "timeout"), rc, seconds, result (the
    JSON of the last RESULT_PREFIX line, or None), trials (the JSON of every
    TRIAL_PREFIX line), and the last lines of stderr."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    timed_out = False
    try:
        out, err = p.communicate(timeout=max(1.0, timeout))
    except subprocess.TimeoutExpired:
        timed_out = True
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, err = p.communicate()
    secs = time.monotonic() - t0
    result, trials = None, []
    for line in out.splitlines():
        try:
            if line.startswith(RESULT_PREFIX):
                result = json.loads(line[len(RESULT_PREFIX):])
            elif line.startswith(TRIAL_PREFIX):
                trials.append(json.loads(line[len(TRIAL_PREFIX):]))
        except ValueError:
            pass  # a line cut short by a crash
    if timed_out:
        status = "timeout"
    elif p.returncode < 0:
        status = "crashed"
    elif p.returncode != 0 or result is None:
        status = "failed"
    else:
        status = "ok"
    tail = "\n".join(err.strip().splitlines()[-15:])
    return {"status": status, "rc": p.returncode, "seconds": round(secs, 2), "result": result,
            "trials": trials, "stderr_tail": tail}


def child_failure_text(r, timeout=None):
    """One line saying how a child that did not finish ended."""
    if r["status"] == "timeout":
        return "killed after its %s s timeout" % (timeout if timeout is not None else "?")
    if r["status"] == "crashed":
        try:
            name = signal.Signals(-r["rc"]).name
        except (ValueError, TypeError):
            name = "signal %s" % -r["rc"]
        return "crashed (%s)%s" % (name, _last_error_line(r))
    return "failed (exit %s)%s" % (r["rc"], _last_error_line(r))


def _last_error_line(r):
    lines = [ln for ln in r.get("stderr_tail", "").splitlines() if ln.strip()]
    return (": " + lines[-1].strip()[:160]) if lines else ""


def emit(obj, prefix=RESULT_PREFIX):
    """In a child: prints one result or trial line for the parent."""
    print(prefix + json.dumps(obj, sort_keys=True, default=str), flush=True)


class Budget:
    """The time a step may spend, and what is left of it."""

    def __init__(self, seconds, clock=time.monotonic):
        self.seconds = seconds
        self.clock = clock
        self.t0 = clock()

    def left(self):
        return self.seconds - (self.clock() - self.t0)

    def spent(self):
        return self.clock() - self.t0


# ---- out-of-memory and the largest-batch search -------------------------------


def is_oom(exc):
    """True for PyTorch's OutOfMemoryError (any allocator) and for the
    RuntimeError whose message says out of memory, which is what an error
    raised through a pluggable allocator looks like."""
    for cls in type(exc).__mro__:
        if cls.__name__ == "OutOfMemoryError":
            return True
    return isinstance(exc, (RuntimeError, MemoryError)) and "out of memory" in str(exc).lower()


def find_max_batch(try_batch, start=1, cap=1 << 16, deadline=None, on_trial=None):
    """The largest batch size b in [start, cap] for which try_batch(b) runs
    without running out of memory: doubling from `start` until a failure or
    the cap, then bisection between the last success and the first failure,
    to the exact size. try_batch raises on failure; out-of-memory errors
    (is_oom) are the expected failure, anything else stops the search.
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
            if is_oom(e):
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
    cli = os.environ.get("HEADROOM_CLI")
    if cli and os.path.exists(cli):
        try:
            r = subprocess.run([cli, "status", "--json"], capture_output=True, text=True,
                               timeout=20)
            doc = json.loads(r.stdout)
            for p in doc.get("processes", []):
                if p.get("pid") == pid and p.get("gpu_bytes"):
                    return int(p["gpu_bytes"]), "headroom status"
            why.append("headroom status: pid %d has no GPU bytes" % pid)
        except (OSError, ValueError, subprocess.TimeoutExpired) as e:
            why.append("headroom status: %s" % e)
    return None, "; ".join(why) or "no NVML reader"


# ---- tables -----------------------------------------------------------------------


def fmt_gib(b, digits=2):
    return "n/a" if b is None else "%.*f" % (digits, b / GIB)


def fmt_mib(b):
    return "n/a" if b is None else "%.0f" % (b / MIB)


def fmt_ratio(x, digits=3):
    return "n/a" if x is None else "%.*f" % (digits, x)


def ratio(a, b):
    return None if a is None or not b else a / b


def md_table(headers, rows, right=None):
    """A markdown table; `right` is the set of column indexes aligned right
    (default: every column but the first)."""
    right = set(range(1, len(headers))) if right is None else set(right)
    out = ["| " + " | ".join(headers) + " |",
           "| " + " | ".join("---:" if i in right else "---" for i in range(len(headers))) + " |"]
    for r in rows:
        cells = [str(c).replace("|", "/").replace("\n", " ") for c in r]
        cells += [""] * (len(headers) - len(cells))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)
