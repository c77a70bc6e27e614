"""The Registry from Python: bytes moved by the example workflows run on real
CPU modules beside what `headroom plan --json` predicts for the same
sequence, for lru, comfy and lookahead. (use()'s own cost is
bench/python_use.py.)

Workflows: each examples/*.json is scaled down by SCALE (sizes, budget,
reserve, working memory, divided and rounded down) so that its models fit in
this machine's memory; the scaled file goes to `headroom plan --json`, and
the same assets become torch modules of exactly those bytes (uint8
parameters; a partial asset is split into PARTIAL_GROUPS equal children, the
groups the Registry moves) registered with a headroom.Registry on the CPU
device with the same budget. Each step is a `with registry.use(...)`, given
the next 1,024 steps as `upcoming` under lookahead (what the simulator shows
its policy). Prints markdown.

Usage: python3 bench/python_registry.py HEADROOM_CLI
"""

import json
import os
import subprocess
import sys
import tempfile
import time

import torch

import headroom

SCALE = 1024
PARTIAL_GROUPS = 256
WINDOW = 1024
MIB = 1 << 20


def blob(n):
    m = torch.nn.Module()
    m.w = torch.nn.Parameter(torch.zeros(n, dtype=torch.uint8), requires_grad=False)
    return m


def size(v):
    if isinstance(v, int):
        return v
    lib = headroom.load_library()
    import ctypes

    out = ctypes.c_uint64()
    if lib.hr_parse_size(str(v).encode(), ctypes.byref(out)) != 0:
        raise ValueError("bad size %r" % (v,))
    return out.value


def scaled(doc):
    d = json.loads(json.dumps(doc))
    d["budget_bytes"] = size(d["budget_bytes"]) // SCALE
    d["reserve_bytes"] = size(d.get("reserve_bytes", 0)) // SCALE
    for a in d["assets"]:
        a["bytes"] = max(1, size(a["bytes"]) // SCALE)
        if "host_bytes" in a:
            a["host_bytes"] = max(1, size(a["host_bytes"]) // SCALE)

    def walk(steps):
        for s in steps:
            if "working_bytes" in s:
                s["working_bytes"] = size(s["working_bytes"]) // SCALE
            if "steps" in s:
                walk(s["steps"])
    walk(d["steps"])
    return d


def expand(steps, out):
    for s in steps:
        for _ in range(s.get("repeat", 1)):
            if "steps" in s:
                expand(s["steps"], out)
            else:
                out.append((s["use"], s.get("working_bytes", 0)))
    return out


def label_of(doc):
    """Resolves "name" or "name:variant" to the registry's label."""
    by_name = {}
    for a in doc["assets"]:
        by_name.setdefault(a["name"], []).append(a)
    labels = {}
    for a in doc["assets"]:
        lab = a["name"] + (":" + a["variant"] if a.get("variant") else "")
        labels[lab] = lab
        if len(by_name[a["name"]]) == 1:
            labels[a["name"]] = lab
    return labels


def partial_module(n):
    m = torch.nn.Module()
    per, rest = divmod(n, PARTIAL_GROUPS)
    for i in range(PARTIAL_GROUPS):
        k = per + (1 if i < rest else 0)
        if k:
            m.add_module("g%d" % i, blob(k))
    return m


def run_python(doc, policy):
    labels = label_of(doc)
    r = headroom.Registry(device="cpu", budget_bytes=doc["budget_bytes"],
                          reserve_bytes=doc["reserve_bytes"], policy=policy)
    for a in doc["assets"]:
        n = a["bytes"]
        m = partial_module(n) if a.get("partial") else blob(n)
        grp = labels[a["group"]] if a.get("group") else None
        r.register(m, a["name"], variant=a.get("variant"), group=grp,
                   pinned=a.get("pinned", False), priority=a.get("priority", 0),
                   partial=a.get("partial", False), groups=PARTIAL_GROUPS)
    seq = [([labels[u] for u in use], w) for use, w in expand(doc["steps"], [])]
    loaded = failed = 0
    for k, (use, w) in enumerate(seq):
        up = None
        if policy == "lookahead":
            up = [{"use": u2, "working_bytes": w2} for u2, w2 in seq[k + 1:k + 1 + WINDOW]]
        try:
            with r.use(*use, working_bytes=w, upcoming=up) as plan:
                loaded += plan.bytes_loaded
        except headroom.ResidencyError:
            failed += 1
    r.close()
    return loaded, failed, len(seq)


def run_plan(cli, path, policy):
    p = subprocess.run([cli, "plan", path, "--policy", policy, "--json"], capture_output=True,
                       text=True)
    if p.returncode not in (0, 1):
        raise RuntimeError("headroom plan failed: %s" % p.stderr)
    return json.loads(p.stdout)


def workflows(cli):
    rows = []
    ex = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples")
    for name in sorted(os.listdir(ex)):
        if not name.endswith(".json"):
            continue
        with open(os.path.join(ex, name)) as f:
            doc = scaled(json.load(f))
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as t:
            json.dump(doc, t)
        try:
            for policy in ("lru", "comfy", "lookahead"):
                want = run_plan(cli, t.name, policy)
                t0 = time.perf_counter()
                got, failed, steps = run_python(doc, policy)
                dt = time.perf_counter() - t0
                rows.append((name, policy, steps, want["bytes_moved"], got, failed,
                             want["failed_steps"], want["partial_loads"] +
                             want["partial_offloads"], dt))
        finally:
            os.unlink(t.name)
    return rows


def main():
    cli = sys.argv[1]
    out = sys.stdout
    out.write("## Registry: bytes moved on the example workflows, real modules vs "
              "`headroom plan`\n\n")
    out.write("Sizes scaled down %dx; partial assets split into %d groups. `plan` is `headroom "
              "plan --json` on the scaled file; `Registry` sums `plan.bytes_loaded` of every "
              "`use()` on real CPU modules. `partial moves` counts the simulator's partial loads "
              "and offloads, which the Registry makes in whole groups.\n\n"
              % (SCALE, PARTIAL_GROUPS))
    out.write("| workflow | policy | steps | plan bytes moved | Registry bytes moved | ratio | "
              "partial moves (plan) | failed steps (plan / Registry) | Registry run |\n"
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
    for name, policy, steps, want, got, failed, pfailed, partial, dt in workflows(cli):
        out.write("| %s | %s | %d | %d | %d | %s | %d | %d / %d | %.1f s |\n" % (
            name, policy, steps, want, got, "%.4f" % (got / want) if want else "n/a", partial,
            pfailed, failed, dt))


if __name__ == "__main__":
    main()
