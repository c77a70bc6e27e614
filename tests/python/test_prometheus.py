"""The exporter, the rules and the dashboard against Prometheus itself.

- promtool checks deploy/prometheus/headroom-rules.yml and runs its unit
  tests (headroom-rules.test.yml: no leak alert on a warm-up that levels
  off, one on a steady climb, the exporter-down alert);
- every metric a live `headroom watch` serves, and every metric the Grafana
  dashboard and the rules query, is documented in docs/metrics.md;
- a real Prometheus (Debian's package), started here on loopback with a
  temporary storage directory and killed at the end, scrapes a real
  `headroom watch`; its HTTP API shows the series ingested with their labels
  and the recording rules evaluated.
Skips, saying why, only where promtool or prometheus is not installed
(scripts/install-deps installs the `prometheus` package)."""

import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from conftest import REPO, cli_or_skip

RULES = os.path.join(REPO, "deploy", "prometheus", "headroom-rules.yml")
RULES_TEST = os.path.join(REPO, "deploy", "prometheus", "headroom-rules.test.yml")
DASHBOARD = os.path.join(REPO, "docs", "grafana-dashboard.json")
METRICS_DOC = os.path.join(REPO, "docs", "metrics.md")


def tool_or_skip(name):
    path = shutil.which(name)
    if not path:
        pytest.skip("%s is not installed (Debian package `prometheus`; scripts/install-deps "
                    "installs it)" % name)
    return path


def documented():
    """Metric names in the first column of docs/metrics.md's tables."""
    names = set()
    with open(METRICS_DOC, encoding="utf-8") as f:
        for line in f:
            m = re.match(r"\|\s*`([a-zA-Z_:][a-zA-Z0-9_:]*)`", line)
            if m:
                names.add(m.group(1))
    return names


def recorded():
    """Names the recording rules define."""
    with open(RULES, encoding="utf-8") as f:
        return set(re.findall(r"^\s*- record:\s*(\S+)", f.read(), re.M))


PROMQL_WORDS = {
    "sum", "avg", "min", "max", "count", "topk", "bottomk", "by", "without", "and", "or",
    "unless", "on", "ignoring", "group_left", "group_right", "bool", "rate", "irate",
    "increase", "deriv", "delta", "time", "absent", "clamp_min", "clamp_max", "label_replace",
    "max_over_time", "min_over_time", "avg_over_time", "predict_linear", "offset", "Inf",
}


def metric_names(expr):
    """The metric names an expression reads."""
    e = re.sub(r"\{[^}]*\}", "", expr)                   # label matchers
    e = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", e)  # grouping labels
    e = re.sub(r"\[[^\]]*\]", "", e)                     # ranges
    e = re.sub(r"\$\w+|\"[^\"]*\"", "", e)               # variables, strings
    words = re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", e)
    return {w for w in words if w not in PROMQL_WORDS and not re.fullmatch(r"\d+\w*", w)}


