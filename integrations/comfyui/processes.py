"""What the Memory Monitor lists beside this process: the container
(cgroup) it runs in, and the processes whose name or command line holds one
of the filter's words, as libheadroom's probe selects them (the selection
status and watch show; the probe also knows each process's GPU memory), or
from /proc read here without the library.
"""

import headroom
from headroom.readings import procfs as _procfs
from headroom.readings.units import fmt_bytes


def cgroup():
    """This process's cgroup through libheadroom's probe, when the library is
    there and the cgroup has a memory limit; else None."""
    if not headroom.library_available():
        return None
    try:
        cg = headroom.snapshot(what=["cgroup"])["cgroup"]
    except headroom.HeadroomError:
        return None
    if cg.get("state") != "ok" or not isinstance(cg.get("limit_bytes"), int):
        return None
    if not isinstance(cg.get("usage_bytes"), int) or cg["limit_bytes"] <= 0:
        return None
    return cg


def matching(terms, top=10):
    """Processes whose name or command line contains one of `terms`: the
    probe's one selection (every process holding GPU memory, most first,
    then the `top` largest by RSS; this process is never among them, the
    report shows it on its own line), and where the list came from. Without
    libheadroom, /proc read here: the `top` largest by RSS."""
    if headroom.library_available():
        try:
            snap = headroom.snapshot(what=["procs", "gpus"], select=(",".join(terms), top))
        except headroom.HeadroomError:
            snap = None
        if snap is not None:
            return snap["processes"], "libheadroom probe"
    return _procfs.processes(terms, top=top), "/proc"


def lines(terms):
    """The monitor's lines for the processes matching `terms`."""
    f = fmt_bytes
    procs, source = matching(terms)
    out = ["processes matching %s: %d (%s)" % (", ".join(terms), len(procs), source)]
    for p in procs:
        gpu = p.get("gpu_bytes")
        out.append("  %7d %-16s RSS %10s%s" % (p["pid"], p["name"][:16], f(p["rss_bytes"]),
                                               "  GPU %s" % f(gpu) if gpu else ""))
    return out
