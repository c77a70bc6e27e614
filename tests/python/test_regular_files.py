"""Every reader of a user's path refuses what is not a regular file before
reading it: a FIFO would make it wait for a writer for ever. Each case runs
the real CLI against a FIFO that a writer holds open with a whole input
inside, so a reader that opened it would read instead of waiting: the
refusal must come at once (well inside the timeout), name the path and its
kind, and leave the bytes in the FIFO."""

import json
import os
import subprocess

import pytest

from conftest import cli_or_skip

TRACE = b"headroom-trace 1\nend\n"
WORKFLOW = b'{"assets": [], "steps": []}\n'


def _with_fifo(tmp_path, name, content, run):
    """Runs run(path) with a FIFO at tmp_path/name holding `content`;
    returns run's result after checking the content is still there."""
    fifo = tmp_path / name
    os.mkfifo(fifo)
    fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    try:
        os.write(fd, content)
        r = run(str(fifo))
        assert os.read(fd, len(content) + 1) == content, "the reader took bytes from the FIFO"
        return r
    finally:
        os.close(fd)


def _cli(*args, env=None):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([cli_or_skip()] + list(args), capture_output=True, text=True,
                          timeout=20, env=e)


@pytest.mark.parametrize("command,name,content", [
    (["replay"], "trace.hrt", TRACE),
    (["plan"], "workflow.json", WORKFLOW),
    (["history", "--db"], "history.db", b"SQLite format 3\0"),
])
def test_a_fifo_argument_is_refused(tmp_path, command, name, content):
    r = _with_fifo(tmp_path, name, content, lambda p: _cli(*(command + [p])))
    assert r.returncode != 0
    assert name in r.stderr and "not a regular file (a FIFO)" in r.stderr, r.stderr


def test_a_fifo_config_file_is_refused(tmp_path):
    r = _with_fifo(tmp_path, "headroom.conf", b"interval = 2\n",
                   lambda p: _cli("status", env={"HEADROOM_CONFIG": p}))
    assert r.returncode != 0
    assert "headroom.conf" in r.stderr and "not a regular file" in r.stderr, r.stderr


def test_a_fifo_nvml_library_is_refused(tmp_path):
    """NVML's library path: status still answers, and says why it has no GPUs."""
    r = _with_fifo(tmp_path, "libnvidia-ml.so.1", b"\x7fELF",
                   lambda p: _cli("status", "--json", env={"HEADROOM_NVML_LIBRARY": p}))
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    text = json.dumps(doc)
    assert "libnvidia-ml.so.1: not a regular file (a FIFO)" in text, text[:2000]
