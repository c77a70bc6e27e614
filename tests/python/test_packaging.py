"""The Python distribution (headroom-gpu; the import name is headroom): the
sdist carries the C sources and builds; a wheel built from that sdist alone,
in a temporary folder, is tagged py3-none-<platform> (the library is loaded
with ctypes, not a CPython extension), carries libheadroom.so, the LICENSE
and the headroom-py entry point; and the unpacked wheel loads its own
library."""

import os
import re
import subprocess
import sys
import sysconfig
import tarfile
import zipfile

import pytest

from conftest import REPO, run_python

DIST = "headroom_gpu-0.1.0"


def _need(module, package):
    # Run from the repository, as the build does: there its build/ folder is a
    # namespace package that "import build" finds when PyPA's build is absent.
    code = "import %s as m, sys; sys.exit(0 if getattr(m, '__file__', None) else 1)" % module
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, cwd=REPO)
    if r.returncode != 0:
        pytest.skip("%s is not importable; scripts/install-deps installs %s" % (module, package))


def _run(args, cwd, timeout):
    env = dict(os.environ)
    env.pop("HEADROOM_SKIP_LIB", None)
    r = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=env, timeout=timeout)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def test_sdist_builds_a_py3_none_platform_wheel(tmp_path):
    _need("build", "python3-build")
    _need("wheel", "python3-wheel")
    _need("pip", "python3-pip")
    _run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "-o", str(tmp_path / "sd"),
          REPO], REPO, 120)
    (sdist,) = (tmp_path / "sd").iterdir()
    # setuptools normalises the file name (PEP 625) from version 69 on.
    assert sdist.name in ("headroom-gpu-0.1.0.tar.gz", "headroom_gpu-0.1.0.tar.gz")
    with tarfile.open(sdist) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
        t.extractall(tmp_path / "src")
    for want in ("LICENSE", "CMakeLists.txt", "setup.py", "include/headroom/headroom.h",
                 "src/probe/cgroup.c", "src/pool/pool.c", "tools/headroom/main.c",
                 "tests/fake_nvml/fake_nvml.c", "python/headroom/__main__.py"):
        assert want in names, want
    assert not any(n.endswith(".so") or n.startswith("build/") for n in names)

    # The wheel from the unpacked sdist alone: nothing of the repository used.
    (src,) = (tmp_path / "src").iterdir()  # its name follows the sdist's
    _run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-index",
          "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(src)], str(tmp_path), 280)
    (wheel,) = (tmp_path / "dist").iterdir()
    plat = re.sub(r"[-.]", "_", sysconfig.get_platform())
    assert wheel.name == "%s-py3-none-%s.whl" % (DIST, plat)
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = z.read(DIST + ".dist-info/METADATA").decode()
        entry = z.read(DIST + ".dist-info/entry_points.txt").decode()
        tag = z.read(DIST + ".dist-info/WHEEL").decode()
        z.extractall(tmp_path / "site")
    assert "headroom/libheadroom.so" in names and "headroom/__init__.py" in names
    # Every room of the package travels with it.
    for room in ("_c/lib.py", "readings/snapshot.py", "pytorch/allocator.py", "comfy/models.py"):
        assert "headroom/" + room in names, room
    # dist-info/LICENSE, or dist-info/licenses/LICENSE from setuptools 69 on.
    assert any(n.startswith(DIST + ".dist-info/") and n.endswith("LICENSE") for n in names)
    assert "Name: headroom-gpu" in meta
    assert "License: MIT" in meta or "License-Expression: MIT" in meta
    assert "Root-Is-Purelib: false" in tag and "Tag: py3-none-%s" % plat in tag
    assert re.search(r"^headroom-py = headroom.__main__:main$", entry, re.M), entry

    site = tmp_path / "site"
    env = {"HEADROOM_LIB": None, "PYTHONPATH": str(site)}
    r = run_python("import headroom, headroom._c.lib as l\n"
                   "print(headroom.library_version(), l.loaded_path())",
                   env=env, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    ver, path = r.stdout.split()
    assert ver.startswith("0.1.") and path == str(site / "headroom" / "libheadroom.so")
    # The entry point's function, as the console script calls it.
    r = run_python("import sys, headroom.__main__ as m; sys.exit(m.main(['library']))",
                   env=env, cwd=str(tmp_path))
    assert r.returncode == 0 and r.stdout.startswith(str(site / "headroom" / "libheadroom.so"))
    r = run_python("import sys, headroom.__main__ as m; sys.exit(m.main(['snapshot', '--what', "
                   "'host']))", env=env, cwd=str(tmp_path))
    assert r.returncode == 0 and '"host"' in r.stdout, r.stderr
    r = run_python("import sys, headroom.__main__ as m; sys.exit(m.main(['snapshot', '--what', "
                   "'bogus']))", env=env, cwd=str(tmp_path))
    assert r.returncode == 1 and "unknown probe part" in r.stderr
