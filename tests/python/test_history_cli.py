"""`headroom history` on what a real `headroom watch --db` recorded of real
child processes (tests/helpers/mem_pattern): a process that loads memory once
and stays flat and one that waves have no growth, a leaking one has the rate
its /proc readings show; the thresholds watch ran with are what history
draws and counts, and history's own threshold options replace them for its
report; the database is read with read access alone, while a watch writes
it or not, and nothing is created or changed."""

import json
import os
import pathlib
import shutil
import subprocess
import tempfile
import time

import pytest

from conftest import cli_or_skip

MIB = 1 << 20


def env():
    e = {k: v for k, v in os.environ.items() if not k.startswith("HEADROOM_")}
    e["HEADROOM_CONFIG"] = "/dev/null"
    return e


def run(args, timeout=60, user=None, **kw):
    pre = [] if user is None else ["setpriv", "--reuid=%d" % user, "--regid=%d" % user,
                                   "--clear-groups"]
    return subprocess.run(pre + args, env=env(), capture_output=True, text=True,
                          timeout=timeout, **kw)


def helper(cli):
    p = os.path.join(os.path.dirname(cli), "helpers", "mem_pattern")
    if not os.access(p, os.X_OK):
        pytest.skip("mem_pattern is not built at %s" % p)
    return p


