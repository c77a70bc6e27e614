"""What the bench/gpu step scripts share: the step interface, child processes
that cannot outlive their step, and markdown tables.

The interface (bench/gpu/README.md): `<script> --out DIR [--quick]` writes
DIR/<step>.md (a section `## N. Title`, the method in a sentence, a table of
measured numbers, the verdict in words) and DIR/<step>.json (the raw
numbers), prints progress to stderr and, last on stdout, one line
`RESULT <step> PASS|FAIL|SKIP <summary>`; it exits 0, 1 or 77.

A step bounds its own run time: Step.arm() sets an alarm at the step's
budget, and an alarm that fires ends the step as FAIL with what it had. Every
child a step starts is killed when the step ends, and dies with it
(PR_SET_PDEATHSIG) if the step is killed."""

import argparse
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
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Put first in a child's code: the child gets SIGKILL when its parent dies,
# so a step killed by the driver's timeout leaves no GPU memory held.
CHILD_PREAMBLE = """
import ctypes, os, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
except Exception:
    pass
if os.getppid() == 1:
    sys.exit(1)
"""


class Overtime(Exception):
    """The step's own time budget ran out."""


def log(msg):
    sys.stderr.write("[%s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


def fmt_mib(b):
    return "-" if b is None else "%.1f MiB" % (b / MIB)


def table(headers, rows):
    """A markdown table; cells are str()'d and pipes escaped."""
    def cell(v):
        return str(v).replace("|", "/").replace("\n", " ")
    out = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    out += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(out) + "\n"


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


def torch_cuda():
    """(torch, None) when torch imports and sees a CUDA device, else (torch or
    None, the reason)."""
    try:
        import torch
    except ImportError as e:
        return None, "torch is not importable (%s)" % e
    if not torch.cuda.is_available():
        return torch, "torch %s sees no CUDA device" % torch.__version__
    return torch, None


class Child:
    """A Python child running `code` (after CHILD_PREAMBLE) with sys.argv
    [script, tag, *args] (no tag when `tag` is None); its stdout is read
    line by line with a deadline."""

    def __init__(self, code, args=(), env=None, tag=None):
        e = dict(os.environ)
        e.update(env or {})
        # The code goes to a file rather than after -c, so that the command
        # line stays short: /proc's copy of it is what watch's --filter reads.
        fd, self.script = tempfile.mkstemp(prefix="hr-step-child-", suffix=".py")
        with os.fdopen(fd, "w") as f:
            f.write(CHILD_PREAMBLE + code)
        argv = [sys.executable, self.script] + ([tag] if tag else []) + [str(a) for a in args]
        # stderr to a file: a pipe read only on failure could fill and stall the child.
        self.err = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.err, env=e, text=True, bufsize=1)
        self.pid = self.proc.pid
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.proc.stdout, selectors.EVENT_READ)

    def readline(self, timeout):
        """The next line of stdout, or None when none came within `timeout` s
        or the child ended."""
        if not self._sel.select(timeout):
            return None
        line = self.proc.stdout.readline()
        return line.rstrip("\n") if line else None

    def expect(self, word, timeout):
        """Reads until a line starting with `word`; returns its other words.
        Raises RuntimeError with the child's stderr when it does not come."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            line = self.readline(max(0.0, end - time.monotonic()))
            if line is None:
                break
            if line.startswith(word):
                return line.split()[1:]
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

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        if os.path.exists(self.script):
            os.unlink(self.script)


class Step:
    """One step's bookkeeping: arguments, budget, children, and the files and
    RESULT line at the end."""

    def __init__(self, name, number, title, budget_s, argv=None, add_args=None):
        p = argparse.ArgumentParser(prog="bench/gpu/%s.py" % name,
                                    description="%d. %s" % (number, title))
        p.add_argument("--out", required=True, help="folder for %s.md and %s.json"
                       % (name, name))
        p.add_argument("--quick", action="store_true", help="a much shorter run")
        if add_args:
            add_args(p)
        self.args = p.parse_args(argv)
        self.name, self.number, self.title, self.budget_s = name, number, title, budget_s
        self.children = []
        self.t0 = time.monotonic()
        os.makedirs(self.args.out, exist_ok=True)

    def arm(self):
        """From now on the step ends as FAIL after its budget."""
        def fire(signum, frame):
            raise Overtime("ran past its own budget of %d s" % self.budget_s)
        signal.signal(signal.SIGALRM, fire)
        signal.alarm(int(self.budget_s))

    def elapsed(self):
        return time.monotonic() - self.t0

    def child(self, code, args=(), env=None, tag=None):
        c = Child(code, args, env, tag)
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
        with open(os.path.join(self.args.out, self.name + ".md"), "w") as f:
            f.write(md)
        with open(os.path.join(self.args.out, self.name + ".json"), "w") as f:
            json.dump(data, f, indent=1, sort_keys=True, default=str)
            f.write("\n")
        sys.stdout.write("RESULT %s %s %s\n" % (self.name, result, " ".join(summary.split())))
        sys.stdout.flush()
        return EXIT[result]

    def skip(self, reason, data=None):
        log("SKIP: " + reason)
        return self.finish(SKIP, reason, "Not run: %s.\n" % reason, data or {})


def which(name):
    return shutil.which(name)


def run(argv, timeout, env=None):
    """subprocess.run with output captured as text and a timeout."""
    e = None
    if env is not None:
        e = dict(os.environ)
        e.update(env)
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=e)
