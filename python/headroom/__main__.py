"""The package's command line, installed as ``headroom-py`` and run as
``python3 -m headroom``: the features of the Python layer for a machine that
has the wheel but not the ``headroom`` CLI (which a wheel does not carry).

  headroom-py snapshot [--root DIR] [--what host,cgroup,procs,gpus,pss]
      the machine's memory as JSON, as ``headroom status --json`` prints it
  headroom-py library
      the path and version of the libheadroom this package loads (the file
      to give torch.cuda.memory.CUDAPluggableAllocator)
  headroom-py trace import SNAPSHOT.pickle -o TRACE
      python3 -m headroom.trace: a PyTorch snapshot or RMM log to a trace
"""

import argparse
import json
import sys

from . import __version__
from ._c import lib as _lib
from .readings.snapshot import snapshot
from .trace import main as trace_main


def _snapshot(args):
    what = [w for w in args.what.split(",") if w] if args.what else None
    json.dump(snapshot(root=args.root, what=what), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def _library(args):
    _lib.load()
    print("%s %s" % (_lib.loaded_path(), _lib.load().hr_version().decode()))
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["trace"]:
        return trace_main(argv[1:])
    ap = argparse.ArgumentParser(
        prog="headroom-py",
        description="headroom's Python layer from the command line. The full CLI is the "
                    "'headroom' program (built with CMake; not part of the wheel).")
    ap.add_argument("--version", action="version", version="headroom (Python) " + __version__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    snap = sub.add_parser("snapshot", help="the machine's memory as JSON")
    snap.add_argument("--root", help="read /proc and /sys under this folder")
    snap.add_argument("--what", help="comma-separated parts: host, cgroup, procs, gpus, pss")
    sub.add_parser("library", help="the libheadroom this package loads: path and version")
    sub.add_parser("trace", help="import PyTorch snapshots and RMM logs (headroom-py trace -h)")
    args = ap.parse_args(argv)
    try:
        return {"snapshot": _snapshot, "library": _library}[args.cmd](args)
    except (_lib.HeadroomError, ValueError) as e:
        print("headroom-py: %s" % e, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
