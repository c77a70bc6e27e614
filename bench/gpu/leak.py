#!/usr/bin/env python3
"""Step 6: leak detection by `headroom watch` on real GPU processes.

Two children run beside each other, each running an inference step per
iteration (a fresh batch of 256 through a 1024-4096-1024 MLP): a leaker that
also keeps one more GPU tensor per iteration (32 MiB every 0.5 s), and a
steady loop that also allocates and frees a 32 MiB tensor per iteration
(PyTorch's cache keeps its usage flat). Once both are past their CUDA
start-up, `headroom watch --json` samples for a bounded time, following the
two by a word in their command lines (--filter). Its leak detector keeps a
series of each process's GPU memory from NVML; the step passes when a leak
event on the "gpu" series names the leaker within the configured window
(counted from watch's first sample) and no leak event names the steady one.

  bench/gpu/leak.py --out DIR [--quick] [--cpu]

--cpu runs the same orchestration and judging with host memory instead
(bytearrays kept or freed; watch's "rss_anon" series), ten times faster:
100 ms samples, a 6 s window and a 20 MiB/min floor. It is what
tests/python/test_gpu_leak.py runs. Without --cpu and without torch with CUDA
the step skips (77)."""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stepkit as sk  # noqa: E402

STEP_BUDGET_S = 140  # the driver allows 150
CHILD_READY_S = 60   # importing torch, CUDA context, the first iteration
MIB = sk.MIB

# interval s, leak window s, min samples, samples, chunk bytes, period s,
# leak floor (--leak-min-rate; None: watch's default 2M/min), leaker cap.
MODES = {
    "gpu": dict(interval=0.5, window=40, min_samples=30, count=160, chunk=32 * MIB, period=0.5,
                min_rate=None, cap=16 << 30, series="gpu"),
    "quick": dict(interval=0.5, window=15, min_samples=20, count=50, chunk=32 * MIB, period=0.5,
                  min_rate=None, cap=8 << 30, series="gpu"),
    "cpu": dict(interval=0.1, window=6, min_samples=20, count=100, chunk=1 * MIB, period=0.1,
                min_rate="20M", cap=256 * MIB, series="rss_anon"),
}

CHILD = r"""
import time
role, device, chunk, period, deadline, cap = sys.argv[2:8]  # argv[1] is the tag
chunk, period, deadline, cap = int(chunk), float(period), float(deadline), int(cap)
if device == "cuda":
    import torch
    dev = torch.device("cuda")
    torch.set_grad_enabled(False)
    model = torch.nn.Sequential(torch.nn.Linear(1024, 4096), torch.nn.GELU(),
                                torch.nn.Linear(4096, 1024)).to(dev).eval()

    def alloc(n):
        t = torch.empty(n, dtype=torch.uint8, device=dev)
        t.fill_(1)
        return t

    def work():  # one inference step: a fresh batch through the MLP
        y = model(torch.randn(256, 1024, device=dev))
        torch.cuda.synchronize()
        return y
else:
    a = list(range(20000))

    def alloc(n):
        return bytearray(b"\x01") * n  # written, so it is resident

    def work():
        return sum(a)

kept = []
tmp = alloc(chunk)  # one iteration before watch starts: start-up is not a leak
work()
del tmp
print("ready", os.getpid(), flush=True)
t0, n = time.monotonic(), 0
while time.monotonic() - t0 < deadline:
    work()
    if role == "leaker":
        if len(kept) * chunk < cap:
            kept.append(alloc(chunk))
    else:
        tmp = alloc(chunk)
        work()
        del tmp
    n += 1
    time.sleep(max(0.0, t0 + n * period - time.monotonic()))
"""


def watch_argv(cli, m, tag):
    argv = [cli, "watch", "--json", "--interval", "%gs" % m["interval"], "--count", str(m["count"]),
            "--leak-window", "%gs" % m["window"], "--leak-min-samples", str(m["min_samples"]),
            "--filter", tag, "--listen", "none", "--db", "none", "--top", "8",
            "--proc-budget", "100"]
    if m["min_rate"]:
        argv += ["--leak-min-rate", m["min_rate"]]
    return argv


