"""The live view of `headroom watch` on a real terminal: tmux runs it in a
detached 80x24 session; capture-pane shows what a person would see.

Checked: no line wider than 80 columns and no more than 24 lines even with
--top 60; the keys p and m reorder the rows (by pid, by memory); q quits
with status 0; SIGTERM ends it too; and either way the terminal is given back
in its own mode (icanon and echo on, as `stty -a` shows after watch ends).
Skips, saying why, when tmux is not installed (scripts/install-deps
installs it). Every wait is for what the screen shows, with a deadline far
past its usual time: a loaded machine only makes it slower."""

import os
import re
import shutil
import subprocess
import time

import pytest

from conftest import cli_or_skip


class Tmux:
    def __init__(self, tmp_path, command):
        self.tmux = shutil.which("tmux")
        if not self.tmux:
            pytest.skip("tmux is not installed (scripts/install-deps installs it)")
        self.sock = str(tmp_path / "tmux.sock")
        self.run("new-session", "-d", "-x", "80", "-y", "24", command)

    def run(self, *args):
        return subprocess.run([self.tmux, "-S", self.sock, "-f", "/dev/null"] + list(args),
                              capture_output=True, text=True, timeout=20)

    def screen(self):
        return self.run("capture-pane", "-p", "-t", "0").stdout.rstrip("\n").split("\n")

    def keys(self, k):
        self.run("send-keys", "-t", "0", k)

    def wait(self, pred, seconds=120):
        deadline = time.time() + seconds
        while time.time() < deadline:
            s = self.screen()
            if pred(s):
                return s
            time.sleep(0.1)
        raise AssertionError("screen never matched:\n" + "\n".join(self.screen()))

    def kill(self):
        self.run("kill-server")


def pids(screen):
    rows = [l for l in screen if re.match(r"^\s+\d+ \S", l)]
    return [int(l.split()[0]) for l in rows]


def rss_sizes(screen):
    units = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}
    out = []
    for l in screen:
        m = re.match(r"^\s+\d+ .{16} +([\d.]+) (B|KiB|MiB|GiB|TiB) ", l)
        if m:
            out.append(float(m.group(1)) * units[m.group(2)])
    return out


def tty_modes(screen):
    """The icanon and echo flags stty printed after watch ended ("-echo" when off)."""
    i = [k for k, l in enumerate(screen) if l.startswith("EXIT=")][0]
    return set(screen[i + 1].split()) if i + 1 < len(screen) else set()


def session(tmp_path, cli, tail):
    # After watch ends, the shell prints its status and the terminal's mode.
    cmd = ("env XDG_CONFIG_HOME=%s HEADROOM_COLOR=never %s watch --db none --listen none "
           "--interval 0.3s --top 60; echo EXIT=$?; stty -a | tr ' ' '\\n' | "
           "grep -E '^-?(icanon|echo)$' | tr '\\n' ' '; echo; %s" % (tmp_path, cli, tail))
    return Tmux(tmp_path, cmd)


def test_live_view_fits_80x24_and_keys_sort_and_quit(tmp_path):
    cli = cli_or_skip()
    t = session(tmp_path, cli, "sleep 30")
    try:
        first = t.wait(lambda s: any("sorted by" in l for l in s))
        assert len(first) <= 24
        assert max(len(l) for l in first) <= 80, "\n".join(first)
        assert first[0].startswith("headroom watch")
        assert len(pids(first)) >= 5, "\n".join(first)
        # --top 60 does not fit: the rows are cut, the keys line stays.
        assert "q quit" in first[-1]

        t.keys("p")
        by_pid = t.wait(lambda s: "(sorted by pid)" in s[-1])
        assert pids(by_pid) == sorted(pids(by_pid))
        assert max(len(l) for l in by_pid) <= 80 and len(by_pid) <= 24

        t.keys("m")
        by_mem = t.wait(lambda s: "(sorted by memory)" in s[-1])
        sizes = rss_sizes(by_mem)
        assert len(sizes) >= 5 and sizes == sorted(sizes, reverse=True), "\n".join(by_mem)
        assert pids(by_mem) != pids(by_pid)

        t.keys("q")
        done = t.wait(lambda s: any(l.startswith("EXIT=") for l in s))
        text = "\n".join(done)
        assert "EXIT=0" in text
        assert "headroom watch: stopped" in text
        # The terminal's own mode is back: canonical input and echo.
        assert tty_modes(done) == {"icanon", "echo"}, text
    finally:
        t.kill()


def test_live_view_restores_the_terminal_on_sigterm(tmp_path):
    cli = cli_or_skip()
    t = session(tmp_path, cli, "sleep 30")
    try:
        t.wait(lambda s: any("sorted by" in l for l in s))
        out = subprocess.run(["pgrep", "-f", "^%s watch --db none --listen none --interval 0.3s"
                              % re.escape(cli)], capture_output=True, text=True)
        mine = [int(p) for p in out.stdout.split()]
        assert len(mine) == 1, out.stdout
        os.kill(mine[0], 15)
        done = t.wait(lambda s: any(l.startswith("EXIT=") for l in s))
        text = "\n".join(done)
        assert "EXIT=0" in text, text
        assert tty_modes(done) == {"icanon", "echo"}, text
    finally:
        t.kill()
