#!/usr/bin/env bash
# Step 2 of the GPU validation: the pool's unit and stress tests on the real
# device through the cuda backend, plain and under compute-sanitizer's
# memcheck, for each configuration (PyTorch-like, with expandable segments,
# headroom's default, default without compact mapping, PyTorch-like with the
# GC, a split limit and a memory fraction).
#
# Usage: bench/gpu/cuda.sh --out DIR [--quick]
# Env: HR_BUILD (build dir, default build/release); HR_STEP_BUDGET (seconds
# this step may take, default 560); HR_CUDA_OPS and
# HR_CUDA_SAN_OPS override the operations per configuration, plain and
# under memcheck. The plain run prefers a
# Debug build (hr_pool_check after every operation): HR_BUILD when it is
# one, else build/gpu-debug, built here with cmake when missing (HR_GPU_BUILD=0
# forbids building). Writes DIR/cuda.md and DIR/cuda.json; prints progress to
# stderr and, last on stdout, "RESULT cuda PASS|FAIL|SKIP <summary>".
# Exit 0 pass, 1 fail, 77 skip (no driver or device, or no compute-sanitizer;
# what ran plain is still reported).
# The logic is the Python below (python3 exists on every machine this runs on).
exec python3 - "$0" "$@" <<'PY'
import json, os, re, shutil, subprocess, sys, time

# The whole step, build included; bench/gpu/run gives its own budget.
TIME_LIMIT_S = min(560, float(os.environ.get("HR_STEP_BUDGET") or 560))
CHILD_LIMIT_S = 240           # one test program
PLAIN_OPS, PLAIN_OPS_QUICK = 60000, 3000        # per configuration, plain
SAN_OPS, SAN_OPS_QUICK = 20000, 1000            # per configuration, under memcheck
STRESS_OPS, STRESS_OPS_QUICK = 200000, 20000    # test_pool_stress (sim and host)
CONFS = ["pytorch", "pytorch,expandable_segments:True", "default",
         "default,compact_mapping:False",
         # The GC frees cached segments whose last kernels may still run.
         "pytorch,max_split_size_mb:32,garbage_collection_threshold:0.7,memory_fraction:0.9"]

script = os.path.abspath(sys.argv[1])
args = sys.argv[2:]
root = os.path.dirname(os.path.dirname(os.path.dirname(script)))
quick = "--quick" in args
if "--out" not in args or args.index("--out") + 1 >= len(args):
    print("usage: bench/gpu/cuda.sh --out DIR [--quick]", file=sys.stderr)
    sys.exit(2)
out = os.path.abspath(args[args.index("--out") + 1])
os.makedirs(out, exist_ok=True)
t_start = time.monotonic()


def log(*a):
    print("cuda:", *a, file=sys.stderr, flush=True)


def left():
    return TIME_LIMIT_S - (time.monotonic() - t_start)


def absdir(d):
    return d if os.path.isabs(d) else os.path.join(root, d)


def is_debug(d):
    try:
        return "CMAKE_BUILD_TYPE:STRING=Debug" in open(os.path.join(d, "CMakeCache.txt")).read()
    except OSError:
        return False


def has_tests(d):
    return all(os.access(os.path.join(d, t), os.X_OK)
               for t in ("test_pool_cuda", "test_pool", "test_pool_stress"))


build = absdir(os.environ.get("HR_BUILD") or "build/release")
plain_dir, notes = None, []
if is_debug(build) and has_tests(build):
    plain_dir = build
elif has_tests(absdir("build/gpu-debug")):
    plain_dir = absdir("build/gpu-debug")
elif os.environ.get("HR_GPU_BUILD", "1") != "0" and shutil.which("cmake"):
    gd = absdir("build/gpu-debug")
    log("building a Debug build in", gd)
    try:
        subprocess.run(["cmake", "-S", root, "-B", gd, "-DCMAKE_BUILD_TYPE=Debug"], check=True,
                       stdout=sys.stderr, timeout=max(30, left() / 3))
        subprocess.run(["cmake", "--build", gd, "-j", str(os.cpu_count() or 2), "--target",
                        "test_pool_cuda", "test_pool", "test_pool_stress", "test_backend_cuda"],
                       check=True, stdout=sys.stderr, timeout=max(30, left() / 2))
        plain_dir = gd
    except (subprocess.SubprocessError, OSError) as e:
        notes.append(f"Debug build failed ({e}); plain run on {build}")
