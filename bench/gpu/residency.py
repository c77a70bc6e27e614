#!/usr/bin/env python3
"""Step 5: residency with real modules, against `headroom plan`.

Three models built in plain torch with random weights (a ResNet-50 and a
ResNet-152 of bottleneck blocks, and a GPT-style transformer language model)
are registered with headroom.Registry on the GPU under a budget that holds
the two largest with the working memory of one forward pass, never all
three. They are used in turns (one forward pass each turn, no_grad) in a
sequence that forces moves. PyTorch's allocator is capped
(torch.cuda.set_per_process_memory_fraction) at the budget plus the
allocator's measured slack, so a registry that kept too much resident would
meet an out-of-memory error, which is caught and counted (the target is
none).

The same sequence is then written as a workflow file (docs/workflow-format.md)
with the models' byte sizes as the Registry measured them, the same budget,
working bytes and policy, and `headroom plan --json` predicts the moves. The
step passes when nothing ran out of memory and the prediction equals what the
Registry did: loads, offloads, bytes loaded and offloaded, and the action
list turn by turn. There is no tolerance: both sides count module bytes, not
the allocator's rounded blocks, so they must agree to the byte.

  bench/gpu/residency.py --out DIR [--quick] [--cpu] [--policy lru,comfy]

--cpu runs the same core on the CPU with small models (the Registry's CPU
device: moves leave the data where it is, the decisions are the same); it is
what tests/python/test_gpu_residency.py runs. Without --cpu and without torch
with CUDA the step skips (77)."""

import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stepkit as sk  # noqa: E402

STEP_BUDGET_S = 110  # the driver allows 120
PLAN_TIMEOUT_S = 30
MIB = sk.MIB
NAMES = {"A": "resnet50", "B": "resnet152", "C": "gpt"}
SEQ_FULL = "ABCABCBACCABCBA"  # 15 turns; LRU must move on most of them
SEQ_QUICK = "ABCACB"

# Model sizes. gpu: the real architectures' shapes (ResNet-50 25.6 M
# parameters, ResNet-152 60.2 M, a 8-layer d=1024 language model 167 M);
# cpu: the same code at a width the tests afford.
CONFIGS = {
    "gpu": {"width": 64, "classes": 1000, "d": 1024, "layers": 8, "vocab": 32000,
            "batch": 16, "image": 224, "tokens": 256},
    "quick": {"width": 64, "classes": 1000, "d": 1024, "layers": 8, "vocab": 32000,
              "batch": 2, "image": 96, "tokens": 64},
    "cpu": {"width": 16, "classes": 10, "d": 128, "layers": 2, "vocab": 4000,
            "batch": 1, "image": 32, "tokens": 16},
}


