"""headroom.snapshot(): the same keys as `headroom status --json`, read
through the library; fixture roots; errors carry the probe's reason."""

import json
import os
import subprocess

import pytest

import headroom
from headroom import _lib

from conftest import REPO


@pytest.fixture
def lib(fresh_loader, libpath):
    fresh_loader.setenv("HEADROOM_LIB", libpath)
    if not _lib.has("hr_snapshot_json"):
        pytest.skip("this libheadroom has no probe")
    return _lib.load()


def cli_json():
    cli = os.environ.get("HEADROOM_CLI") or os.path.join(REPO, "build", "release", "headroom")
    if not os.path.exists(cli):
        pytest.skip("headroom CLI not built at %s (set HEADROOM_CLI)" % cli)
    r = subprocess.run([cli, "status", "--json"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def keys(d, prefix=""):
    out = set()
    for k, v in d.items():
        out.add(prefix + k)
        if isinstance(v, dict):
            out |= keys(v, prefix + k + ".")
    return out


def test_same_keys_as_the_cli(lib):
    snap = headroom.snapshot()
    ref = cli_json()
    assert keys(snap) == keys(ref)
    assert snap["schema_version"] == ref["schema_version"]
    assert snap["processes"] and ref["processes"]
    assert set(snap["processes"][0]) == set(ref["processes"][0])
    assert abs(snap["host"]["total_bytes"] - ref["host"]["total_bytes"]) == 0


def test_this_process_is_in_it(lib):
    snap = headroom.snapshot(what=["host", "procs"])
    me = [p for p in snap["processes"] if p["pid"] == os.getpid()]
    assert len(me) == 1 and me[0]["rss_bytes"] > 0
    assert snap["host"]["state"] == "ok" and snap["host"]["total_bytes"] > 0


def test_no_gpu_is_a_state_not_an_error(lib):
    gpu = headroom.snapshot(what=["gpus"])["gpu"]
    assert gpu["state"] in ("ok", "absent", "denied", "error")
    if gpu["state"] != "ok":
        assert gpu["message"] and gpu["devices"] == []


def _fixture_root(tmp, meminfo):
    (tmp / "proc").mkdir()
    (tmp / "proc" / "meminfo").write_text(meminfo)
    return str(tmp)


def test_fixture_root(lib, tmp_path):
    root = _fixture_root(tmp_path, "MemTotal: 1000 kB\nMemFree: 200 kB\nMemAvailable: 600 kB\n")
    host = headroom.snapshot(root=root, what=["host"])["host"]
    assert host["total_bytes"] == 1000 * 1024 and host["available_bytes"] == 600 * 1024


def test_broken_meminfo_raises_with_the_reason(lib, tmp_path):
    root = _fixture_root(tmp_path, "MemTotal: lots kB\nMemFree: 200 kB\n")
    with pytest.raises(headroom.HeadroomError) as ei:
        headroom.snapshot(root=root, what=["host"])
    assert "MemTotal" in str(ei.value) and ei.value.code < 0


def test_bad_what(lib):
    with pytest.raises(ValueError, match="unknown probe part 'disks'"):
        headroom.snapshot(what=["host", "disks"])
    with pytest.raises(ValueError, match="combination of the probe bits"):
        headroom.snapshot(what=1 << 9)