if not plain_dir:
    plain_dir = build
    notes.append("no Debug build: the plain run checks the pool only at the end of each walk")
san_dir = build if has_tests(build) else plain_dir
if not has_tests(plain_dir):
    print(f"cuda: no test programs in {plain_dir} (build first)", file=sys.stderr)
    print(f"RESULT cuda FAIL no test programs in {plain_dir}")
    sys.exit(1)

rows, failures = [], []
# Another driver library (the tests' fake one): say so wherever results show.
driver = os.environ.get("HEADROOM_LIBCUDA") or ""


def lab(run_kind):
    return run_kind + " (fake driver)" if driver else run_kind


if driver:
    notes.append(f"driver library {driver} (HEADROOM_LIBCUDA), not libcuda.so.1: "
                 "no result here is from a device")
WALK = re.compile(r"^cuda-walk (.*)$", re.M)
SUMMARY = re.compile(r"ERROR SUMMARY: (\d+) error")
APIHIT = re.compile(r"Program hit (\w+)")


def run(exe_dir, exe, env, label, sanitizer=None):
    """Runs one test program; returns (exit status, output)."""
    cmd = [os.path.join(exe_dir, exe)]
    if sanitizer:
        cmd = sanitizer + cmd
    full_env = dict(os.environ, HR_BINARY_DIR=exe_dir, HR_SOURCE_DIR=root, **env)
    limit = min(CHILD_LIMIT_S, max(5, left() - 10))
    log(label, " ".join(f"{k}={v}" for k, v in env.items()), " ".join(cmd))
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           stdin=subprocess.DEVNULL, timeout=limit, text=True, errors="replace")
        rc, text = p.returncode, p.stdout
    except subprocess.TimeoutExpired as e:
        rc, text = 124, (e.stdout or b"").decode(errors="replace") if isinstance(
            e.stdout, bytes) else (e.stdout or "")
        text += f"\n(timed out after {limit:.0f} s)"
    wall = time.monotonic() - t0
    with open(os.path.join(out, "cuda.log"), "a") as f:
        f.write(f"==== {label}: {' '.join(cmd)} (exit {rc}, {wall:.1f} s)\n{text}\n")
    return rc, text, wall


def walk_rows(run_kind, text, san_errors):
    got = []
    for m in WALK.finditer(text):
        kv = dict(x.split("=", 1) for x in m.group(1).split(" ") if "=" in x)
        got.append({"run": run_kind, "conf": kv.get("conf", "?"), "phase": kv.get("phase", "?"),
                    "ops": int(kv.get("ops", 0)), "blocks_verified": int(kv.get("verified", 0)),
                    "ooms": int(kv.get("ooms", 0)), "sanitizer_errors": san_errors,
                    "free_delta_mib": float(kv.get("free_delta_mib", 0)),
                    "wall_s": float(kv.get("wall_s", 0))})
    return got


def skip_reason(text):
    m = re.search(r"SKIP: (.*)", text)
    return m.group(1).strip() if m else "skipped"


ops = int(os.environ.get("HR_CUDA_OPS") or (PLAIN_OPS_QUICK if quick else PLAIN_OPS))
sops = int(os.environ.get("HR_CUDA_SAN_OPS") or (SAN_OPS_QUICK if quick else SAN_OPS))
SAN_MAX = sops
stress_ops = STRESS_OPS_QUICK if quick else STRESS_OPS

# 1. Plain: the host-side pool tests, then the device walks per configuration.
host_runs = []
for exe, env in (("test_pool", {}), ("test_pool_stress", {"HR_STRESS_OPS": str(stress_ops)}),
                 ("test_backend_cuda", {})):
    rc, text, wall = run(plain_dir, exe, env, "plain")
    host_runs.append({"run": lab("plain"), "test": exe, "exit": rc, "wall_s": round(wall, 2)})
    if rc not in (0, 77):
        failures.append(f"{exe} exited {rc}")

