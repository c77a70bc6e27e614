#!/usr/bin/env python3
"""Step 1: `headroom status --json` against nvidia-smi, read at the same moment.

Child processes hold known amounts of GPU memory (a torch.empty on the
device, then they wait). Each round reads, back to back:

    headroom status --json          (h1)
    nvidia-smi --query-gpu=...      (GPUs: index, name, UUID, total, used)
    nvidia-smi --query-compute-apps=...  (pid, GPU UUID, used memory)
    headroom status --json          (h2)

Names, UUIDs and indexes must be equal, totals equal at nvidia-smi's
resolution (it prints whole MiB). Used memory, per GPU and per process,
moves while the readings are taken only if something on the GPU allocates;
nvidia-smi's reading is taken between h1 and h2, so its tolerance is the
range [min(h1, h2), max(h1, h2)] widened by 1 MiB of rounding: with the
children holding still the range is one point, and the comparison is exact
at 1 MiB. Where nvidia-smi knows memory.reserved it is compared the same
way. Each child must be listed by both, with at least the bytes it holds.

  bench/gpu/probe.py --out DIR [--quick] [--rounds N]

Runs where `nvidia-smi` answers; SKIP (77) where it is not found or finds no
driver. Without torch+CUDA the children are left out (said so in the
report) and the comparison runs on whatever processes the GPUs have."""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stepkit as sk  # noqa: E402

STEP_BUDGET_S = 80      # the driver allows 90
CHILD_READY_S = 45      # importing torch and creating a CUDA context
CALL_TIMEOUT_S = 15     # one headroom or nvidia-smi call
ROUNDS, ROUNDS_QUICK = 5, 2
CHILD_GIB, CHILD_GIB_QUICK = (1, 3), (1,)
MIB = sk.MIB

CHILD = r"""
import select, torch
n = int(sys.argv[1])
x = torch.empty(n, dtype=torch.uint8, device="cuda")
x.fill_(1)
torch.cuda.synchronize()
print("ready", os.getpid(), torch.cuda.memory_allocated(), torch.cuda.memory_reserved(),
      flush=True)
select.select([sys.stdin], [], [], float(sys.argv[2]))  # until stdin closes, or the deadline
"""

GPU_FIELDS = "index,name,uuid,memory.total,memory.used"


def smi():
    return os.environ.get("HR_NVIDIA_SMI") or "nvidia-smi"


def num(s):
    """An nvidia-smi number, or None for [N/A], [Not Supported] and the like."""
    s = s.strip()
    try:
        return int(s)
    except ValueError:
        try:
            return float(s)
        except ValueError:
            return None


def csv_rows(text):
    import csv
    return [[c.strip() for c in r] for r in csv.reader(text.splitlines(), skipinitialspace=True)
            if r and r[0].strip()]


def read_smi_gpus(with_reserved):
    fields = GPU_FIELDS + (",memory.reserved" if with_reserved else "")
    r = sk.run([smi(), "--query-gpu=" + fields, "--format=csv,noheader,nounits"],
               CALL_TIMEOUT_S)
    if r.returncode != 0:
        raise RuntimeError("nvidia-smi --query-gpu exited %d: %s"
                           % (r.returncode, (r.stdout + r.stderr).strip()[:300]))
    out = []
    for row in csv_rows(r.stdout):
        if len(row) < 5:
            raise RuntimeError("nvidia-smi --query-gpu: cannot read the line %r" % ",".join(row))
        out.append({"index": num(row[0]), "name": row[1], "uuid": row[2],
                    "total_mib": num(row[3]), "used_mib": num(row[4]),
                    "reserved_mib": num(row[5]) if with_reserved and len(row) > 5 else None})
    return out


def read_smi_apps():
    r = sk.run([smi(), "--query-compute-apps=pid,gpu_uuid,used_memory",
                "--format=csv,noheader,nounits"], CALL_TIMEOUT_S)
    if r.returncode != 0:
        raise RuntimeError("nvidia-smi --query-compute-apps exited %d: %s"
                           % (r.returncode, (r.stdout + r.stderr).strip()[:300]))
    out = []
    for row in csv_rows(r.stdout):
        if len(row) >= 3 and num(row[0]) is not None:  # not "No running processes found"
            out.append({"pid": num(row[0]), "uuid": row[1], "used_mib": num(row[2])})
    return out


def smi_has_reserved():
    """True when this nvidia-smi knows the memory.reserved field."""
    try:
        r = sk.run([smi(), "--query-gpu=memory.reserved", "--format=csv,noheader,nounits"],
                   CALL_TIMEOUT_S)
    except (OSError, sk.subprocess.TimeoutExpired):
        return False
    return r.returncode == 0 and all(num(x) is not None for x in r.stdout.split())


