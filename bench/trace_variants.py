#!/usr/bin/env python3
"""Variants of the real traces, to judge a pool policy beyond the traces it
was tuned on: each device of each imported trace with its allocation sizes
of 1 MiB and more scaled by 0.8, 0.9, 1.1 and 1.25 (the same model at
another batch size; smaller blocks are kept). A variant's capacity is the
least (recorded peak reserved x f, raised 3% at a time) at which the
PyTorch-like replay has no out-of-memory failure, and that replay is the
reference: its ratio (peak reserved / peak live) and its device calls.

Usage: bench/trace_variants.py [--cli build/release/headroom]
                               [--traces DIR_OF_HRT] [--conf CONF]...
Prints, per configuration, the median and largest device-call ratio to the
PyTorch-like replay, the mean ratio, the variants where the ratio is above
the reference's or an allocation failed, and the smallest margin
(reference ratio - ratio). The traces are the .hrt files that
bench/fragmentation.sh imports (python3 -m headroom.trace import)."""
import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile

FACTORS = (0.8, 0.9, 1.1, 1.25)
MIB = 1 << 20


def sections(path):
    head, secs = [], []
    for line in open(path):
        if line.startswith("device "):
            secs.append([line])
        elif line.strip() == "end":
            continue
        elif secs:
            secs[-1].append(line)
        else:
            head.append(line)
    return head, secs


def key(line, name):
    for kv in line.split():
        if kv.startswith(name + "="):
            return int(kv.split("=", 1)[1])
    return None


def set_key(line, name, value):
    return " ".join("%s=%d" % (name, value) if kv.split("=", 1)[0] == name else kv
                    for kv in line.split()) + "\n"


def replay(cli, path, confs):
    env = dict(os.environ, HEADROOM_NO_PROGRESS="1")
    args = [cli, "--log-level", "error", "replay", path, "--json"]
    for c in confs:
        args += ["--conf", c]
    r = subprocess.run(args, capture_output=True, text=True, env=env, check=True)
    return [json.loads(line) for line in r.stdout.splitlines()]


def write_variant(path, head, sec, f, cap):
    body = []
    for line in sec[1:]:
        p = line.split(" ")
        if p[0] in ("L", "A") and int(p[2]) >= MIB:
            p[2] = str(int(int(p[2]) * f))
            line = " ".join(p)
        elif p[0] in ("R", "O"):  # PyTorch's own timeline no longer applies
            continue
        body.append(line)
    dev = set_key(set_key(sec[0], "pytorch_peak_reserved", cap), "pytorch_ooms", 0)
    with open(path, "w") as out:
        out.write("".join(head) + dev + "".join(body) + "end\n")


def make_variants(cli, traces, work):
    out = []
    for path in sorted(glob.glob(os.path.join(traces, "*.hrt"))):
        head, secs = sections(path)
        name = os.path.basename(path)[:-4]
        for sec in secs:
            for f in FACTORS:
                dev = sec[0].split()[1]
                vpath = os.path.join(work, "%s-d%s-x%s.hrt" % (name, dev, f))
                cap = int(key(sec[0], "pytorch_peak_reserved") * f)
                for _ in range(12):
                    write_variant(vpath, head, sec, f, cap)
                    if replay(cli, vpath, ["pytorch"])[0]["ooms"] == 0:
                        break
                    cap = int(cap * 1.03)
                out.append(vpath)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cli", default="build/release/headroom")
    ap.add_argument("--traces", required=True, help="folder of imported .hrt traces")
    ap.add_argument("--conf", action="append", default=None)
    a = ap.parse_args()
    confs = a.conf or ["default"]
    with tempfile.TemporaryDirectory() as work:
        paths = make_variants(a.cli, a.traces, work)
        rows = [r for p in paths for r in replay(a.cli, p, ["pytorch"] + confs)]
    by = {}
    for r in rows:
        by.setdefault(r["trace"], {})[r["config"]] = r
    for conf in confs:
        calls, ratios, margins, bad = [], [], [], []
        for trace, c in sorted(by.items()):
            p, d = c["pytorch"], c[conf]
            calls.append(d["device_calls"] / max(1, p["device_calls"]))
            ratios.append(d["ratio"])
            margins.append(p["ratio"] - d["ratio"])
            if d["ooms"] or d["ratio"] > p["ratio"] + 1e-9:
                bad.append("%s (%.4f vs %.4f, %d OOMs)" % (trace, d["ratio"], p["ratio"], d["ooms"]))
        print("%s: %d variants, device calls / PyTorch-like median %.2fx, max %.2fx; mean ratio "
              "%.4f; smallest margin %.4f; above the reference or failing: %s" % (
                  conf, len(calls), statistics.median(calls), max(calls), statistics.mean(ratios),
                  min(margins), ", ".join(bad) if bad else "none"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
