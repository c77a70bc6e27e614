"""Drives a real ComfyUI that has headroom's pack and this test pack in
custom_nodes/ (integrations/comfyui/VERIFIED.md says how it was started),
and prints what it saw. ComfyUI's RSS is read by this script from
/proc/<pid>/status (VmRSS), not from headroom's books.

    python scenarios.py --url http://127.0.0.1:8212 --pid PID leak [--prompts 30]
    python scenarios.py ... flat [--prompts 50]
    python scenarios.py ... aux | clip | wait | heapcost

Standard library only.
"""

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
import uuid

MIB = 1 << 20


class Comfy:
    def __init__(self, url, pid):
        self.url, self.pid = url.rstrip("/"), pid
        self.client_id = str(uuid.uuid4())

    def get(self, path):
        with urllib.request.urlopen(self.url + path, timeout=60) as r:
            return json.loads(r.read())

    def post(self, path, body):
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise RuntimeError("POST %s: %d %s" % (path, e.code, e.read()[:2000])) from None

    def run(self, graph, timeout=600):
        """Queues `graph` and waits for it; returns (prompt id, history entry)."""
        pid = self.post("/prompt", {"prompt": graph, "client_id": self.client_id})["prompt_id"]
        t0 = time.time()
        while time.time() - t0 < timeout:
            h = self.get("/history/" + pid)
            if pid in h and h[pid].get("status", {}).get("completed") is not None:
                return pid, h[pid]
            time.sleep(0.1)
        raise RuntimeError("prompt %s did not finish in %d s" % (pid, timeout))

    def vmrss(self):
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS for pid %d" % self.pid)


def chain(*nodes):
    """Source "1", then (class, mib) nodes "2".., then a Sink."""
    g = {"1": {"class_type": "HeadroomTestSource", "inputs": {"seed": 0}}}
    for i, (cls, mib) in enumerate(nodes, start=2):
        g[str(i)] = {"class_type": cls, "inputs": {"value": [str(i - 1), 0], "mib": mib}}
    n = len(nodes) + 2
    g[str(n)] = {"class_type": "HeadroomTestSink", "inputs": {"value": [str(n - 1), 0]}}
    return g


def verdicts(c, graph, prompts, label):
    """Runs `graph` `prompts` times; per prompt: VmRSS (read here) and the
    pack's verdict from /headroom/snapshot. Prints a line per prompt and a
    summary dict."""
    rows, first = [], {}
    rss0 = c.vmrss()
    for i in range(prompts):
        pid, h = c.run(graph)
        if h["status"]["status_str"] != "success":
            raise RuntimeError("prompt %d failed: %s" % (i, h["status"]))
        snap = c.get("/headroom/snapshot")
        nodes = snap.get("nodes") or {}
        named = [v["node"] for v in nodes.get("verdict", [])]
        rss = c.vmrss()
        for k in named:
            first.setdefault(k, i + 1)
        last = nodes.get("last_prompt") or {}
        # Per node of this prompt: (RSS change, C heap change) in MiB.
        per = {n["key"]: (round(n["rss_change"] / MIB, 1),
                          None if n.get("heap_change") is None else round(n["heap_change"] / MIB, 1))
               for n in last.get("nodes", [])}
        rows.append({"prompt": i + 1, "vmrss_mib": round(rss / MIB, 1), "named": named,
                     "rss_heap_mib": per})
        print(json.dumps(rows[-1]), flush=True)
    out = {"scenario": label, "prompts": prompts, "vmrss_start_mib": round(rss0 / MIB, 1),
           "vmrss_end_mib": round(c.vmrss() / MIB, 1), "first_named": first,
           "named_at_end": rows[-1]["named"], "verdict_text": nodes.get("verdict_text", "")}
    print(json.dumps(out, indent=1))
    return out


