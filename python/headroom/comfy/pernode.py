"""Per-node memory inside ComfyUI: this process's RSS (and CUDA memory
allocated, where PyTorch uses CUDA here) read around each node's execution,
prompt after prompt, and the leak verdict that names the node whose growth
stays.

The hook is ComfyUI's own execution: the prompt worker runs one prompt at a
time through PromptExecutor.execute, which runs each node through the
module function execution.execute(server, dynprompt, caches, current_item,
extra_data, executed, prompt_id, ...). install() wraps both, once per
process, with pass-through wrappers (a coroutine for a coroutine, a plain
function for a plain one). That was chosen over the messages the server
sends ("executing", "executed") because those go only to a client that gave
a client_id (a prompt queued through the API without one sends none),
"executed" comes only from output nodes, and "executing" marks a node's
start but not its end; and over wrapping every node class's FUNCTION, which
misses packs loaded after this one and ComfyUI's V3 nodes. execute() has
had these parameter names since ComfyUI's execution model of 2024 (sync
until 0.3.4x, a coroutine since); a ComfyUI without them (older) gets no
per-node memory, and status() says why.

What one node call measures is the change of RSS between its start and its
end; a node whose output is taken from ComfyUI's cache is marked cached.
The time between nodes (ComfyUI's bookkeeping) and between prompts is
outside every node and is accounted as such. A node whose coroutine runs
while others run (an async node) shares its growth with them.

The verdict is the package's one attribution engine
(headroom.readings.attribution), fed every node call as a call of a part
named "<class> #<id>": a node is named only when this process's memory
rises prompt after prompt and the growth stays in what that node added
(memory a node allocates and ComfyUI or a later node frees is not its
growth; the time between nodes and between prompts is a part of its own).
Its thresholds are the engine's (attribution.Settings: 1 MiB kept per call,
judged over the last 30 calls once 10 are counted, after 2 warm-up calls).

Host memory is read twice: RSS, and the C heap's live bytes (glibc's
mallinfo2, headroom.readings.heap). RSS alone cannot say where growth
stays: glibc keeps freed blocks (under a threshold it raises up to 32 MiB)
and hands them to the next allocation, so one node's leak shows as RSS
growth of whichever node next makes the heap grow; the live bytes grow in
the node whose allocation stays. The engine names a node by the heap where
it is read, by RSS where it is not (and the verdict then says so).

One tracker per process (tracker()) keeps its books across prompts:
rerunning a node, the Smart Memory Manager included, never resets them.
"""

import functools
import inspect
import sys
import threading
import time

from ..pytorch import vram
from ..readings import attribution, heap, procfs
from ..readings.units import fmt_bytes
from .models import record

#: Prompts kept for the verdict and the panel.
KEEP_PROMPTS = 200
_NEEDED = ("dynprompt", "current_item", "prompt_id")


def read():
    """(monotonic seconds, RSS bytes, CUDA bytes allocated or None, the C
    heap's live bytes or None)."""
    return time.monotonic(), procfs.rss_bytes(), vram.process_bytes()[0], heap.live_bytes()


def async_nodes():
    """True when the ComfyUI running here awaits node functions that are
    coroutines (its execution.execute is a coroutine function)."""
    ex = sys.modules.get("execution")
    fn = getattr(ex, "execute", None)
    fn = getattr(fn, "__wrapped__", fn)
    return fn is not None and inspect.iscoroutinefunction(fn)


