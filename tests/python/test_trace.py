"""Tests for headroom.trace: the snapshot and RMM importers and the written
format. Standard library plus pytest; libheadroom is not needed."""

import os
import pickle
import pickletools
import subprocess
import sys

import pytest

from headroom import trace

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
TRACES = os.path.join(os.path.dirname(REPO), "shared", "traces")

# PyTorch peak reserved / peak live per device, as ../shared/traces/README.md
# records them (computed there by the same rules the importer follows).
README_RATIOS = {
    "cs336-ctx128-fullstep": [1.115],
    "cs336-ctx256-forward-mixed": [1.021],
    "decomfl-zo-finetune": [1.064],
    "codeqwen-lora-finetune": [1.101],
    "llama-inference-10streams": [1.083],
    "qwen3-train-3gpu-expandable": [1.010, 1.002, 1.015],
}


def real_traces():
    if not os.path.isdir(TRACES):
        return []
    return sorted(f for f in os.listdir(TRACES) if f.endswith(".pickle"))


def parse_trace(path):
    """Reads a written trace back: (header lines, {device: (fields, lines)}).
    T lines are left out of the events: see read_times."""
    with open(path) as f:
        lines = [l.rstrip("\n") for l in f]
    assert lines[0] == "headroom-trace 2"
    assert lines[-1] == "end"
    devices = {}
    cur = None
    for l in lines[1:-1]:
        if l.startswith("device "):
            parts = l.split()
            fields = dict(p.split("=", 1) for p in parts[2:])
            cur = devices.setdefault(int(parts[1]), (fields, []))
        elif cur is not None and l and not l.startswith("#") and not l.startswith("T "):
            cur[1].append(l.split())
    return lines, devices


def read_times(path):
    """{device: (T values in microseconds, in order; the time of each event,
    L lines included)}, T values resolved from their absolute or +N form."""
    out = {}
    cur = None
    with open(path) as f:
        for l in f:
            l = l.rstrip("\n")
            if l.startswith("device "):
                cur = out.setdefault(int(l.split()[1]), ([], []))
                now = 0
            elif l.startswith("T "):
                v = l[2:]
                now = now + int(v[1:]) if v.startswith("+") else int(v)
                cur[0].append(now)
            elif cur is not None and l[:2] in ("L ", "A ", "F ", "R ", "O "):
                cur[1].append(now)
    return out


def replay_live(events):
    """Live bytes from L/A/F lines, checking slots: returns (start, peak)."""
    live_slots = {}
    live = 0
    for e in events:
        if e[0] == "L":
            assert e[1] not in live_slots
            live_slots[e[1]] = int(e[2])
            live += int(e[2])
    start = peak = live
    for e in events:
        if e[0] == "A":
            assert e[1] not in live_slots, "slot reused while live"
            live_slots[e[1]] = int(e[2])
            live += int(e[2])
            peak = max(peak, live)
        elif e[0] == "F":
            live -= live_slots.pop(e[1])
    return start, peak


# ---- real traces ----------------------------------------------------------


@pytest.mark.parametrize("name", real_traces() or ["(none)"])
def test_import_real_trace(name, tmp_path):
    if name == "(none)":
        pytest.skip("no traces: %s is absent or empty" % TRACES)
    out = tmp_path / "t.hrt"
    assert trace.main(["import", os.path.join(TRACES, name), "-o", str(out), "-q"]) == 0
    _, devices = parse_trace(out)
    stem = name[:-len(".pickle")]
    ratios = [int(f["pytorch_peak_reserved"]) / int(f["pytorch_peak_live"])
              for f, _ in devices.values() if int(f["ops"]) > 0]
    if stem in README_RATIOS:
        assert [round(r, 3) for r in ratios] == README_RATIOS[stem]
    for dev, (fields, events) in devices.items():
        n_ops = sum(1 for e in events if e[0] in "AF")
        assert n_ops == int(fields["ops"])
        assert sum(1 for e in events if e[0] == "L") == int(fields["initial"])
        used = {e[1] for e in events if e[0] in "LA"}
        assert len(used) == int(fields["slots"])
        _, peak = replay_live(events)
        assert peak == int(fields["pytorch_peak_live"])
        # PyTorch's reserved timeline never goes below zero and peaks where it says.
        reserved = peak_r = int(fields["pytorch_reserved_start"])
        for e in events:
            if e[0] == "R":
                reserved += int(e[1])
                assert reserved >= 0
                peak_r = max(peak_r, reserved)
        assert peak_r == int(fields["pytorch_peak_reserved"])
        assert peak_r >= peak


