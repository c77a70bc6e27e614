"""headroom.trace under attack: hand-built hostile pickles, files that never
end, and values that headroom replay would refuse. Each import runs as a real
process (``python3 -m headroom.trace import``) and must end within seconds
with exit status 1, one line on stderr (never a traceback), and no file left
beside the output; values replay accepts must still import and replay."""

import os
import pickle
import resource
import struct
import subprocess
import sys

import pytest

from conftest import cli_or_skip
from headroom import trace

P4 = b"\x80\x04"
DEEP = 100000


def _u8(s):
    b = s.encode()
    return b"\x8c" + bytes([len(b)]) + b


def _deep_list():
    return b"]" * DEEP + b"a" * (DEEP - 1)


def _snapshot_with_action(action_bytes):
    # {'segments': [], 'device_traces': [[{'action': ACTION}]]}
    return (P4 + b"}(" + _u8("segments") + b"]" + _u8("device_traces") + b"]]}" + _u8("action")
            + action_bytes + b"saau.")


def _dumps(obj):
    return pickle.dumps(obj, protocol=4)


def _seg_block(**blk):
    b = {"state": "active_allocated", "address": 8192, "size": 512}
    b.update(blk)
    return {"segments": [{"device": 0, "total_size": 2**21, "stream": 0, "blocks": [b]}],
            "device_traces": [[]]}


def _alloc(**kw):
    ev = {"action": "alloc", "addr": 4096, "size": 512, "stream": 0}
    ev.update(kw)
    return {"segments": [], "device_traces": [[ev]]}


HOSTILE = {
    # LONG_BINPUT at memo index 2^27: the C unpickler grew its memo to 2 GiB.
    "memo_2_27": b"Nr" + struct.pack("<I", 1 << 27) + b".",
    "memo_2_31": P4 + b"Nr" + struct.pack("<I", (1 << 31) - 1) + b".",
    "binbytes8_huge": P4 + b"\x8e" + struct.pack("<Q", 1 << 62) + b"abc.",
    "binunicode8_huge": P4 + b"\x8d" + struct.pack("<Q", 1 << 62) + b"abc.",
    "bytearray8_huge": b"\x80\x05\x96" + struct.pack("<Q", 1 << 40) + b"abc.",
    "frame_huge": P4 + b"\x95" + struct.pack("<Q", 1 << 62) + b"N.",
    "long4_huge": P4 + b"\x8b" + struct.pack("<i", 2**31 - 1) + b"\x01.",
    "deep_nesting": P4 + _deep_list() + b".",
    "deep_action": _snapshot_with_action(_deep_list()),
    "deep_marks": P4 + b"(" * DEEP + b".",
    "global": P4 + _u8("os") + _u8("system") + b"\x93.",
    "nan_size": _dumps(_alloc(size=float("nan"))),
    "nan_requested_size": _dumps(_seg_block(requested_size=float("nan"))),
    "inf_time": _dumps(_alloc(time_us=float("inf"))),
    "str_requested_size": _dumps(_seg_block(requested_size="x")),
    "negative_requested_size": _dumps(_seg_block(requested_size=-5)),
    "negative_size": _dumps(_alloc(size=-1)),
    "size_2_70": _dumps(_alloc(size=2**70)),
    "stream_2_64": _dumps(_alloc(stream=2**64)),
    "device_10_6": _dumps({"segments": [{"device": 10**6, "total_size": 2**21, "stream": 0,
                                         "blocks": []}], "device_traces": []}),
    "device_traces_2000": _dumps({"segments": [], "device_traces": [[]] * 2000}),
    "conf_not_str": _dumps({"segments": [], "device_traces": [[_alloc()["device_traces"][0][0]]],
                            "allocator_settings": {"PYTORCH_CUDA_ALLOC_CONF": ["x"]}}),
    "total_size_2_64": _dumps({"segments": [{"device": 0, "total_size": 2**64, "stream": 0,
                                             "blocks": []}], "device_traces": []}),
    "empty": b"",
    "truncated": _dumps(_alloc())[:-3],
}


def _import(src, out, timeout=30):
    return subprocess.run([sys.executable, "-m", "headroom.trace", "import", str(src), "-o",
                           str(out), "-q"], capture_output=True, text=True, timeout=timeout)


def _check_refused(r, tmp_path, src):
    assert r.returncode == 1, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("headroom.trace: error: %s" % src), r.stderr
    assert "Traceback" not in r.stderr
    left = sorted(f for f in os.listdir(tmp_path) if f != os.path.basename(str(src)))
    assert left == [], left


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_pickle_refused(name, tmp_path):
    src = tmp_path / (name + ".pickle")
    src.write_bytes(HOSTILE[name])
    r = _import(src, tmp_path / "out.hrt")
    _check_refused(r, tmp_path, src)


