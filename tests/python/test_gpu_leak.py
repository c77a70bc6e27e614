"""bench/gpu/leak.py (step 6 of the real-GPU validation) on this machine: the
same orchestration with host-memory children (--cpu: a leaker keeping one
more bytearray per iteration, a steady loop freeing its own; watch's rss_anon
series, time scaled by ten) runs for real, and the judging of watch's events
is checked on made-up outcomes that must FAIL: no event for the leaker, one
past the window, one on the wrong series, a false alarm on the steady pid,
watch cut short."""

import json
import os
import sys

import pytest

from conftest import REPO, cli_or_skip, run_step

sys.path.insert(0, os.path.join(REPO, "bench", "gpu"))

MIB = 1 << 20


def cli_env():
    e = dict(os.environ)
    e["HEADROOM_CLI"] = cli_or_skip()
    e.pop("HEADROOM_CONFIG", None)
    return e


def test_cpu_leaker_found_steady_not(tmp_path):
    env = cli_env()
    env["XDG_CONFIG_HOME"] = str(tmp_path)  # no user config file changes the options
    r, last = run_step("leak.py", tmp_path, "--cpu", env=env)
    assert r.returncode == 0 and last.startswith("RESULT leak PASS leaker found after "), \
        r.stdout + r.stderr
    data = json.loads((tmp_path / "leak.json").read_text())
    assert data["watch"]["samples"] == 100 and data["watch"]["rc"] == 0
    leaks = data["watch"]["leaks"]
    assert [e["pid"] for e in leaks if e["series"] == "rss_anon"].count(data["leaker"]) == 1
    assert not [e for e in leaks if e["pid"] == data["steady"]]
    assert 0 < data["found_after_s"] <= data["mode"]["window"]
    # The leaker grew (1 MiB per 0.1 s) and the steady loop did not, as watch saw them.
    grow = data["series"][str(data["leaker"])]
    flat = data["series"][str(data["steady"])]
    assert grow[-1][2] - grow[0][2] > 50 * MIB
    assert max(x[2] for x in flat) - min(x[2] for x in flat) < 8 * MIB
    md = (tmp_path / "leak.md").read_text()
    assert md.startswith("## 6. Leak detection\n") and "**FAIL**" not in md


def outcome(leaks, samples=100, rc=0):
    return {"rc": rc, "stderr": "", "samples": samples, "bad_lines": 0, "first_sample": 1000.0,
            "leaks": leaks, "series": {10: [(1000.0, 0, MIB), (1010.0, 0, 99 * MIB)],
                                       20: [(1000.0, 0, MIB), (1010.0, 0, MIB)]}}


def leak(pid, t, series="rss_anon"):
    return {"event": "leak", "pid": pid, "series": series, "time": 1000.0 + t,
            "slope_bytes_per_min": 600.0 * MIB}


@pytest.mark.parametrize("w,why", [
    (outcome([leak(10, 2.0)]), None),
    (outcome([]), "no leak event on the rss_anon series for the leaker (pid 10)"),
    (outcome([leak(10, 7.5)]), "past the 6 s window"),
    (outcome([leak(10, 2.0, "gpu")]), "no leak event on the rss_anon series"),
    (outcome([leak(10, 2.0), leak(20, 5.0)]), "false alarm: a leak event names the steady pid"),
    (outcome([leak(10, 2.0)], samples=40, rc=1), "watch exited 1"),
])
def test_judging(w, why):
    import leak as step

    ok, rows, found, reasons = step.judge(step.MODES["cpu"], w, 10, 20)
    if why is None:
        assert ok and reasons == [] and found == 2.0
        assert [r[-1] for r in rows] == ["pass", "pass"]
    else:
        assert not ok and any(why in r for r in reasons), reasons
        assert "**FAIL**" in [r[-1] for r in rows] or "watch" in why
