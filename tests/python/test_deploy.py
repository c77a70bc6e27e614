"""Deployment: the example config against the option table, what `cmake
--install` puts where, the systemd unit under systemd-analyze (the man page and
bash completion are in test_cli_help.py), the Kubernetes manifest's structure,
`headroom doctor` on fixture trees and a stand-in NVML, and reading another
process's cgroup (--cgroup-pid, --cgroup)."""

import json
import os
import shutil
import socket
import sqlite3
import subprocess

import pytest

from conftest import REPO, cli_or_skip

PKG = os.path.join(REPO, "packaging")
FIXTURES = os.path.join(REPO, "tests", "fixtures", "probe")
GIB = 1024 ** 3


def run(args, env=None, **kw):
    e = {k: v for k, v in os.environ.items() if not k.startswith("HEADROOM_")}
    e.update(env or {})
    return subprocess.run(args, env=e, capture_output=True, text=True, timeout=60, **kw)


def build_dir(cli):
    d = os.path.dirname(cli)
    if not os.path.exists(os.path.join(d, "cmake_install.cmake")):
        pytest.skip("%s is not a CMake build folder" % d)
    return d


def fake_nvml(cli):
    p = os.path.join(os.path.dirname(cli), "helpers", "libfake-nvml-v3.so")
    if not os.path.exists(p):
        pytest.skip("the stand-in NVML is not built at %s" % p)
    return p


# ---- the example config ---------------------------------------------------

def table_options(cli):
    r = run([cli, "--config", "/dev/null", "config", "--json"])
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["options"]


def test_example_is_what_the_table_writes():
    cli = cli_or_skip()
    r = run([cli, "config", "--example"])
    assert r.returncode == 0, r.stderr
    with open(os.path.join(PKG, "headroom.conf.example")) as f:
        shipped = f.read()
    assert shipped == r.stdout, \
        "packaging/headroom.conf.example is stale: regenerate it with " \
        "'headroom config --example > packaging/headroom.conf.example'"
    names = [ln[1:].split(" = ")[0] for ln in shipped.splitlines()
             if ln.startswith("#") and " = " in ln and not ln.startswith("# ")]
    assert names == [o["name"] for o in table_options(cli)]


def test_example_uncommented_is_every_default(tmp_path):
    """Each line of the example, uncommented, is accepted and sets the
    default: the example documents the defaults truly."""
    cli = cli_or_skip()
    with open(os.path.join(PKG, "headroom.conf.example")) as f:
        lines = [ln[1:] for ln in f.read().splitlines()
                 if ln.startswith("#") and " = " in ln and not ln.startswith("# ")]
    conf = tmp_path / "all.conf"
    conf.write_text("\n".join(ln for ln in lines if not ln.startswith("config ")) + "\n")
    got = {o["name"]: o for o in table_options(cli)}
    r = run([cli, "--config", str(conf), "config", "--json"])
    assert r.returncode == 0, r.stderr
    for o in json.loads(r.stdout)["options"]:
        if o["name"] == "config":
            continue
        assert o["source"] == "file", o
        assert o["value"] == got[o["name"]]["value"], o


def test_config_example_refuses_json_with_it():
    cli = cli_or_skip()
    r = run([cli, "config", "--example", "--json"])
    assert r.returncode == 2 and "do not go together" in r.stderr


# ---- install --------------------------------------------------------------

def installed(tmp_path_factory, cli):
    prefix = tmp_path_factory.mktemp("prefix")
    r = run(["cmake", "--install", build_dir(cli), "--prefix", str(prefix)])
    assert r.returncode == 0, r.stdout + r.stderr
    return prefix


@pytest.fixture(scope="module")
def prefix(tmp_path_factory):
    return installed(tmp_path_factory, cli_or_skip())


def test_install_puts_each_file_in_its_place(prefix):
    files = sorted(os.path.relpath(os.path.join(d, f), prefix)
                   for d, _, fs in os.walk(prefix) for f in fs)
    want = ["bin/headroom", "etc/headroom/headroom.conf.example",
            "include/headroom/headroom.h", "include/headroom/options_table.h",
            "lib/systemd/system/headroom.service",
            "share/bash-completion/completions/headroom", "share/man/man1/headroom.1",
            "share/doc/headroom/container/Containerfile",
            "share/doc/headroom/kubernetes/headroom-daemonset.yaml"]
    for w in want:
        assert w in files, (w, files)
    libs = [f for f in files if os.path.basename(f).startswith("libheadroom.so")
            or os.path.basename(f) == "libheadroom.so"]
    assert libs, files
    r = run([str(prefix / "bin" / "headroom"), "--version"])
    assert r.returncode == 0 and r.stdout.startswith("headroom ")
    unit = (prefix / "lib/systemd/system/headroom.service").read_text()
    assert "ExecStart=%s/bin/headroom watch" % prefix in unit


