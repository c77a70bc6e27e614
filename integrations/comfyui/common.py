"""What the pack's nodes share: the wildcard type, input checks, the mode
input, the text a node shows, the library's levels for a node's one
threshold, and the VRAM readings that set this process's use beside the
device's.

Every input of every node carries a tooltip (ComfyUI's `tooltip` option) and
every output one (OUTPUT_TOOLTIPS): the README's tables are written from
them (readme_tables.py), so the tooltip is the one place an input is
described.
"""

import os
import sys

try:
    import headroom
except ImportError:  # a link into a checkout: use its python/ folder
    _here = os.path.dirname(os.path.realpath(__file__))
    sys.path.insert(0, os.path.normpath(os.path.join(_here, "..", "..", "python")))
    import headroom

from headroom import free as _free
from headroom._c import cleanup as _cleanup, options as _options
from headroom.pytorch import vram as _vram
from headroom.readings import detection as _detection

CATEGORY = "headroom"
MODES = list(_free.MODES)


class AnyType(str):
    """ComfyUI's wildcard type: equal to every type, so any output can be
    wired into a pass-through input."""

    def __ne__(self, other):
        return False

    def __eq__(self, other):
        return True

    __hash__ = str.__hash__


ANY = AnyType("*")

PASS_IN = "passed through unchanged; the edge only fixes when the node runs"
PASS_OUT = "the input, unchanged"


def percent(value, label):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
        raise ValueError("%s must be a percentage in [0, 100]; got %r" % (label, value))
    return float(value)


def nonneg(value, label):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError("%s must be a number >= 0; got %r" % (label, value))
    return float(value)


def choice(value, choices, label):
    if value not in choices:
        raise ValueError("%s must be one of %s; got %r" % (label, ", ".join(choices), value))
    return value


def mode_input(default=None, what="what to free"):
    """The mode input: the cleanup modes, its tooltip the rows of
    libheadroom's mode table (the one `headroom watch --mode` reads) when
    the library is there."""
    spec = {} if default is None else {"default": default}
    try:
        rows = "; ".join("%s: %s" % (m["name"], m["summary"]) for m in _cleanup.modes())
    except Exception:  # no library: every mode releases the caches alone
        rows = "without libheadroom every mode releases the caches alone"
    spec["tooltip"] = "%s (the cleanup modes of docs/freeing-memory.md): %s" % (what, rows)
    return (MODES, spec)


def ui(text, *result):
    return {"ui": {"text": [text]}, "result": tuple(result)}


def show(unique_id, text):
    """Sends `text` to the node's text widget (the web extension listens for
    "headroom.report"); for nodes whose outputs must stay a plain tuple."""
    srv = sys.modules.get("server")
    inst = getattr(getattr(srv, "PromptServer", None), "instance", None)
    if inst is None or unique_id is None:
        return
    try:
        inst.send_sync("headroom.report", {"node": str(unique_id), "text": text},
                       getattr(inst, "client_id", None))
    except Exception:  # the report is also on the node's output; a lost message is no error
        pass


def always_run(cls):
    # NaN never equals itself, so ComfyUI never treats the node's last output
    # as cached: memory readings are stale the moment they are taken.
    cls.IS_CHANGED = classmethod(lambda c, **kw: float("nan"))
    return cls


# --- levels -------------------------------------------------------------------------------


def level(prev, value, threshold, kind):
    """The level ("ok", "warning", "critical") after `prev` for a use of
    `value` percent against a node's one threshold, by the library's
    classifier (hr_level_update, as watch and the smart manager classify):
    warning at `threshold`, critical at the option table's critical level
    for `kind` ("ram" or "vram") or at the threshold when that is higher,
    and the table's hysteresis. None without the library (the node then
    says so instead of deciding with other arithmetic)."""
    if not _detection.available():
        return None
    o = _options.process()
    critical = max(threshold, o.get(kind + "_critical"))
    return _detection.level_update(prev or "ok", value, threshold, critical,
                                   o.get("hysteresis"))


def level_word(lvl):
    return {"warning": "WARNING ", "critical": "CRITICAL "}.get(lvl, "")


def no_levels():
    return "no level classifier (%s)" % (_detection.unavailable_reason() or "libheadroom")


# --- VRAM: this process beside the device --------------------------------------------------


def _driver_bytes():
    """{device index: bytes} this process holds by the driver's count (NVML
    through libheadroom's probe), or None without that reading."""
    if not headroom.library_available():
        return None
    try:
        # The processes too: the probe maps the driver's (host) pids to ours
        # through them (in a container the two differ).
        gpu = headroom.snapshot(what=["gpus", "procs"], select=("", 0))["gpu"]
    except headroom.HeadroomError:
        return None
    if gpu.get("state") != "ok":
        return None
    me, out = os.getpid(), {}
    for p in gpu.get("processes", []):
        if p.get("local_pid") == me and isinstance(p.get("used_bytes"), int):
            out[p["gpu"]] = out.get(p["gpu"], 0) + p["used_bytes"]
    return out


def vram_rows():
    """Per CUDA device: index, name, total_bytes, device_bytes (used by every
    process), device_percent, source; process_bytes (this process's own
    use: PyTorch's reserved bytes when CUDA is initialised here, else the
    driver's count for this pid, else 0), process_percent (of the device),
    process_label (where process_bytes comes from), allocated_bytes
    (PyTorch's allocated, or None). [] without a VRAM reading."""
    devs = _vram.devices()
    if not devs:
        return []
    mine = _vram.by_device()
    driver = None if mine else _driver_bytes()
    rows = []
    for d in devs:
        total = d["total_bytes"]
        if d["index"] in mine:
            alloc, own = mine[d["index"]]
            label = "PyTorch reserved"
        elif driver is not None:
            alloc, own = None, driver.get(d["index"], 0)
            label = "driver's count for this process"
        else:
            alloc, own = None, 0
            label = "none: %s" % _vram.cuda_status()
        rows.append({"index": d["index"], "name": d["name"], "total_bytes": total,
                     "device_bytes": total - d["free_bytes"], "device_percent": d["used_percent"],
                     "source": d["source"], "process_bytes": own,
                     "process_percent": 100.0 * own / total, "process_label": label,
                     "allocated_bytes": alloc})
    return rows
