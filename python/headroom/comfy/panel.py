"""The panel's view: what the node pack's sidebar and GET /headroom/snapshot
show, in one dict (panel_state)."""

import time

from .. import manager as _manager
from .._c import lib as _lib
from ..pytorch import vram
from ..readings import procfs, snapshot
from .models import absent_reason, available, dynamic_vram, events, loaded_models, running_prompts
from .pernode import tracker


def panel_state(machine=True):
    """Everything the panel and GET /headroom/snapshot show, as a dict:
    comfy (present, or why not), models, dynamic_vram, running prompts,
    this process (RSS, CUDA allocated/reserved), host memory, and with
    `machine` libheadroom's snapshot reduced to this GPU's devices and the
    processes holding them, the container (cgroup) and its OOM counters;
    events: what this module and the smart manager recorded; nodes: each
    node's memory in the last prompt and the per-node leak verdict
    (pernode.Tracker.panel)."""
    here = available()
    alloc, reserved = vram.process_bytes()
    out = {"time": time.time(), "comfy": here, "comfy_note": "" if here else absent_reason(),
           "models": loaded_models() if here else [],
           "dynamic_vram": dynamic_vram() if here else None,
           "running_prompts": running_prompts(),
           "process": {"rss_bytes": procfs.rss_bytes(), "cuda_allocated_bytes": alloc,
                       "cuda_reserved_bytes": reserved, "cuda_note": vram.cuda_status()},
           "host": procfs.host_memory(), "gpu": None, "cgroup": None, "machine_note": ""}
    if machine:
        if not _lib.available():
            out["machine_note"] = "libheadroom not loaded: no GPU processes or container view"
        else:
            try:
                # The GPU holders alone (the probe's selection with top 0), for their names.
                snap = snapshot.snapshot(what=["host", "cgroup", "procs", "gpus"], select=("", 0))
                names = {p["pid"]: p.get("name", "") for p in snap.get("processes", [])}
                gpu = dict(snap.get("gpu") or {})
                gpu["processes"] = [dict(p, name=names.get(p.get("pid"), ""))
                                    for p in gpu.get("processes", [])]
                out["gpu"] = gpu
                out["cgroup"] = snap.get("cgroup")
            except Exception as e:  # a failed probe is shown, not raised into the panel
                out["machine_note"] = "libheadroom snapshot failed: %s" % e
    ev = events()
    st = _manager.manager().status()
    for t, text in st["events"]:
        kind = "leak" if "leak" in text else text.split(":", 1)[0]
        ev.append({"time": t, "kind": kind, "text": "smart manager: " + text})
    cg = out["cgroup"] or {}
    for key in ("oom_events", "oom_kill_events"):
        if isinstance(cg.get(key), int) and cg[key] > 0:
            ev.append({"time": out["time"], "kind": "oom",
                       "text": "container %s: %d" % (key, cg[key])})
    ev.sort(key=lambda e: e["time"])
    out["events"] = ev[-30:]
    out["manager"] = {"running": st["running"], "level": st["level"], "leak": st["leak"]}
    out["nodes"] = tracker().panel()
    return out