def gpu_visible(cli, pids):
    """{pid: gpu_bytes} from `headroom status --json`: are the children's
    GPU memory attributed to their pids (NVML's pids seen in this /proc)?"""
    r = sk.run([cli, "status", "--json", "--top", "1"], 20)
    j = json.loads(r.stdout)
    by = {p["pid"]: p["gpu_bytes"] for p in j["processes"]}
    return {pid: by.get(pid) for pid in pids}, j["gpu"]


def run_watch(step, cli, m, tag, leaker, steady):
    """Runs watch to its --count; returns the parsed events and numbers."""
    argv = watch_argv(cli, m, tag)
    sk.log("running: %s" % " ".join(argv))
    p = step.child(argv=argv)
    limit = m["count"] * m["interval"] + 30
    t_start, first, samples, leaks, bad = time.time(), None, 0, [], 0
    series = {leaker: [], steady: []}
    end = time.monotonic() + limit
    while True:
        line = p.readline(end - time.monotonic())
        if line is None:  # watch ended, or ran past its limit
            break
        try:
            ev = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if ev.get("event") == "sample":
            samples += 1
            if first is None:
                first = ev["time"]
            for t in ev.get("top", []):
                if t["pid"] in series:
                    series[t["pid"]].append((ev["time"], t["gpu_bytes"], t["rss_anon_bytes"]))
        elif ev.get("event") == "leak":
            leaks.append(ev)
            sk.log("leak event: pid %s (%s) series %s slope %.1f MiB/min"
                   % (ev.get("pid"), ev.get("name"), ev.get("series"),
                      ev.get("slope_bytes_per_min", 0) / MIB))
    rc = p.wait(0 if time.monotonic() > end else 10)
    return {"rc": rc, "stderr": p.stderr().strip()[-500:], "samples": samples, "bad_lines": bad,
            "first_sample": first, "leaks": leaks, "series": series, "started": t_start}


def judge(m, w, leaker, steady, expected_count=None):
    """The verdict from watch's events: (ok, rows, found_after_s, reasons)."""
    reasons = []
    right = [e for e in w["leaks"] if e.get("pid") == leaker and e.get("series") == m["series"]]
    wrong = [e for e in w["leaks"] if e.get("pid") == steady]
    found = None
    if right and w["first_sample"] is not None:
        found = right[0]["time"] - w["first_sample"]
    if w["rc"] != 0:
        reasons.append("watch exited %s (%s)" % (w["rc"], w["stderr"][-200:]))
    want = expected_count if expected_count is not None else m["count"]
    if w["samples"] != want:
        reasons.append("watch gave %d samples, not %d" % (w["samples"], want))
    if w["bad_lines"]:
        reasons.append("%d lines of watch output were not JSON" % w["bad_lines"])
    if not right:
        reasons.append("no leak event on the %s series for the leaker (pid %d)"
                       % (m["series"], leaker))
    elif found is None or found > m["window"]:
        reasons.append("the leaker was found after %s s, past the %g s window"
                       % ("?" if found is None else "%.1f" % found, m["window"]))
    if wrong:
        reasons.append("false alarm: a leak event names the steady pid %d" % steady)
    col = 1 if m["series"] == "gpu" else 2

    def span(pid):
        s = w["series"].get(pid) or []
        if not s:
            return "not sampled", "-"
        vals = [x[col] for x in s]
        return ("%s -> %s" % (sk.fmt_mib(vals[0]), sk.fmt_mib(vals[-1])),
                sk.fmt_mib(max(vals) - min(vals)))

    rows = []
    for role, pid, events in (("leaker", leaker, right), ("steady", steady, wrong)):
        first_last, rng = span(pid)
        ev = events[0] if events else None
        rows.append([role, pid, m["series"], first_last, rng,
                     "%.1f MiB/min" % (ev["slope_bytes_per_min"] / MIB) if ev else "-",
                     "%.1f s" % (ev["time"] - w["first_sample"]) if ev and w["first_sample"]
                     else "none",
                     ("pass" if (bool(ev) and found is not None and found <= m["window"])
                      else "**FAIL**") if role == "leaker" else ("pass" if not ev else "**FAIL**")])
    return not reasons, rows, found, reasons