def test_rules_check():
    promtool = tool_or_skip("promtool")
    r = subprocess.run([promtool, "check", "rules", RULES], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout + r.stderr


def test_rules_unit_tests():
    promtool = tool_or_skip("promtool")
    r = subprocess.run([promtool, "test", "rules", RULES_TEST], capture_output=True,
                       text=True, timeout=120, cwd=os.path.dirname(RULES_TEST))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_rules_and_dashboard_use_documented_metrics():
    known = documented() | recorded() | {"up"}
    assert len(documented()) > 30
    with open(DASHBOARD, encoding="utf-8") as f:
        dash = json.load(f)
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") == "query":  # label_values(metric, label)
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            exprs.append(re.sub(r"label_values\((\w+),\s*\w+\)", r"\1", q))
    assert len(exprs) >= 10
    for expr in exprs:
        missing = metric_names(expr) - known
        assert not missing, "dashboard expression %r reads undocumented %s" % (expr, missing)
    with open(RULES, encoding="utf-8") as f:
        rules = re.findall(r"expr:\s*(\|[\s\S]*?(?=\n\s*(?:for|labels):)|.*)", f.read())
    assert len(rules) > 15
    for expr in rules:
        missing = metric_names(expr.lstrip("|")) - known
        assert not missing, "rule %r reads undocumented %s" % (expr, missing)
    # The metric checker itself: an unknown name is caught.
    assert metric_names('sum by (gpu) (headroom_nope_bytes{a="b"}[5m])') == {"headroom_nope_bytes"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, timeout=30):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode("utf-8")


def query(port, q):
    body = get("http://127.0.0.1:%d/api/v1/query?query=%s" % (port, urllib.parse.quote(q)))
    doc = json.loads(body)
    assert doc["status"] == "success", body
    return doc["data"]["result"]


def wait_for(fn, seconds, what):
    deadline = time.time() + seconds
    last = None
    while time.time() < deadline:
        try:
            last = fn()
            if last:
                return last
        except (OSError, ValueError) as e:
            last = e
        time.sleep(0.5)
    raise AssertionError("%s within %ds (last: %r)" % (what, seconds, last))


def test_real_prometheus_scrapes_watch(tmp_path):
    prometheus = tool_or_skip("prometheus")
    cli = cli_or_skip()
    hp, pp = free_port(), free_port()
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "rule_files: [%s]\n"
        "scrape_configs:\n  - job_name: headroom\n    static_configs:\n"
        "      - targets: ['127.0.0.1:%d']\n" % (json.dumps(RULES), hp))
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path))
    # Bounded: 2400 samples at 0.5 s end it in twenty minutes whatever
    # happens, and it outlives the waits below however loaded the machine is.
    watch = subprocess.Popen([cli, "watch", "--listen", "127.0.0.1:%d" % hp, "--interval",
                              "0.5s", "--db", "none", "--json", "--count", "2400"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    prom = subprocess.Popen([prometheus, "--config.file=%s" % cfg,
                             "--storage.tsdb.path=%s" % (tmp_path / "data"),
                             "--web.listen-address=127.0.0.1:%d" % pp, "--log.level=warn"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        text = wait_for(lambda: get("http://127.0.0.1:%d/metrics" % hp), 120, "watch serves")
        served = set(re.findall(r"^# TYPE (\S+)", text, re.M))
        assert served - documented() == set(), "undocumented: %s" % (served - documented())
        assert get("http://127.0.0.1:%d/" % hp).count("href=") == 2

        wait_for(lambda: query(pp, 'up{job="headroom"} == 1'), 180, "Prometheus scraped watch")
        host = wait_for(lambda: query(pp, "headroom_host_memory_total_bytes"), 120,
                        "host memory ingested")
        assert host[0]["metric"]["job"] == "headroom"
        assert float(host[0]["value"][1]) > 0
        # The probe state is a labelled gauge: one series per state, one of them 1.
        states = query(pp, 'headroom_probe_state{part="nvml"}')
        assert {s["metric"]["state"] for s in states} == {"ok", "absent", "denied", "error"}
        assert sum(float(s["value"][1]) for s in states) == 1
        # The exporter's own process metrics, as the client libraries name them.
        rss = query(pp, 'process_resident_memory_bytes{job="headroom"}')
        assert rss and float(rss[0]["value"][1]) > 1 << 20
        assert query(pp, 'process_start_time_seconds{job="headroom"} > 1e9')
        # Processes without GPU memory: by name, no pid label.
        groups = wait_for(lambda: query(pp, "headroom_process_group_rss_bytes"), 120,
                          "process groups ingested")
        assert all("comm" in g["metric"] and "pid" not in g["metric"] for g in groups)
        assert len(groups) <= 5
        # A GPU holder is shown by pid and GPU; without a GPU here there are none.
        gpu_procs = query(pp, "headroom_process_gpu_memory_bytes")
        assert all({"gpu", "UUID", "pid", "Hostname"} <= set(g["metric"]) for g in gpu_procs)
        # The recording rules evaluate.
        ratio = wait_for(lambda: query(pp, "headroom:host_memory_used:ratio"), 120,
                         "the recording rule evaluated")
        assert 0 < float(ratio[0]["value"][1]) < 1
        rules = json.loads(get("http://127.0.0.1:%d/api/v1/rules" % pp))
        groups = {g["name"]: g for g in rules["data"]["groups"]}
        assert set(groups) == {"headroom-recording", "headroom-alerts"}
        for g in groups.values():
            for r in g["rules"]:
                assert r["health"] in ("ok", "unknown"), r
        down = [r for r in groups["headroom-alerts"]["rules"]
                if r["name"] == "HeadroomExporterDown"]
        assert down and down[0]["state"] == "inactive"
    finally:
        for p in (prom, watch):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        err = watch.stderr.read().decode(errors="replace")
        perr = prom.stderr.read().decode(errors="replace")
        watch.stderr.close()
        prom.stderr.close()
    assert "error" not in err.lower(), err
    assert "level=error" not in perr, perr