no_device = None
for conf in CONFS:
    if left() < 30:
        failures.append("out of time before the plain walks ended")
        break
    rc, text, wall = run(plain_dir, "test_pool_cuda", {"HR_CUDA_CONF": conf,
                                                       "HR_CUDA_OPS": str(ops)}, "plain")
    # The device-OOM phase ran for this configuration too: its row is in.
    if rc == 77:
        no_device = skip_reason(text)
        break
    rows += walk_rows(lab("plain"), text, None)
    if rc != 0:
        failures.append(f"plain '{conf}': test_pool_cuda exited {rc}")

# 2. Under memcheck: each configuration's walks (no device-OOM phase: its
# intended CUDA_ERROR_OUT_OF_MEMORY counts as an API error), then that phase
# alone with API errors unreported, then the host-side tests.
sanitizer = shutil.which("compute-sanitizer") or (
    "/usr/local/cuda/bin/compute-sanitizer"
    if os.access("/usr/local/cuda/bin/compute-sanitizer", os.X_OK) else None)
san_runs, api_hits = [], {}
memcheck = [sanitizer, "--tool", "memcheck", "--leak-check", "full", "--error-exitcode", "1",
            "--print-limit", "50"] if sanitizer else None


def sanitized(exe, env, label, conf, extra=(), uses_cuda=True):
    rc, text, wall = run(san_dir, exe, env, label, memcheck[:3] + list(extra) + memcheck[3:])
    m = SUMMARY.findall(text)
    errors = int(m[-1]) if m else None
    for h in APIHIT.findall(text):
        api_hits[h] = api_hits.get(h, 0) + 1
    san_runs.append({"run": lab(label), "test": exe, "conf": conf, "exit": rc, "errors": errors,
                     "wall_s": round(wall, 2)})
    # A program that never touches CUDA may end without a summary; one that
    # does must print one.
    if rc != 0 or (errors or 0) != 0 or (errors is None and uses_cuda):
        failures.append(f"{label} {exe} '{conf}': exit {rc}, "
                        f"{'no ERROR SUMMARY' if errors is None else f'{errors} errors'}")
    return text, errors, wall


