"""The verdict matrix: the loops of tests/python/verdict_scenarios.py run as
real child processes with headroom.stage(), judged after every frame, under
each Python and allocator setting given; and the cost of one stage() call,
this engine beside another tree's, alternating in one run.

    python3 bench/verdicts.py --out bench/results/verdicts.md \
        --config "torch 2.13=build/venv/bin/python" \
        --config "torch 2.13, fixed mmap=build/venv/bin/python:fixed" \
        --config "torch 1.13=/usr/bin/python3" [--baseline-tree DIR]

A frame's verdict is false when it names a part that does not keep the
memory, names one alone where RSS cannot tell several apart, or claims a leak
in a loop that keeps nothing. Growth notes (RSS rising while the live C heap
does not) claim no leak and are counted apart. VmRSS is the child's own
/proc/self/status at its 3rd and last frame.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCEN = os.path.join(REPO, "tests", "python", "verdict_scenarios.py")
sys.path[:0] = [os.path.dirname(SCEN), os.path.join(REPO, "python")]
import verdict_scenarios  # noqa: E402

MIB = 1 << 20


def run(python, name, malloc, lib):
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO, "python"), HEADROOM_LIB=lib)
    cmd = [python, SCEN, name] + (["--malloc", malloc] if malloc else [])
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise RuntimeError("%s %s: %s" % (python, name, r.stderr[-2000:]))
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    return lines[:-1], lines[-1]["report"]


def judge(frames, truth):
    """(first verdict frame or None, false-verdict frames, growth-note frames)."""
    first, false, growth = None, 0, 0
    for f in frames:
        leaks = [u for u in f["unattributed"] if u["kind"] == "leak"]
        growth += any(u["kind"] == "growth" for u in f["unattributed"])
        if truth is None:
            bad = bool(f["named"] or leaks)
        elif isinstance(truth, str):
            bad = any(n != truth for n in f["named"]) or any(
                u["candidates"] != [truth] for u in leaks)
            if truth in f["named"] and first is None:
                first = f["frame"]
        else:
            bad = bool(f["named"]) or any(not set(truth) <= set(u["candidates"]) for u in leaks)
            if leaks and not bad and first is None:
                first = f["frame"]
        false += bad
    return first, false, growth


def truth_text(truth):
    if truth is None:
        return "nothing kept"
    if isinstance(truth, str):
        return truth
    return "one of " + ", ".join(truth)


def matrix(configs, lib):
    out = []
    for label, python, malloc in configs:
        out.append("### %s\n" % label)
        out.append("| loop | frames | keeps | verdict | first at call | false verdicts | "
                   "growth notes | VmRSS 3rd → last frame |")
        out.append("| --- | ---: | --- | --- | ---: | ---: | ---: | --- |")
        for name in verdict_scenarios.SCENARIOS:
            truth = verdict_scenarios.SCENARIOS[name][2]
            frames, report = run(python, name, malloc, lib)
            first, false, growth = judge(frames, truth)
            verdict = _verdict(frames[-1], truth)
            rss = "%.1f → %.1f MiB" % (frames[2]["vmrss"] / MIB, frames[-1]["vmrss"] / MIB)
            out.append("| %s | %d | %s | %s | %s | %d | %d | %s |" % (
                name, len(frames), truth_text(truth), verdict, first or "-", false, growth,
                rss))
            print("  %s / %s: first %s, false %d" % (label, name, first, false), file=sys.stderr)
        out.append("")
    return out


def _verdict(last, truth):
    if last["named"]:
        return "names " + ", ".join(last["named"])
    leaks = [u for u in last["unattributed"] if u["kind"] == "leak"]
    if leaks:
        return "leak, no one part: " + ", ".join(leaks[0]["candidates"])
    if any(u["kind"] == "growth" for u in last["unattributed"]):
        return "growth note"
    return "none"


COST = r"""
import sys, time, statistics
sys.path.insert(0, sys.argv[1])
import headroom
from headroom import stages
def one():
    with headroom.stage("bench"):
        pass
for _ in range(2000):
    one()
samples = []
for _ in range(20):
    t = time.perf_counter()
    for _ in range(500):
        one()
    samples.append((time.perf_counter() - t) / 500)
print(statistics.median(samples))
"""


def cost(trees, lib, rounds=5):
    """Median seconds per `with stage(name): pass` for each tree's package,
    the trees' processes alternating, `rounds` each."""
    got = {t: [] for t in trees}
    for _ in range(rounds):
        for label, path in trees:
            r = subprocess.run([sys.executable, "-c", COST, path], capture_output=True, text=True,
                               env=dict(os.environ, HEADROOM_LIB=lib), timeout=600)
            if r.returncode != 0:
                raise RuntimeError(r.stderr[-2000:])
            got[(label, path)].append(float(r.stdout))
    return [(label, statistics.median(got[(label, path)])) for label, path in trees]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--config", action="append", default=[],
                    help="LABEL=PYTHON[:fixed] (fixed: glibc's mmap threshold fixed at 1 MiB)")
    ap.add_argument("--lib", default=os.path.join(REPO, "build", "release", "libheadroom.so"))
    ap.add_argument("--baseline-tree", help="a python/ folder of another tree to time beside")
    a = ap.parse_args()
    configs = []
    for c in a.config:
        label, _, spec = c.partition("=")
        python, _, malloc = spec.partition(":")
        configs.append((label, python, malloc or None))
    t0 = time.monotonic()
    lines = ["# Verdicts on real processes", "",
             "Written by `bench/verdicts.sh` (bench/verdicts.py). Each loop of",
             "`tests/python/verdict_scenarios.py` runs as a child process with",
             "`headroom.stage()` around its stages and asks for the verdicts after every frame",
             "(the engine's defaults: 1 MiB per call, 20 calls counted after 2 of warm-up,",
             "over the last 30). A false verdict is a frame whose report names a part that",
             "does not keep the memory, names one part where RSS cannot tell several apart,",
             "or claims a leak in a loop that keeps nothing; growth notes (RSS rising while",
             "the live C heap does not) claim no leak. VmRSS is the child's own",
             "/proc/self/status. Calls are counted, never timed: a loaded machine changes",
             "nothing here but the wall time. %s, %d CPUs." % (os.uname().machine,
                                                               os.cpu_count()), ""]
    lines += matrix(configs, a.lib)
    if a.baseline_tree:
        trees = [("this tree", os.path.join(REPO, "python")), ("main (the summed net changes)", a.baseline_tree)]
        res = cost(trees, a.lib)
        lines += ["## The cost of a stage call", "",
                  "`with headroom.stage(name): pass` (an RSS reading, the C heap's live bytes",
                  "where glibc gives them, and the books), medians of 5 processes each,",
                  "alternating, 20 × 500 calls per process, /usr/bin/python3 without torch.", "",
                  "| package | median per call |", "| --- | ---: |"]
        lines += ["| %s | %.1f µs |" % (label, s * 1e6) for label, s in res]
        lines.append("")
    lines.append("Run took %.0f s." % (time.monotonic() - t0))
    with open(a.out, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