def main(argv=None):
    step = sk.Step("leak", 6, "Leak detection", STEP_BUDGET_S, argv,
                   lambda p: p.add_argument("--cpu", action="store_true",
                                            help="host-memory children, time scaled by 10"))
    a = step.args
    cli = sk.cli_path()
    if not cli:
        return step.no_cli()
    if not a.cpu:
        torch, why = sk.torch_cuda()
        if why:
            return step.skip(why)
    m = MODES["cpu" if a.cpu else "quick" if a.quick else "gpu"]
    device = "cpu" if a.cpu else "cuda"
    tag = "hr-leak-step-%d" % os.getpid()
    deadline = m["count"] * m["interval"] + 40  # the children end themselves after this
    data = {"mode": m, "device": device}
    step.arm()
    try:
        leaker = step.child(CHILD, ["leaker", device, m["chunk"], m["period"], deadline, m["cap"]],
                            tag=tag)
        steady = step.child(CHILD, ["steady", device, m["chunk"], m["period"], deadline,
                                    m["cap"]], tag=tag)
        for c in (leaker, steady):
            c.expect("ready", CHILD_READY_S)
        sk.log("leaker pid %d, steady pid %d, ready after %.1f s"
               % (leaker.pid, steady.pid, step.elapsed()))
        data.update(leaker=leaker.pid, steady=steady.pid)
        if device == "cuda":
            seen, gpu = gpu_visible(cli, [leaker.pid, steady.pid])
            data["gpu_bytes_before"] = seen
            if not all(seen.values()):
                why = ("headroom attributes no GPU memory to the children (%s; GPU state %s): "
                       "NVML's pids are not visible in this /proc (a PID namespace?), so watch "
                       "has no per-process GPU series" % (seen, gpu["state"]))
                return step.finish(sk.FAIL, why, "FAIL: %s.\n" % why, data)
        w = run_watch(step, cli, m, tag, leaker.pid, steady.pid)
    except Exception as e:  # noqa: BLE001 - reported with what there is (Overtime too)
        return step.error(e, data)
    return finish(step, m, data, w, leaker.pid, steady.pid)


def finish(step, m, data, w, leaker, steady):
    ok, rows, found, reasons = judge(m, w, leaker, steady)
    data.update(watch={k: v for k, v in w.items() if k != "series"},
                series={str(k): v for k, v in w["series"].items()}, found_after_s=found,
                reasons=reasons)
    kind = "GPU tensor (torch, %s)" % sk.fmt_mib(m["chunk"]) if m["series"] == "gpu" \
        else "host bytearray (%s)" % sk.fmt_mib(m["chunk"])
    body = ("A leaker keeps one more %s every %g s beside a steady loop that allocates and "
            "frees the same every %g s; `headroom watch --json` follows both (%d samples every "
            "%g s, leak window %g s, at least %d samples%s). Time to detection counts from "
            "watch's first sample.\n\n"
            % (kind, m["period"], m["period"], m["count"], m["interval"], m["window"],
               m["min_samples"], ", floor %s/min" % m["min_rate"] if m["min_rate"] else ""))
    body += sk.table(["process", "pid", "series", "first -> last sample", "range",
                      "slope reported", "leak event after", "verdict"], rows)
    if ok:
        summary = "leaker found after %.1f s (window %g s); steady loop not flagged" \
            % (found, m["window"])
        body += "\nPASS: %s.\n" % summary
    else:
        summary = "; ".join(reasons)
        body += "\nFAIL: %s.\n" % summary
    return step.finish(sk.PASS if ok else sk.FAIL, summary, body, data)


if __name__ == "__main__":
    sys.exit(main())