def test_systemd_unit_verifies(prefix):
    sa = shutil.which("systemd-analyze")
    if not sa:
        pytest.skip("systemd-analyze is not installed (Debian: systemd)")
    unit = prefix / "lib/systemd/system/headroom.service"
    env = {"MANPATH": str(prefix / "share" / "man")}  # for Documentation=man:headroom(1)
    r = run([sa, "verify", str(unit)], env=env)
    assert r.returncode == 0 and r.stderr.strip() == "" and r.stdout.strip() == "", \
        r.stdout + r.stderr
    text = unit.read_text()
    for key in ["DynamicUser=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
                "NoNewPrivileges=yes", "StateDirectory=headroom", "MemoryMax=",
                "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6", "CapabilityBoundingSet="]:
        assert "\n" + key in text, key
    # The check can fail: a misspelt key is reported.
    bad = unit.parent / "bad" / "headroom.service"
    bad.parent.mkdir()
    bad.write_text(text.replace("ProtectSystem=strict", "ProtectSystm=strict"))
    r = run([sa, "verify", str(bad)], env=env)
    assert "ProtectSystm" in r.stderr


# ---- container and Kubernetes -----------------------------------------------

def test_containerfile_structure():
    with open(os.path.join(PKG, "container", "Containerfile")) as f:
        lines = [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]
    froms = [ln for ln in lines if ln.startswith("FROM ")]
    assert len(froms) == 2 and all("debian:bookworm" in ln for ln in froms)
    assert any(ln.startswith("COPY --from=build") for ln in lines)
    users = [ln for ln in lines if ln.startswith("USER ")]
    assert users and users[-1].split()[1].split(":")[0] not in ("0", "root")
    # Every path the build stage copies exists in the repository.
    for ln in lines:
        if ln.startswith("COPY ") and "--from" not in ln:
            assert os.path.exists(os.path.join(REPO, ln.split()[1])), ln


def load_yaml_docs(path):
    try:
        import yaml
    except ImportError:
        pytest.skip("PyYAML is not importable (Debian: python3-yaml)")
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def test_daemonset_structure():
    docs = load_yaml_docs(os.path.join(PKG, "kubernetes", "headroom-daemonset.yaml"))
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"Namespace", "DaemonSet", "Service"}
    for d in docs:
        assert d["apiVersion"] in ("v1", "apps/v1") and d["metadata"]["name"] == "headroom"
    ds = kinds["DaemonSet"]
    spec = ds["spec"]["template"]["spec"]
    labels = ds["spec"]["template"]["metadata"]["labels"]
    assert ds["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert spec["hostPID"] is True and spec["runtimeClassName"] == "nvidia"
    (c,) = spec["containers"]
    args = c["args"]
    assert args[args.index("--root") + 1] == "/host"
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in spec["volumes"]}
    for path in ("/host/proc", "/host/sys"):
        assert mounts[path]["readOnly"] is True
        assert vols[mounts[path]["name"]]["hostPath"]["path"] == path[len("/host"):]
    for m in c["volumeMounts"]:
        assert m["name"] in vols
    assert c["resources"]["limits"]["memory"] and c["resources"]["requests"]["cpu"]
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    listen = args[args.index("--listen") + 1]
    port = int(listen.rsplit(":", 1)[1])
    (cport,) = c["ports"]
    assert cport["containerPort"] == port
    svc = kinds["Service"]["spec"]
    assert svc["selector"].items() <= labels.items()
    assert svc["ports"][0]["targetPort"] == cport["name"]
    ann = ds["spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/port"] == str(port)
    # Global options come before the command, as the CLI parses them.
    assert args.index("--root") < args.index("watch") and args.index("--cgroup") < \
        args.index("watch")


# ---- another process's cgroup ---------------------------------------------

def test_status_reads_a_pods_cgroup_by_pid_or_path():
    cli = cli_or_skip()
    root = os.path.join(FIXTURES, "v2_host")
    base = [cli, "--root", root, "--config", "/dev/null"]
    for sel in (["--cgroup-pid", "4242"],
                ["--cgroup", "/sys/fs/cgroup/kubepods.slice/pod1.slice/ctr.scope"]):
        r = run(base + sel + ["status", "--json"],
                env={"HEADROOM_NVML_LIBRARY": "/nonexistent/libnvidia-ml.so.1"})
        assert r.returncode == 0, r.stderr
        cg = json.loads(r.stdout)["cgroup"]
        assert cg["path"] == "/kubepods.slice/pod1.slice/ctr.scope"
        assert cg["limit_bytes"] == 2 * GIB
    r = run(base + ["status", "--json"])
    assert json.loads(r.stdout)["cgroup"]["path"] == "/system.slice/headroom.service"
    # The environment works as the flag does; the flag wins over it.
    r = run(base + ["--cgroup-pid", "4242", "status", "--json"],
            env={"HEADROOM_CGROUP_PID": "1"})
    assert json.loads(r.stdout)["cgroup"]["limit_bytes"] == 2 * GIB
    r = run(base + ["status", "--json"], env={"HEADROOM_CGROUP_PID": "4242"})
    assert json.loads(r.stdout)["cgroup"]["limit_bytes"] == 2 * GIB
    r = run(base + ["--cgroup", "/x", "--cgroup-pid", "4242", "status"])
    assert r.returncode == 2 and "give one" in r.stderr
    for bad in ("-1", "abc", "99999999"):
        r = run(base + ["--cgroup-pid", bad, "status"])
        assert r.returncode == 2 and "cgroup_pid" in r.stderr, bad


