"""The charts of the real CLI are well-formed XML whatever the names hold.

`headroom replay --svg` titles each panel with the trace's file name and
`headroom history --svg` labels each process with its name; both go through
the one SVG writer, which escapes & < > " ' and writes bytes that are not
UTF-8 as U+FFFD. Each chart is parsed with xml.etree.ElementTree."""

import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import pytest

from conftest import cli_or_skip

SVG_NS = "{http://www.w3.org/2000/svg}"
SPECIAL = "a&b<c>\"d'e"  # 10 bytes: fits a process name (15 at most)

TRACE = ("headroom-trace 1\n"
         "source hand-written\n"
         "device 0 slots=4 initial=1 ops=6 pytorch_reserved_start=0 "
         "pytorch_peak_reserved=54525952 pytorch_peak_live=31458280 pytorch_ooms=0\n"
         "L 0 1000 0\nA 1 5242880 0\nR +2097152\nR +20971520\nA 2 4194304 0\n"
         "F 1\nF 2\nR +31457280\nA 3 31457280 0\nF 3\nend\n")


def texts(path):
    """Every <text> of the SVG at path, parsed strictly."""
    root = ET.parse(path).getroot()
    assert root.tag == SVG_NS + "svg"
    return ["".join(t.itertext()) for t in root.iter(SVG_NS + "text")]


@pytest.mark.parametrize("name", [SPECIAL + ".trace", "<&>.trace", b"bad\xff\xfe&.trace"])
def test_replay_svg_escapes_the_trace_name(tmp_path, name):
    cli = cli_or_skip()
    trace = os.path.join(os.fsencode(tmp_path), os.fsencode(name))
    with open(trace, "w") as f:
        f.write(TRACE)
    svg = tmp_path / "replay.svg"
    r = subprocess.run([cli, "replay", trace, "--conf", "default", "--conf", SPECIAL,
                        "--svg", str(svg)], capture_output=True, timeout=120)
    # The second --conf is not an allocator setting: that replay fails and
    # says so, and the chart still holds the first.
    assert svg.exists(), r.stderr
    t = texts(svg)
    shown = name if isinstance(name, str) else "bad\ufffd\ufffd&.trace"
    assert any(x.startswith(shown + ", device 0") for x in t), t


def test_replay_svg_escapes_conf_labels(tmp_path):
    cli = cli_or_skip()
    trace = tmp_path / "t.trace"
    trace.write_text(TRACE)
    svg = tmp_path / "replay.svg"
    r = subprocess.run([cli, "replay", str(trace), "--conf", "default", "--conf",
                        "garbage_collection_threshold:0.6", "--svg", str(svg)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    t = texts(svg)
    # Each configuration's label keeps its first 24 bytes.
    assert "headroom reserved, default" in t
    assert "headroom reserved, garbage_collection_thres" in t
    assert "PyTorch reserved (recorded)" in t and "memory" in t


def _named_child(name_bytes, seconds):
    """A real process whose name (comm) is name_bytes, that lives `seconds`."""
    code = ("import sys, time\n"
            "open('/proc/self/comm', 'wb').write(%r)\n"
            "sys.stdout.write('ready\\n'); sys.stdout.flush()\n"
            "x = [bytearray(4 << 20) for _ in range(4)]\n"
            "time.sleep(%r)\n" % (name_bytes, seconds))
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert p.stdout.readline() == b"ready\n"
    return p


def test_history_svg_escapes_process_names(tmp_path):
    cli = cli_or_skip()
    fake_nvml = os.path.join(os.path.dirname(cli), "helpers", "libfake-nvml-v3.so")
    if not os.path.exists(fake_nvml):
        pytest.skip("the stand-in NVML is not built at %s" % fake_nvml)
    kids = [_named_child(SPECIAL.encode(), 30), _named_child(b"x\xff\xfey<", 30)]
    try:
        db = tmp_path / "h.db"
        env = dict(os.environ)
        # The stand-in NVML gives the children GPU memory, so the process
        # panel has a second axis and they rank among the top processes
        # whatever else runs; a low warning level gives events.
        env.update({"HEADROOM_NVML_LIBRARY": fake_nvml,
                    "FAKE_NVML_PROCS": "0:%d:2048,0:%d:1024" % (kids[0].pid, kids[1].pid),
                    "HEADROOM_VRAM_WARN": "5", "HEADROOM_TOP": "100000"})
        r = subprocess.run([cli, "watch", "--json", "--count", "4", "--interval", "300ms",
                            "--proc-budget", "1", "--db", str(db), "--listen", "none"],
                           env=env, capture_output=True, timeout=120)
        assert r.returncode == 0, r.stderr
    finally:
        for k in kids:
            k.kill()
            k.wait()
    svg = tmp_path / "history.svg"
    r = subprocess.run([cli, "history", "--db", str(db), "--svg", str(svg)], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    t = texts(svg)
    assert "%d %s" % (kids[0].pid, SPECIAL) in t
    assert "%d x\ufffd\ufffdy<" % kids[1].pid in t
    assert "%d GPU" % kids[0].pid in t and "GPU memory" in t  # the second axis
    # The thresholds watch ran with, recorded with the samples.
    assert "gpu0 warning 5% (recorded)" in t and "gpu0 critical 95% (recorded)" in t
    assert any(x.startswith("level") for x in t)  # the event markers
