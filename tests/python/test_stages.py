"""stage() and stages.report(): growth per call shows a leak, a steady stage does not."""

import io

import pytest

import headroom
from headroom import stages

from conftest import torch_or_skip

MIB = 1 << 20


@pytest.fixture(autouse=True)
def clean():
    stages.reset()
    yield
    stages.reset()


def library_or_skip():
    from headroom.readings import detection

    if not detection.available():
        pytest.skip("the leak test is libheadroom's: %s" % detection.unavailable_reason())


LOOP = r"""
import ctypes, json, headroom
from headroom import stages
# glibc moves its mmap threshold up to the size of the last block freed, so
# a block one stage frees is reused by the next stage's allocation and the
# new pages are touched by whichever stage comes after: RSS then grows in
# the wrong stage. A fixed threshold (mallopt M_MMAP_THRESHOLD, -3) keeps
# each block of 1 MiB or more its own mapping, as large buffers are.
ctypes.CDLL(None).mallopt(-3, 1 << 20)
MIB = 1 << 20
kept = []
for i in range(40):
    with headroom.stage("face_swap"):
        tmp = bytes([i % 251 + 1]) * (4 * MIB)
        del tmp
    with headroom.stage("decode"):
        kept.append(bytes([i % 251 + 1]) * (2 * MIB))
    with headroom.stage("encode"):
        tmp = bytearray(6 * MIB)
        tmp[::4096] = b"\x01" * len(tmp[::4096])
        del tmp
print(json.dumps({"rows": stages.summary(), "text": stages.report(file=None)}))
"""


def test_only_the_stage_that_keeps_memory_is_named(libpath):
    # A real process running a real loop: face_swap and encode allocate and
    # free, decode keeps 2 MiB per call. Each stage is judged on its own net
    # change, so what decode keeps is never blamed on the stages after it.
    import json

    from conftest import run_python

    library_or_skip()
    r = run_python(LOOP, env={"HEADROOM_LIB": libpath})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    rows = {row["name"]: row for row in out["rows"]}
    assert [n for n, row in rows.items() if row["leak"]] == ["decode"], rows
    d = rows["decode"]
    assert 1.5 * MIB <= d["rss_growth_per_call"] <= 2.5 * MIB and d["calls"] == 40
    assert "over 38 calls" in d["leak_text"]  # the first two are warm-up
    for n in ("face_swap", "encode"):
        assert abs(rows[n]["rss_growth_per_call"]) < 256 << 10, rows[n]
    text = out["text"]
    assert "possible leak: decode: RSS +" in text
    assert "possible leak: face_swap" not in text and "possible leak: encode" not in text


def replay(name, nets, noise, seed, start_rss=3 << 30):
    """Records one call a second for len(nets) seconds: call i changes RSS
    by nets[i] plus seeded noise of +-noise bytes inside the stage; the
    process outside the stage moves too (other work), which must not count."""
    import random

    rnd = random.Random(seed)
    rss = start_rss
    for i, net in enumerate(nets):
        rss += rnd.randint(-50, 50) * MIB  # whatever ran between the stages
        entry = rss
        rss += net + rnd.randint(-noise, noise)
        stages.record(name, 0.05, (entry, rss), t=1000.0 + i)


def test_ten_minutes_of_load_sawtooth_and_plateau_raise_nothing():
    # Synthetic series (seeded noise) in the shapes the manager used to alarm
    # on, ten minutes at one call a second, replayed in a fraction of a second.
    library_or_skip()
    n = 600
    loads = [0] * n
    loads[100] = loads[160] = 2 << 30  # two model loads 60 s apart
    saw = [(64 * MIB if i % 10 else -9 * 64 * MIB) for i in range(n)]  # a cache flushed
    plateau = [(2 * MIB if i < 120 else 0) for i in range(n)]  # fills, then stays
    replay("load", loads, 256 << 10, 1)
    replay("sawtooth", saw, 256 << 10, 2)
    replay("plateau", plateau, 256 << 10, 3)
    replay("leak", [5 * MIB // 60] * n, 256 << 10, 4)  # 5 MB/min, the design's leak
    rows = {r["name"]: r for r in stages.summary()}
    assert [k for k, r in rows.items() if r["leak"]] == ["leak"], \
        {k: r["leak_text"] for k, r in rows.items()}
    assert " MiB/min" in rows["leak"]["leak_text"], rows["leak"]["leak_text"]


def test_report_phrase_from_recorded_numbers():
    library_or_skip()
    # Exit RSS 64 MiB above entry on every call, one call a second.
    for i in range(40):
        stages.record("unet", 0.01, (100 * MIB + 64 * MIB * i, 100 * MIB + 64 * MIB * (i + 1)),
                      t=float(i))
    r = stages.summary()[0]
    assert r["rss_growth_per_call"] == pytest.approx(64 * MIB)
    assert r["rss_inside"] == pytest.approx(64 * MIB)
    assert r["vram_reserved_growth_per_call"] is None  # not measured
    assert "possible leak: unet: RSS +64.0 MiB per call over 38 calls" in stages.report(file=None)


def test_warm_up_calls_do_not_count():
    library_or_skip()
    # A stage whose first call loads a model and whose later calls hold steady.
    stages.record("warm", 1.0, (MIB, 3 << 30), t=0.0)
    for i in range(1, 60):
        stages.record("warm", 0.01, (3 << 30, 3 << 30), t=float(i))
    r = stages.summary()[0]
    assert r["rss_growth_per_call"] == 0 and not r["leak"] and r["judged"]


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
    assert stages.report(file=None).startswith("stage")
    stages.reset()
    assert stages.report(file=None) == "no stages recorded\n"


def test_cpu_tensors_kept_per_call_show_as_rss_growth(libpath):
    import json

    from conftest import run_python

    torch_or_skip()
    library_or_skip()
    code = LOOP.split("kept = []")[0] + r"""
import torch
for _ in range(40):
    with headroom.stage("frames"):
        kept.append(torch.ones(2 * MIB // 4, dtype=torch.float32))  # 2 MiB, written
print(json.dumps(stages.summary()[0]))
""".replace("kept.append", "KEPT.append").replace("for _ in", "KEPT = []\nfor _ in")
    r = run_python(code, env={"HEADROOM_LIB": libpath})
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout)
    assert 1.5 * MIB <= row["rss_growth_per_call"] <= 2.5 * MIB
    assert row["leak"]
