"""The Python package in rooms: its import graph has no cycle, no module is
named torch and no package module is imported inside a function
(tests/checks/check_py_imports.py, also a ctest), and the check fails when
one of these is put in; every name python/README.md documents still answers,
the module aliases included, without importing PyTorch."""

import os
import shutil
import subprocess
import sys

from conftest import PYDIR, REPO, run_python

CHECK = os.path.join(REPO, "tests", "checks", "check_py_imports.py")


def run_check(pkg):
    return subprocess.run([sys.executable, CHECK, str(pkg)], capture_output=True, text=True,
                          timeout=60)


def copy_of_the_package(tmp_path):
    dst = tmp_path / "headroom"
    shutil.copytree(os.path.join(PYDIR, "headroom"), dst,
                    ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    return dst


def test_the_package_has_no_cycle():
    r = run_check(os.path.join(PYDIR, "headroom"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "function-local imports: 0 of package modules" in r.stdout


def test_a_cycle_through_an_import_inside_a_function_fails(tmp_path):
    pkg = copy_of_the_package(tmp_path)
    # A reading that calls free_memory, which reads it: a ring, however late
    # the import runs.
    with open(pkg / "readings" / "procfs.py", "a") as f:
        f.write("\n\ndef free_now():\n    from ..free import free_memory\n\n"
                "    return free_memory()\n")
    r = run_check(pkg)
    assert r.returncode == 1, r.stdout
    cycle = [line for line in r.stdout.splitlines() if "import cycle among" in line]
    assert len(cycle) == 1 and "headroom.free" in cycle[0] \
        and "headroom.readings.procfs" in cycle[0], r.stdout
    assert "procfs.py:" in r.stdout and "imports headroom.free inside a function" in r.stdout


def test_a_cycle_at_the_top_fails(tmp_path):
    pkg = copy_of_the_package(tmp_path)
    text = (pkg / "_c" / "lib.py").read_text()
    (pkg / "_c" / "lib.py").write_text(text.replace("import threading\n",
                                                    "import threading\n\nfrom . import options\n",
                                                    1))
    r = run_check(pkg)
    assert r.returncode == 1
    assert "import cycle among headroom._c.lib, headroom._c.options" in r.stdout, r.stdout


def test_a_module_named_torch_fails(tmp_path):
    pkg = copy_of_the_package(tmp_path)
    (pkg / "pytorch" / "torch.py").write_text('"""Would shadow PyTorch."""\n')
    r = run_check(pkg)
    assert r.returncode == 1 and "named torch" in r.stdout, r.stdout


DOCUMENTED = r"""
import sys
import headroom
import headroom.torch, headroom.stages, headroom.pool, headroom.options
from headroom import torch as hr_torch
from headroom.pool import Pool
import headroom.agent, headroom.comfy, headroom.manager, headroom.trace
names = [headroom.snapshot, headroom.free_memory, headroom.stage, headroom.stages.report,
         headroom.Registry, headroom.select_device, headroom.estimate_bytes,
         headroom.torch.install_allocator, headroom.torch.alloc_conf, headroom.torch.pool_stats,
         headroom.tag, headroom.agent.connect, headroom.reserve, headroom.Pool,
         headroom.pool.Pool, headroom.options.Options, headroom.options.process,
         headroom.manager.manager, headroom.comfy.free, headroom.comfy.loaded_models,
         headroom.comfy.models_text, headroom.comfy.unload_index,
         headroom.comfy.request_between_prompts, headroom.comfy.register_auxiliary,
         headroom.comfy.auxiliary_models, headroom.comfy.using, headroom.comfy.dynamic_vram,
         headroom.comfy.panel_state, headroom.FreeResult, headroom.MODES]
assert hr_torch is headroom.torch is sys.modules["headroom.torch"]
assert headroom.Pool is Pool is headroom.pool.Pool
assert headroom.torch.__name__ == "headroom.pytorch.allocator"
print(len(names), "torch" in sys.modules, "comfy" in sys.modules)
"""


def test_the_documented_names_answer_without_pytorch():
    r = run_python(DOCUMENTED)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["30", "False", "False"]
