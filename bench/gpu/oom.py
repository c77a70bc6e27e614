#!/usr/bin/env python3
"""Step 7: out of memory with headroom's pool as PyTorch's allocator.

PyTorch's pluggable allocator does not check the pointer it gets; a failure
must reach Python as an exception (headroom.torch.install_allocator() sets
the pool's raise hook to libc10's torchCheckFail), or the tensor would sit
at address 0 and the next kernel end the CUDA context. A child installs the
pool with memory_fraction:0.05, allocates 256 MiB tensors until the pool
refuses, then frees half and must allocate and run a kernel again in the
same process.

  bench/gpu/oom.py --out DIR [--quick]

PASS when the failure is a RuntimeError starting "CUDA out of memory. Tried
to allocate 256.00 MiB", the context survives (a sum over a fresh tensor is
right), and the pool counted the out-of-memory. Skips (77) without torch
with CUDA. tests/python/test_torch_oom_gpu.py runs the same child."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stepkit as sk  # noqa: E402

STEP_BUDGET_S = 60
CHILD_TIMEOUT_S = 45

# Prints one "key value" line per check, then the message itself.
CHILD = r"""
import torch
from headroom import torch as hr_torch
hr_torch.install_allocator(conf="memory_fraction:0.05")
chunk = 256 << 20
xs, msg, kind = [], None, None
try:
    for _ in range(100000):
        xs.append(torch.empty(chunk, dtype=torch.uint8, device="cuda"))
except Exception as e:  # the type is part of what is judged
    msg, kind = str(e), type(e).__name__
held = len(xs)
print("raised", kind, flush=True)
print("held", held, flush=True)
del xs[: held // 2 + 1]
y = torch.ones(chunk, dtype=torch.uint8, device="cuda")
z = y.to(torch.int64).sum().item()
torch.cuda.synchronize()
print("alive", z == chunk, flush=True)
print("ooms", hr_torch.pool_stats(0)["num_ooms"], flush=True)
print("message", " ".join((msg or "").split()), flush=True)
"""

EXPECT = "CUDA out of memory. Tried to allocate 256.00 MiB"


def judge(stdout):
    """The child's lines as checks: [(check, seen, ok)], and the readings."""
    seen = {}
    for line in stdout.splitlines():
        k, _, v = line.partition(" ")
        if k in ("raised", "held", "alive", "ooms", "message"):
            seen[k] = v
    checks = [
        ("the failure is a RuntimeError", seen.get("raised", "(no line)"),
         seen.get("raised") in ("RuntimeError", "OutOfMemoryError")),
        ("tensors held before it", seen.get("held", "(no line)"),
         seen.get("held", "0").isdigit() and int(seen.get("held", "0")) > 0),
        ("message starts \"%s\"" % EXPECT, seen.get("message", "(no line)")[:120],
         seen.get("message", "").startswith(EXPECT)),
        ("the context survives (allocate, sum, synchronize)", seen.get("alive", "(no line)"),
         seen.get("alive") == "True"),
        ("the pool counted the out-of-memory", seen.get("ooms", "(no line)"),
         seen.get("ooms", "0").isdigit() and int(seen.get("ooms", "0")) >= 1),
    ]
    return checks, seen


def main(argv=None):
    step = sk.Step("oom", 7, "Out of memory under PyTorch", STEP_BUDGET_S, argv)
    reason = sk.cuda_unavailable_reason()
    if reason:
        return step.skip(reason)
    step.arm()
    data = {}
    try:
        r = sk.run([sys.executable, "-c", CHILD], CHILD_TIMEOUT_S, raise_on_timeout=False)
        checks, seen = judge(r.stdout)
        data = {"readings": seen, "exit": r.returncode, "stderr_tail": r.stderr[-2000:]}
        if r.returncode != 0:
            checks.append(("the child ends well", sk.ended(r, CHILD_TIMEOUT_S), False))
        ok = all(c[2] for c in checks)
        rows = [(c[0], c[1], "ok" if c[2] else "**FAIL**") for c in checks]
        body = ("A child installs headroom's pool as PyTorch's allocator with "
                "`memory_fraction:0.05`, allocates 256 MiB tensors until the pool refuses, "
                "frees half and allocates and sums again.\n\n"
                + sk.table(["check", "seen", "verdict"], rows)
                + "\nThe message: `%s`\n" % seen.get("message", "")[:600])
        bad = [c[0] for c in checks if not c[2]]
        summary = ("RuntimeError \"CUDA out of memory\" after %s tensors; the context survives"
                   % seen.get("held", "?")) if ok else "failed: " + "; ".join(bad)
        return step.finish(sk.PASS if ok else sk.FAIL, summary, body, data)
    except Exception as e:  # noqa: BLE001 - the report says what ended the step
        return step.error(e, data)


if __name__ == "__main__":
    sys.exit(main())
