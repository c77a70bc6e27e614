"""The broker against two real ComfyUIs (--cpu), each with the headroom node
pack (integrations/comfyui, whose agent registers ComfyUI with the broker)
and this test pack (headroom_testpack: a model of a given size loaded
through comfy.model_management, a node that keeps a prompt running).

Not part of `make test` (two ComfyUIs take minutes to start on a loaded
machine); its results are recorded in docs/broker.md (VERIFIED). It prints
what it saw and exits non-zero when a check fails.

1. One ComfyUI mid prompt, the other idle, each with a 512 MiB model; the
   budget leaves 300 MiB free. A reservation of 700 MiB needs one model: it
   is granted within broker_timeout + 2 s by the idle one; the busy one is
   not asked and keeps its model after its prompt.
2. The busy one has no room to give and the idle one has none to offer: a
   reservation that needs the busy one's model asks it (last), it answers 0
   within its wait, the reservation is refused, and the flags its agent set
   are taken back: after its prompt, its model is still loaded.
3. Both idle with a model each: one reservation unloads exactly one, and no
   pressure ask follows the grant.

Usage: verify_broker.py COMFY_DIR_A COMFY_DIR_B [PORT_A PORT_B]
(each a copy of ComfyUI with both packs in custom_nodes)."""

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CLI = os.environ.get("HEADROOM_CLI") or os.path.join(REPO, "build", "release", "headroom")
LIB = os.environ.get("HEADROOM_LIB") or os.path.join(REPO, "build", "release",
                                                     "libheadroom.so")
COMFY_PY = os.environ.get("COMFY_PYTHON", "/work/ext/comfy-venv/bin/python")
MiB = 1 << 20
sys.path.insert(0, os.path.join(REPO, "python"))
sys.path.insert(0, os.path.join(REPO, "tests", "python"))
from broker_fixtures import Broker  # noqa: E402
from headroom import agent  # noqa: E402

failures = []


def check(ok, what):
    print(("  ok    " if ok else "  FAIL  ") + what, flush=True)
    if not ok:
        failures.append(what)


def rss(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def http(port, path, body=None):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path),
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"null")


def wait(pred, timeout, step=0.2):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            v = pred()
        except (OSError, agent.BrokerError, KeyError):
            v = None
        if v:
            return v
        time.sleep(step)
    return pred()


class Comfy:
    def __init__(self, folder, port, env):
        self.port = port
        self.log = open(os.path.join(env["HR_VERIFY_DIR"], "comfy-%d.log" % port), "w")
        self.proc = subprocess.Popen([COMFY_PY, "main.py", "--cpu", "--listen", "127.0.0.1",
                                      "--port", str(port)], cwd=folder, env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT)

    def up(self):
        try:
            http(self.port, "/system_stats")
            return True
        except OSError:
            return False

    def prompt(self, name, megabytes, seconds):
        g = {"1": {"class_type": "HeadroomTestModel",
                   "inputs": {"megabytes": megabytes, "name": name}},
             "2": {"class_type": "HeadroomTestHold",
                   "inputs": {"model": ["1", 0], "seconds": seconds}}}
        return http(self.port, "/prompt", {"prompt": g, "client_id": "verify"})

    def running(self):
        return bool(http(self.port, "/queue")["queue_running"])

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def since(watch, mark, kind):
    """The broker's events of `kind` after line `mark` of watch's output."""
    return [e for e in watch.lines[mark:] if e.get("event") == "broker_" + kind]


