#!/usr/bin/env python3
"""Step "torch" of the GPU validation: headroom's pool as PyTorch's CUDA
allocator beside PyTorch's own allocator settings, on real architectures
with random weights.

  bench/gpu/torch_bench.py --out DIR [--quick]
      (HR_TORCH_MODELS=resnet50,gpt2,unet limits the timed models)

For each workload (resnet50 at several batch sizes, GPT-2 decoding through
its KV cache, the diffusion-style UNet of unet.py) and each allocator setting
(native, expandable_segments:True, backend:cudaMallocAsync, headroom's pool
with its default configuration) one child process builds the model, runs
warm-up iterations, then timed ones (torch.cuda.synchronize before and after
each), and reports the median iterations/s, the peaks of allocated and
reserved memory over its whole run (warm-up included) and NVML's used
memory for the process at the end (the CUDA context included). Then, per
allocator, one child searches the largest resnet50 batch that runs: doubling,
then bisection, one forward per trial, with a ballast process holding all
but MAXBATCH_FREE_GIB of the device so that every allocator searches the
same free memory in seconds.

A child per run because the allocator is fixed per process, and a crash
then loses one row only; each child has a timeout, and the whole step keeps
within BUDGET_S (QUICK_BUDGET_S with --quick).

Targets (issue 8): headroom >= 0.98 x native iterations/s, and headroom's
peak reserved below native's, on every workload. Writes DIR/torch.md and
DIR/torch.json; prints `RESULT torch PASS|FAIL|SKIP ...` last; exit 0, 1 or
77 (no CUDA device, or none of the models' packages).
"""

import argparse
import gc
import importlib.util
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import stepkit as sk  # noqa: E402
import torch_common as tc  # noqa: E402

STEP, NUMBER, TITLE = "torch", 3, "PyTorch allocators side by side"

#: Wall-clock seconds the whole step may take (the driver's backstop is 450).
BUDGET_S = 400
QUICK_BUDGET_S = 150
#: Seconds one child may run (build, warm-up, timed iterations, readings).
CHILD_TIMEOUT_S = 75
QUICK_CHILD_TIMEOUT_S = 40
#: Seconds kept for the largest-batch search when the timed runs start.
MAXBATCH_RESERVE_S = 130
QUICK_MAXBATCH_RESERVE_S = 45
#: The largest-batch search: free memory left by the ballast, first and
#: largest batch tried, seconds of trials per allocator.
MAXBATCH_FREE_GIB = 8
MAXBATCH_START = 16
MAXBATCH_CAP = 8192
MAXBATCH_SEARCH_S = 20
#: --quick leaves 2 GiB, so that its search reaches out-of-memory (the path
#: most likely to go wrong under a pluggable allocator) in small trials.
QUICK_MAXBATCH = {"free_gib": 2, "start": 16, "cap": 4096, "search_s": 10}

#: Targets of issue 8.
MIN_SPEED_RATIO = 0.98

#: The precision of every model on the GPU (PyTorch's usual inference choice;
#: CPU runs in the tests use float32).
DTYPE = "float16"


def plan(quick, models=None):
    """The timed workloads: (spec, warm-up iterations, most timed iterations,
    seconds after which timing stops once MIN_ITERS ran)."""
    if quick:
        p = [({"model": "resnet50", "batch": 8}, 2, 5, 1.0),
             ({"model": "gpt2", "batch": 2, "prompt": 32, "new": 16}, 1, 3, 1.0),
             ({"model": "unet", "batch": 1, "latent": 32, "ch": 64, "mults": [1, 2, 4]}, 2, 5,
              1.0)]
    else:
        # The three architectures first, so that a short budget loses batch
        # sizes rather than a model.
        p = [({"model": "resnet50", "batch": 32}, 5, 50, 3.0),
             ({"model": "gpt2", "batch": 8, "prompt": 128, "new": 64}, 1, 10, 5.0),
             ({"model": "unet", "batch": 1, "latent": 64}, 5, 60, 3.0)]
        p += [({"model": "resnet50", "batch": b}, 5, 50, 3.0) for b in (1, 8, 128)]
    if models:
        p = [x for x in p if x[0]["model"] in models]
    return p


MIN_ITERS = 3

PACKAGES = {"resnet50": "torchvision", "gpt2": "transformers", "llama": "transformers"}