class Tracker:
    """The recent prompts of this process, node by node."""

    def __init__(self, read=read, settings=None):
        self._read = read
        self._lock = threading.Lock()
        self.installed = False
        self.why = "not installed: ComfyUI's execution is not hooked in this process"
        self.errors = 0
        self._prompts = []  # finished prompts, oldest first
        self._current = None
        self.engine = attribution.Tracker(settings, keys=("rss", "heap", "vram_allocated"))
        self._named = set()  # (part, key) already recorded as a leak event
        self._verdict = None  # the Attribution after the last prompt
        self._count = 0  # prompts finished
        self._seen = {}  # node key -> the prompt count when it last ran

    # --- the engine's side of a node call ---

    def _readings(self, r):
        if r[3] is None:  # the heap is not read (or no more): RSS alone
            self.engine.drop("heap")
        return {"rss": r[1], "vram_allocated": r[2], "heap": r[3]}

    def node_enter(self, key, before):
        """Tells the engine a call of node `key` began; returns the call."""
        return self.engine.enter(key, self._readings(before), before[0])

    def node_exit(self, call, after):
        self.engine.exit(call, self._readings(after), after[0])

    # --- recording (the hooks call these; each is cheap and never raises) ---

    def prompt_begin(self, prompt_id):
        t, rss, alloc, _ = self._read()
        with self._lock:
            if self._current is not None:
                self._finish_locked(t, rss, alloc)
            self._current = {"id": str(prompt_id), "t0": t, "rss0": rss, "alloc0": alloc,
                             "nodes": {}, "order": []}

    def node_done(self, prompt_id, info, before, after):
        """One call of a node: info (id, class, display, cached), before and
        after: read() at its start and its end."""
        with self._lock:
            cur = self._current
            if cur is None or cur["id"] != str(prompt_id):
                if cur is not None:
                    self._finish_locked(*before[:3])
                cur = self._current = {"id": str(prompt_id), "t0": before[0], "rss0": before[1],
                                       "alloc0": before[2], "nodes": {}, "order": []}
            key = "%s #%s" % (info["class"], info["id"])
            n = cur["nodes"].get(key)
            if n is None:
                n = cur["nodes"][key] = {"key": key, "id": info["id"], "class": info["class"],
                                         "display": info["display"], "calls": 0, "seconds": 0.0,
                                         "rss_change": 0, "heap_change": None,
                                         "alloc_change": None, "cached": True, "spans": []}
                cur["order"].append(key)
            n["calls"] += 1
            n["seconds"] += after[0] - before[0]
            n["rss_change"] += after[1] - before[1]
            if before[2] is not None and after[2] is not None:
                n["alloc_change"] = (n["alloc_change"] or 0) + after[2] - before[2]
            if before[3] is not None and after[3] is not None:
                n["heap_change"] = (n["heap_change"] or 0) + after[3] - before[3]
            n["cached"] = n["cached"] and bool(info["cached"])
            n["spans"].append((before[0], before[1], after[0], after[1]))

    def prompt_end(self, prompt_id):
        t, rss, alloc, _ = self._read()
        with self._lock:
            if self._current is not None and self._current["id"] == str(prompt_id):
                self._finish_locked(t, rss, alloc)
        self.judge()

    def judge(self):
        """Judges now (the engine's trend tests), keeps the result for
        verdicts(), and records each newly named node as a "leak" event (the
        panel's events). Returns the Attribution."""
        a = self.engine.judge()
        with self._lock:
            self._verdict = a
            new = [v for v in a.leaks if (v["part"], v["key"]) not in self._named]
            self._named.update((v["part"], v["key"]) for v in a.leaks)
        for v in new:
            record("leak", "per-node verdict: " + v["text"])
        return a

    def _finish_locked(self, t, rss, alloc):
        cur, self._current = self._current, None
        cur.update(t1=t, rss1=rss, alloc1=alloc)
        cur["nodes"] = [cur["nodes"][k] for k in cur.pop("order")]
        inside = sum(n["rss_change"] for n in cur["nodes"])
        cur["outside_change"] = (rss - cur["rss0"]) - inside
        self._prompts.append(cur)
        del self._prompts[:-KEEP_PROMPTS]
        self._count += 1
        for n in cur["nodes"]:
            self._seen[n["key"]] = self._count

    # --- reading ---

    def prompts(self):
        """The finished prompts, oldest first (copies of the records)."""
        with self._lock:
            return [dict(p, nodes=[dict(n) for n in p["nodes"]]) for p in self._prompts]

    def last_prompt(self):
        """The last finished prompt, or None: id, t0, t1, rss0, rss1 (RSS at
        its start and end), outside_change (RSS change outside every node),
        nodes (key, id, class, display, calls, seconds, rss_change,
        heap_change (the C heap's live bytes; None where not read),
        alloc_change (CUDA; None without), cached), in the order they
        first ran."""
        with self._lock:
            if not self._prompts:
                return None
            p = self._prompts[-1]
            return dict(p, nodes=[{k: v for k, v in n.items() if k != "spans"}
                                  for n in p["nodes"]])

    def last_prompt_text(self):
        """The last prompt's nodes as a table, for the nodes' reports."""
        p = self.last_prompt()
        if p is None:
            return "per-node memory: no prompt finished yet (%s)" % (
                "hooked" if self.installed else self.why)
        f = fmt_bytes
        opt = lambda v: f(v, True) if v is not None else "n/a"
        rows = [("node", "ms", "RSS change", "C heap change", "CUDA alloc change")]
        for n in p["nodes"]:
            rows.append((n["key"] + (" (cached)" if n["cached"] else ""),
                         "%.1f" % (n["seconds"] * 1e3), f(n["rss_change"], True),
                         opt(n["heap_change"]), opt(n["alloc_change"])))
        rows.append(("(outside the nodes)", "", f(p["outside_change"], True), "", ""))
        w = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = ["per-node memory of the last prompt (%s, %.2f s, RSS %s -> %s):" % (
            p["id"], p["t1"] - p["t0"], f(p["rss0"]), f(p["rss1"]))]
        for r in rows:
            lines.append("  " + "  ".join([r[0].ljust(w[0])]
                                          + [c.rjust(w[i + 1]) for i, c in enumerate(r[1:])]))
        return "\n".join(lines)

    def verdicts(self):
        """The verdict after the last prompt: leaks (one dict per node and
        kind of memory named: node, key, kept_per_call, process_per_call,
        counted, confidence, text) and unattributed (the process's memory
        rises and no node keeps it: key, process_per_call, candidates, text),
        judged (False without libheadroom: no verdict is given)."""
        with self._lock:
            a = self._verdict
        if a is None:
            return {"judged": None, "leaks": [], "unattributed": []}
        leaks = []
        for v in a.leaks:
            ago = self._count - self._seen.get(v["part"], self._count)
            text = v["text"] + (" (it last ran %d prompts ago)" % ago if ago else "")
            leaks.append(dict(v, node=v["part"], prompts_ago=ago, text=text))
        return {"judged": a.judged, "leaks": leaks,
                "unattributed": [dict(v) for v in a.unattributed]}

    def verdict_text(self):
        """The per-node verdict in words: the Smart Memory Manager's and the
        Memory Report's."""
        v = self.verdicts()
        if not self.installed:
            return "per-node verdict: none (%s)" % self.why
        if v["judged"] is None:
            return "per-node verdict: no prompt judged yet"
        if not v["judged"]:
            return ("per-node verdict: not judged (the trend test is libheadroom's, which is "
                    "not loaded)")
        lines = [x["text"] for x in v["leaks"] + v["unattributed"]]
        if lines and heap.status() != "ok":
            lines.append("(the C heap is not read: %s; by RSS, growth shows in whichever node "
                         "next makes the heap grow, which need not be the node that keeps it)"
                         % heap.status())
        if not lines:
            s = self.engine.settings
            return ("per-node verdict: no leak (no node keeps %s or more per prompt while this "
                    "process's memory rises; judged over the last %d prompts once %d are "
                    "counted)" % (fmt_bytes(s.min_growth), s.window, s.min_calls))
        return "per-node verdict:\n" + "\n".join("  " + x for x in lines)

    def panel(self):
        """What the panel shows: status, the last prompt's nodes, the verdict."""
        return dict(self.status(), last_prompt=self.last_prompt(),
                    verdict=self.verdicts()["leaks"], unattributed=self.verdicts()["unattributed"],
                    verdict_text=self.verdict_text())

    def status(self):
        return {"installed": self.installed, "why": "" if self.installed else self.why,
                "errors": self.errors, "prompts": self._count, "heap": heap.status()}