@pytest.mark.parametrize("name", real_traces() or ["(none)"])
def test_real_trace_times(name, tmp_path):
    """Each event's time is its time_us less the section's first kept one, and
    never goes back; T lines start at 0 and are written only on a change."""
    if name == "(none)":
        pytest.skip("no traces: %s is absent or empty" % TRACES)
    path = os.path.join(TRACES, name)
    out = tmp_path / "t.hrt"
    assert trace.main(["import", path, "-o", str(out), "-q"]) == 0
    snap = trace.load_snapshot(path)
    _, devices = parse_trace(out)
    times = read_times(out)
    for dev, (fields, events) in devices.items():
        kept = [e for e in snap["device_traces"][dev]
                if trace.PYTORCH_ACTIONS[e["action"]] != "ignore"] \
            if dev < len(snap["device_traces"]) else []
        stamps = [e.get("time_us") for e in kept]
        t_lines, ev_times = times[dev]
        if all(t is None for t in stamps):
            assert "duration_us" not in fields and not t_lines
            continue
        assert t_lines[0] == 0
        assert all(a < b for a, b in zip(t_lines, t_lines[1:])), "T lines only on a change"
        base = next(t for t in stamps if t is not None)
        want, now = [], 0
        for t in stamps:
            if t is not None:
                now = max(now, t - base)
            want.append(now)
        n_initial = int(fields["initial"])
        assert ev_times[:n_initial] == [0] * n_initial
        assert ev_times[n_initial:] == want
        assert int(fields["duration_us"]) == want[-1] > 0


# ---- synthetic snapshots --------------------------------------------------


def ev(action, addr, size, stream=0, time_us=None):
    e = {"action": action, "addr": addr, "size": size, "stream": stream, "frames": []}
    if time_us is not None:
        e["time_us"] = time_us
    return e


def snapshot(events, segments=None):
    return {"segments": segments or [], "device_traces": [events],
            "allocator_settings": {"PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:64"}}


def write_pickle(tmp_path, obj, name="s.pickle", protocol=4):
    p = tmp_path / name
    p.write_bytes(pickle.dumps(obj, protocol=protocol))
    return str(p)


def test_pairs_by_address_and_reconstructs_pre_window(tmp_path):
    seg = {"device": 0, "address": 0x1000, "total_size": 4 << 20, "stream": 0,
           "is_expandable": False, "blocks": [
               {"address": 0x1000, "size": 1 << 20, "requested_size": 1000, "state": "active_allocated"},
               {"address": 0x101000, "size": 1 << 20, "requested_size": 3000, "state": "active_allocated"},
               {"address": 0x201000, "size": 2 << 20, "requested_size": 0, "state": "inactive"}]}
    events = [
        ev("free_requested", 0x9000, 500),
        ev("free_completed", 0x9000, 500),  # allocated before the window
        ev("segment_alloc", 0x1000, 4 << 20),
        ev("alloc", 0x101000, 3000),
        ev("alloc", 0x201000, 2000),
        ev("free_requested", 0x201000, 2000),  # not reusable yet
        ev("alloc", 0x301000, 100, stream=7),
        ev("free_completed", 0x201000, 2000),
        ev("alloc", 0x201000, 4000),  # same address, a new block
        ev("free_completed", 0x201000, 4000),
        {"action": "snapshot"},
        {"action": "oom", "size": 1 << 30, "stream": 0, "addr": 0},
    ]
    p = write_pickle(tmp_path, snapshot(events, [seg]))
    out = tmp_path / "t.hrt"
    trace.import_to(p, str(out))
    lines, devices = parse_trace(out)
    assert "alloc_conf max_split_size_mb:64" in lines
    fields, evs = devices[0]
    # 0x9000 (freed in the window, never allocated) and 0x1000 (final segment,
    # never allocated) were live before the window.
    assert sorted(int(e[2]) for e in evs if e[0] == "L") == [500, 1000]
    assert fields["initial"] == "2"
    assert fields["ops"] == "7"  # 4 allocs, 2 frees that pair, the pre-window free
    kinds = [e[0] for e in evs if e[0] != "L"]
    assert kinds == ["F", "R", "A", "A", "A", "F", "A", "F", "O"]
    assert [e[2:] for e in evs if e[0] == "A"] == [["3000", "0"], ["2000", "0"], ["100", "7"],
                                                   ["4000", "0"]]
    # Reserved: the final segments hold 4 MiB, the window added 4 MiB, so it
    # started at 0 and peaked at 4 MiB.
    assert fields["pytorch_reserved_start"] == "0"
    assert fields["pytorch_peak_reserved"] == str(4 << 20)
    # Live: 1500 at start, -500, +3000, +2000, +100, -2000, +4000 -> 8100 peak.
    assert replay_live(evs) == (1500, 8100)
    assert fields["pytorch_peak_live"] == "8100"
    assert fields["pytorch_ooms"] == "1"