def missing_package(model):
    """The package a model needs that is not installed, or None."""
    pkg = PACKAGES.get(model)
    if pkg and importlib.util.find_spec(pkg) is None:
        return pkg
    return None


# ---- the child ----------------------------------------------------------------------


def _install(allocator):
    """Right after importing torch: headroom's pool for 'headroom'."""
    if allocator == "headroom":
        from headroom import torch as hr_torch

        hr_torch.install_allocator()


def memory_peaks(torch, allocator, device):
    """(peak allocated, peak reserved, where they come from, extra counters)
    over the child's whole run; None on CPU."""
    if not device.startswith("cuda"):
        return None, None, "cpu: no device memory", {}
    if allocator == "headroom":
        from headroom import torch as hr_torch

        st = hr_torch.pool_stats()
        extra = {k: st.get(k) for k in ("num_alloc_retries", "num_ooms", "num_device_alloc",
                                         "num_device_free", "requested_bytes.all.peak")}
        return (st["allocated_bytes.all.peak"], st["reserved_bytes.all.peak"],
                "headroom.torch.pool_stats()", extra)
    extra = {}
    try:
        ms = torch.cuda.memory_stats()
        extra = {k: ms.get(k) for k in ("num_alloc_retries", "num_ooms", "num_device_alloc",
                                         "num_device_free", "requested_bytes.all.peak")}
    except RuntimeError:
        pass
    src = "torch.cuda.max_memory_allocated/reserved"
    if allocator == "cudaMallocAsync":
        src += " (the driver pool's UsedMemHigh/ReservedMemHigh)"
    return torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved(), src, extra


def child_workload(spec, workload):
    """In a child: torch imported, headroom's pool installed where the
    allocator is headroom's and the device a GPU, then the workload built.
    Returns (torch, workload), or (torch, None) once a model that cannot be
    built here is reported."""
    import torch

    if spec.get("device", "cuda").startswith("cuda"):
        _install(spec["allocator"])
    import torch_models

    dtype = getattr(torch, spec.get("dtype", DTYPE))
    try:
        return torch, torch_models.build(workload, spec.get("device", "cuda"), dtype)
    except torch_models.ModelUnavailable as e:
        tc.emit({"unavailable": str(e)})
        return torch, None


def child_loop(spec):
    """One workload under one allocator: warm-up, timed iterations, peaks."""
    allocator, device = spec["allocator"], spec.get("device", "cuda")
    t0 = time.monotonic()
    torch, wl = child_workload(spec, spec["workload"])
    if wl is None:
        return 0
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    build_s = time.monotonic() - t0
    for _ in range(spec["warmup"]):
        wl.step()
    sync()
    times = []
    t_timed = time.monotonic()
    while len(times) < spec["iters"]:
        sync()
        a = time.perf_counter()
        wl.step()
        sync()
        times.append(time.perf_counter() - a)
        if len(times) >= MIN_ITERS and time.monotonic() - t_timed > spec["iter_time"]:
            break
    alloc_peak, res_peak, src, extra = memory_peaks(torch, allocator, device)
    used, used_src = (tc.nvml_process_used() if device.startswith("cuda")
                      else (None, "cpu"))
    backend = None
    if device.startswith("cuda"):
        try:
            backend = torch.cuda.get_allocator_backend()
        except (AttributeError, RuntimeError) as e:
            backend = "unknown (%s)" % e
    tc.emit({"it_per_s": tc.median_rate(times), "times_s": [round(t, 6) for t in times],
             "iters": len(times), "warmup": spec["warmup"], "peak_allocated": alloc_peak,
             "peak_reserved": res_peak, "peak_source": src, "nvml_used": used,
             "nvml_source": used_src, "counters": extra, "unit": wl.unit,
             "describe": wl.describe, "build_s": round(build_s, 2),
             "torch": torch.__version__, "allocator_backend": backend,
             "alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF")})
    return 0