def start_broker(env, used, warn="100", critical="100", adapters=""):
    """A watch with its broker, its budget 300 MiB over what is used."""
    e = {k: env[k] for k in ("HEADROOM_BROKER_SOCKET", "XDG_CONFIG_HOME")}
    e.update(HEADROOM_BROKER_TIMEOUT="5s", HEADROOM_PATIENCE="5s", HEADROOM_RAM_WARN=warn,
             HEADROOM_RAM_CRITICAL=critical, HEADROOM_BROKER_ADAPTERS=adapters)
    return Broker(budget="host=%dM" % ((used + 300 * MiB) // MiB), env=e)


def clients(path):
    return {c["pid"]: c for c in agent.status(path)["clients"]}


def reserve(env, nbytes, timeout="30s"):
    t0 = time.monotonic()
    r = subprocess.run([CLI, "reserve", str(nbytes), "--device", "host", "--timeout", timeout,
                        "--json", "--", "true"], env=env, capture_output=True, text=True,
                       timeout=120)
    took = time.monotonic() - t0
    time.sleep(1.5)  # the watch writes the broker's events at its next sample
    first = r.stderr.splitlines()[0] if r.stderr else "{}"
    try:
        answer = json.loads(first)
    except ValueError:
        answer = {"op": "?", "text": r.stderr}
    return r.returncode, answer, took, r.stderr


def main():
    a_dir, b_dir = sys.argv[1:3]
    pa, pb = (int(x) for x in sys.argv[3:5]) if len(sys.argv) > 4 else (8209, 8219)
    work = tempfile.mkdtemp(prefix="hr-verify-", dir="/tmp")
    sock = os.path.join(work, "broker.sock")
    env = dict(os.environ, HEADROOM_BROKER_SOCKET=sock, HEADROOM_LIB=LIB, XDG_CONFIG_HOME=work,
               PYTHONPATH=os.path.join(REPO, "python") + ":/work/ext/stubs", HR_VERIFY_DIR=work,
               HEADROOM_LOG_LEVEL="warn")
    a, b = Comfy(a_dir, pa, env), Comfy(b_dir, pb, env)
    watch = None
    try:
        print("starting two ComfyUIs (%s, %s) ..." % (pa, pb), flush=True)
        check(wait(lambda: a.up() and b.up(), 600, 2), "both ComfyUIs answer /system_stats")
        a.prompt("a", 512, 90)  # mid prompt for 90 s
        b.prompt("b", 512, 0)   # idle once its model is loaded
        check(wait(lambda: a.running() and not b.running()
                   and http(pb, "/history"), 180, 1), "A runs a prompt, B is idle")
        time.sleep(3)
        # A's own API too, through the comfyui adapter: its GET /queue says
        # whether a prompt runs (it is asked only after every size known).
        watch = start_broker(env, rss(a.proc.pid) + rss(b.proc.pid),
                             adapters="comfyui@host=http://127.0.0.1:%d" % pa)
        check(wait(lambda: agent.status(sock)["adapters"][0]["busy"], 10, 0.5),
              "the comfyui adapter reads A's GET /queue: busy")
        check(wait(lambda: len(clients(sock)) == 2 and all(
            c["releasable_bytes"]["host"] >= 512 * MiB for c in clients(sock).values()), 60, 0.5),
            "both register and offer their 512 MiB model")
        cs = clients(sock)
        check(cs[a.proc.pid]["busy"] and not cs[b.proc.pid]["busy"],
              "the broker sees A busy (mid prompt) and B idle")

        print("1. one mid prompt, one idle: reserve 700 MiB (300 MiB free)", flush=True)
        free0 = agent.status(sock)["resources"][0]["free_bytes"]
        mark = len(watch.lines)
        rc, ans, took, err = reserve(env, free0 + 400 * MiB)
        check(rc == 0 and ans.get("op") == "granted", "granted (%s)" % err.strip()[:200])
        check(took <= 5 + 2, "within broker_timeout + 2 s: %.2f s" % took)
        asks = since(watch, mark, "ask")
        check([e["pid"] for e in asks] == [b.proc.pid],
              "only the idle one was asked: %s" % [(e["name"], e["pid"]) for e in asks])
        check(ans.get("released_bytes", 0) >= 400 * MiB,
              "it released %.0f MiB" % (ans.get("released_bytes", 0) / MiB))
        check(wait(lambda: not a.running(), 120, 1), "A's prompt ended")
        time.sleep(2)
        check(clients(sock)[a.proc.pid]["releasable_bytes"]["host"] >= 512 * MiB,
              "A still holds its model after its prompt")
        check(not agent.status(sock)["adapters"][0]["busy"], "the comfyui adapter: idle now")

        print("2. a reservation only the busy one could serve, refused: its flags go back",
              flush=True)
        # Without the adapter now: ComfyUI's POST /free flags cannot be taken
        # back over HTTP (docs/broker.md), and it would be the last one asked.
        watch.stop()
        time.sleep(2)
        watch = start_broker(env, rss(a.proc.pid) + rss(b.proc.pid) - 300 * MiB)
        check(wait(lambda: len(clients(sock)) == 2, 60, 0.5), "both register again")
        a.prompt("a2", 512, 40)
        check(wait(lambda: a.running() and clients(sock)[a.proc.pid]["busy"], 120, 0.5),
              "A runs a prompt again")
        time.sleep(2)
        free1 = agent.status(sock)["resources"][0]["free_bytes"]
        mark = len(watch.lines)
        rc, ans, took, err = reserve(env, free1 + 400 * MiB, timeout="20s")
        check(rc == 75 and ans.get("op") == "refused", "refused: %s" % ans.get("reason"))
        check([e["pid"] for e in since(watch, mark, "ask")] == [a.proc.pid], "A was asked")
        said = [(e["event"][7:], e.get("released_bytes"), round(e.get("latency_s", 0), 2))
                for e in watch.lines[mark:] if e.get("pid") == a.proc.pid
                and e.get("event") in ("broker_answer", "broker_no_answer", "broker_cancel")]
        check(said and said[0][0] in ("answer", "no_answer") and not said[0][1],
              "A gave nothing (its prompt runs): %s" % said)
        check(wait(lambda: not a.running(), 120, 1), "A's prompt ended")
        time.sleep(3)
        check(clients(sock)[a.proc.pid]["releasable_bytes"]["host"] >= 512 * MiB,
              "A's model is still loaded: the flags set for the refused reservation were "
              "taken back")

        print("3. both idle, a model each: one reservation unloads exactly one", flush=True)
        b.prompt("b2", 512, 0)
        check(wait(lambda: clients(sock)[b.proc.pid]["releasable_bytes"]["host"] >= 512 * MiB
                   and not b.running(), 120, 0.5), "B loaded a model again")
        # A broker again with 300 MiB free, pressure at 85 % (caches: none
        # offered) and 95 % (models): the lease of the coming grant would
        # bring use over 95 % if it counted before it is used.
        watch.stop()
        time.sleep(2)
        watch = start_broker(env, rss(a.proc.pid) + rss(b.proc.pid), "85", "95")
        check(wait(lambda: len(clients(sock)) == 2 and all(
            c["releasable_bytes"]["host"] >= 512 * MiB and not c["busy"]
            for c in clients(sock).values()), 60, 0.5), "both register again, idle")
        time.sleep(2)
        before = {p: c["releasable_bytes"]["host"] for p, c in clients(sock).items()}
        free2 = agent.status(sock)["resources"][0]["free_bytes"]
        mark = len(watch.lines)
        rc, ans, took, err = reserve(env, free2 + 400 * MiB)
        check(rc == 0 and ans.get("op") == "granted", "granted in %.2f s" % took)
        time.sleep(6)  # several pressure looks
        asks = since(watch, mark, "ask")
        check(len(asks) == 1, "exactly one was asked: %s" % [e["name"] for e in asks])
        check(since(watch, mark, "pressure") == [], "no pressure ask after the grant")
        after = {p: c["releasable_bytes"]["host"] for p, c in clients(sock).items()}
        fell = {p: (before[p] - after[p]) // MiB for p in before if after[p] < before[p]}
        check(len(fell) == 1 and list(fell.values())[0] == 512,
              "one ComfyUI unloaded one model (MiB by pid: %s), the other kept all" % fell)
    finally:
        if watch:
            watch.stop()
        a.stop()
        b.stop()
    print("%d failed" % len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