def build_models(torch, cfg):
    """[(key, name, module, make_input(device))] in the order A, B, C."""
    nn = torch.nn

    class Bottleneck(nn.Module):
        def __init__(self, cin, mid, stride):
            super().__init__()
            cout = mid * 4
            self.body = nn.Sequential(
                nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
                nn.Conv2d(mid, mid, 3, stride, 1, bias=False), nn.BatchNorm2d(mid),
                nn.ReLU(inplace=True), nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

        def forward(self, x):
            return torch.relu(self.body(x) + (x if self.down is None else self.down(x)))

    def resnet(blocks):
        w = cfg["width"]
        layers = [nn.Conv2d(3, w, 7, 2, 3, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                  nn.MaxPool2d(3, 2, 1)]
        cin = w
        for i, n in enumerate(blocks):
            mid = w * 2 ** i
            for j in range(n):
                layers.append(Bottleneck(cin, mid, 2 if j == 0 and i > 0 else 1))
                cin = mid * 4
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, cfg["classes"])]
        return nn.Sequential(*layers).eval()

    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            d = cfg["d"]
            self.emb = nn.Embedding(cfg["vocab"], d)
            layer = nn.TransformerEncoderLayer(d, max(1, d // 64), 4 * d, dropout=0.0,
                                               batch_first=True)
            self.blocks = nn.TransformerEncoder(layer, cfg["layers"])
            self.head = nn.Linear(d, cfg["vocab"], bias=False)

        def forward(self, ids):
            return self.head(self.blocks(self.emb(ids)))

    b, img, tok = cfg["batch"], cfg["image"], cfg["tokens"]

    def images(device):
        return torch.randn(b, 3, img, img, device=device)

    def ids(device):
        return torch.randint(0, cfg["vocab"], (b, tok), device=device)

    torch.manual_seed(0)
    return [("A", NAMES["A"], resnet([3, 4, 6, 3]), images),
            ("B", NAMES["B"], resnet([3, 8, 36, 3]), images),
            ("C", NAMES["C"], LM().eval(), ids)]


def calibrate(torch, models, device):
    """Working memory of one turn and the allocator's slack, measured: each
    model alone on the device, one forward pass. Returns (working_bytes,
    slack_bytes, per-model dicts). On the CPU there is no device memory to
    measure and the working bytes are a fixed 4 MiB."""
    if device.type != "cuda":
        return 4 * MIB, 0, []
    per, work, slack = [], 0, 0
    from headroom.pytorch.registry import module_bytes
    for key, name, m, make in models:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        m.to(device)
        loaded = torch.cuda.memory_allocated(device)
        with torch.no_grad():
            m(make(device))
        torch.cuda.synchronize(device)
        peak_a = torch.cuda.max_memory_allocated(device)
        peak_r = torch.cuda.max_memory_reserved(device)
        nbytes = module_bytes(m)
        m.to("cpu")
        torch.cuda.empty_cache()
        act = peak_a - loaded
        per.append({"model": name, "bytes": nbytes, "allocated_by_weights": loaded - base,
                    "activation_peak_bytes": act, "peak_reserved_bytes": peak_r})
        work = max(work, act)
        slack = max(slack, peak_r - (peak_a - base))
    working = (int(work * 1.25) + 16 * MIB + MIB - 1) // MIB * MIB
    return working, slack, per


def run_turns(torch, headroom, models, seq, budget, working, policy, device):
    """The live run: a Registry under `budget`, a forward pass per turn.
    Returns what the Registry did, OOMs and peaks."""
    byname = {k: (name, m, make) for k, name, m, make in models}
    reg = headroom.Registry(device=str(device), budget_bytes=budget, policy=policy)
    sizes = {}
    for key, name, m, _ in models:
        sizes[name] = reg.register(m, name)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    turns, ooms, errors = [], 0, []
    t0 = time.monotonic()
    for i, key in enumerate(seq):
        name, m, make = byname[key]
        rec = {"turn": i + 1, "model": name, "actions": [], "ok": False}
        try:
            with reg.use(m, working_bytes=working) as plan:
                rec["actions"] = [[k, n, b] for k, n, b in plan.actions]
                # Where the weights really are, against what the Registry says.
                rec["registry_resident"] = reg.resident()
                rec["on_device"] = sorted(n for _, n, mm, _ in models
                                          if next(mm.parameters()).device.type == device.type)
                with torch.no_grad():
                    y = m(make(device))
                    rec["checksum"] = float(y.float().mean())
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
            rec["ok"] = True
        except Exception as e:  # noqa: BLE001 - every failure is counted and reported
            text = "%s: %s" % (type(e).__name__, (str(e).splitlines() or [""])[0][:300])
            ooms += sk.is_oom(e)
            errors.append("turn %d (%s): %s" % (i + 1, name, text))
            sk.log("turn %d %s failed: %s" % (i + 1, name, text))
        rec["resident_after"] = reg.resident()
        turns.append(rec)
    out = {"turns": turns, "ooms": ooms, "errors": errors, "stats": reg.stats(),
           "sizes": sizes, "turns_s": round(time.monotonic() - t0, 3)}
    if device.type == "cuda":
        out["peak_allocated_bytes"] = torch.cuda.max_memory_allocated(device)
        out["peak_reserved_bytes"] = torch.cuda.max_memory_reserved(device)
    # Everything back to the host, so a next run starts from the same state.
    for _, _, m, _ in models:
        m.to("cpu")
    reg.close()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def workflow(models, sizes, seq, budget, working, policy):
    """The workflow file for the same sequence (docs/workflow-format.md)."""
    return {"name": "bench/gpu/residency.py: %s turns, policy %s" % (seq, policy),
            "budget_bytes": budget, "reserve_bytes": 0,
            "assets": [{"name": name, "bytes": sizes[name]} for _, name, _, _ in models],
            "steps": [{"name": "turn %d" % (i + 1), "use": [NAMES[k]], "working_bytes": working}
                      for i, k in enumerate(seq)]}


def run_plan(cli, wf, policy, tmpdir):
    path = os.path.join(tmpdir, "residency-%s.json" % policy)
    with open(path, "w") as f:
        json.dump(wf, f, indent=1)
    r = sk.run([cli, "plan", path, "--policy", policy, "--json"], PLAN_TIMEOUT_S)
    if r.returncode not in (0, 1):
        raise RuntimeError("headroom plan exited %d: %s" % (r.returncode, r.stderr.strip()[:400]))
    return json.loads(r.stdout)


def compare(pred, actual, nturns, sizes, working, device_type="cpu"):
    """Rows (what, predicted, actual, ok) and whether all agree."""
    st = actual["stats"]
    by_turn = {i: [] for i in range(1, nturns + 1)}
    for a in pred["actions"]:
        by_turn.setdefault(a["step"], []).append([a["kind"].replace("-", "_"), a["asset"],
                                                  a["bytes"]])
    kinds = [k for t in actual["turns"] for k, _, _ in t["actions"]]
    same_turns = [t["turn"] for t in actual["turns"] if by_turn.get(t["turn"]) == t["actions"]]
    rows = [
        ("loads", pred["loads"], st["loads"]),
        ("offloads", pred["offloads"], st["offloads"]),
        ("partial loads / offloads", "%d / %d" % (pred["partial_loads"],
                                                  pred["partial_offloads"]),
         "%d / %d" % (kinds.count("load_partial"), kinds.count("offload_partial"))),
        ("bytes loaded", pred["bytes_moved"], st["bytes_loaded"]),
        ("bytes offloaded", pred["bytes_offloaded"], st["bytes_offloaded"]),
        ("turns with the same actions", nturns, len(same_turns)),
        ("turns that cannot run", pred["failed_steps"], len(actual["errors"])),
        ("out-of-memory errors", 0, actual["ooms"]),
    ]
    rows = [(w, p, a, p == a) for w, p, a in rows]
    # The budget held physically: the weights on the device at once never
    # exceed budget - working, and (on a GPU, where placement means
    # something) the modules on the device are those the Registry says.
    limit = pred["budget_bytes"] - working
    held = [sum(sizes[n] for n in t.get("registry_resident", [])) for t in actual["turns"]]
    rows.append(("most model bytes resident at once (limit: budget - working)",
                 "<= %d" % limit, max(held or [0]), max(held or [0]) <= limit))
    if device_type == "cuda":
        placed = [t["turn"] for t in actual["turns"]
                  if t.get("on_device") is not None and t["on_device"] == t["registry_resident"]]
        rows.append(("turns with the weights where the Registry says", nturns, len(placed),
                     len(placed) == nturns))
    return rows, all(ok for *_, ok in rows)


def core(torch, headroom, cli, device, cfg, seq, policies, tmpdir, plan_budget=None,
         models=None):
    """Models, calibration, budget, then per policy: the live run, the plan,
    the comparison. plan_budget gives the plan another budget than the live
    run (the tests use it to make the two disagree)."""
    models = models or build_models(torch, cfg)
    from headroom.pytorch.registry import module_bytes
    sizes = {name: module_bytes(m) for _, name, m, _ in models}
    working, slack, calib = calibrate(torch, models, device)
    order = sorted(sizes.values())
    # Room for the two largest and one turn's working memory, never all three.
    budget = order[1] + order[2] + working + MIB
    if order[0] <= MIB:
        raise ValueError("the smallest model (%d bytes) must exceed 1 MiB" % order[0])
    res = {"device": str(device), "sizes": sizes, "working_bytes": working, "budget_bytes": budget,
           "allocator_slack_bytes": slack, "calibration": calib, "sequence": seq,
           "runs": []}
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        cap = budget + 2 * slack + 64 * MIB
        res.update(cap_bytes=cap, device_total_bytes=total)
        torch.cuda.set_per_process_memory_fraction(min(1.0, cap / total), device)
    for policy in policies:
        actual = run_turns(torch, headroom, models, seq, budget, working, policy, device)
        wf = workflow(models, actual["sizes"], seq, plan_budget or budget, working, policy)
        pred = run_plan(cli, wf, policy, tmpdir)
        rows, ok = compare(pred, actual, len(seq), actual["sizes"], working, device.type)
        sk.log("policy %s: %s (%d loads, %d offloads, %d OOM)"
               % (policy, "agree" if ok else "DISAGREE", actual["stats"]["loads"],
                  actual["stats"]["offloads"], actual["ooms"]))
        res["runs"].append({"policy": policy, "actual": actual, "plan": pred, "workflow": wf,
                            "rows": rows, "ok": ok})
    res["ok"] = all(r["ok"] for r in res["runs"])
    return res


def report(res):
    f = sk.fmt_mib
    seq = res["sequence"]
    names = " ".join(NAMES[k] for k in seq[:6]) + (" ..." if len(seq) > 6 else "")
    body = ("Three models with random weights, registered with `headroom.Registry` on %s under "
            "a fixed budget, used in %d turns (%s: %s), one forward pass each; then "
            "`headroom plan --json` on the same sequence written as a workflow file "
            "(same byte sizes, budget, working bytes and policy). Bytes are module bytes "
            "(parameters and buffers), which both sides count.\n\n"
            % (res["device"], len(seq), seq, names))
    setup = [["models", ", ".join("%s %s" % (n, f(b)) for n, b in res["sizes"].items())],
             ["working bytes per turn", f(res["working_bytes"])],
             ["budget (two largest + working, not all three)", f(res["budget_bytes"])]]
    if "cap_bytes" in res:
        setup.append(["PyTorch capped at (budget + 2 x allocator slack + 64 MiB)",
                      "%s of %s" % (f(res["cap_bytes"]), f(res["device_total_bytes"]))])
        every = sum(res["sizes"].values()) + res["working_bytes"]
        setup.append(["all three + working (would an OOM catch keeping all three?)",
                      "%s (%s)" % (f(every), "yes: above the cap" if every > res["cap_bytes"]
                                   else "no: within the cap; the placement rows judge it")])
    body += sk.table(["setting", "value"], setup) + "\n"
    for run in res["runs"]:
        a, p = run["actual"], run["plan"]
        rows = [[w, pv, av, "pass" if ok else "**FAIL**"] for w, pv, av, ok in run["rows"]]
        rows.append(["peak device bytes (plan: resident + working)", f(p["peak_device_bytes"]),
                     "allocated %s, reserved %s" % (f(a.get("peak_allocated_bytes")),
                                                    f(a.get("peak_reserved_bytes")))
                     if "peak_allocated_bytes" in a else "n/a (CPU)", "info"])
        if p.get("reference_bytes") is not None:
            rows.append(["best possible bytes loaded (%s)" % p["reference"],
                         p["reference_bytes"], "-", "info (ratio %.3f)" % p["ratio"]])
        rows.append(["turns wall time", "-", "%.2f s" % a["turns_s"], "info"])
        body += "Policy `%s`:\n\n" % run["policy"]
        body += sk.table(["", "headroom plan", "Registry", "verdict"], rows) + "\n"
        if a["errors"]:
            body += "Errors: %s\n\n" % "; ".join(a["errors"][:5])
    return body


def main(argv=None):
    step = sk.Step("residency", 5, "Residency with real modules", STEP_BUDGET_S, argv,
                   lambda p: (p.add_argument("--cpu", action="store_true",
                                             help="small models on the CPU device"),
                              p.add_argument("--policy", default=None,
                                             help="comma-separated (lru,comfy; --quick lru)")))
    a = step.args
    cli = sk.cli_path()
    if not cli:
        return step.no_cli()
    torch, why = sk.torch_cuda()
    if torch is None or (why and not a.cpu):
        return step.skip(why)
    try:
        import headroom
    except ImportError as e:
        return step.finish(sk.FAIL, "cannot import headroom (%s)" % e, "No headroom package.", {})
    device = torch.device("cpu" if a.cpu else "cuda:0")
    cfg = CONFIGS["cpu" if a.cpu else "quick" if a.quick else "gpu"]
    seq = SEQ_QUICK if a.quick else SEQ_FULL
    policies = (a.policy or ("lru" if a.quick else "lru,comfy")).split(",")
    step.arm()
    res = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            res = core(torch, headroom, cli, device, cfg, seq, policies, tmp)
    except Exception as e:  # noqa: BLE001 - reported with what there is (Overtime too)
        return step.error(e, res)
    return finish(step, res)


def finish(step, res):
    body = report(res)
    moved = ", ".join("%s %d loads %s" % (r["policy"], r["actual"]["stats"]["loads"],
                                          sk.fmt_mib(r["actual"]["stats"]["bytes_loaded"]))
                      for r in res["runs"])
    ooms = sum(r["actual"]["ooms"] for r in res["runs"])
    if res["ok"]:
        summary = "no OOM; bytes moved as planned (%s)" % moved
        body += "PASS: no out-of-memory error, and the Registry moved exactly what " \
                "`headroom plan` predicted, turn by turn.\n"
    else:
        bad = ["%s: %s" % (r["policy"], ", ".join(w for w, _, _, ok in r["rows"] if not ok))
               for r in res["runs"] if not r["ok"]]
        summary = "%d OOM; differs from the plan: %s" % (ooms, "; ".join(bad))
        body += "FAIL: %s.\n" % summary
    return step.finish(sk.PASS if res["ok"] else sk.FAIL, summary, body, res)


if __name__ == "__main__":
    sys.exit(main())
