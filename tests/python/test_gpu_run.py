"""bench/gpu/run, the real-GPU driver, on this machine: its bookkeeping is
judged with stand-in step scripts in a copy of the bench/gpu folder (passing,
failing, skipping, silent and too slow for the deadline), then --assemble
joins two calls into one gpu.md. The steps themselves need a GPU and are not
run here."""

import os
import shutil
import subprocess
import tarfile

import pytest

from conftest import REPO

DRIVER = os.path.join(REPO, "bench", "gpu", "run")

STEPS = {
    "probe.py": "import sys\n"
                "out = sys.argv[sys.argv.index('--out') + 1]\n"
                "open(out + '/probe.md', 'w').write('## 1. Probe\\n\\n| a | b |\\n| --- | --- |\\n| 1 | 1 |\\n')\n"
                "open(out + '/probe.json', 'w').write('{\"ok\": true}')\n"
                "print('RESULT probe PASS names, UUIDs and totals equal')\n",
    "cuda.sh": "echo 'compute-sanitizer not found' >&2\n"
               "echo 'RESULT cuda SKIP no CUDA driver'\nexit 77\n",
    "torch_bench.py": "print('RESULT torch FAIL headroom 0.91 x native it/s')\nraise SystemExit(1)\n",
    "residency.py": "print('this step forgot its RESULT line')\n",
}


@pytest.fixture
def tree(tmp_path):
    """A repository copy holding the real driver and the stand-in steps, with
    an empty libheadroom.so so that --no-build finds a build."""
    root = tmp_path / "repo"
    (root / "bench" / "gpu").mkdir(parents=True)
    shutil.copy(DRIVER, root / "bench" / "gpu" / "run")
    for name, body in STEPS.items():
        (root / "bench" / "gpu" / name).write_text(body)
    (root / "build").mkdir()
    (root / "build" / "libheadroom.so").write_text("")
    return root


def run(tree, *args, out=None):
    env = dict(os.environ, PYTHON="/usr/bin/python3")
    if out is not None:
        env["OUT"] = str(out)
    return subprocess.run([str(tree / "bench" / "gpu" / "run"), *args], cwd=str(tree), env=env,
                          capture_output=True, text=True, timeout=120)


def rows(stdout):
    """The final table's rows as {step: (result, summary)}."""
    out = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0] not in ("step", "---"):
            out[cells[0]] = (cells[1], cells[3])
    return out


def test_steps_are_judged_and_the_table_comes_last(tree, tmp_path):
    out = tmp_path / "out"
    r = run(tree, "--no-build", "--build-dir", "build", "probe", "cuda", "torch", "residency",
            out=out)
    assert r.returncode == 1, r.stderr  # torch failed
    table = rows(r.stdout)
    assert table["probe"] == ("PASS", "names, UUIDs and totals equal")
    assert table["cuda"] == ("SKIP", "no CUDA driver")
    assert table["torch"] == ("FAIL", "headroom 0.91 x native it/s")
    assert table["residency"][0] == "FAIL"
    assert "no RESULT line (exit 0)" in table["residency"][1]
    assert r.stdout.rstrip().splitlines()[-1].startswith("| residency |")
    summary = (out / "summary.md").read_text()
    assert "## 1. Probe" in summary and "| GPU |" in summary
    with tarfile.open(out / "results.tar.gz") as t:
        names = set(n.lstrip("./") for n in t.getnames())
    assert {"env.md", "probe.md", "probe.json", "probe.row", "cuda.log", "torch.row"} <= names
    assert not (out / "traces.tar.gz").exists()


def test_a_step_that_cannot_fit_the_deadline_is_not_started(tree, tmp_path):
    # 400 s: the probe's 90 s fit after any start a loaded machine makes; the
    # torch step's 450 s never do.
    r = run(tree, "--no-build", "--build-dir", "build", "--deadline", "400", "probe", "torch",
            out=tmp_path / "out")
    table = rows(r.stdout)
    assert table["probe"][0] == "PASS"
    assert table["torch"][0] == "NOT RUN" and "450 s budget" in table["torch"][1]
    assert r.returncode == 0, r.stdout + r.stderr


def test_assemble_takes_each_step_from_the_latest_call(tree, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    run(tree, "--no-build", "--build-dir", "build", "probe", "cuda", out=a)
    (tree / "bench" / "gpu" / "cuda.sh").write_text("echo 'RESULT cuda PASS memcheck clean'\n")
    run(tree, "--no-build", "--build-dir", "build", "cuda", out=b)
    gpu = tmp_path / "gpu.md"
    r = run(tree, "--assemble", str(a / "results.tar.gz"), str(b / "results.tar.gz"), "-o",
            str(gpu))
    assert r.returncode == 0, r.stderr
    text = gpu.read_text()
    assert "### Call 1: probe cuda" in text and "### Call 2: cuda" in text
    assert "| cuda | PASS |" in text and "memcheck clean" in text and "| 2 |" in text
    assert "| probe | PASS |" in text
    assert "| leak | not run | | no call ran it | |" in text
    assert text.count("## 1. Probe") == 1


def test_bad_usage_is_refused(tree, tmp_path):
    for args, words in ((["warp"], "unknown step 'warp'"),
                        (["--deadline", "soon"], "--deadline must be whole seconds"),
                        (["--frobnicate"], "unknown option --frobnicate"),
                        (["--assemble"], "needs at least one results.tar.gz"),
                        (["--assemble", str(tmp_path / "none.tar.gz")], "no such results file")):
        r = run(tree, *args, out=tmp_path / "out")
        assert r.returncode == 2 and words in r.stderr, (args, r.stderr)
    junk = tmp_path / "junk.tar.gz"
    junk.write_text("not an archive")
    r = run(tree, "--assemble", str(junk))
    assert r.returncode == 2 and "not a results archive" in r.stderr


def test_missing_build_is_named(tree, tmp_path):
    r = run(tree, "--no-build", "--build-dir", "nowhere", "probe", out=tmp_path / "out")
    assert r.returncode == 2 and "no nowhere/libheadroom.so" in r.stderr