def child_maxbatch(spec):
    """The largest resnet50 batch under one allocator; each trial is also
    printed as it ends, so a crash still tells how far the search came."""
    allocator, device = spec["allocator"], spec.get("device", "cuda")
    torch, wl = child_workload(spec, dict(spec["workload"], batch=1))
    if wl is None:
        return 0
    free_before = None
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        free_before = torch.cuda.mem_get_info()[0]

    def release():
        gc.collect()
        if not device.startswith("cuda"):
            return
        if allocator == "headroom":
            import headroom

            headroom.free_memory("conservative")  # the pools' caches, among the caches
        else:
            torch.cuda.empty_cache()

    def on_trial(b, outcome):
        # After the except block: the failed trial's tensors are unreachable.
        release()
        tc.emit({"batch": b, "outcome": outcome}, tc.TRIAL_PREFIX)

    t0 = time.monotonic()
    res = tc.find_max_batch(wl.try_batch, start=spec["start"], cap=spec["cap"],
                            deadline=lambda: time.monotonic() - t0 > spec["search_s"],
                            on_trial=on_trial)
    res["search_s"] = round(time.monotonic() - t0, 2)
    res["free_before"] = free_before
    tc.emit(res)
    return 0


def child_ballast(spec):
    """Holds all but spec['free_gib'] GiB of the device until stdin closes."""
    import torch

    free, total = torch.cuda.mem_get_info()
    want = free - int(spec["free_gib"] * sk.GIB)
    buf = None
    if want > 0:
        buf = torch.empty(want, dtype=torch.uint8, device="cuda")
        torch.cuda.synchronize()
    tc.emit({"held": want if buf is not None else 0, "free_before": free, "total": total,
             "free_after": torch.cuda.mem_get_info()[0]})
    sys.stdin.read()  # until the parent closes the pipe or dies
    return 0


def child_main(spec):
    mode = spec.get("mode", "loop")
    if mode == "loop":
        return child_loop(spec)
    if mode == "maxbatch":
        return child_maxbatch(spec)
    if mode == "ballast":
        return child_ballast(spec)
    raise SystemExit("unknown child mode %r" % mode)


# ---- the parent -----------------------------------------------------------------------


def child_cmd(spec):
    return [sys.executable, os.path.abspath(__file__), "--out", "-", "--child", json.dumps(spec)]


def run_loops(timed, allocators, budget, reserve_s, child_timeout, device="cuda", dtype=DTYPE,
              runner=tc.run_child):
    """Runs every (workload, allocator) child in turn within the budget;
    returns one row dict per pair, in order."""
    rows = []
    for spec, warmup, iters, iter_time in timed:
        label = tc.spec_label(spec)
        pkg = missing_package(spec["model"])
        for alloc in allocators:
            row = {"workload": label, "model": spec["model"], "batch": spec.get("batch"),
                   "allocator": alloc}
            rows.append(row)
            if pkg:
                row.update(status="unavailable", note="%s is not installed" % pkg)
                continue
            left = budget.left() - reserve_s
            if left < 10:
                row.update(status="not run", note="the step's time budget ran out")
                continue
            timeout = min(child_timeout, left)
            child = {"mode": "loop", "allocator": alloc, "device": device, "dtype": dtype,
                     "workload": spec, "warmup": warmup, "iters": iters, "iter_time": iter_time}
            sk.log("%s under %s (timeout %.0f s)" % (label, alloc, timeout))
            r = runner(child_cmd(child), env=tc.child_env(alloc), timeout=timeout)
            _fill(row, r, timeout)
            sk.log("  %s in %.1f s: %s" % (row["status"], r["seconds"],
                                           row.get("note") or _speed_text(row)))
    return rows


def _speed_text(row):
    return "%.2f it/s" % row["it_per_s"] if row.get("it_per_s") else ""


def _fill(row, r, timeout):
    res = r["result"]
    row["seconds"] = r["seconds"]
    if r["status"] == "ok" and res and "unavailable" in res:
        row.update(status="unavailable", note=res["unavailable"])
    elif r["status"] == "ok":
        row.update(status="ok", **res)
    else:
        row.update(status=r["status"], note=r["ended"], stderr_tail=r["stderr_tail"])
        if res:
            row.update(res)
        if r["trials"]:
            row["trials"] = r["trials"]


def start_ballast(free_gib, timeout=60):
    """Starts the ballast child and waits for its report; returns (child or
    None, report dict or None, note)."""
    c = sk.Child(argv=child_cmd({"mode": "ballast", "free_gib": free_gib}),
                 env=tc.child_env("native"))
    try:
        line = c.expect_line(tc.RESULT_PREFIX, timeout)
    except RuntimeError as e:  # it said why in its stderr; the note keeps it short
        sk.log(str(e))
        return None, None, "the ballast process did not report within %d s" % timeout
    return c, json.loads(line[len(tc.RESULT_PREFIX):]), ""