def rss(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS for %d" % pid)


def history_json(cli, db, *args):
    r = run([cli, "history", "--db", db, "--since", "1h", "--json"] + list(args))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """20 s of watch at 200 ms over three helpers: one loads 150 MiB 4 s in
    and holds it, one waves up to 150 MiB every 3 s, one leaks 2 MiB/s.
    Returns (cli, db, pids, the leaker's RSS growth per minute by /proc)."""
    cli = cli_or_skip()
    mp = helper(cli)
    db = str(tmp_path_factory.mktemp("hist") / "h.db")
    kids = [subprocess.Popen([mp, "step", str(150 * MIB), "4"]),
            subprocess.Popen([mp, "sawtooth", str(150 * MIB), "3"]),
            subprocess.Popen([mp, "leak", str(2 * MIB)])]
    try:
        time.sleep(0.3)
        t0, r0 = time.monotonic(), rss(kids[2].pid)
        w = run([cli, "watch", "--json", "--interval", "200ms", "--count", "100", "--filter",
                 "mem_pattern", "--listen", "none", "--db", db, "--ram-warn", "7",
                 "--ram-critical", "99", "--proc-budget", "100", "--top", "8"], timeout=120)
        t1, r1 = time.monotonic(), rss(kids[2].pid)
        assert w.returncode == 0, w.stderr
    finally:
        for k in kids:
            k.kill()
            k.wait()
    return cli, db, [k.pid for k in kids], (r1 - r0) / (t1 - t0) * 60


def test_growth_is_the_leak_detectors_trend(recorded):
    cli, db, (step, wave, leak), leak_rate = recorded
    j = history_json(cli, db)
    procs = {p["pid"]: p for p in j["processes"]}
    # The scenario is what it says: the load and the wave would have read as
    # fast growth or shrinking by the first and last samples.
    for pid in (step, wave):
        rows = [s for s in j["samples"] if s.get("pid") == pid]
        assert len(rows) >= 60
        naive = (rows[-1]["rss_bytes"] - rows[0]["rss_bytes"]) / (rows[-1]["time"] -
                                                                   rows[0]["time"]) * 60
        assert pid != step or naive > 100 * MIB, naive
        assert procs[pid]["trend"] == "none" and procs[pid]["growth_bytes_per_min"] is None, \
            procs[pid]
    p = procs[leak]
    assert p["trend"] == "leak", p
    # The rate agrees with this test's own /proc readings of the leaker.
    assert abs(p["growth_bytes_per_min"] - leak_rate) <= 0.15 * leak_rate, (p, leak_rate)
    text = run([cli, "history", "--db", db, "--since", "1h"]).stdout
    line = [ln for ln in text.splitlines() if ln.lstrip().startswith(str(leak) + " ")][0]
    assert " leak " in line and "+" in line and "MiB" in line
    line = [ln for ln in text.splitlines() if ln.lstrip().startswith(str(step) + " ")][0]
    assert " none " in line


def test_thresholds_recorded_drawn_and_replaced(recorded, tmp_path):
    cli, db, _, _ = recorded
    host = {s["scope"]: s for s in history_json(cli, db)["scopes"]}["host"]
    assert (host["warn_pct"], host["critical_pct"], host["thresholds_from"]) == \
        (7, 99, "recorded")
    rows = [s for s in history_json(cli, db)["samples"] if s["scope"] == "host"]
    assert rows and all(s["warn_pct"] == 7 and s["critical_pct"] == 99 for s in rows)
    # The time at each level: the rows' levels replayed here by the rule of
    # docs/watch.md (rise at a threshold, fall 3 points under it), each
    # sample counting for the median step.
    level, at = 0, [0, 0, 0]
    for s in rows:
        pct = 100 * s["used_bytes"] / s["total_bytes"]
        level = 2 if pct >= 99 or (level == 2 and pct > 96) else \
            1 if pct >= 7 or (level >= 1 and pct > 4) else 0
        at[level] += 1
    steps = sorted(b["time"] - a["time"] for a, b in zip(rows, rows[1:]))
    step = steps[(len(steps) - 1) // 2]
    assert host["warning_s"] == pytest.approx(at[1] * step, abs=0.01)
    assert host["critical_s"] == pytest.approx(at[2] * step, abs=0.01)
    svg = tmp_path / "h.svg"
    r = run([cli, "history", "--db", db, "--since", "1h", "--svg", str(svg)])
    assert r.returncode == 0, r.stderr
    drawn = svg.read_text()
    assert "host warning 7% (recorded)" in drawn and "host critical 99% (recorded)" in drawn
    assert "warning 80%" not in drawn
    # history's own option replaces the recorded one, for its report only.
    host = {s["scope"]: s for s in
            history_json(cli, db, "--ram-warn", "50")["scopes"]}["host"]
    assert (host["warn_pct"], host["thresholds_from"]) == (50, "command line")
    r = run([cli, "history", "--db", db, "--svg", str(svg), "--ram-warn", "50"])
    assert "host warning 50% (command line)" in svg.read_text()
    r = run([cli, "history", "--db", db, "--ram-warn", "99.5"])
    assert r.returncode == 2 and "above the critical one 99% (command line)" in r.stderr
    r = run([cli, "history", "--db", db, "--ram-warn", "101"])
    assert r.returncode == 2 and "--ram-warn" in r.stderr


def other_user():
    """A user id to read as: another user when this test runs as root (with
    setpriv), else this one (the file's permissions are lowered instead)."""
    if os.geteuid() != 0:
        return None
    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: cannot read as another user")
    return 65534


@pytest.fixture
def public_dir():
    """A folder under /tmp that another user can reach (pytest's own are
    private to this one)."""
    d = tempfile.mkdtemp(prefix="hr-history-")
    os.chmod(d, 0o755)
    yield pathlib.Path(d)
    shutil.rmtree(d)


def test_read_only_database(recorded, public_dir):
    cli, db, _, _ = recorded
    user = other_user()
    d = public_dir / "ro"
    d.mkdir()
    ro = d / "h.db"
    shutil.copy(db, ro)
    ro.chmod(0o444)
    d.chmod(0o555)
    before = ro.read_bytes()
    r = run([cli, "history", "--db", str(ro), "--since", "1h"], user=user)
    d.chmod(0o755)
    assert r.returncode == 0, r.stderr
    assert "host" in r.stdout and "mem_pattern" in r.stdout
    assert sorted(os.listdir(d)) == ["h.db"] and ro.read_bytes() == before


def test_read_while_watch_writes(public_dir):
    cli = cli_or_skip()
    user = other_user()
    db = public_dir / "live.db"
    w = subprocess.Popen([cli, "watch", "--json", "--interval", "100ms", "--count", "600",
                          "--listen", "none", "--db", str(db), "--history-flush", "200ms"],
                         env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            r = run([cli, "history", "--db", str(db), "--since", "1h", "--json"], user=user)
            if r.returncode == 0 and sum(s["scope"] == "host"
                                         for s in json.loads(r.stdout)["samples"]) >= 3:
                break
            time.sleep(0.2)
        else:
            pytest.fail("history never read the live database: %s" % r.stderr)
        assert os.path.exists(str(db) + "-wal")
    finally:
        w.terminate()
        assert w.wait(timeout=30) == 0, w.stderr.read()


def test_missing_database_is_not_made(tmp_path):
    cli = cli_or_skip()
    db = tmp_path / "none" / "h.db"
    r = run([cli, "history", "--db", str(db)])
    assert r.returncode == 1 and "no history at" in r.stderr
    assert not db.exists() and not db.parent.exists()
