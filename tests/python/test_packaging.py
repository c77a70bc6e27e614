"""pip builds an installable wheel from the repository, with libheadroom.so
next to the package, and the installed package loads that library."""

import os
import subprocess
import sys
import zipfile

import pytest

from conftest import REPO, run_python


def _need(module):
    r = subprocess.run([sys.executable, "-c", "import " + module], capture_output=True)
    if r.returncode != 0:
        pytest.skip("%s is not importable; scripts/install-deps installs python3-pip and "
                    "python3-wheel" % module)


def test_wheel_carries_the_library_and_loads_it(tmp_path):
    _need("pip")
    _need("wheel")
    env = dict(os.environ)
    env.pop("HEADROOM_SKIP_LIB", None)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-index",
                        "--no-deps", "-q", "-w", str(tmp_path / "dist"), REPO],
                       capture_output=True, text=True, env=env, timeout=280)
    assert r.returncode == 0, r.stdout + r.stderr
    wheels = list((tmp_path / "dist").glob("headroom-0.1.0-*.whl"))
    assert len(wheels) == 1
    assert "py3-none-any" not in wheels[0].name  # tagged for a platform: it carries a .so
    site = tmp_path / "site"
    with zipfile.ZipFile(wheels[0]) as z:
        names = z.namelist()
        assert "headroom/__init__.py" in names and "headroom/libheadroom.so" in names
        z.extractall(site)
    r = run_python("import headroom, headroom._lib as l\n"
                   "print(headroom.library_version(), l.loaded_path())",
                   env={"HEADROOM_LIB": None, "PYTHONPATH": str(site)}, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    ver, path = r.stdout.split()
    assert ver.startswith("0.1.") and path == str(site / "headroom" / "libheadroom.so")
