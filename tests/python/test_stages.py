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


def test_a_leaking_stage_shows_its_growth_per_call():
    headroom.free_memory("aggressive")
    kept = []
    for i in range(12):
        with headroom.stage("leaky"):
            kept.append(bytes([i + 1]) * (4 * MIB))
    for _ in range(12):
        with headroom.stage("steady"):
            tmp = b"\x07" * (4 * MIB)
            del tmp
    rows = {r["name"]: r for r in stages.summary()}
    leaky, steady = rows["leaky"], rows["steady"]
    assert leaky["calls"] == 12 and steady["calls"] == 12
    assert 3 * MIB <= leaky["rss_growth_per_call"] <= 5 * MIB
    assert leaky["leak"] and "per call over 12 calls" in leaky["leak_text"]
    assert abs(steady["rss_growth_per_call"]) < MIB and not steady["leak"]
    out = io.StringIO()
    text = stages.report(file=out)
    assert out.getvalue() == text
    assert "possible leak: leaky: RSS +" in text
    assert "possible leak: steady" not in text
    del kept


def test_report_phrase_from_recorded_numbers():
    # Exit RSS 100, 164, 228, 292 MiB: +64 MiB per call, which the report must say.
    for i in range(4):
        stages.record("unet", 0.01, (100 * MIB + 64 * MIB * i - MIB, 100 * MIB + 64 * MIB * i))
    r = stages.summary()[0]
    assert r["rss_growth_per_call"] == pytest.approx(64 * MIB)
    assert r["rss_inside"] == pytest.approx(MIB)
    assert r["vram_reserved_growth_per_call"] is None  # not measured
    assert "unet: RSS +64.0 MiB per call over 4 calls" in stages.report(file=None)


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


def test_cpu_tensors_kept_per_call_show_as_rss_growth():
    torch = torch_or_skip()
    kept = []
    # Free heap that earlier tests left resident would absorb the tensors
    # without RSS moving; hand it back first.
    headroom.free_memory("aggressive")
    for _ in range(8):
        with headroom.stage("frames"):
            kept.append(torch.ones(8 * MIB // 4, dtype=torch.float32))  # 8 MiB, written
    r = stages.summary()[0]
    assert 7 * MIB <= r["rss_growth_per_call"] <= 9 * MIB
    assert r["leak"]
