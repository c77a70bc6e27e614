#!/bin/sh
# Fragmentation benchmark: imports every PyTorch snapshot in ../shared/traces,
# replays each on the sim backend with headroom's default configuration, the
# PyTorch-like one and the model of PyTorch's expandable segments, side by
# side in one run (at PyTorch's own recorded peak reserved as capacity), and
# writes bench/results/fragmentation.md: per trace and device, peak reserved /
# peak live and device calls of each beside PyTorch's recorded numbers, the
# ratios of device calls and their medians, the time per pool call, whether
# the PyTorch-like replay lands within 3% of PyTorch's recorded peak
# reserved, and the replay speed on the largest trace (median of 5 runs);
# and draws bench/results/fragmentation.svg.
#
# Usage: bench/fragmentation.sh   (from the repository root, after a Release
# build; HEADROOM_CLI and TRACES override the binary and the trace folder)
set -eu
cd "$(dirname "$0")/.."
CLI=${HEADROOM_CLI:-build/release/headroom}
TRACES=${TRACES:-../shared/traces}
OUT=bench/results/fragmentation.md
PY=${PYTHON:-python3}

if [ ! -d "$TRACES" ] || ! ls "$TRACES"/*.pickle >/dev/null 2>&1; then
  echo "fragmentation: skipped: no traces in $TRACES"
  exit 0
fi
if [ ! -x "$CLI" ]; then
  echo "fragmentation: $CLI not found; build first (make build)" >&2
  exit 1
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT INT TERM
for p in "$TRACES"/*.pickle; do
  name=$(basename "$p" .pickle)
  PYTHONPATH=python "$PY" -m headroom.trace import "$p" -o "$WORK/$name.hrt" -q
done
mkdir -p bench/results
HEADROOM_NO_PROGRESS=1 "$CLI" --log-level error replay "$WORK"/*.hrt --conf default \
  --conf pytorch --conf pytorch-expandable --json --svg bench/results/fragmentation.svg \
  > "$WORK/replay.jsonl"
# Speed: the largest trace (most events over all its devices), default
# configuration, 5 runs.
largest="$WORK/$("$PY" -c '
import json, sys
ev = {}
for l in open(sys.argv[1]):
    r = json.loads(l)
    if r["config"] == "default":
        ev[r["trace"]] = ev.get(r["trace"], 0) + r["events"]
print(max(ev, key=ev.get))' "$WORK/replay.jsonl")"
for i in 1 2 3 4 5; do
  HEADROOM_NO_PROGRESS=1 "$CLI" --log-level error replay "$largest" --conf default --json \
    >> "$WORK/speed.jsonl"
done
mkdir -p bench/results
"$PY" - "$WORK/replay.jsonl" "$WORK/speed.jsonl" "$OUT" "$(uname -m) $(nproc) cores" <<'PYEOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
speed = [json.loads(l) for l in open(sys.argv[2])]
out, machine = sys.argv[3], sys.argv[4]
G = 2**30
by = {}
for r in rows:
    by.setdefault((r["trace"], r["device"]), {})[r["config"]] = r
lines = []
w = lines.append
w("# Fragmentation and device calls on real PyTorch traces")
w("")
w("Written by `bench/fragmentation.sh` (`make bench`). Each trace in `../shared/traces` is imported")
w("(`python3 -m headroom.trace import`) and replayed on the `sim` backend with capacity = PyTorch's")
w("own recorded peak reserved for that device, under three configurations in one run. Ratio = peak")
w("reserved / peak live (live = requested bytes of live blocks, as PyTorch's snapshot counts them).")
w("*pytorch* is headroom's PyTorch-like configuration with the trace's recorded")
w("`PYTORCH_CUDA_ALLOC_CONF`; *expandable* (`--conf pytorch-expandable`) is the same with")
w("`expandable_segments:True`, PyTorch's expandable segments (2 MiB pages in the small pool, 20 MiB")
w("in the large one, one driver map per page, unmapped only when the cache is released); *default*")
w("is headroom's own. A device call is one map (cuMemCreate + cuMemMap + cuMemSetAccess of one")
w("extent, or one cudaMalloc) or one unmap (cuMemUnmap + cuMemRelease, or one cudaFree).")
w("")
w("## Reserved memory")
w("")
w("| trace | dev | events | peak live GiB | PyTorch reserved GiB | PyTorch ratio | PyTorch OOMs "
  "| pytorch reserved GiB | vs PyTorch | within 3% | expandable ratio | default reserved GiB "
  "| default ratio | default ≤ PyTorch | default < expandable | default OOMs |")
w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | :---: | ---: | ---: | ---: | :---: | :---: | ---: |")
pt_ratios, def_ratios, pc_ratios, ex_ratios = [], [], [], []
misses, worse, oom_bad, not_below = [], [], [], []
calls = []
for (trace, dev), c in sorted(by.items()):
    d, p, e = c.get("default"), c.get("pytorch"), c.get("pytorch-expandable")
    if not d or not p or not e:
        continue
    name = trace[:-4] if trace.endswith(".hrt") else trace
    rec = d["pytorch_peak_reserved_bytes"]
    diff = (p["peak_reserved_bytes"] - rec) / rec * 100 if rec else float("nan")
    within = abs(diff) <= 3
    if not within:
        misses.append("%s dev %d (%+.1f%%)" % (name, dev, diff))
    better = d["ratio"] <= d["pytorch_ratio"] + 1e-9
    if not better:
        worse.append("%s dev %d (%.4f vs %.4f)" % (name, dev, d["ratio"], d["pytorch_ratio"]))
    below = d["peak_reserved_bytes"] < e["peak_reserved_bytes"]
    if not below:
        not_below.append("%s dev %d" % (name, dev))
    if d["ooms"]:
        oom_bad.append("%s dev %d (%d)" % (name, dev, d["ooms"]))
    pt_ratios.append(d["pytorch_ratio"]); def_ratios.append(d["ratio"]); pc_ratios.append(p["ratio"])
    ex_ratios.append(e["ratio"])
    calls.append((name, dev, p, e, d))
    w("| %s | %d | %d | %.2f | %.2f | %.4f | %d | %.2f | %+.1f%% | %s | %.4f | %.2f | %.4f | %s | %s | %d |" % (
        name, dev, d["events"], d["peak_live_bytes"] / G, rec / G, d["pytorch_ratio"],
        d["pytorch_ooms"], p["peak_reserved_bytes"] / G, diff, "yes" if within else "**no**",
        e["ratio"], d["peak_reserved_bytes"] / G, d["ratio"], "yes" if better else "**no**",
        "yes" if below else "**no**", d["ooms"]))
if def_ratios:
    w("| **mean** | | | | | %.4f | | | | | %.4f | | %.4f | | | |" % (
        statistics.mean(pt_ratios), statistics.mean(ex_ratios), statistics.mean(def_ratios)))
    w("")
    w("Mean ratio: PyTorch (recorded) %.4f, headroom pytorch %.4f, expandable %.4f, default %.4f "
      "(target ≤ 1.02)." % (statistics.mean(pt_ratios), statistics.mean(pc_ratios),
                             statistics.mean(ex_ratios), statistics.mean(def_ratios)))
w("")
w("## Device calls and time per pool call")
w("")
w("ns/op is measured around each hr_pool_alloc / hr_pool_free with CLOCK_MONOTONIC (so it includes a "
  "clock read), p50 / p99 over every call of the replay.")
w("")
w("| trace | dev | pytorch calls | expandable calls | default calls | default / pytorch "
  "| default / expandable | ns/op p50 / p99: pytorch | expandable | default |")
w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
r_pt, r_ex, p99_pt, p99_def = [], [], [], []
for name, dev, p, e, d in calls:
    a, b = d["device_calls"] / max(p["device_calls"], 1), d["device_calls"] / max(e["device_calls"], 1)
    r_pt.append(a); r_ex.append(b)
    p99_pt.append(p["ns_per_op_p99"]); p99_def.append(d["ns_per_op_p99"])
    w("| %s | %d | %d | %d | %d | %.2fx | %.2fx | %.0f / %.0f | %.0f / %.0f | %.0f / %.0f |" % (
        name, dev, p["device_calls"], e["device_calls"], d["device_calls"], a, b,
        p["ns_per_op_median"], p["ns_per_op_p99"], e["ns_per_op_median"], e["ns_per_op_p99"],
        d["ns_per_op_median"], d["ns_per_op_p99"]))
if calls:
    w("")
    w("Device calls, default / pytorch: median %.2fx, range %.2fx to %.2fx (target: median ≤ 2x). "
      "Default / expandable: median %.2fx, range %.2fx to %.2fx; fewer calls than the expandable "
      "model on %d of %d." % (statistics.median(r_pt), min(r_pt), max(r_pt), statistics.median(r_ex),
                             min(r_ex), max(r_ex), sum(1 for x in r_ex if x < 1), len(r_ex)))
    w("p99 per call, default / pytorch: median %.2fx." % statistics.median(
        [x / y for x, y in zip(p99_def, p99_pt) if y]))
w("")
w("Live and reserved memory over each trace, ours beside PyTorch's: "
  "[fragmentation.svg](fragmentation.svg).")
w("")
w("## Validation of the replay")
w("")
if misses:
    w("The PyTorch-like configuration is **not** within 3%% of PyTorch's recorded peak reserved on: %s."
      % ", ".join(misses))
else:
    w("The PyTorch-like configuration lands within 3% of PyTorch's recorded peak reserved on every trace.")
w("")
oom_notes = []
for (trace, dev), c in sorted(by.items()):
    for conf in ("default", "pytorch", "pytorch-expandable"):
        r = c.get(conf)
        if r and r["ooms"]:
            oom_notes.append(
                "- %s device %d, %s configuration: %d allocation(s) that PyTorch satisfied failed at "
                "the capacity (PyTorch's own %d OOM(s) are requests the trace never allocates, so "
                "they are not replayed); peak live is therefore %.2f GiB instead of PyTorch's %.2f "
                "GiB." % (trace[:-4] if trace.endswith(".hrt") else trace, dev, conf, r["ooms"],
                          r["pytorch_ooms"] or 0, r["peak_live_bytes"] / G,
                          (r.get("pytorch_peak_live_bytes") or 0) / G))
if oom_notes:
    w("")
    w("Out-of-memory failures in the replay:")
    w("")
    lines.extend(oom_notes)
w("")
w("## Default configuration against the targets")
w("")
w("- ratio ≤ PyTorch's on every trace: %s" % ("yes" if not worse else "no: " + ", ".join(worse)))
w("- mean ratio ≤ 1.02: %s" % ("yes" if def_ratios and statistics.mean(def_ratios) <= 1.02 else "no"))
w("- zero OOMs (every allocation the trace makes succeeds): %s" % (
    "yes" if not oom_bad else "no: " + ", ".join(oom_bad)))
w("- device calls ≤ 2x the PyTorch-like policy's (median): %s" % (
    "yes" if calls and statistics.median(r_pt) <= 2 else "no"))
w("- fewer bytes reserved than the expandable model on every trace: %s" % (
    "yes" if not not_below else "no: " + ", ".join(not_below)))
w("")
w("## Replay speed")
w("")
ev = sum(r["events"] for r in speed) / 5
rates = []
for i in range(5):
    runs = speed[i * len(speed) // 5:(i + 1) * len(speed) // 5]
    rates.append(sum(r["events"] for r in runs) / sum(r["seconds"] for r in runs))
w("Largest trace (most events): %s, %d events (allocations, frees and pre-window blocks), default configuration, "
  "`sim`, %s; 5 runs, each reading the trace file and timing every pool call." % (
      speed[0]["trace"], ev, machine))
w("")
w("| median events/s | min | max | target |")
w("| ---: | ---: | ---: | ---: |")
w("| %.2f M | %.2f M | %.2f M | ≥ 5 M |" % (statistics.median(rates) / 1e6, min(rates) / 1e6,
                                         max(rates) / 1e6))
w("")
w("Events/s is events over the wall time of the whole replay (opening the file, parsing every line, "
  "the pool calls and the timing of each). ns/op p50 / p99 in the table above is measured around each "
  "hr_pool_alloc / hr_pool_free with CLOCK_MONOTONIC, so it includes a clock read. The machine may be "
  "shared with other work: min and max show the spread.")
open(out, "w").write("\n".join(lines) + "\n")
print("fragmentation: wrote %s" % out)
PYEOF