def read_headroom(cli):
    r = sk.run([cli, "status", "--json", "--top", "1"], CALL_TIMEOUT_S)
    if r.returncode != 0:
        raise RuntimeError("headroom status --json exited %d: %s" % (r.returncode,
                                                                     r.stderr.strip()[:300]))
    j = json.loads(r.stdout)
    g = j["gpu"]
    devs = [{"index": d["index"], "name": d["name"], "uuid": d["uuid"],
             "total": d["total_bytes"], "used": d["used_bytes"],
             "reserved": d["reserved_bytes"], "state": d["state"], "message": d["message"]}
            for d in g["devices"]]
    uuid_of = {d["index"]: d["uuid"] for d in devs}
    procs = [{"pid": p["pid"], "local_pid": p["local_pid"], "uuid": uuid_of.get(p["gpu"], "?"),
              "used": p["used_bytes"]} for p in g["processes"]]
    return {"state": g["state"], "message": g["message"], "driver": g["driver_version"],
            "devices": devs, "procs": procs}


def take_round(cli, with_reserved):
    t = [time.monotonic()]
    h1 = read_headroom(cli)
    t.append(time.monotonic())
    gpus = read_smi_gpus(with_reserved)
    t.append(time.monotonic())
    apps = read_smi_apps()
    t.append(time.monotonic())
    h2 = read_headroom(cli)
    t.append(time.monotonic())
    return {"h1": h1, "smi_gpus": gpus, "smi_apps": apps, "h2": h2,
            "span_s": round(t[-1] - t[0], 3), "call_s": [round(b - a, 3) for a, b in zip(t, t[1:])]}


def within(smi_mib, a, b):
    """nvidia-smi's MiB against headroom's bytes before (a) and after (b):
    inside [min, max] widened by 1 MiB of display rounding. None on either
    side (not available) must be None on both."""
    if smi_mib is None or a is None or b is None:
        return smi_mib is None and (a is None or b is None)
    v = smi_mib * MIB
    return min(a, b) - MIB < v < max(a, b) + MIB