def stop_ballast(c):
    """Closes the ballast's stdin, its cue to free the memory and end."""
    if c is not None:
        c.stop(10)


def run_maxbatch(allocators, budget, mb, device="cuda", dtype=DTYPE, runner=tc.run_child,
                 model="resnet50"):
    """One search child per allocator, while a ballast holds the rest of the
    device; returns (rows, ballast report)."""
    rows = []
    pkg = missing_package(model)
    ballast, report, note = (None, None, "")
    if not pkg and device.startswith("cuda") and budget.left() > 30:
        ballast, report, note = start_ballast(mb["free_gib"])
        if note:
            sk.log(note)
    try:
        for alloc in allocators:
            row = {"allocator": alloc, "model": model}
            rows.append(row)
            if pkg:
                row.update(status="unavailable", note="%s is not installed" % pkg)
                continue
            left = budget.left()
            if left < 15:
                row.update(status="not run", note="the step's time budget ran out")
                continue
            timeout = min(mb["search_s"] + 45, left)
            child = {"mode": "maxbatch", "allocator": alloc, "device": device, "dtype": dtype,
                     "workload": {"model": model}, "start": mb["start"], "cap": mb["cap"],
                     "search_s": mb["search_s"]}
            sk.log("largest %s batch under %s (timeout %.0f s)" % (model, alloc, timeout))
            r = runner(child_cmd(child), env=tc.child_env(alloc), timeout=timeout)
            _fill(row, r, timeout)
            if row["status"] != "ok" and r["trials"]:
                ok = [t["batch"] for t in r["trials"] if t["outcome"] == "ok"]
                row["max_batch"] = max(ok) if ok else 0
                row["trials"] = [[t["batch"], t["outcome"]] for t in r["trials"]]
            sk.log("  %s: %s" % (row["status"], row.get("max_batch", row.get("note"))))
    finally:
        stop_ballast(ballast)
    return rows, report or ({"note": note} if note else None)


# ---- judgement and report ---------------------------------------------------------------


def judge(rows):
    """Adds to each headroom row its verdict against native on the same
    workload; returns (overall PASS/FAIL/SKIP, list of failure texts, number
    of workloads judged)."""
    by = {}
    for r in rows:
        by.setdefault(r["workload"], {})[r["allocator"]] = r
    failures, judged = [], 0
    for wl, rs in by.items():
        h, n = rs.get("headroom"), rs.get("native")
        if not h or h.get("status") == "unavailable":
            continue
        why = []
        if h.get("status") != "ok":
            why.append("headroom %s" % (h.get("note") or h.get("status")))
        if not n or n.get("status") != "ok":
            why.append("no native baseline (%s)" % ((n or {}).get("note") or "not run"))
        if not why:
            sr = sk.ratio(h.get("it_per_s"), n.get("it_per_s"))
            rr = sk.ratio(h.get("peak_reserved"), n.get("peak_reserved"))
            h["speed_vs_native"], h["reserved_vs_native"] = sr, rr
            if sr is None or sr < MIN_SPEED_RATIO:
                why.append("it/s %s x native (target >= %.2f)" % (sk.fmt_ratio(sr),
                                                                  MIN_SPEED_RATIO))
            if rr is None or rr >= 1.0:
                why.append("peak reserved %s x native (target < 1)" % sk.fmt_ratio(rr))
        judged += 1
        h["verdict"] = "PASS" if not why else "FAIL: " + "; ".join(why)
        if why:
            failures.append("%s: %s" % (wl, "; ".join(why)))
    if judged == 0:
        return "SKIP", failures, 0
    return ("PASS" if not failures else "FAIL"), failures, judged


