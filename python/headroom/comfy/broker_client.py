"""headroom.comfy.broker_client: ComfyUI as a client of the memory broker.

Inside ComfyUI, the broker's agent (headroom.agent) offers ComfyUI's loaded
models (headroom.comfy.loaded_models(): each model's bytes on its device,
least recently used first) and answers a release by freeing through the
bridge, never behind ComfyUI's back:

- no prompt runs: ``comfy.free(target="amount")`` unloads least recently used
  models until enough is free (ComfyUI's own free_memory, which may unload
  a model in part). Where a model's offload device is its own device
  (ComfyUI --cpu), a partial unload moves nothing, so whole models are
  unloaded instead (``comfy.free(target="input")``), least recently used
  first. When ComfyUI's
  output cache still holds an unloaded model (its weights stay in RAM), the
  prompt worker is asked to reset that cache (the ``free_memory`` flag, with
  ``unload_models`` off so no other model is unloaded), which it does at
  once when idle; the broker then waits for the memory to show as free.
- a prompt runs: the flags ComfyUI's POST /free sets (unload_models and
  free_memory), which the worker acts on after the prompt; the agent waits
  up to ``wait_s`` for the models to go and reports what went. While a
  prompt runs, the offer says ComfyUI is busy (``busy()``), so the broker
  asks idle clients first; and when the reservation ends (granted or
  refused) before the worker acted, the broker's cancel makes
  ``withdraw()`` take the flags back, so models are not unloaded after the
  prompt for a reservation that no longer needs it.

The reply is the fall of the loaded models' bytes on the device, as ComfyUI
counts them (loaded_size()), before and after.

``start()`` is what the node pack calls: a daemon thread that connects
whenever a broker's socket exists (and again after the broker restarts),
unless the option ``comfy_agent`` is off (HEADROOM_COMFY_AGENT=0).
"""

import os
import threading
import time

from .. import agent as _agent
from .._c import options
from . import freeing, models as comfy

__all__ = ["ComfyModels", "start", "stop", "enabled"]


def _device(dev):
    """ComfyUI's device ("cpu", "cuda:0") as the broker names it."""
    d = str(dev)
    if d.startswith("cuda"):
        return "gpu" + (d.split(":")[1] if ":" in d else "0")
    return "host"