def compare_round(rd, children):
    """Checks of one round: a list of dicts with key (the table's field),
    headroom, smi, diff_mib, ok and note."""
    h1, h2, checks = rd["h1"], rd["h2"], []

    def add(key, hv, sv, ok, diff=None, note=""):
        # ok None: shown, not judged.
        checks.append({"key": key, "headroom": hv, "smi": sv, "diff_mib": diff,
                       "ok": None if ok is None else bool(ok), "note": note})

    add("GPU count", len(h1["devices"]), len(rd["smi_gpus"]),
        len(h1["devices"]) == len(rd["smi_gpus"]) == len(h2["devices"]))
    h2_by_uuid = {d["uuid"]: d for d in h2["devices"]}
    for i, s in enumerate(rd["smi_gpus"]):
        if i >= len(h1["devices"]):
            add("gpu%d" % i, "missing", s["uuid"], False)
            continue
        h = h1["devices"][i]
        hb = h2_by_uuid.get(h["uuid"], h)
        p = "gpu%d " % i
        if h["state"] != "ok":
            add(p + "state", h["state"], "ok", False, note=h["message"])
        add(p + "index", h["index"], s["index"], h["index"] == s["index"])
        add(p + "name", h["name"], s["name"], h["name"] == s["name"])
        add(p + "uuid", h["uuid"], s["uuid"], h["uuid"] == s["uuid"])
        tot = h["total"]
        add(p + "total", sk.fmt_mib(tot), "%s MiB" % s["total_mib"],
            tot is not None and s["total_mib"] is not None and abs(tot - s["total_mib"] * MIB)
            < MIB, diff=None if tot is None or s["total_mib"] is None
            else round(s["total_mib"] - tot / MIB, 2))
        for field, sf in (("used", "used_mib"), ("reserved", "reserved_mib")):
            if field == "reserved" and "reserved_mib" in s and s["reserved_mib"] is None:
                continue  # this nvidia-smi does not report it
            a, b, sv = h[field], hb[field], s[sf]
            ok = within(sv, a, b)
            note = "" if a == b else "moved %+.1f MiB between h1 and h2" % ((b - a) / MIB)
            if not ok and field == "used" and sv is not None and h["reserved"] is not None \
                    and within(sv, a + h["reserved"], b + hb["reserved"]):
                ok, note = True, "nvidia-smi counts reserved memory as used (definition)"
            add(p + field, sk.fmt_mib(a), "%s MiB" % sv, ok, note=note,
                diff=None if sv is None or a is None else round(sv - a / MIB, 2))

    # Processes: the union of both listings, keyed by (GPU UUID, pid); NVML's
    # pid on both sides (the host's, as nvidia-smi prints it).
    def keyed(procs):
        return {(p["uuid"], p["pid"]): p for p in procs}
    k1, k2, ks = keyed(h1["procs"]), keyed(h2["procs"]), keyed(rd["smi_apps"])
    for key in sorted(set(k1) | set(k2) | set(ks), key=lambda k: (k[0], k[1])):
        label = "pid %d on %s used" % (key[1], key[0])
        in1, in2, ins = key in k1, key in k2, key in ks
        if not ins:
            # Gone or started between the readings: the listings disagree for
            # a reason of timing only when h1 and h2 disagree too.
            add(label, sk.fmt_mib((k1.get(key) or k2[key])["used"]), "not listed",
                in1 != in2, note="came or went during the round" if in1 != in2 else "")
            continue
        if not (in1 and in2):
            add(label, "not listed" if not (in1 or in2) else "in one of h1/h2",
                "%s MiB" % ks[key]["used_mib"], in1 or in2,
                note="came or went during the round" if in1 or in2 else "")
            continue
        a, b, sv = k1[key]["used"], k2[key]["used"], ks[key]["used_mib"]
        add(label, sk.fmt_mib(a), "%s MiB" % sv, within(sv, a, b),
            diff=None if sv is None or a is None else round(sv - a / MIB, 2))

    # Our children: listed by both, holding at least what they allocated.
    for c in children:
        hp = [p for p in h1["procs"] if c["pid"] in (p["pid"], p["local_pid"])]
        sp = [p for p in rd["smi_apps"] if p["pid"] in [q["pid"] for q in hp] + [c["pid"]]]
        label = "child %d (holds %s) listed" % (c["pid"], sk.fmt_mib(c["allocated"]))
        if not hp:
            if h1["procs"] and not any(p["local_pid"] for p in h1["procs"]):
                # NVML names processes by host pid; inside a PID namespace
                # none of them is visible in /proc, so no child can be named.
                add(label, "host pids not visible", "listed" if sp else "not listed", None,
                    note="NVML's pids are not visible in this PID namespace; the processes "
                    "are compared by NVML's pid above")
            else:
                add(label, "not listed", "listed" if sp else "not listed", False,
                    note="headroom has no GPU process whose pid or local_pid is the child's")
            continue
        used = hp[0]["used"]
        add(label, sk.fmt_mib(used), "%s MiB" % sp[0]["used_mib"] if sp else "not listed",
            bool(sp) and used is not None and used >= c["allocated"],
            note="" if used is None else "%s above the allocation (CUDA context, allocator)"
            % sk.fmt_mib(used - c["allocated"]))
    return checks


def aggregate(rounds_checks):
    """One row per field over every round: the last round's values, the
    largest |diff|, ok when every round was."""
    rows, order = {}, []
    for checks in rounds_checks:
        for c in checks:
            k = c["key"]
            if k not in rows:
                order.append(k)
                rows[k] = dict(c, rounds_ok=0, rounds=0, worst=None)
            r = rows[k]
            r.update(headroom=c["headroom"], smi=c["smi"])
            r["rounds"] += 1
            r["rounds_ok"] += c["ok"] is not False
            r["judged"] = c["ok"] is not None
            if c["note"] and c["note"] not in r["note"]:
                r["note"] = (r["note"] + "; " if r["note"] else "") + c["note"]
            if c["diff_mib"] is not None and (r["worst"] is None
                                              or abs(c["diff_mib"]) > abs(r["worst"])):
                r["worst"] = c["diff_mib"]
    return [rows[k] for k in order]


def start_children(step, sizes):
    """Starts one child per size in GiB; returns (children, reason they were
    left out or None)."""
    torch, why = sk.torch_cuda()
    if why:
        return [], why
    del torch
    out = []
    for gib in sizes:
        n = gib * sk.GIB
        c = step.child(CHILD, [n, STEP_BUDGET_S + 30])
        out.append((c, n))
    children = []
    for c, n in out:
        w = c.expect("ready", CHILD_READY_S)
        children.append({"pid": int(w[0]), "allocated": n, "torch_allocated": int(w[1]),
                         "torch_reserved": int(w[2])})
        sk.log("child %d holds %s" % (children[-1]["pid"], sk.fmt_mib(n)))
    return children, None


