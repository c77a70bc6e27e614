"""bench/gpu/residency.py (step 5 of the real-GPU validation) on this machine:
its core (models -> Registry turns -> the same sequence as a workflow file
-> `headroom plan --json` -> comparison) runs for real on the CPU with small
models through the Registry's CPU device (the moves leave the data in place;
the decisions are the library's). The plan and the Registry must agree to the
byte; a plan given another budget must make the step FAIL. Needs torch
(Debian's CPU-only python3-torch is enough)."""

import json
import os
import sys

import pytest

from conftest import REPO, cli_or_skip, run_step, torch_or_skip

sys.path.insert(0, os.path.join(REPO, "bench", "gpu"))

MIB = 1 << 20


@pytest.fixture
def env(fresh_loader, libpath):
    cli = cli_or_skip()
    torch_or_skip()
    fresh_loader.setenv("HEADROOM_LIB", libpath)
    fresh_loader.setenv("HEADROOM_CLI", cli)
    e = dict(os.environ)
    e["PYTHONPATH"] = os.path.join(REPO, "python")
    return e


def test_cpu_run_agrees_with_the_plan(env, tmp_path):
    r, last = run_step("residency.py", tmp_path, "--cpu", env=env, timeout=240)
    assert r.returncode == 0 and last.startswith("RESULT residency PASS no OOM"), \
        r.stdout + r.stderr
    data = json.loads((tmp_path / "residency.json").read_text())
    assert [run["policy"] for run in data["runs"]] == ["lru", "comfy"]
    sizes = sorted(data["sizes"].values())
    assert sizes[1] + sizes[2] < data["budget_bytes"] < sum(sizes) + data["working_bytes"]
    for run in data["runs"]:
        st = run["actual"]["stats"]
        # The budget forces moves: more loads than models, and offloads.
        assert st["loads"] > 3 and st["offloads"] > 0 and run["ok"]
        assert st["bytes_loaded"] == run["plan"]["bytes_moved"]
        assert st["bytes_offloaded"] == run["plan"]["bytes_offloaded"]
        # Every turn ran its forward pass.
        assert all(t["ok"] for t in run["actual"]["turns"])
        assert len(run["actual"]["turns"]) == len(data["sequence"]) == 15
        # The workflow carries the measured sizes, budget and working bytes.
        wf = run["workflow"]
        assert {a["name"]: a["bytes"] for a in wf["assets"]} == data["sizes"]
        assert wf["budget_bytes"] == data["budget_bytes"]
        assert {s["working_bytes"] for s in wf["steps"]} == {data["working_bytes"]}
    md = (tmp_path / "residency.md").read_text()
    assert md.startswith("## 5. Residency with real modules\n") and "**FAIL**" not in md


def test_a_plan_that_disagrees_fails(env, tmp_path, capsys):
    import torch
    import headroom
    import residency
    import stepkit

    step = stepkit.Step("residency", 5, "Residency with real modules", 60,
                        ["--out", str(tmp_path)])
    # The plan gets a budget that holds all three models: it predicts three
    # loads and no offload, where the Registry under the real budget moved more.
    res = residency.core(torch, headroom, os.environ["HEADROOM_CLI"], torch.device("cpu"),
                         residency.CONFIGS["cpu"], residency.SEQ_QUICK, ["lru"], str(tmp_path),
                         plan_budget=1 << 30)
    assert not res["ok"]
    rows = {w: (p, a, ok) for w, p, a, ok in res["runs"][0]["rows"]}
    assert rows["loads"][0] == 3 and rows["loads"][1] > 3 and not rows["loads"][2]
    assert not rows["offloads"][2] and not rows["turns with the same actions"][2]
    assert rows["out-of-memory errors"][2]
    assert residency.finish(step, res) == 1
    out = capsys.readouterr().out.strip().splitlines()[-1]
    assert out.startswith("RESULT residency FAIL 0 OOM; differs from the plan: lru: loads, "), out
    assert "| loads | 3 |" in (tmp_path / "residency.md").read_text()


def test_compare_counts_a_byte(env):
    import residency

    pred = {"budget_bytes": 4 * MIB, "loads": 2, "offloads": 1, "partial_loads": 0,
            "partial_offloads": 0,
            "bytes_moved": 3 * MIB, "bytes_offloaded": MIB, "failed_steps": 0,
            "actions": [{"step": 1, "kind": "load", "asset": "a", "bytes": MIB},
                        {"step": 2, "kind": "offload", "asset": "a", "bytes": MIB},
                        {"step": 2, "kind": "load", "asset": "b", "bytes": 2 * MIB}]}
    actual = {"stats": {"loads": 2, "offloads": 1, "bytes_loaded": 3 * MIB,
                        "bytes_offloaded": MIB},
              "turns": [{"turn": 1, "actions": [["load", "a", MIB]], "registry_resident": ["a"],
                         "on_device": ["a"]},
                        {"turn": 2, "actions": [["offload", "a", MIB], ["load", "b", 2 * MIB]],
                         "registry_resident": ["b"], "on_device": ["b"]}],
              "errors": [], "ooms": 0}
    sizes = {"a": MIB, "b": 2 * MIB}
    rows, ok = residency.compare(pred, actual, 2, sizes, MIB, "cuda")
    assert ok and all(r[3] for r in rows)
    actual["stats"]["bytes_loaded"] += 1
    rows, ok = residency.compare(pred, actual, 2, sizes, MIB, "cuda")
    assert not ok and [r[0] for r in rows if not r[3]] == ["bytes loaded"]
    actual["stats"]["bytes_loaded"] -= 1
    actual["turns"][1]["actions"].reverse()  # same totals, another order
    rows, ok = residency.compare(pred, actual, 2, sizes, MIB, "cuda")
    assert not ok and [r[0] for r in rows if not r[3]] == ["turns with the same actions"]
    actual["turns"][1]["actions"].reverse()
    actual["ooms"] = 1
    assert not residency.compare(pred, actual, 2, sizes, MIB, "cuda")[1]
    actual["ooms"] = 0
    # The weights were not where the Registry said (a move that did nothing).
    actual["turns"][1]["on_device"] = ["a", "b"]
    rows, ok = residency.compare(pred, actual, 2, sizes, MIB, "cuda")
    assert not ok and [r[0] for r in rows if not r[3]] == [
        "turns with the weights where the Registry says"]
    actual["turns"][1]["on_device"] = ["b"]
    # More resident than budget - working allows.
    actual["turns"][1]["registry_resident"] = actual["turns"][1]["on_device"] = ["a", "b"]
    rows, ok = residency.compare(pred, actual, 2, sizes, 2 * MIB, "cuda")
    assert not ok and "most model bytes resident at once (limit: budget - working)" in [
        r[0] for r in rows if not r[3]]
