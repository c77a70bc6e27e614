"""Shared fixtures. Tests run as `make test-python` runs them: PYTHONPATH
holds python/ and HEADROOM_LIB names the release build's libheadroom.so."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PYDIR = os.path.join(REPO, "python")

if PYDIR not in sys.path:
    sys.path.insert(0, PYDIR)


def lib_path():
    p = os.environ.get("HEADROOM_LIB") or os.path.join(REPO, "build", "release",
                                                       "libheadroom.so")
    return os.path.abspath(p)


@pytest.fixture
def libpath():
    """The libheadroom under test; skips when it has not been built."""
    p = lib_path()
    if not os.path.exists(p):
        pytest.skip("libheadroom not built at %s (set HEADROOM_LIB)" % p)
    return p


@pytest.fixture
def fresh_loader(monkeypatch):
    """Forgets the loaded library before and after the test, so HEADROOM_LIB
    changes made through monkeypatch take effect and do not leak."""
    from headroom._c import lib as _lib

    _lib.reset_for_tests()
    yield monkeypatch
    _lib.reset_for_tests()


def run_python(code, env=None, cwd=None):
    """Runs `code` in a fresh /usr/bin/python3 with python/ on the path."""
    e = dict(os.environ)
    e["PYTHONPATH"] = PYDIR
    e.update(env or {})
    e = {k: v for k, v in e.items() if v is not None}
    return subprocess.run([sys.executable, "-c", code], env=e, cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def torch_or_skip():
    try:
        import torch  # noqa: F401
    except ImportError as e:
        pytest.skip("torch is not importable (%s); scripts/install-deps installs python3-torch"
                    % e)
    return torch


def cli_or_skip():
    """The headroom CLI under test (HEADROOM_CLI, else build/release/headroom)
    as an absolute path; skips when it has not been built."""
    p = os.environ.get("HEADROOM_CLI") or os.path.join(REPO, "build", "release", "headroom")
    if not os.path.exists(p):
        pytest.skip("headroom CLI not built at %s (set HEADROOM_CLI)" % p)
    return os.path.abspath(p)


def run_step(script, out, *args, env=None, timeout=120):
    """Runs the step bench/gpu/<script> --out OUT ARGS; returns the finished
    process and the last line of its stdout (the RESULT line)."""
    r = subprocess.run([sys.executable, os.path.join(REPO, "bench", "gpu", script), "--out",
                        str(out)] + list(args), env=env, capture_output=True, text=True,
                       timeout=timeout)
    return r, (r.stdout.strip().splitlines() or [""])[-1]


@pytest.fixture
def broker():
    """A real `headroom broker` (tests/python/broker_fixtures.py) with a
    budget of 1 GiB of host memory, stopped after the test."""
    from broker_fixtures import Broker

    b = Broker(budget="host=1G")
    yield b
    b.stop()