class ComfyModels:
    """ComfyUI's loaded models as the agent's registry: offer_items() and
    release_device(device, nbytes). `wait_s`: how long a release waits for
    the prompt worker when a prompt runs."""

    def __init__(self, wait_s=3.0):
        self.wait_s = wait_s
        self._last_used = {}  # model key -> monotonic time it was last seen most recent
        self.last_result = None
        self._flags_set = False  # set between-prompts flags for a release not yet acted on

    @staticmethod
    def _key(m):
        return (m["name"], m["class"], m["device"], m["total_bytes"])

    def _models(self):
        try:
            ms = comfy.loaded_models()
        except comfy.ComfyAbsent:
            return []
        now = time.monotonic()
        seen = set()
        for i, m in enumerate(ms):
            k = self._key(m)
            seen.add(k)
            # The list is most recently used first: the head was in use now;
            # a model first seen elsewhere counts from now.
            if i == 0 or k not in self._last_used:
                self._last_used[k] = now
        for k in list(self._last_used):
            if k not in seen:
                del self._last_used[k]
        return [(m, now - self._last_used[self._key(m)]) for m in ms]

    def offer_items(self):
        """One "model" item per loaded model with bytes on its device;
        idle_s is the time since ComfyUI last had it at the head of its
        most-recently-used list (as seen at each offer)."""
        out = []
        for m, idle in self._models():
            if m["dynamic"] or m["loaded_bytes"] <= 0:
                continue  # comfy-aimdo manages dynamic models itself
            out.append({"name": "comfyui:%s" % m["name"], "device": _device(m["device"]),
                        "kind": "model", "bytes": int(m["loaded_bytes"]),
                        "reload_bytes": int(m["total_bytes"]), "idle_s": round(idle, 1)})
        return out

    def releasable_bytes(self):
        return sum(x["bytes"] for x in self.offer_items())

    def busy(self):
        """True while ComfyUI runs a prompt: its models are in use."""
        return bool(comfy.running_prompts())

    def withdraw(self):
        """Takes back the between-prompts flags a release set while a prompt
        ran, when the worker has not acted on them yet (they are still set):
        the reservation they were for ended. Returns True when some were
        taken back."""
        if not self._flags_set:
            return False
        self._flags_set = False
        q = comfy.prompt_queue()
        if q is None or not hasattr(q, "mutex") or not isinstance(getattr(q, "flags", None), dict):
            return False
        with q.mutex:
            taken = [k for k in ("unload_models", "free_memory") if q.flags.pop(k, None)]
        if taken:
            comfy.record("free", "took back ComfyUI's between-prompts flags (%s): the "
                         "reservation they were for ended" % ", ".join(taken))
        return bool(taken)

    def release(self, nbytes):
        return self.release_device("host", nbytes)

    def _loaded_on(self, device):
        return sum(m["loaded_bytes"] for m, _ in self._models()
                   if _device(m["device"]) == device and not m["dynamic"])

    @staticmethod
    def _stay_put(device):
        """(patcher, loaded bytes) of the models on `device` whose offload
        device is that same device, least recently used first."""
        out = []
        for lm in reversed(list(comfy.model_management().current_loaded_models)):
            p = lm.model
            if p is None or comfy.is_dynamic(p) or _device(lm.device) != device:
                continue
            if str(lm.device) == str(getattr(p, "offload_device", "")):
                n = int(p.loaded_size())
                if n > 0:
                    out.append((p, n))
        return out

    def release_device(self, device, nbytes):
        """Frees at least nbytes on device if ComfyUI can; returns the bytes
        the unloaded models held there."""
        if nbytes <= 0 or not comfy.available():
            return 0
        if comfy.running_prompts():
            before = self._loaded_on(device)
            comfy.request_between_prompts(unload_models=True, free_memory=True)
            self._flags_set = True
            deadline = time.monotonic() + self.wait_s
            while time.monotonic() < deadline and self._loaded_on(device) >= before and before:
                time.sleep(0.05)
            got = max(0, before - self._loaded_on(device))
            if got:
                self._flags_set = False  # the worker acted on them
            return got
        before = self._loaded_on(device)
        stay = self._stay_put(device)
        if stay:
            # Where a model's offload device is its device (ComfyUI --cpu),
            # unloading in part moves nothing: unload whole models, least
            # recently used first, until enough.
            still, total = [], 0
            for p, n in stay:
                if total >= nbytes:
                    break
                res = freeing.free(target="input", model=p)
                still += res.in_output_cache
                total += n
            del stay, p
        else:
            res = freeing.free(target="amount", amount=int(nbytes))
            still = res.in_output_cache
        self.last_result = res
        got = max(0, before - self._loaded_on(device))
        if still:
            # The output cache holds them: let the worker reset it (at once
            # when idle), without unloading the models still loaded.
            q = comfy.prompt_queue()
            if q is not None:
                q.set_flag("unload_models", False)
                q.set_flag("free_memory", True)
                comfy.record("free", "asked ComfyUI to reset its output cache for the broker")
        return got


def enabled():
    """False when the option comfy_agent is off (config file or
    HEADROOM_COMFY_AGENT); read through the library's option table, or the
    environment alone when the library is not loadable."""
    try:
        return bool(options.process().get("comfy_agent"))
    except Exception:
        v = os.environ.get("HEADROOM_COMFY_AGENT", "1").strip().lower()
        return v not in ("0", "false", "no", "off")


_state = {"thread": None, "stop": None, "agent": None}
_state_lock = threading.Lock()


def _loop(stop, priority, interval, path):
    models = ComfyModels()
    while not stop.is_set():
        try:
            sock = _agent.socket_path(path)
        except _agent.BrokerError:
            sock = None
        if sock and os.path.exists(sock):
            try:
                a = _agent.connect(priority=priority, registry=models, name="comfyui",
                                   path=sock, interval=interval)
            except (_agent.BrokerError, OSError):
                a = None
            if a is not None:
                _state["agent"] = a
                comfy.record("free", "registered with the headroom broker at %s" % sock)
                while not stop.is_set() and a._thread.is_alive():
                    stop.wait(1.0)
                a.close()
                _state["agent"] = None
        stop.wait(2.0)


def start(priority=0, interval=1.0, path=None):
    """Starts the thread that keeps ComfyUI registered with the broker
    whenever one runs; a no-op when already started or when comfy_agent is
    off. Returns True when the thread runs."""
    with _state_lock:
        if _state["thread"] is not None:
            return True
        if not enabled():
            return False
        stop = threading.Event()
        t = threading.Thread(target=_loop, args=(stop, priority, interval, path),
                             name="headroom-comfy-agent", daemon=True)
        _state.update(thread=t, stop=stop)
        t.start()
        return True


def stop():
    """Stops the thread and unregisters."""
    with _state_lock:
        t, s = _state["thread"], _state["stop"]
        _state.update(thread=None, stop=None)
    if t is not None:
        s.set()
        t.join(timeout=10)


def agent():
    """The connected Agent, or None."""
    return _state["agent"]
