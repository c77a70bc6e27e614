"""What every bench/gpu step script shares: the step interface, child
processes that cannot outlive their step, the "is torch with CUDA usable"
check, and the formatting of reports.

The interface (bench/gpu/README.md): `<script> --out DIR [--quick]` writes
DIR/<step>.md (a section `## N. Title`, the method in a sentence, a table of
measured numbers, the verdict in words) and DIR/<step>.json (the raw
numbers), prints progress to stderr and, last on stdout, one line
`RESULT <step> PASS|FAIL|SKIP <summary>`; it exits 0, 1 or 77.

A step bounds its own run time: its Budget says what is left for the next
child, and Step.arm() sets an alarm at the budget, which ends the step as
FAIL with what it had. Every child a step starts runs in its own process
group, is killed with that group when it runs past its timeout or the step
ends, and dies with the step (PR_SET_PDEATHSIG) if the step is killed.

Nothing here imports torch or needs a GPU, so tests/python exercises it on
any machine."""

import argparse
import ctypes
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"
EXIT = {PASS: 0, FAIL: 1, SKIP: 77}
MIB = 1 << 20
GIB = 1 << 30
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

# Put first in a child's code (Child(code)): what that code may use unimported.
CHILD_PREAMBLE = "import os, sys\n"

try:
    _LIBC = ctypes.CDLL(None, use_errno=True)
except OSError:
    _LIBC = None


class Overtime(Exception):
    """The step's own time budget ran out."""


# ---- logging and formatting ---------------------------------------------------


