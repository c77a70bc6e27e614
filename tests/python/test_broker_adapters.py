"""The broker's adapters against local stand-ins of the documented Ollama,
vLLM (sleep mode) and ComfyUI endpoints (tests/python/broker_standins.py):
the calls they make, the memory an Ollama stand-in gives back as read from
/proc, and a failed call recorded as an event with its status."""

import json
import os
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from broker_fixtures import MiB, Broker, cli_path, rss, wait_for  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

pytestmark = pytest.mark.skipif(not os.path.exists(cli_path()),
                                reason="headroom CLI not built (set HEADROOM_CLI)")


class StandIn:
    def __init__(self, tmp, kind, *args):
        self.log = str(tmp / ("%s-%d.log" % (kind, id(self))))
        portfile = self.log + ".port"
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "broker_standins.py"),
                                      kind, portfile, self.log] + [str(a) for a in args])
        assert wait_for(lambda: os.path.exists(portfile), timeout=20)
        with open(portfile) as f:
            self.port = int(f.read())
        self.url = "http://127.0.0.1:%d" % self.port

    def calls(self):
        if not os.path.exists(self.log):
            return []
        with open(self.log) as f:
            return [json.loads(x) for x in f]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


def test_adapters_call_the_documented_endpoints(tmp_path):
    ollama = StandIn(tmp_path, "ollama", 200, 200)
    vllm = StandIn(tmp_path, "vllm", 100)
    comfy = StandIn(tmp_path, "comfyui")
    broken = StandIn(tmp_path, "comfyui", "--status", "503")
    adapters = ",".join(["ollama@host=" + ollama.url, "vllm@host=" + vllm.url,
                         "comfyui@host=" + comfy.url, "comfyui@host=" + broken.url])
    b = Broker(budget="host=1G", env={"HEADROOM_BROKER_ADAPTERS": adapters})
    try:
        st = b.status()
        assert [a["kind"] for a in st["adapters"]] == ["ollama", "vllm", "comfyui", "comfyui"]
        assert wait_for(lambda: b.status()["adapters"][0]["known_bytes"] == 400 * MiB)
        # Ollama's models count against the budget: 1 GiB less 400 MiB is free.
        free0 = b.status()["resources"][0]["free_bytes"]
        assert free0 <= 1024 * MiB - 400 * MiB
        before = rss(ollama.proc.pid)

        # 1. Room that one Ollama model makes: only Ollama is asked, it
        # unloads its least recently used model, and the grant follows.
        r = b.cli("reserve", str(free0 + 150 * MiB), "--device", "host", "--timeout", "15s",
                  "--", "true")
        assert r.returncode == 0, r.stderr
        gen = [c for c in ollama.calls() if c["path"] == "/api/generate"]
        assert gen == [{"method": "POST", "path": "/api/generate",
                        "body": {"model": "model-0:latest", "keep_alive": 0}}]
        assert before - rss(ollama.proc.pid) >= 180 * MiB  # /proc: the model is gone
        assert all(c["path"] == "/is_sleeping" for c in vllm.calls())
        assert all(c == {"method": "GET", "path": "/queue", "body": None} for c in comfy.calls())

        # 2. More than everything of known size: Ollama's last model, then
        # the servers whose size is unknown: ComfyUI's /free, vLLM's sleep.
        # The budget cannot see what they freed, so it is refused, and the
        # vLLM it put to sleep is woken again.
        free1 = b.status()["resources"][0]["free_bytes"]
        r = b.cli("reserve", str(free1 + 400 * MiB), "--device", "host", "--timeout", "15s",
                  "--", "true")
        assert r.returncode == 75, r.stderr
        assert {"method": "POST", "path": "/free",
                "body": {"unload_models": True, "free_memory": True}} in comfy.calls()
        # The wake starts before the refusal is sent, and goes on beside it.
        def posts():
            paths = [c["path"] for c in vllm.calls() if c["method"] == "POST"]
            return paths if len(paths) >= 2 else None
        assert wait_for(posts) == ["/sleep?level=1", "/wake_up"]
        assert [c["body"]["model"] for c in ollama.calls() if c["path"] == "/api/generate"] \
            == ["model-0:latest", "model-1:latest"]

        # 3. A failed call is an event with the status it got.
        # (Its refresh, GET /queue, failed with 503 too, once, from the start.)
        def release_failed():
            return [e for e in b.events("adapter_failed") if e["status"] == 503
                    and e["name"] == "comfyui@127.0.0.1:%d" % broken.port
                    and "POST /free: HTTP 503" in e["message"]]
        assert wait_for(release_failed), b.events("adapter_failed")
        def ollama_answers():
            got = [e for e in b.events("answer") if e["name"].startswith("ollama@")]
            return got if len(got) == 2 else None
        answers = wait_for(ollama_answers)
        assert sum(e["released_bytes"] for e in answers) == 400 * MiB
        assert all(e["status"] == 200 for e in answers)
    finally:
        b.stop()
        for s in (ollama, vllm, comfy, broken):
            s.stop()


def test_adapter_config_is_checked(tmp_path):
    for spec, words in [("ollama", "is not KIND[@DEVICE]=URL"),
                        ("llama=http://127.0.0.1:1", "unknown kind 'llama'"),
                        ("ollama=https://127.0.0.1:1", "is not http://HOST:PORT"),
                        ("ollama@gpu5=http://127.0.0.1:1", "no resource 'gpu5'")]:
        e = dict(os.environ, HEADROOM_BROKER_ADAPTERS=spec,
                 HEADROOM_BROKER_SOCKET=str(tmp_path / "b.sock"), XDG_CONFIG_HOME=str(tmp_path))
        r = subprocess.run([cli_path(), "watch", "--once", "--json", "--listen", "none", "--db",
                            "none"], env=e, capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and words in r.stderr, (spec, r.stderr)


def test_an_adapter_that_does_not_answer_is_an_event(tmp_path):
    import socket
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)  # accepts the connection, never answers
    port = ls.getsockname()[1]
    b = Broker(budget="host=1G", env={"HEADROOM_BROKER_ADAPTERS": "vllm@host=http://127.0.0.1:%d"
                                      % port})
    try:
        t0 = time.monotonic()
        r = b.cli("reserve", "2G", "--device", "host", "--timeout", "10s", "--", "true")
        assert r.returncode == 75
        assert time.monotonic() - t0 < 8
        fails = wait_for(lambda: b.events("adapter_failed"))
        assert fails and fails[0]["status"] == 0 and "no answer within 1s" in fails[0]["message"]
    finally:
        b.stop()
        ls.close()