def render(rows, mb_rows, ballast, verdict, failures, judged, quick, budget_s, spent):
    """The report's body, below the step's heading."""
    w = []
    w.append("Each workload ran once per allocator setting, each in its own process: warm-up "
             "iterations, then timed ones with `torch.cuda.synchronize()` before and after each; "
             "it/s is the median. Peaks are over the whole child run, warm-up included: "
             "`torch.cuda.max_memory_allocated/reserved()` for PyTorch's allocators, "
             "`headroom.torch.pool_stats()` for headroom (PyTorch's own statistics do not see a "
             "pluggable allocator). NVML is the process's used GPU memory at the end, CUDA "
             "context included. Weights are random; models run in %s with cuDNN autotuning "
             "off. %s" % (DTYPE, "A --quick run: few iterations, small shapes; the numbers "
                          "check the plumbing, not the targets." if quick else ""))
    w.append("")
    w.append("†: under `backend:cudaMallocAsync` PyTorch reports the CUDA driver pool's "
             "`ReservedMemHigh` and `UsedMemHigh`: reserved is memory the driver's pool held, "
             "allocated is memory handed out from it (at the driver's granularity), which is "
             "close to but not the same measure as the native allocator's.")
    w.append("")
    by = {}
    for r in rows:
        by.setdefault(r["workload"], []).append(r)
    for wl, rs in by.items():
        nat = next((r for r in rs if r["allocator"] == "native" and r.get("status") == "ok"), None)
        desc = next((r.get("describe") for r in rs if r.get("describe")), None)
        unit = next((r.get("unit") for r in rs if r.get("unit")), "iteration")
        w.append("### %s" % wl)
        w.append("")
        if desc:
            w.append("%s. One iteration: %s." % (desc, unit))
            w.append("")
        table = []
        for r in rs:
            if r.get("status") != "ok":
                table.append([r["allocator"], r.get("batch") or "", "", "", "", "", "", "",
                              "%s: %s" % (r.get("status"), r.get("note", ""))])
                continue
            dag = "†" if r["allocator"] == "cudaMallocAsync" else ""
            table.append([
                r["allocator"], r.get("batch") or "",
                "%.2f" % r["it_per_s"] if r.get("it_per_s") else "n/a",
                sk.fmt_ratio(sk.ratio(r.get("it_per_s"), nat and nat.get("it_per_s"))),
                tc.mib_cell(r.get("peak_allocated")) + dag,
                tc.mib_cell(r.get("peak_reserved")) + dag,
                sk.fmt_ratio(sk.ratio(r.get("peak_reserved"), nat and nat.get("peak_reserved"))),
                tc.mib_cell(r.get("nvml_used")),
                r.get("verdict", "")])
        w.append(sk.table(["allocator", "batch", "it/s (median)", "x native",
                           "peak allocated MiB", "peak reserved MiB", "reserved / native",
                           "NVML used MiB", "target"], table, right={1, 2, 3, 4, 5, 6, 7}))
    if mb_rows:
        w.append("### Largest resnet50 batch before out-of-memory")
        w.append("")
        held = ""
        if ballast and ballast.get("held") is not None:
            held = ("A ballast process held %.1f GiB of the %.1f GiB device, leaving about %.1f "
                    "GiB free for each search. " % (ballast["held"] / sk.GIB,
                                                     ballast["total"] / sk.GIB,
                                                     ballast["free_after"] / sk.GIB))
        elif ballast and ballast.get("note"):
            held = "No ballast (%s): each search had the whole device. " % ballast["note"]
        w.append("%sOne forward per trial, doubling from the first batch, then bisection; an "
                 "out-of-memory error (`torch.OutOfMemoryError`, or a RuntimeError saying "
                 "out of memory, which is how a pluggable allocator's failure arrives) ends a "
                 "trial, cached memory is released between trials, and each search has %s s."
                 % (held, QUICK_MAXBATCH["search_s"] if quick else MAXBATCH_SEARCH_S))
        w.append("")
        nat = next((r for r in mb_rows if r["allocator"] == "native" and r.get("status") == "ok"),
                   None)
        table = []
        for r in mb_rows:
            mbv = r.get("max_batch")
            end = ("exact" if r.get("exact") else
                   "cap" if r.get("capped") else
                   "time limit" if r.get("stopped") == "deadline" else
                   "error: %s" % r.get("error") if r.get("stopped") == "error" else "")
            if r.get("status") != "ok":
                end = r.get("note") or r.get("status")
                if mbv is not None:
                    end += "; the largest batch is the last that ran before it"
            table.append([r["allocator"], mbv if mbv is not None else "n/a",
                          sk.fmt_ratio(sk.ratio(mbv, nat and nat.get("max_batch"))),
                          r.get("first_failure") if r.get("first_failure") is not None else "",
                          len(r.get("trials") or []), r.get("search_s", ""), end])
        w.append(sk.table(["allocator", "largest batch", "x native", "first failing batch",
                           "trials", "search s", "end"], table, right={1, 2, 3, 4, 5}))
    w.append("### Against the targets")
    w.append("")
    if verdict == "PASS":
        w.append("PASS: on all %d workloads headroom ran at >= %.2f x native iterations/s with a "
                 "lower peak reserved than native." % (judged, MIN_SPEED_RATIO))
    elif verdict == "FAIL":
        w.append("FAIL on %d of %d workloads (targets: >= %.2f x native iterations/s and peak "
                 "reserved below native):" % (len(failures), judged, MIN_SPEED_RATIO))
        w.append("")
        for f in failures:
            w.append("- %s" % f)
    else:
        w.append("Not judged: no workload ran under both native and headroom.")
    w.append("")
    w.append("The step took %.0f s of its %d s budget." % (spent, budget_s))
    return "\n".join(w) + "\n"


