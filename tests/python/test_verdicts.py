"""The stage report's verdicts on real processes: the loops of
verdict_scenarios.py run as child processes with headroom.stage(), judged
after every frame. No loop without a leak is ever called one; a leak is
named, the right part alone, within 30 calls; where RSS cannot tell which of
several parts keeps the memory, none is named and all are listed. The tests
count calls, never time. bench/verdicts.py writes the same as a table."""

import json
import os
import subprocess
import sys

import pytest

from conftest import PYDIR, torch_or_skip

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import verdict_scenarios  # noqa: E402

#: Frames each loop runs here: enough for a verdict (23 calls) and 17 more.
FRAMES = 40


def run_scenario(name, libpath, frames=FRAMES, malloc=None):
    """The per-frame lines and the final report of scenario `name`."""
    env = dict(os.environ, PYTHONPATH=PYDIR, HEADROOM_LIB=libpath)
    cmd = [sys.executable, os.path.join(HERE, "verdict_scenarios.py"), name, "--frames",
           str(frames)] + (["--malloc", malloc] if malloc else [])
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    return lines[:-1], lines[-1]["report"]


def library_or_skip(libpath):
    from headroom.readings import detection

    if not detection.available():
        pytest.skip("the leak test is libheadroom's: %s" % detection.unavailable_reason())


@pytest.mark.parametrize("name", sorted(verdict_scenarios.SCENARIOS))
def test_verdicts_on_a_real_loop(name, libpath, fresh_loader):
    fresh_loader.setenv("HEADROOM_LIB", libpath)
    library_or_skip(libpath)
    torch_or_skip()
    frames, report = run_scenario(name, libpath)
    truth = verdict_scenarios.SCENARIOS[name][2]
    named = [(f["frame"], n) for f in frames for n in f["named"]]
    leaks = [(f["frame"], u["candidates"]) for f in frames for u in f["unattributed"]
             if u["kind"] == "leak"]
    if truth is None:
        # Nothing keeps memory: no part named, no leak claimed, ever. (RSS
        # that grows while the live heap does not may be reported as growth.)
        assert named == [] and leaks == [], (named, leaks, report)
        return
    if isinstance(truth, str):
        assert {n for _, n in named} == {truth}, (named, report)
        first = min(f for f, _ in named)
        assert first <= 30, (first, report)
        # Named from then on, in every frame.
        assert [f for f, _ in named] == list(range(first, len(frames) + 1)), named
        # Before it, at most a line saying the growth is not yet judged, with
        # the right part as the one whose kept memory grows.
        assert all(c == [truth] for f, c in leaks), leaks
        assert "possible leak: %s keeps" % truth in report
        return
    # Several parts RSS cannot tell apart: none named, each listed.
    assert named == [], (named, report)
    assert leaks and min(f for f, _ in leaks) <= 30, (leaks, report)
    assert all(set(truth) <= set(c) for _, c in leaks), (leaks, report)
