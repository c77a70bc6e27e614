"""The broker's events in history and its counters on /metrics, with real
processes: a real `headroom watch` runs the broker with a history database
and the exporter, a real agent process (holding real memory) is asked to
release for a reservation, and then `headroom history --json` on that
database and an HTTP GET of /metrics show what happened."""

import json
import os
import re
import socket
import sys
import urllib.request

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from broker_fixtures import MiB, Agent, Broker, cli_path, wait_for  # noqa: E402

pytestmark = pytest.mark.skipif(not os.path.exists(cli_path()),
                                reason="headroom CLI not built (set HEADROOM_CLI)")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def metrics(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
        return r.read().decode()


def value(text, series):
    """The value of one series ("name{labels}") in Prometheus text, or None."""
    m = re.search(r"^%s (\S+)$" % re.escape(series), text, re.M)
    return float(m.group(1)) if m else None


def offered(b, pid, nbytes):
    return any(c["pid"] == pid and c["releasable_bytes"]["host"] == nbytes
               for c in b.status()["clients"])


def test_ask_and_answer_are_recorded_and_exported(tmp_path):
    db = str(tmp_path / "history.db")
    port = free_port()
    b = Broker(budget="host=1G", args=("--db", db, "--listen", "127.0.0.1:%d" % port,
                                       "--history-flush", "1s"))
    low = None
    try:
        low = Agent(b, "lowprio", priority=0, models_mb=300)
        assert wait_for(lambda: offered(b, low.pid, 300 * MiB))
        rss0 = low.rss()
        free0 = b.status()["resources"][0]["free_bytes"]
        r = b.cli("reserve", str(free0 + 150 * MiB), "--device", "host", "--timeout", "20s",
                  "--json", "--", "true")
        assert r.returncode == 0, r.stderr
        granted = json.loads(r.stderr.splitlines()[0])
        assert granted["op"] == "granted" and granted["released_bytes"] >= 150 * MiB
        assert low.rss() <= rss0 - 150 * MiB  # /proc: the agent really gave memory back
        answers = wait_for(lambda: b.events("answer"))
        released = answers[0]["released_bytes"]
        assert answers[0]["name"] == "lowprio" and released >= 150 * MiB

        # /metrics: the counters, fed to the exporter as plain values.
        def exported():
            t = metrics(port)
            return t if value(t, 'headroom_broker_reservations_total{result="granted"}') else None
        text = wait_for(exported, timeout=10)
        assert text, metrics(port)
        assert value(text, 'headroom_broker_reservations_total{result="refused"}') == 0
        assert value(text, "headroom_broker_asks_total") >= 1
        assert value(text, "headroom_broker_answers_total") >= 1
        assert value(text, "headroom_broker_no_answers_total") == 0
        assert value(text, "headroom_broker_adapter_failures_total") == 0
        assert value(text, 'headroom_broker_client_released_bytes_total{client="lowprio"}') \
            == released
        assert value(text, "headroom_broker_released_bytes_total") == released
        assert value(text, "headroom_broker_grant_latency_seconds_count") == 1
        assert value(text, 'headroom_broker_grant_latency_seconds_bucket{le="+Inf"}') == 1
        lat = value(text, "headroom_broker_grant_latency_seconds_sum")
        assert 0 < lat < 20
        assert value(text, 'headroom_broker_grant_latency_seconds_bucket{le="30"}') == 1
        assert value(text, "headroom_broker_clients") == 1
        assert "# TYPE headroom_broker_grant_latency_seconds histogram" in text
    finally:
        if low:
            low.stop()
        b.stop()

    # History: the broker's events as typed rows, written by the one writer.
    r = b.cli("history", "--db", db, "--since", "1h", "--json")
    assert r.returncode == 0, r.stderr
    events = json.loads(r.stdout)["events"]
    kinds = [e["event"] for e in events]
    for k in ("broker_register", "broker_reserve", "broker_ask", "broker_answer",
              "broker_granted", "broker_lease_end"):
        assert k in kinds, kinds
    ans = [e for e in events if e["event"] == "broker_answer"][0]
    assert ans["name"] == "lowprio" and ans["pid"] == low.pid
    assert ans["released_bytes"] == released and ans["device"] == "host"
    assert 0 < ans["latency_s"] < 5
    ask = [e for e in events if e["event"] == "broker_ask"][0]
    assert ask["pid"] == low.pid and ask["bytes"] >= 150 * MiB - 1
    g = [e for e in events if e["event"] == "broker_granted"][0]
    assert g["released_bytes"] == granted["released_bytes"] and g["latency_s"] > 0
    # The same events as watch --json wrote them, field for field.
    live = {e["event"]: e for e in b.events()}
    assert live["broker_answer"] == ans
    # And the text table names them.
    t = b.cli("history", "--db", db, "--since", "1h")
    assert t.returncode == 0, t.stderr
    assert re.search(r"broker +answer pid %d lowprio host .* released" % low.pid, t.stdout), \
        t.stdout