def log(msg):
    """Progress, to stderr (the driver keeps it as the step's log)."""
    sys.stderr.write("[%s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


def fmt_mib(b, digits=1, unit=True, none="-"):
    """Bytes in MiB: '12.3 MiB'; without the unit for a column whose header
    names it."""
    if b is None:
        return none
    return "%.*f%s" % (digits, b / MIB, " MiB" if unit else "")


def fmt_ratio(x, digits=3):
    return "n/a" if x is None else "%.*f" % (digits, x)


def ratio(a, b):
    """a / b, or None when either is missing or b is zero."""
    return None if a is None or not b else a / b


def table(headers, rows, right=()):
    """A markdown table, ending in a newline; cells are str()'d with pipes
    and newlines escaped, short rows padded; `right` holds the indexes of the
    columns aligned right."""
    right = set(right)

    def cell(v):
        return str(v).replace("|", "/").replace("\n", " ")

    out = ["| " + " | ".join(headers) + " |",
           "| " + " | ".join("---:" if i in right else "---" for i in range(len(headers))) + " |"]
    for r in rows:
        cells = [cell(c) for c in r] + [""] * (len(headers) - len(r))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


# ---- what the step runs with --------------------------------------------------


def cli_path():
    """The headroom CLI under test: HEADROOM_CLI, else $HR_BUILD/headroom, else
    build/release/headroom."""
    for p in (os.environ.get("HEADROOM_CLI"),
              os.path.join(os.environ["HR_BUILD"], "headroom") if os.environ.get("HR_BUILD")
              else None,
              os.path.join(REPO, "build", "release", "headroom")):
        if p and os.access(p, os.X_OK):
            return p
    return None


def which(name):
    return shutil.which(name)


def torch_cuda():
    """(torch, None) when torch imports and sees a CUDA device, else (torch or
    None, the reason). Imports torch into this process."""
    try:
        import torch
    except Exception as e:  # noqa: BLE001 - a broken install is as unusable as none
        return None, "torch is not importable (%s)" % e
    if not torch.cuda.is_available():
        return torch, "torch %s sees no CUDA device" % torch.__version__
    return torch, None


def cuda_unavailable_reason(timeout=120):
    """torch_cuda()'s question asked of a child Python, so that this process
    never imports torch nor initialises CUDA: None when torch sees a CUDA
    device, else why not."""
    code = ("import sys; sys.path.insert(0, %r); import stepkit\n"
            "print(stepkit.torch_cuda()[1] or 'OK')\n" % HERE)
    r = run([sys.executable, "-c", code], timeout, raise_on_timeout=False)
    if r.timed_out:
        return "checking for CUDA took over %d s" % timeout
    lines = r.stdout.strip().splitlines()
    if not lines:
        return "the check for CUDA printed nothing: %s" % r.stderr.strip()[-200:]
    return None if lines[-1] == "OK" else lines[-1]


def is_oom(exc):
    """True for PyTorch's OutOfMemoryError (any allocator), for the
    RuntimeError or MemoryError whose message says out of memory (what an
    error raised through a pluggable allocator looks like), and for an
    exception raised from one of those."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if any(cls.__name__ == "OutOfMemoryError" for cls in type(exc).__mro__):
            return True
        if isinstance(exc, (RuntimeError, MemoryError)) and "out of memory" in str(exc).lower():
            return True
        exc = exc.__cause__
    return False


# ---- children -------------------------------------------------------------------


def _die_with_parent(parent):
    """A preexec_fn: the child gets SIGKILL when its parent dies, so a step
    killed by the driver's timeout leaves no GPU memory held."""
    def fn():
        if _LIBC is not None:
            _LIBC.prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
        if os.getppid() != parent:  # the parent died before the prctl
            os._exit(1)
    return fn


def _killpg(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run(argv, timeout, env=None, raise_on_timeout=True):
    """Runs argv to its end with output captured as text, in its own process
    group (env: the whole environment, default this one's). Past `timeout` s
    the whole group is killed, so that no grandchild holds on; then
    subprocess.TimeoutExpired is raised, or with raise_on_timeout=False the
    result comes back with timed_out True. The result is a
    subprocess.CompletedProcess with timed_out and seconds added."""
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env, start_new_session=True,
                         preexec_fn=_die_with_parent(os.getpid()))
    timed_out = False
    try:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _killpg(p)
            out, err = p.communicate()
    except BaseException:  # the step's alarm, ^C: the child goes with it
        _killpg(p)
        p.wait()
        raise
    if timed_out and raise_on_timeout:
        raise subprocess.TimeoutExpired(argv, timeout, out, err)
    r = subprocess.CompletedProcess(argv, p.returncode, out, err)
    r.timed_out, r.seconds = timed_out, time.monotonic() - t0
    return r


def ended(r, timeout=None):
    """One line saying how a child that did not finish well ended: killed
    at its timeout, crashed by a signal, or failed with its exit status; the
    last line of its stderr after."""
    if r.timed_out:
        return "killed after its %s s timeout" % ("?" if timeout is None else "%.0f" % timeout)
    lines = [ln.strip() for ln in (r.stderr or "").splitlines() if ln.strip()]
    last = (": " + lines[-1][:160]) if lines else ""
    if r.returncode is not None and r.returncode < 0:
        try:
            name = signal.Signals(-r.returncode).name
        except ValueError:
            name = "signal %d" % -r.returncode
        return "crashed (%s)%s" % (name, last)
    return "failed (exit %s)%s" % (r.returncode, last)


class Child:
    """A child that runs beside the step: Child(code, args, tag) runs Python
    `code` (after CHILD_PREAMBLE) with sys.argv [script, tag, *args] (no tag
    when `tag` is None); Child(argv=[...]) runs any command. env is the whole
    environment (default this one's). Its stdout is read line by line with
    a deadline; its stderr goes to a file (a pipe read only at the end could
    fill and stall it)."""

    def __init__(self, code=None, args=(), env=None, tag=None, argv=None):
        self.script = None
        if argv is None:
            # The code goes to a file rather than after -c, so that the
            # command line stays short: /proc's copy of it is what watch's
            # --filter reads.
            fd, self.script = tempfile.mkstemp(prefix="hr-step-child-", suffix=".py")
            with os.fdopen(fd, "w") as f:
                f.write(CHILD_PREAMBLE + code)
            argv = [sys.executable, self.script] + ([tag] if tag else []) + [str(a) for a in args]
        self.err = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.err, env=env, start_new_session=True,
                                     preexec_fn=_die_with_parent(os.getpid()))
        self.pid = self.proc.pid
        self._buf, self._eof = b"", False
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.proc.stdout, selectors.EVENT_READ)

    def readline(self, timeout):
        """The next line of stdout, or None when none came within `timeout` s
        or the child ended. Reads the pipe itself: a buffered reader could
        hold lines that select() no longer sees."""
        end = time.monotonic() + timeout
        while b"\n" not in self._buf and not self._eof:
            left = end - time.monotonic()
            if left <= 0 or not self._sel.select(left):
                return None
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if chunk:
                self._buf += chunk
            else:
                self._eof = True
        if not self._buf:
            return None
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode(errors="replace")

    def expect(self, word, timeout):
        """Reads until a line starting with `word`; returns its other words.
        Kills the child and raises RuntimeError with its stderr when none
        comes."""
        return self.expect_line(word, timeout).split()[1:]

    def expect_line(self, word, timeout):
        """expect(), returning the whole line."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            line = self.readline(max(0.0, end - time.monotonic()))
            if line is None:
                break
            if line.startswith(word):
                return line
        self.kill()
        err = self.stderr()
        raise RuntimeError("child %d did not say %r within %g s (exit %s): %s"
                           % (self.pid, word, timeout, self.proc.returncode,
                              err.strip()[-800:] or "no stderr"))

    def stderr(self):
        """What the child wrote to stderr so far."""
        try:
            self.err.seek(0)
            return self.err.read()
        except (OSError, ValueError):
            return ""

    def wait(self, timeout):
        """The exit status once it ends within `timeout` s; killed after."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.returncode

    def stop(self, grace):
        """Closes its stdin (its cue to end), then kills it after `grace` s."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        self.wait(grace)
        self.kill()

    def kill(self):
        """Kills its process group, waits, and removes its script."""
        if self.proc.poll() is None:
            _killpg(self.proc)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        if self.script and os.path.exists(self.script):
            os.unlink(self.script)


# ---- the step ---------------------------------------------------------------------


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


class Step:
    """One step's bookkeeping: arguments (--out, --quick and the step's own,
    added by add_args), budget (quick_budget_s with --quick when given),
    children, and the files and RESULT line at the end."""

    def __init__(self, name, number, title, budget_s, argv=None, add_args=None,
                 quick_budget_s=None):
        p = argparse.ArgumentParser(prog="bench/gpu/" + os.path.basename(sys.argv[0] or name),
                                    description="%d. %s" % (number, title))
        p.add_argument("--out", required=True, help="folder for %s.md and %s.json"
                       % (name, name))
        p.add_argument("--quick", action="store_true",
                       help="a much shorter run, to check the plumbing")
        if add_args:
            add_args(p)
        self.args = p.parse_args(argv)
        self.name, self.number, self.title = name, number, title
        self.budget = Budget(quick_budget_s if self.args.quick and quick_budget_s else budget_s)
        self.budget_s = self.budget.seconds
        self.children = []

    def arm(self):
        """From now on the step ends as FAIL after its budget."""
        def fire(signum, frame):
            raise Overtime("ran past its own budget of %d s" % self.budget_s)
        signal.signal(signal.SIGALRM, fire)
        signal.alarm(max(1, int(self.budget.left())))

    def elapsed(self):
        return self.budget.spent()

    def left(self):
        return self.budget.left()

    def child(self, code=None, args=(), env=None, tag=None, argv=None):
        """A Child that ends with the step."""
        c = Child(code, args, env, tag, argv)
        self.children.append(c)
        return c

    def cleanup(self):
        signal.alarm(0)
        for c in self.children:
            c.kill()

    def finish(self, result, summary, body, data):
        """Writes <step>.md (heading, then `body`) and <step>.json (`data`
        with the result), prints the RESULT line; returns the exit status."""
        self.cleanup()
        data = dict(data)
        data.update({"step": self.name, "result": result, "summary": summary,
                     "quick": self.args.quick, "wall_s": round(self.elapsed(), 2)})
        md = "## %d. %s\n\n%s" % (self.number, self.title, body.rstrip() + "\n")
        os.makedirs(self.args.out, exist_ok=True)
        with open(os.path.join(self.args.out, self.name + ".md"), "w") as f:
            f.write(md)
        with open(os.path.join(self.args.out, self.name + ".json"), "w") as f:
            json.dump(data, f, indent=1, sort_keys=True, default=str)
            f.write("\n")
        sys.stdout.flush()
        sys.stdout.write("RESULT %s %s %s\n" % (self.name, result, " ".join(summary.split())))
        sys.stdout.flush()
        return EXIT[result]

    def skip(self, reason, data=None):
        """The report of a step that cannot run here (exit 77)."""
        log("SKIP: " + reason)
        return self.finish(SKIP, reason, "Not run: %s.\n" % reason,
                           dict(data or {}, skipped=reason))

    def no_cli(self):
        """The report of a step that has no headroom CLI to run (exit 1)."""
        return self.finish(FAIL, "no headroom CLI (set HEADROOM_CLI)",
                           "Not run: no headroom CLI (set HEADROOM_CLI or build first).\n", {})

    def error(self, exc, data):
        """The report of a step ended by an exception: past its budget, or
        an error, with the data so far (exit 1)."""
        if isinstance(exc, Overtime):
            return self.finish(FAIL, str(exc), "The step %s." % exc, data)
        return self.finish(FAIL, "error: %s" % str(exc)[:200], "Error: %r\n" % exc, data)