def main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8212")
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--prompts", type=int, default=0)
    ap.add_argument("--heap-off", action="store_true",
                    help="turn headroom's C heap readings off first: judge by RSS alone")
    ap.add_argument("what", choices=["leak", "flat", "aux", "clip", "wait", "heapcost"])
    a = ap.parse_args(argv)
    c = Comfy(a.url, a.pid)
    if a.heap_off:
        print("heap:", c.run({"1": {"class_type": "HeadroomTestHeapOff",
                                    "inputs": {}}})[1]["outputs"]["1"]["text"][0])
    if a.what == "leak":
        # A node leaking 20 MiB per prompt among three working nodes.
        verdicts(c, chain(("HeadroomTestTransient", 20), ("HeadroomTestLeak", 20),
                          ("HeadroomTestHandoff", 20)), a.prompts or 30, "leak")
    elif a.what == "flat":
        # Nothing kept: allocated and freed (20 MiB), handed on (20 MiB).
        verdicts(c, chain(("HeadroomTestTransient", 20), ("HeadroomTestTransient", 20),
                          ("HeadroomTestHandoff", 20)), a.prompts or 50, "flat")
    elif a.what == "aux":
        g = {"1": {"class_type": "HeadroomTestLoadBig", "inputs": {"size_mib": 64, "tag": "aux"}},
             "2": {"class_type": "HeadroomTestAddAuxDirect",
                   "inputs": {"model": ["1", 0], "size_mib": 32}},
             "3": {"class_type": "HeadroomTestSink", "inputs": {"value": ["2", 0]}}}
        c.run(g)
        print(json.dumps([(m["name"], m["total_bytes"] // MIB, m["loaded_bytes"] // MIB,
                           m["auxiliary_of"]) for m in c.get("/headroom/models")["models"]]))
    elif a.what == "clip":
        g = {"1": {"class_type": "HeadroomTestRandomCLIP", "inputs": {}},
             "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 0],
                                                              "text": "a photo of a cat"}},
             "3": {"class_type": "HeadroomFreeMemoryCLIP",
                   "inputs": {"clip": ["1", 0], "mode": "balanced", "cooldown": 0.0,
                              "after": ["2", 0]}},
             "4": {"class_type": "HeadroomTestSink", "inputs": {"value": ["3", 1]}}}
        before = c.vmrss()
        pid, h = c.run(g)
        print("status:", h["status"]["status_str"], "VmRSS before/after MiB:",
              before // MIB, c.vmrss() // MIB)
        print("Free Memory (CLIP) report:", h["outputs"].get("4", {}).get("text"))
        print("models after:", [(m["name"], m["class"], m["loaded_bytes"] // MIB)
                                for m in c.get("/headroom/models")["models"]])
    elif a.what == "wait":
        g = {"1": {"class_type": "HeadroomTestSource", "inputs": {"seed": 0}},
             "2": {"class_type": "HeadroomWaitForMemory",
                   "inputs": {"value": ["1", 0], "amount": "1T", "where": "compute device",
                              "patience": 3.0, "poll": 0.5, "on_timeout": "continue"}},
             "3": {"class_type": "HeadroomTestSink", "inputs": {"value": ["2", 1]}},
             "4": {"class_type": "HeadroomTestSleep",
                   "inputs": {"value": ["1", 0], "seconds": 2.0}},
             "5": {"class_type": "HeadroomTestSink", "inputs": {"value": ["4", 0]}}}
        t0 = time.time()
        pid, h = c.run(g)
        print("status:", h["status"]["status_str"], "prompt seconds: %.1f" % (time.time() - t0))
        print("wait report:", h["outputs"].get("3", {}).get("text"))
        print("messages:", [(m[0], m[1].get("node")) for m in h["status"]["messages"]])
    elif a.what == "heapcost":
        pid, h = c.run({"1": {"class_type": "HeadroomTestHeapCost", "inputs": {"n": 200}}})
        print(h["outputs"]["1"]["text"][0])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