_tracker = Tracker()


def tracker():
    """The process's one Tracker."""
    return _tracker


# --- the hooks ------------------------------------------------------------------------------


def _node_info(arguments):
    nid = arguments["current_item"]
    dp = arguments["dynprompt"]
    try:
        cls = dp.get_node(nid)["class_type"]
    except Exception:
        cls = "?"
    display = nid
    get = getattr(dp, "get_display_node_id", None)
    if get is not None:
        try:
            display = get(nid)
        except Exception:
            pass
    cached = None
    try:
        got = arguments["caches"].outputs.get(nid)
        if inspect.isawaitable(got):  # a ComfyUI whose cache reads are coroutines
            getattr(got, "close", lambda: None)()
        else:
            cached = got is not None
    except Exception:
        pass
    return {"id": str(nid), "class": cls, "display": str(display), "cached": cached}


def _wrap_node(fn, tr):
    sig = inspect.signature(fn)

    def start(args, kwargs):
        try:
            a = sig.bind_partial(*args, **kwargs).arguments
            info, before = _node_info(a), tr._read()
            call = tr.node_enter("%s #%s" % (info["class"], info["id"]), before)
            return a["prompt_id"], info, before, call
        except Exception:
            tr.errors += 1
            return None

    def done(begun):
        if begun is None:
            return
        try:
            after = tr._read()
            tr.node_exit(begun[3], after)
            tr.node_done(begun[0], begun[1], begun[2], after)
        except Exception:
            tr.errors += 1

    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def node(*args, **kwargs):
            begun = start(args, kwargs)
            try:
                return await fn(*args, **kwargs)
            finally:
                done(begun)
    else:
        @functools.wraps(fn)
        def node(*args, **kwargs):
            begun = start(args, kwargs)
            try:
                return fn(*args, **kwargs)
            finally:
                done(begun)
    node.__headroom_hook__ = True
    return node