# ---- doctor -----------------------------------------------------------------

def doctor(cli, root, *args, env=None):
    r = run([cli, "--root", root, "--config", "/dev/null"] + list(args) + ["doctor", "--json"],
            env=env)
    assert r.returncode in (0, 1), r.stderr
    out = json.loads(r.stdout)
    assert out["fail"] == sum(c["status"] == "fail" for c in out["checks"])
    assert (r.returncode == 1) == (out["fail"] > 0)
    for c in out["checks"]:
        assert (c["fix"] is None) == (c["status"] == "ok"), c
    return r.returncode, {c["name"]: c for c in out["checks"]}


def test_doctor_healthy_machine(tmp_path):
    cli = cli_or_skip()
    db = tmp_path / "h.db"
    sqlite3.connect(str(db)).execute("create table t(x)").connection.commit()
    rc, c = doctor(cli, os.path.join(FIXTURES, "v2_host"), "--cgroup-pid", "4242", env={
        "HEADROOM_NVML_LIBRARY": fake_nvml(cli), "FAKE_NVML_GPUS": "2",
        "FAKE_NVML_PROCS": "0:4242:512", "HEADROOM_LISTEN": "127.0.0.1:0",
        "HEADROOM_DB": str(db)})
    assert rc == 0, c
    assert set(c) == {"nvml", "cgroup", "procs", "exporter", "history"}
    assert all(x["status"] == "ok" for x in c.values()), c
    assert "2 GPU(s)" in c["nvml"]["detail"] and "driver" in c["nvml"]["detail"]
    assert "limit 2.00 GiB" in c["cgroup"]["detail"]
    assert "intact" in c["history"]["detail"]


def test_doctor_finds_what_is_broken(tmp_path):
    cli = cli_or_skip()
    root = os.path.join(FIXTURES, "v2_host")
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen(1)
    bad_db = tmp_path / "bad.db"
    bad_db.write_bytes(b"not a database\n" * 100)
    try:
        rc, c = doctor(cli, root, "--cgroup-pid", "4243", env={
            "HEADROOM_NVML_LIBRARY": fake_nvml(cli), "FAKE_NVML_LOST": "0",
            "HEADROOM_LISTEN": "127.0.0.1:%d" % held.getsockname()[1],
            "HEADROOM_DB": str(bad_db)})
    finally:
        held.close()
    assert rc == 1
    assert c["nvml"]["status"] == "fail" and "failing" in c["nvml"]["detail"]
    assert c["cgroup"]["status"] == "fail" and "4243" in c["cgroup"]["detail"]
    assert c["exporter"]["status"] == "fail" and "in use" in c["exporter"]["detail"]
    assert c["history"]["status"] == "fail" and "damaged" in c["history"]["detail"]
    for name in ("nvml", "cgroup", "exporter", "history"):
        assert c[name]["fix"], name


def test_doctor_warnings(tmp_path):
    """No driver here, hidepid on /proc, GPU processes of another PID
    namespace, a history folder that cannot be written."""
    cli = cli_or_skip()
    root = tmp_path / "root"
    shutil.copytree(os.path.join(FIXTURES, "v2_host"), root)
    mi = root / "proc" / "self" / "mountinfo"
    mi.write_text(mi.read_text().replace("- proc proc rw", "- proc proc rw,hidepid=invisible"))
    rc, c = doctor(cli, str(root), env={"HEADROOM_NVML_LIBRARY": "/nonexistent/libnvidia-ml.so",
                                        "HEADROOM_LISTEN": "none", "HEADROOM_DB": "none"})
    assert rc == 0
    if not os.path.exists("/dev/nvidiactl"):
        assert c["nvml"]["status"] == "warn" and "no NVIDIA GPU here" in c["nvml"]["detail"]
    assert c["procs"]["status"] == "warn" and "hidepid=invisible" in c["procs"]["detail"]
    assert c["exporter"]["status"] == "ok" and c["history"]["status"] == "ok"
    rc, c = doctor(cli, os.path.join(FIXTURES, "v2_host"), env={
        "HEADROOM_NVML_LIBRARY": fake_nvml(cli), "FAKE_NVML_PROCS": "0:777777:100",
        "HEADROOM_LISTEN": "none", "HEADROOM_DB": "/proc/1/nope/history.db"})
    assert c["procs"]["status"] == "warn" and "PID namespace" in c["procs"]["detail"]
    assert c["history"]["status"] == "fail" and rc == 1


def test_doctor_usage_errors():
    cli = cli_or_skip()
    r = run([cli, "doctor", "extra"])
    assert r.returncode == 2 and "unexpected argument" in r.stderr
    r = run([cli, "doctor", "--bogus"])
    assert r.returncode == 2
    r = run([cli, "--root", "/nonexistent", "doctor"])
    assert r.returncode == 1 and "--root" in r.stderr