def test_snapshot_times_exact(tmp_path):
    """Times relative to the first kept event; an event without time_us, or
    with one earlier than the last, keeps the last; T written on changes only,
    as +N where that is shorter."""
    t0 = 1763324225770003
    events = [
        ev("free_requested", 0x9000, 500, time_us=t0 - 50),  # dropped: not the base
        ev("alloc", 0x1000, 100, time_us=t0),
        ev("alloc", 0x2000, 200, time_us=t0),  # same time: no T line
        ev("free_requested", 0x1000, 100, time_us=t0 + 10),
        ev("free_completed", 0x1000, 100, time_us=t0 + 1234567),
        ev("segment_alloc", 0x8000, 2 << 20),  # no time: keeps the last
        ev("alloc", 0x3000, 300, time_us=t0 + 1234000),  # earlier: keeps the last
        ev("free_completed", 0x2000, 200, time_us=t0 + 1234599),
        ev("oom", 0, 1 << 40, time_us=t0 + 2000000),
    ]
    p = write_pickle(tmp_path, snapshot(events))
    out = tmp_path / "t.hrt"
    assert trace.main(["import", p, "-o", str(out), "-q"]) == 0
    lines, devices = parse_trace(out)
    fields, evs = devices[0]
    assert fields["duration_us"] == "2000000"
    assert [e[0] for e in evs] == ["A", "A", "F", "R", "A", "F", "O"]
    t_lines, ev_times = read_times(out)[0]
    assert ev_times == [0, 0, 1234567, 1234567, 1234567, 1234599, 2000000]
    assert t_lines == [0, 1234567, 1234599, 2000000]
    body = [l for l in lines if l.startswith("T ")]
    assert body == ["T 0", "T 1234567", "T +32", "T 2000000"]


def test_snapshot_without_times(tmp_path):
    p = write_pickle(tmp_path, snapshot([ev("alloc", 0x1000, 100), ev("free_completed", 0x1000, 100)]))
    out = tmp_path / "t.hrt"
    assert trace.main(["import", p, "-o", str(out), "-q"]) == 0
    lines, devices = parse_trace(out)
    assert "duration_us" not in devices[0][0]
    assert not any(l.startswith("T ") for l in lines)


def test_snapshot_bad_time(tmp_path):
    p = write_pickle(tmp_path, snapshot([ev("alloc", 0x1000, 100, time_us="soon")]))
    with pytest.raises(trace.TraceError, match=r"device_traces\[0\]\[0\]: field 'time_us'"):
        trace.import_file(p)


def test_slots_are_reused(tmp_path):
    events = []
    for i in range(100):
        events += [ev("alloc", 0x1000 + i * 0x1000, 512), ev("free_completed", 0x1000 + i * 0x1000, 512)]
    out = tmp_path / "t.hrt"
    trace.import_to(write_pickle(tmp_path, snapshot(events)), str(out))
    fields, _ = parse_trace(out)[1][0]
    assert fields["slots"] == "1"


# ---- hostile and broken input --------------------------------------------


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, ("touch %s" % self.marker,))


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_hostile_pickle_is_refused_and_nothing_runs(tmp_path, protocol):
    marker = tmp_path / "pwned"
    evil = pickle.dumps(snapshot([ev("alloc", 1, 2)] + [_Evil(marker)]), protocol=protocol)
    # The pickle is genuinely hostile: a plain load in another process runs it.
    probe = tmp_path / "probe.pickle"
    probe.write_bytes(evil)
    subprocess.run([sys.executable, "-c", "import pickle,sys; pickle.load(open(sys.argv[1],'rb'))",
                    str(probe)], check=False)
    assert marker.exists(), "the control load should have run os.system"
    marker.unlink()
    with pytest.raises(trace.TraceError) as ei:
        trace.import_to(str(probe), str(tmp_path / "out.hrt"))
    msg = str(ei.value)
    assert "refused" in msg and "system" in msg and "nothing in it was run" in msg
    assert not marker.exists()
    assert not (tmp_path / "out.hrt").exists()
    # The command line says so too, with a non-zero exit.
    r = subprocess.run([sys.executable, "-m", "headroom.trace", "import", str(probe), "-o",
                        str(tmp_path / "out.hrt")], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=os.path.join(REPO, "python")))
    assert r.returncode == 1
    assert "refused" in r.stderr
    assert not marker.exists()