def main(argv=None):
    step = sk.Step("probe", 1, "Probe against nvidia-smi", STEP_BUDGET_S, argv,
                   lambda p: p.add_argument("--rounds", type=int, default=None,
                                            help="rounds of readings (5; --quick 2)"))
    a = step.args
    rounds = a.rounds or (ROUNDS_QUICK if a.quick else ROUNDS)
    cli = sk.cli_path()
    if not cli:
        return step.no_cli()
    if not sk.which(smi()):
        return step.skip("nvidia-smi not found (no NVIDIA driver here)")
    try:
        sk.run([smi(), "--query-gpu=index", "--format=csv,noheader"], CALL_TIMEOUT_S) \
            .check_returncode()
    except Exception as e:  # noqa: BLE001 - any failure means no usable driver
        return step.skip("nvidia-smi finds no driver or GPU (%s)" % str(e)[:200])
    step.arm()
    data = {"cli": cli, "rounds": []}
    try:
        reserved = smi_has_reserved()
        children, why = start_children(step, CHILD_GIB_QUICK if a.quick else CHILD_GIB)
        data.update(children=children, children_skipped=why, smi_reserved_field=reserved)
        time.sleep(0.5)  # let the driver's per-process accounting settle
        per_round = []
        for i in range(rounds):
            rd = take_round(cli, reserved)
            checks = compare_round(rd, children)
            bad = [c["key"] for c in checks if c["ok"] is False]
            sk.log("round %d: %d checks, %d off %s (%.2f s)" % (i + 1, len(checks), len(bad),
                                                                bad[:4], rd["span_s"]))
            rd["checks"] = checks
            data["rounds"].append(rd)
            per_round.append(checks)
    except Exception as e:  # noqa: BLE001 - reported, with the data so far (Overtime too)
        return step.error(e, data)
    return report(step, data, per_round)


def report(step, data, per_round):
    rows = aggregate(per_round)
    ok = bool(rows) and all(r["rounds_ok"] == r["rounds"] for r in rows)
    gpus = len(data["rounds"][0]["smi_gpus"]) if data["rounds"] else 0
    if gpus == 0:
        ok = False
    h = data["rounds"][0]["h1"] if data["rounds"] else {}
    spans = sorted(r["span_s"] for r in data["rounds"])
    n_procs = len([r for r in rows if r["key"].startswith("pid ")])
    body = ("`headroom status --json` and `nvidia-smi --query-gpu=%s` / "
            "`--query-compute-apps=pid,gpu_uuid,used_memory` read back to back "
            "(headroom, nvidia-smi GPUs, nvidia-smi processes, headroom again) in %d rounds; "
            "a round took %.2f s (median). Driver %s. Totals must be equal at nvidia-smi's 1 MiB "
            "resolution; used memory (per GPU and per process) must lie between headroom's two "
            "readings of the round, widened by 1 MiB of rounding.\n\n"
            % (GPU_FIELDS + (",memory.reserved" if data.get("smi_reserved_field") else ""),
               len(data["rounds"]), spans[len(spans) // 2] if spans else 0,
               h.get("driver", "?")))
    if data.get("children_skipped"):
        body += "Child processes holding known memory: not started (%s).\n\n" \
            % data["children_skipped"]
    else:
        body += "Child processes holding known memory: %s.\n\n" % ", ".join(
            "pid %d holds %s" % (c["pid"], sk.fmt_mib(c["allocated"])) for c in data["children"])
    body += sk.table(["field", "headroom", "nvidia-smi", "diff (MiB, worst)", "rounds ok",
                      "verdict"],
                     [[r["key"], r["headroom"], r["smi"],
                       "-" if r["worst"] is None else "%+.2f" % r["worst"],
                       "%d/%d" % (r["rounds_ok"], r["rounds"]),
                       ("n/a" if not r["judged"] else "pass" if r["rounds_ok"] == r["rounds"]
                        else "**FAIL**")
                       + (" (%s)" % r["note"] if r["note"] else "")] for r in rows])
    bad = [r["key"] for r in rows if r["rounds_ok"] != r["rounds"]]
    if ok:
        verdict = ("names, UUIDs, totals equal; used per GPU and for %d processes within "
                   "the round's range on %d GPU(s)" % (n_procs, gpus))
        body += "\nPASS: %s, in every round.\n" % verdict
    else:
        verdict = "differs: %s" % (", ".join(bad[:5]) or "no GPU compared")
        body += "\nFAIL: %s.\n" % verdict
    data["table"] = rows
    return step.finish(sk.PASS if ok else sk.FAIL, verdict, body, data)


if __name__ == "__main__":
    sys.exit(main())