def test_memo_bomb_is_cheap(tmp_path):
    """Nine bytes took 2.1 GB and 4.5 s; now they fail at once in a few MiB.
    A fresh parent process so that its children's peak RSS is this one's."""
    src = tmp_path / "memo.pickle"
    src.write_bytes(HOSTILE["memo_2_27"])
    probe = ("import resource, subprocess, sys, time\n"
             "t = time.monotonic()\n"
             "r = subprocess.run([sys.executable, '-m', 'headroom.trace', 'import', sys.argv[1],"
             " '-o', sys.argv[2]], capture_output=True)\n"
             "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,"
             " time.monotonic() - t)\n")
    r = subprocess.run([sys.executable, "-c", probe, str(src), str(tmp_path / "o.hrt")],
                       capture_output=True, text=True, timeout=60)
    rc, rss_kib, secs = r.stdout.split()
    assert int(rc) == 1
    assert int(rss_kib) < 200 * 1024, rss_kib
    assert float(secs) < 10, secs


def test_not_a_regular_file(tmp_path):
    for src in ("/dev/zero", str(tmp_path)):
        r = _import(src, tmp_path / "out.hrt")
        assert r.returncode == 1
        assert "not a regular file" in r.stderr or "Is a directory" in r.stderr
    fifo = tmp_path / "fifo.csv"
    os.mkfifo(fifo)
    r = _import(fifo, tmp_path / "out.hrt", timeout=20)
    assert r.returncode == 1 and "not a regular file (a FIFO)" in r.stderr, r.stderr


@pytest.mark.parametrize("name", ["fifo.pickle", "fifo.csv", "fifo"])
def test_a_fifo_is_refused_before_anything_is_read(tmp_path, name):
    """A writer holds the FIFO open with a whole input inside, so a reader
    that opened it would read instead of waiting: the bytes must still be
    there after the refusal, whichever way the input's kind is guessed."""
    fifo = tmp_path / name
    os.mkfifo(fifo)
    fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    try:
        content = b"Thread,Time,Action,Pointer,Size,Stream\n" if "csv" in name else _dumps({})
        os.write(fd, content)
        with pytest.raises(trace.TraceError, match=r"not a regular file \(a FIFO\)"):
            trace.import_file(str(fifo))
        assert trace.main(["sizes", str(fifo)]) == 1
        assert os.read(fd, 1000) == content
    finally:
        os.close(fd)
    with pytest.raises(trace.TraceError, match=r"not a regular file \(a character device\)"):
        trace.import_file("/dev/null")


def test_oversized_input(tmp_path, monkeypatch):
    src = tmp_path / "big.pickle"
    src.write_bytes(b"\x00" * 4096)
    monkeypatch.setattr(trace, "MAX_INPUT_BYTES", 1024)
    with pytest.raises(trace.TraceError, match="4096 bytes, more than the 1024"):
        trace.import_file(str(src))


def test_memory_limit_restored(tmp_path):
    """The address-space limit is lowered for the import only."""
    before = resource.getrlimit(resource.RLIMIT_AS)
    src = tmp_path / "memo.pickle"
    src.write_bytes(HOSTILE["memo_2_27"])
    assert trace.main(["import", str(src), "-o", str(tmp_path / "o.hrt"), "-q"]) == 1
    assert resource.getrlimit(resource.RLIMIT_AS) == before


def test_rmm_values_checked(tmp_path):
    src = tmp_path / "log.csv"
    src.write_text("Thread,Time,Action,Pointer,Size,Stream\n"
                   "1,0.5,allocate,0x1000,%d,0\n" % 2**70)
    r = _import(src, tmp_path / "out.hrt")
    _check_refused(r, tmp_path, src)


def test_accepted_values_replay(tmp_path):
    """Inputs at the edges of what is accepted import, and replay reads the
    result: a segment freed before it is allocated (the reserved timeline is
    raised so that it never goes below zero) and device 1024."""
    cli = cli_or_skip()
    snap = {"segments": [{"device": 1024, "total_size": 2**21, "stream": 0, "blocks": []}],
            "device_traces": [[{"action": "segment_free", "addr": 1, "size": 2**21, "stream": 0},
                               {"action": "segment_alloc", "addr": 1, "size": 2**21,
                                "stream": 0},
                               {"action": "alloc", "addr": 4096, "size": 2**40, "stream": 7},
                               {"action": "free_completed", "addr": 4096, "size": 2**40,
                                "stream": 7}]]}
    src = tmp_path / "edge.pickle"
    src.write_bytes(_dumps(snap))
    out = tmp_path / "edge.hrt"
    r = _import(src, out)
    assert r.returncode == 0, r.stderr
    rep = subprocess.run([cli, "replay", str(out), "--json"], capture_output=True, text=True,
                         timeout=60)
    assert rep.returncode == 0, rep.stderr
    assert rep.stdout.count('"device"') == 2
