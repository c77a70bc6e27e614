#!/usr/bin/env python3
"""No room of src/ calls into a room that calls back into it.

The room graph is derived two ways, and each must be free of cycles:

  includes  an edge A -> B for every `#include "B/..."` line in src/A/
            (each room's internal headers are its interface to the others);
  symbols   with --build DIR, an edge A -> B for every function or object
            that an object file of room A uses and one of room B defines
            (read with `nm` from DIR's object files): the calls themselves,
            including those made through the public headers.

The files of the residency room are checked the same way one level down (the
registry, the planner, the device budget, the policies and the rollout call
each other in layers, not in a circle), from the symbols of their objects.

And no room of libheadroom (HR_CORE_ROOMS in CMakeLists.txt) calls into a
room of the daemon library: an inference process loads the first alone.

Exit status: 0 when no cycle is found, 1 with each cycle printed otherwise.
usage: check_rooms.py SOURCE_DIR [--build BUILD_DIR]
"""
import os
import re
import subprocess
import sys

# Edges allowed although they close a cycle, each with the reason. Empty when
# the tree is as it should be; an entry here is a known defect, not a design.
# The cycle is judged on the graph without them.
ALLOWED = {}

# Rooms whose files are checked for cycles among themselves (symbol graph).
FILE_LEVEL_ROOMS = ("residency",)

INCLUDE_RE = re.compile(r'^\s*#\s*include\s+"([a-z_]+)/[^"]+"', re.M)


def rooms_of(src):
    return sorted(d for d in os.listdir(src) if os.path.isdir(os.path.join(src, d)))


def include_graph(src):
    rooms = rooms_of(src)
    g = {r: set() for r in rooms}
    for r in rooms:
        for name in os.listdir(os.path.join(src, r)):
            if not name.endswith((".c", ".h")):
                continue
            with open(os.path.join(src, r, name), encoding="utf-8", errors="replace") as f:
                for m in INCLUDE_RE.finditer(f.read()):
                    if m.group(1) != r and m.group(1) in g:
                        g[r].add(m.group(1))
    return g


def object_files(build, src):
    """(room, file stem, path) of every object built from src/<room>/<file>.c
    that is still there: a build folder keeps the object of a file since
    renamed or removed, which would draw arrows the code no longer has."""
    out = []
    for top, _dirs, files in os.walk(os.path.join(build, "CMakeFiles")):
        parts = top.replace(os.sep, "/").split("/src/")
        if len(parts) < 2 or "/" in parts[-1]:
            continue
        for name in files:
            if name.endswith(".c.o") and os.path.exists(os.path.join(src, parts[-1], name[:-2])):
                out.append((parts[-1], name[:-4], os.path.join(top, name)))
    return out


def nm_symbols(path):
    res = subprocess.run(["nm", path], capture_output=True, text=True, check=True)
    defined, used = set(), set()
    for line in res.stdout.splitlines():
        f = line.split()
        if len(f) == 2 and f[0] == "U":
            used.add(f[1])
        elif len(f) == 3 and f[1] in "TDBRVW":
            defined.add(f[2])
    return defined, used


def symbol_graphs(build, src):
    objs = object_files(build, src)
    if not objs:
        sys.exit(f"check_rooms: no object files of src/ under {build}")
    seen = {}
    for room, stem, path in objs:
        seen.setdefault((room, stem), path)  # one build of each file is enough
    syms = {k: nm_symbols(p) for k, p in seen.items()}
    owner = {}
    for k, (defined, _used) in syms.items():
        for s in defined:
            owner[s] = k
    rooms = {}
    files = {r: {} for r in FILE_LEVEL_ROOMS}
    for k, (_defined, used) in syms.items():
        rooms.setdefault(k[0], set())
        if k[0] in files:
            files[k[0]].setdefault(k[1], set())
        for s in used:
            o = owner.get(s)
            if not o or o == k:
                continue
            if o[0] != k[0]:
                rooms[k[0]].add(o[0])
            elif k[0] in files:
                files[k[0]][k[1]].add(o[1])
    return rooms, files


def cycles(g):
    """Every edge A -> B that lies on a cycle (B reaches A)."""
    def reaches(a, b):
        stack, seen = [a], {a}
        while stack:
            n = stack.pop()
            if n == b:
                return True
            for m in g.get(n, ()):
                if m not in seen:
                    seen.add(m)
                    stack.append(m)
        return False
    return sorted((a, b) for a in g for b in g[a] if reaches(b, a))


def report(what, g, allowed):
    known = [(a, b) for (a, b) in allowed if b in g.get(a, ())]
    rest = {a: {b for b in bs if (a, b) not in allowed} for a, bs in g.items()}
    bad = cycles(rest)
    for a, b in known:
        print(f"{what}: {a} -> {b} is a known exception: {allowed[(a, b)]}")
    for a, b in bad:
        print(f"{what}: {a} -> {b} closes a cycle: {b} calls back into {a}")
    edges = ", ".join(f"{a}->{b}" for a in sorted(g) for b in sorted(g[a]))
    print(f"{what}: {len(bad)} cycle edge(s); graph: {edges}")
    return not bad


def core_rooms(root):
    with open(os.path.join(root, "CMakeLists.txt"), encoding="utf-8") as f:
        m = re.search(r"set\(HR_CORE_ROOMS ([a-z_ ]+)\)", f.read())
    if not m:
        sys.exit("check_rooms: no set(HR_CORE_ROOMS ...) in CMakeLists.txt")
    return set(m.group(1).split())


def layering(what, g, core):
    bad = sorted((a, b) for a in g if a in core for b in g[a] if b not in core)
    for a, b in bad:
        print(f"{what}: {a} (libheadroom) calls into {b} (daemon library)")
    return not bad


def main(argv):
    if len(argv) not in (2, 4) or (len(argv) == 4 and argv[2] != "--build"):
        sys.exit(__doc__)
    src = os.path.join(argv[1], "src")
    core = core_rooms(argv[1])
    g = include_graph(src)
    ok = report("includes", g, ALLOWED) & layering("includes", g, core)
    if len(argv) == 4:
        rooms, files = symbol_graphs(argv[3], src)
        ok = report("symbols", rooms, ALLOWED) & layering("symbols", rooms, core) & ok
        for r, g in files.items():
            ok = report(f"files of {r}", g, {}) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