# Kernels slow down most under memcheck and by how much is not known in
# advance: the first configuration runs a quarter of SAN_OPS, and after
# each the operations of the next are scaled so the rest fits the time left
# (never above SAN_OPS); the table shows the operations each walk really ran.
SAN_RESERVE_S = 120  # kept for the device-OOM phase and the host-side tests
if not no_device and sanitizer:
    sops = max(min(200, SAN_MAX), SAN_MAX // 4)  # the first run measures the pace
    for i, conf in enumerate(CONFS):
        budget = (left() - SAN_RESERVE_S) / (len(CONFS) - i)
        if budget < 20:
            failures.append("out of time before the memcheck runs ended")
            break
        text, errors, wall = sanitized("test_pool_cuda", {
            "HR_CUDA_CONF": conf, "HR_CUDA_OPS": str(sops), "HR_CUDA_DEVICE_OOM": "0",
            "HR_CUDA_FREE_SLACK_MB": "256"}, "memcheck", conf)
        rows += walk_rows(lab("memcheck"), text, errors)
        if wall > 0 and i + 1 < len(CONFS):
            nxt = (left() - SAN_RESERVE_S) / (len(CONFS) - i - 1)
            sops = max(min(200, SAN_MAX), min(SAN_MAX, int(sops * 0.8 * nxt / wall)))
    if left() > 40:
        text, errors, _ = sanitized("test_pool_cuda", {"HR_CUDA_WALKS": "0",
                                                       "HR_CUDA_CONF": ";".join(CONFS),
                                                       "HR_CUDA_FREE_SLACK_MB": "256"},
                                    "memcheck, API errors off", "each",
                                    ["--report-api-errors", "no"])
        rows += walk_rows(lab("memcheck, API errors off"), text, errors)
    else:
        failures.append("out of time before the device-OOM phase under memcheck")
    for exe, env in (("test_pool", {}), ("test_pool_stress", {"HR_STRESS_OPS": str(sops)})):
        if left() > 30:
            sanitized(exe, env, "memcheck", "-", uses_cuda=False)

# 3. Report.
if no_device:
    verdict, code = "SKIP", 77
    why = f"no CUDA device: {no_device}"
elif not sanitizer:
    verdict, code = ("FAIL", 1) if failures else ("SKIP", 77)
    why = "compute-sanitizer not found (plain run reported)"
else:
    verdict, code = ("FAIL", 1) if failures else ("PASS", 0)
    why = "; ".join(failures) if failures else "clean"
if driver:
    why += " (fake driver: not a device result)"

total_verified = sum(r["blocks_verified"] for r in rows)
total_ooms = sum(r["ooms"] for r in rows)
md = ["## 2. cuda backend: the pool on the device, plain and under memcheck", "",
      "Method: tests/unit/test_pool_cuda.c drives the pool through the cuda backend on device 0 "
      "with random walks on two non-blocking streams and the null stream (cross-stream use "
      "ordered by events, record_stream, frees from other streams, release_cached), a walk "
      "under a 192 MiB capacity that runs out of memory often, and a request above the "
      "device's free memory; every block is filled and verified over its whole size by "
      "kernels (tests/gpu/pattern.cu), live blocks never overlap, and after each walk the "
      "pool's statistics are zero and cuMemGetInfo's free memory is back. Plain runs use "
      f"{os.path.relpath(plain_dir, root)} ({'Debug: hr_pool_check after every operation' if is_debug(plain_dir) else 'not Debug'}); "
      f"memcheck runs use {os.path.relpath(san_dir, root)} with `--leak-check full`"
      f"{' (quick run)' if quick else ''}.", ""]
if no_device:
    md += [f"**SKIP**: {why}. Nothing ran on a device.", ""]
md += ["| run | conf | phase | ops | blocks verified | OOMs hit | sanitizer errors | "
       "free delta MiB | wall s |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
for r in rows:
    se = "-" if r["sanitizer_errors"] is None else str(r["sanitizer_errors"])
    md.append(f"| {r['run']} | `{r['conf']}` | {r['phase']} | {r['ops']} | "
              f"{r['blocks_verified']} | {r['ooms']} | {se} | {r['free_delta_mib']:.1f} | "
              f"{r['wall_s']:.2f} |")
if not rows:
    md.append("| - | - | - | - | - | - | - | - | - |")
md += ["", "| run | test | conf | exit | sanitizer errors | wall s |", "|---|---|---|---:|---:|---:|"]
for r in host_runs:
    md.append(f"| {r['run']} | {r['test']} | - | {r['exit']} | - | {r['wall_s']:.2f} |")
for r in san_runs:
    e = "none reported" if r["errors"] is None else str(r["errors"])
    md.append(f"| {r['run']} | {r['test']} | `{r['conf']}` | {r['exit']} | {e} | "
              f"{r['wall_s']:.2f} |")
md.append("")
if api_hits:
    md.append("CUDA API errors memcheck reported: " +
              ", ".join(f"{k} x{v}" for k, v in sorted(api_hits.items())) + ".")
    md.append("")
md += notes and [f"Note: {n}." for n in notes] + [""] or []
target = ("Target (issue 8, step 2): every walk passes plain and under memcheck with 0 errors. "
          f"Result: **{verdict}** ({why}).")
md += [target, ""]
open(os.path.join(out, "cuda.md"), "w").write("\n".join(md))
json.dump({"step": "cuda", "verdict": verdict, "reason": why, "quick": quick,
           "plain_build": plain_dir, "sanitizer_build": san_dir, "sanitizer": sanitizer,
           "walks": rows, "tests": host_runs + san_runs, "api_errors": api_hits,
           "failures": failures, "wall_s": round(time.monotonic() - t_start, 1)},
          open(os.path.join(out, "cuda.json"), "w"), indent=2)
summary = (f"{why}" if verdict != "PASS" else
           f"{len(rows)} walks, {total_verified} blocks verified, {total_ooms} OOMs, "
           f"0 sanitizer errors{' (fake driver: not a device result)' if driver else ''}")
print(f"RESULT cuda {verdict} {summary}")
sys.exit(code)
PY
