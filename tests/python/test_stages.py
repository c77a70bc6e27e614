"""stage() and stages.report(): the table, the verdicts it carries, printing
only when asked. What the verdicts say about real loops is in
test_verdicts.py, the engine on exact numbers in test_attribution.py."""

import json

import pytest

import headroom
from conftest import run_python
from headroom import stages

MIB = 1 << 20


@pytest.fixture(autouse=True)
def clean():
    stages.configure(stages.Settings())
    yield
    stages.configure(stages.Settings())


def library_or_skip():
    from headroom.readings import detection

    if not detection.available():
        pytest.skip("the leak test is libheadroom's: %s" % detection.unavailable_reason())


def replay_leak(calls=40, kept=2 * MIB):
    """decode keeps `kept` bytes a call, encode frees what it makes."""
    rss = 500 * MIB
    for i in range(calls):
        stages.record("encode", 0.01, (rss, rss), t=2.0 * i + 1)
        stages.record("decode", 0.02, (rss, rss + kept), t=2.0 * i + 2)
        rss += kept


def test_report_returns_the_table_and_prints_only_when_asked(capsys):
    library_or_skip()
    replay_leak()
    rep = stages.report()
    assert capsys.readouterr().out == ""  # not printed
    assert isinstance(rep, str) and rep.startswith("stage")
    lines = rep.splitlines()
    assert lines[0].split() == ["stage", "calls", "ms/call", "RSS", "in", "call", "RSS",
                                "kept/call"]
    assert lines[2].split()[:3] == ["encode", "40", "10.00"]
    assert lines[3].split()[:3] == ["decode", "40", "20.00"]
    assert "possible leak: decode keeps +2.0 MiB of RSS per call over its last 30 calls" in rep
    assert rep.count("possible leak") == 1
    print(rep)  # shows it once
    assert capsys.readouterr().out == rep + "\n"
    assert repr(rep) == rep  # at a prompt, too
    again = stages.report(print=True)
    assert capsys.readouterr().out == again == rep
    rep.print()
    assert capsys.readouterr().out == rep
    # rows and the engine's result ride along
    assert [r["name"] for r in rep.rows] == ["encode", "decode", "outside stages"]
    assert rep.attribution.named() == ["decode"]


def test_summary_rows():
    library_or_skip()
    replay_leak()
    rows = {r["name"]: r for r in stages.summary()}
    d, e = rows["decode"], rows["encode"]
    assert d["leak"] and not e["leak"] and d["judged"]
    assert d["rss_kept_per_call"] == 2 * MIB and d["rss_inside"] == 2 * MIB
    assert d["rss_process_per_call"] == 2 * MIB
    assert e["rss_kept_per_call"] == 0 and e["rss_inside"] == 0
    assert d["vram_allocated_inside"] is None and d["vram_allocated_kept_per_call"] is None
    assert rows["outside stages"]["kind"] == "outside" and rows["outside stages"]["calls"] == 79


def test_kept_is_not_shown_before_enough_calls():
    library_or_skip()
    replay_leak(calls=10)
    rep = stages.report()
    assert "possible leak" not in rep
    assert rep.splitlines()[3].split()[-1] == "-"
    assert '("-" before 20)' in rep


def test_configure_sets_the_thresholds():
    library_or_skip()
    stages.configure(stages.Settings(min_growth=4 * MIB))
    replay_leak(kept=3 * MIB)
    assert "possible leak" not in stages.report()
    stages.configure(stages.Settings(min_growth=MIB, min_calls=10, warmup=0))
    replay_leak(calls=11, kept=MIB)
    assert stages.verdicts().named() == ["decode"]
    with pytest.raises(ValueError, match="Settings"):
        stages.configure({"min_growth": 1})


def test_a_real_stage_reads_this_process(libpath):
    """In a process of its own: RSS and the C heap are the whole process's,
    and the threads earlier tests left in this one (a manager, an agent)
    would move them meanwhile."""
    library_or_skip()
    code = """
import json
import headroom
from headroom import stages
MIB = 1 << 20
kept = []
for _ in range(3):
    with headroom.stage("grow"):
        # Over glibc's largest mmap threshold (32 MiB): fresh pages, never
        # memory the heap already had.
        b = bytearray(40 * MIB)
        b[::4096] = b"\\x01" * len(b[::4096])
        kept.append(b)
print(json.dumps(stages.summary()[0]))
"""
    p = run_python(code, env={"HEADROOM_LIB": libpath})
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["name"] == "grow" and r["calls"] == 3
    assert r["rss_inside"] >= 39 * MIB  # written pages are resident
    if r["heap_inside"] is not None:  # glibc: the live heap grew by the blocks
        assert 40 * MIB <= r["heap_inside"] < 41 * MIB


def test_decorator_keeps_function_and_records():
    @headroom.stage("decode")
    def decode(x):
        """doc"""
        return x * 2

    assert decode(21) == 42 and decode.__name__ == "decode" and decode.__doc__ == "doc"
    assert stages.summary()[0]["calls"] == 1


def test_begin_end_and_errors():
    stages.begin("vae")
    stages.end("vae")
    assert stages.summary()[0]["name"] == "vae"
    with pytest.raises(ValueError, match="was not begun"):
        stages.end("vae")
    with pytest.raises(ValueError, match="non-empty"):
        headroom.stage("")
    with pytest.raises(ValueError, match="non-empty"):
        stages.begin("")
    stages.begin("vae")
    stages.begin("vae")  # a second begin restarts the call
    stages.end("vae")
    assert stages.summary()[0]["calls"] == 3
    assert stages.report().startswith("stage")
    stages.reset()
    assert stages.report() == "no stages recorded\n"


def test_rss_readings_follow_this_process_across_a_fork():
    import os

    from headroom.readings import procfs

    def vmrss():
        with open("/proc/self/status") as f:
            return int(next(x for x in f if x.startswith("VmRSS:")).split()[1]) * 1024

    assert abs(procfs.rss_bytes() - vmrss()) < 4 << 20
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the reading must be its own, not the parent's
        b = bytearray(64 * MIB)
        b[::4096] = b"\x01" * len(b[::4096])
        ok = abs(procfs.rss_bytes() - vmrss()) < 4 << 20
        os.write(w, b"1" if ok else b"0")
        os._exit(0)
    os.close(w)
    got = os.read(r, 1)
    os.waitpid(pid, 0)
    os.close(r)
    assert got == b"1"
    assert abs(procfs.rss_bytes() - vmrss()) < 4 << 20
