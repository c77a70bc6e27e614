"""Stand-ins of the HTTP endpoints the broker's adapters call, each served
by its own process (so the memory a stand-in gives back shows in its /proc):

  ollama   GET /api/ps, POST /api/generate {"model":..., "keep_alive":0}
           (models held as real memory, unloaded on keep_alive 0)
  vllm     GET /is_sleeping, POST /sleep?level=1, POST /wake_up (sleep mode;
           the "weights" held as real memory, dropped by sleep)
  comfyui  GET /queue (nothing running), POST /free {"unload_models":..., "free_memory":...}

They follow the documented requests and answers of Ollama, vLLM's sleep
mode and ComfyUI; they are not those programs. Each request is appended to
a log as a JSON line. Usage: broker_standins.py KIND PORTFILE LOG [MB...]
[--status N] (answer every request with status N)."""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MiB = 1 << 20


def hold(n):
    b = bytearray(n)
    for i in range(0, n, 4096):
        b[i] = 1
    return b


def main():
    kind, portfile, log = sys.argv[1:4]
    rest = sys.argv[4:]
    status = 200
    if "--status" in rest:
        status = int(rest[rest.index("--status") + 1])
        rest = rest[:rest.index("--status")]
    mbs = [int(x) for x in rest]
    models = {"model-%d:latest" % i: hold(mb * MiB) for i, mb in enumerate(mbs)}
    state = {"asleep": False, "weights": hold(mbs[0] * MiB) if kind == "vllm" and mbs else None}

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def answer(self, code, obj=None):
            body = b"" if obj is None else json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def record(self, body):
            with open(log, "a") as f:
                f.write(json.dumps({"method": self.command, "path": self.path,
                                    "body": body}) + "\n")

        def do_GET(self):
            self.record(None)
            if status != 200:
                return self.answer(status, {"error": "stand-in told to fail"})
            if kind == "ollama" and self.path == "/api/ps":
                return self.answer(200, {"models": [
                    {"name": n, "model": n, "size": len(m), "size_vram": 0,
                     "expires_at": "2026-01-01T00:0%d:00Z" % i}
                    for i, (n, m) in enumerate(models.items())]})
            if kind == "vllm" and self.path == "/is_sleeping":
                return self.answer(200, {"is_sleeping": state["asleep"]})
            if kind == "comfyui" and self.path == "/queue":
                return self.answer(200, {"queue_running": [], "queue_pending": []})
            self.answer(404, {"error": "not found"})

        def do_POST(self):
            n = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(n) if n else b""
            body = json.loads(raw) if raw else None
            self.record(body)
            if status != 200:
                return self.answer(status, {"error": "stand-in told to fail"})
            if kind == "ollama" and self.path == "/api/generate":
                if body.get("keep_alive") == 0:
                    models.pop(body["model"], None)
                return self.answer(200, {"model": body["model"], "response": "", "done": True,
                                         "done_reason": "unload"})
            if kind == "vllm" and self.path.startswith("/sleep"):
                state["asleep"], state["weights"] = True, None
                return self.answer(200)
            if kind == "vllm" and self.path == "/wake_up":
                state["asleep"] = False
                return self.answer(200)
            if kind == "comfyui" and self.path == "/free":
                return self.answer(200)
            self.answer(404, {"error": "not found"})

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    with open(portfile + ".tmp", "w") as f:
        f.write(str(srv.server_address[1]))
    import os
    os.rename(portfile + ".tmp", portfile)
    srv.serve_forever()


if __name__ == "__main__":
    main()