def summary_line(verdict, rows, failures, judged, mb_rows):
    hs = [r for r in rows if r["allocator"] == "headroom" and r.get("speed_vs_native")]
    parts = []
    if hs:
        parts.append("headroom it/s %.3f-%.3f x native, reserved %.3f-%.3f x native over %d "
                     "workloads" % (min(r["speed_vs_native"] for r in hs),
                                    max(r["speed_vs_native"] for r in hs),
                                    min(r["reserved_vs_native"] or 0 for r in hs),
                                    max(r["reserved_vs_native"] or 0 for r in hs), len(hs)))
    mbs = {r["allocator"]: r.get("max_batch") for r in mb_rows if r.get("max_batch") is not None}
    if mbs:
        parts.append("max batch " + " ".join("%s=%s" % kv for kv in mbs.items()))
    if verdict == "FAIL":
        parts.append("%d of %d workloads miss a target" % (len(failures), judged))
    return "; ".join(parts) or "nothing measured"


def main(argv=None):
    step = sk.Step(STEP, NUMBER, TITLE, BUDGET_S, argv, quick_budget_s=QUICK_BUDGET_S,
                   add_args=lambda p: p.add_argument("--child", help=argparse.SUPPRESS))
    args = step.args
    if args.child:
        return child_main(json.loads(args.child))
    models = None
    if os.environ.get("HR_TORCH_MODELS"):
        models = set(os.environ["HR_TORCH_MODELS"].split(","))
    reason = sk.cuda_unavailable_reason()
    if reason:
        return step.skip(reason)
    timed = plan(args.quick, models)
    avail = [s for s in timed if not missing_package(s[0]["model"])]
    if not avail:
        return step.skip("none of the models can be built: %s missing"
                         % ", ".join(sorted({missing_package(s[0]["model"]) for s in timed})))
    budget = step.budget
    mb = (QUICK_MAXBATCH if args.quick else
          {"free_gib": MAXBATCH_FREE_GIB, "start": MAXBATCH_START, "cap": MAXBATCH_CAP,
           "search_s": MAXBATCH_SEARCH_S})
    rows = run_loops(timed, tc.ALLOCATOR_NAMES, budget,
                     QUICK_MAXBATCH_RESERVE_S if args.quick else MAXBATCH_RESERVE_S,
                     QUICK_CHILD_TIMEOUT_S if args.quick else CHILD_TIMEOUT_S)
    mb_rows, ballast = run_maxbatch(tc.ALLOCATOR_NAMES, budget, mb)
    verdict, failures, judged = judge(rows)
    md = render(rows, mb_rows, ballast, verdict, failures, judged, args.quick, budget.seconds,
                budget.spent())
    data = {"rows": rows, "maxbatch": mb_rows, "ballast": ballast, "quick": args.quick,
            "budget_s": budget.seconds, "spent_s": round(budget.spent(), 1),
            "targets": {"min_speed_ratio": MIN_SPEED_RATIO, "reserved_below_native": True}}
    summary = summary_line(verdict, rows, failures, judged, mb_rows)
    if verdict == "SKIP":
        summary = "no workload ran under both native and headroom: " + summary
    return step.finish(verdict, summary, md, data)


if __name__ == "__main__":
    sys.exit(main())