def test_hostile_pickle_via_inst_opcode(tmp_path):
    marker = tmp_path / "pwned"
    # Protocol 0 INST opcode: 'i' module\n name\n, which also goes through find_class.
    data = b"(S'touch %s'\nios\nsystem\n." % str(marker).encode()
    pickletools.dis(data, out=open(os.devnull, "w"))
    p = tmp_path / "inst.pickle"
    p.write_bytes(data)
    with pytest.raises(trace.TraceError, match="refused"):
        trace.load_snapshot(str(p))
    assert not marker.exists()


def test_truncated_pickle(tmp_path):
    events = [ev("alloc", i * 4096, 512) for i in range(1, 200)]
    data = pickle.dumps(snapshot(events), protocol=4)
    for cut in (1, len(data) // 3, len(data) - 1):
        p = tmp_path / "cut.pickle"
        p.write_bytes(data[:cut])
        with pytest.raises(trace.TraceError, match="truncated"):
            trace.load_snapshot(str(p))


def test_truncated_real_trace(tmp_path):
    names = real_traces()
    if not names:
        pytest.skip("no traces: %s is absent or empty" % TRACES)
    data = open(os.path.join(TRACES, names[0]), "rb").read()
    p = tmp_path / "cut.pickle"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(trace.TraceError, match="truncated"):
        trace.load_snapshot(str(p))


def test_empty_and_garbage(tmp_path):
    p = tmp_path / "empty.pickle"
    p.write_bytes(b"")
    with pytest.raises(trace.TraceError, match="empty file"):
        trace.import_file(str(p))
    p.write_bytes(b"\x80\x04this is not a pickle at all")
    with pytest.raises(trace.TraceError, match="pickle"):
        trace.import_file(str(p))
    with pytest.raises(trace.TraceError, match="cannot read"):
        trace.import_file(str(tmp_path / "missing.pickle"))


@pytest.mark.parametrize("obj,what", [
    ([1, 2, 3], "found list"),
    ({"segments": []}, "no 'device_traces' key"),
    ({"segments": {}, "device_traces": []}, "'segments' should be a list"),
    ({"segments": [], "device_traces": [[5]]}, r"device_traces\[0\]\[0\]: an event should be a dict"),
    ({"segments": [], "device_traces": [[ev("alloc", 1, "big")]]},
     r"device_traces\[0\]\[0\]: field 'size' should be an integer"),
    ({"segments": [], "device_traces": [[ev("alloc", 1, 2), ev("bogus", 1, 2)]]},
     r"device_traces\[0\]\[1\]: unknown action 'bogus'"),
    ({"segments": [], "device_traces": [[ev("alloc", 8, 2), ev("alloc", 8, 2)]]},
     r"device_traces\[0\]\[1\]: alloc at 0x8, which is already live"),
    ({"segments": [{"device": 0, "total_size": 1, "blocks": 3}], "device_traces": []},
     r"segments\[0\]: 'blocks' should be a list"),
    ({"segments": [], "device_traces": [[]]}, "no events and no segments"),
])
def test_wrong_structure(tmp_path, obj, what):
    p = write_pickle(tmp_path, obj)
    with pytest.raises(trace.TraceError, match=what) as ei:
        trace.import_to(p, str(tmp_path / "o.hrt"))
    assert str(ei.value).startswith(p)
    assert not (tmp_path / "o.hrt").exists()
    assert trace.main(["import", p, "-o", str(tmp_path / "o.hrt")]) == 1


# ---- RMM ------------------------------------------------------------------

RMM_LOG = """Thread,Time,Action,Pointer,Size,Stream
140,08:00:00.000001,allocate,0x7f0000000000,1000,0x0
140,08:00:00.000002,allocate,0x7f0000100000,2000,0x5
140,08:00:00.000003,free,0x7f0000000000,1000,0x0
140,08:00:00.000004,free,0x7f00000f0000,300,0x0
140,08:00:00.000005,allocate failure,0x0,99999999999,0x0
140,08:00:00.000006,allocate,0x7f0000000000,4000,0x0
"""


def test_rmm_csv(tmp_path):
    p = tmp_path / "rmm.csv"
    p.write_text(RMM_LOG)
    out = tmp_path / "t.hrt"
    assert trace.main(["import", str(p), "-o", str(out), "-q"]) == 0
    lines, devices = parse_trace(out)
    assert "source rmm-csv rmm.csv" in lines
    fields, evs = devices[0]
    assert fields["ops"] == "5" and fields["initial"] == "1"
    assert [e[0] for e in evs] == ["L", "A", "A", "F", "F", "O", "A"]
    assert evs[0][2] == "300"
    assert evs[2][3] == "5"  # stream 0x5
    assert evs[5] == ["O", "99999999999", "0"]
    assert replay_live(evs) == (300, 6000)
    assert fields["duration_us"] == "5"
    assert read_times(out)[0][1] == [0, 0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize("times,want", [
    # seconds since the epoch, as newer RMM versions write them
    (["1634567890.123456", "1634567890.2", "", "1634567891"], [0, 76544, 76544, 876544]),
    # a clock time that passes midnight
    (["23:59:59.999999", "00:00:00.000001", "00:00:01.5"], [0, 2, 1500001]),
])
def test_rmm_times(tmp_path, times, want):
    rows = ["Thread,Time,Action,Pointer,Size,Stream"]
    for i, t in enumerate(times):
        rows.append("1,%s,allocate,0x%x,16,0" % (t, 0x1000 * (i + 1)))
    p = tmp_path / "rmm.csv"
    p.write_text("\n".join(rows) + "\n")
    out = tmp_path / "t.hrt"
    assert trace.main(["import", str(p), "-o", str(out), "-q"]) == 0
    assert read_times(out)[0][1] == want


@pytest.mark.parametrize("text,what", [
    ("Thread,Time,Pointer\n", "no column Action, Size"),
    ("Thread,Time,Action,Pointer,Size,Stream\n1,1.0,allocate,0x10,12\n", r":2: 5 fields"),
    ("Thread,Time,Action,Pointer,Size,Stream\n1,1.0,allocate,0x10,1x2,0x0\n", r":2: bad number"),
    ("Thread,Time,Action,Pointer,Size,Stream\n1,1.0,allocate,0x10,1,0\n1,1.0,resize,0x10,1,0\n",
     r":3: unknown action 'resize'"),
    ("Thread,Time,Action,Pointer,Size,Stream\n1,1.0,allocate,0x10,1,0\n1,t,free,0x10,1,0\n",
     r":3: bad time 't'"),
    ("Thread,Time,Action,Pointer,Size,Stream\n1,10:00,allocate,0x10,1,0\n",
     r":2: bad time '10:00'"),
    ("", "empty file"),
])
def test_rmm_errors(tmp_path, text, what):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(trace.TraceError, match=what):
        trace.import_file(str(p))


# ---- import then replay (needs the CLI) -----------------------------------


@pytest.mark.parametrize("name", real_traces() or ["(none)"])
def test_replay_pytorch_config_matches_recorded(name, tmp_path):
    """The replay's own validation: PyTorch's policy, replayed, reserves within
    3% of what PyTorch recorded, on every device of every trace."""
    import json
    if name == "(none)":
        pytest.skip("no traces: %s is absent or empty" % TRACES)
    cli = os.environ.get("HEADROOM_CLI")
    if not cli or not os.access(cli, os.X_OK):
        pytest.skip("HEADROOM_CLI is not set to the headroom binary")
    out = tmp_path / "t.hrt"
    assert trace.main(["import", os.path.join(TRACES, name), "-o", str(out), "-q"]) == 0
    r = subprocess.run([cli, "--log-level", "error", "replay", str(out), "--conf", "pytorch",
                        "--conf", "default", "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(l) for l in r.stdout.splitlines()]
    assert {row["config"] for row in rows} == {"pytorch", "default"}
    for row in rows:
        assert row["trace"] == "t.hrt"
        assert row["peak_reserved_bytes"] >= row["peak_live_bytes"] > 0
        if row["config"] == "pytorch":
            rec = row["pytorch_peak_reserved_bytes"]
            assert abs(row["peak_reserved_bytes"] - rec) <= 0.03 * rec, row


def test_sizes_prints_each_allocation_and_skips_bad_files(tmp_path, capsys):
    good = write_pickle(tmp_path, snapshot([
        ev("alloc", 0x1000, 512), ev("alloc", 0x2000, 3 << 20),
        ev("free_requested", 0x1000, 512), ev("free_completed", 0x1000, 512)]))
    bad = tmp_path / "bad.pickle"
    bad.write_bytes(b"not a pickle")
    assert trace.main(["sizes", good, str(bad)]) == 0
    out, err = capsys.readouterr()
    assert out.split() == ["512", str(3 << 20)]
    assert "skipped" in err and "bad.pickle" in err
    assert trace.main(["sizes", str(bad)]) == 1