def _wrap_prompt(fn, tr):
    @functools.wraps(fn)
    def prompt(self, prompt, prompt_id, *args, **kwargs):
        try:
            tr.prompt_begin(prompt_id)
        except Exception:
            tr.errors += 1
        try:
            return fn(self, prompt, prompt_id, *args, **kwargs)
        finally:
            try:
                tr.prompt_end(prompt_id)
            except Exception:
                tr.errors += 1

    prompt.__headroom_hook__ = True
    return prompt


def install(execution=None, tr=None):
    """Hooks ComfyUI's execution (the `execution` module, ComfyUI's own by
    default) for per-node memory, once per process. Returns True when
    hooked; else False and tracker().why says why."""
    tr = tr or _tracker
    ex = execution if execution is not None else sys.modules.get("execution")
    node_fn = getattr(ex, "execute", None)
    pe = getattr(ex, "PromptExecutor", None)
    if ex is None:
        tr.why = "ComfyUI's execution module is not loaded in this process"
    elif node_fn is None or pe is None or not callable(getattr(pe, "execute", None)):
        tr.why = ("this ComfyUI has no execution.execute and PromptExecutor.execute (a version "
                  "older than its 2024 execution model): no per-node memory")
    elif not set(_NEEDED) <= set(inspect.signature(node_fn).parameters):
        tr.why = ("execution.execute takes no %s in this ComfyUI: no per-node memory"
                  % ", ".join(_NEEDED))
    else:
        if not getattr(node_fn, "__headroom_hook__", False):
            ex.execute = _wrap_node(node_fn, tr)
        if not getattr(pe.execute, "__headroom_hook__", False):
            pe.execute = _wrap_prompt(pe.execute, tr)
        tr.installed = True
        tr.why = ""
    return tr.installed
