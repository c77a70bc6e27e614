#!/usr/bin/env python3
"""Function lengths in src/ and tools/: the 90th percentile, the longest, and
how many are over the limits.

Each C function definition (Universal Ctags: --c-kinds=f, with its first and
last line, --fields=+ne) counts from the line of its name to its closing
brace. Per tree (src, tools), and for both together, it prints the number of
functions, the 90th percentile (nearest rank), the longest, how many are over
40 lines (the aim) and over 100 (never), and then the longest functions.

The limits: no function over --max lines (100) and a 90th percentile under
--p90 lines (40), in each tree. Without --enforce it only reports, so it can
run while the tree is on its way there; with --enforce (CMake:
-DHR_ENFORCE_FUNCTION_LENGTHS=ON) a tree over a limit fails it.

Exit status: 0, or 1 with --enforce when a limit is broken; 77 (a skip under
CTest) when ctags is not installed or is not Universal Ctags; 2 when ctags
fails or finds no function.
usage: check_functions.py SOURCE_DIR [--enforce] [--max N] [--p90 N] [--top N]
"""
import argparse
import math
import os
import shutil
import subprocess
import sys

TREES = ("src", "tools")
AIM = 40


def functions(source_dir, tree):
    """(lines, name, path:line) of every C function definition under tree."""
    out = subprocess.run(
        ["ctags", "-x", "--_xformat=%N\t%F\t%n\t%e", "--fields=+ne", "--languages=C",
         "--langmap=C:.c.h", "--c-kinds=f", "-R", tree],
        cwd=source_dir, capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) != 4 or not parts[2].isdigit() or not parts[3].isdigit():
            continue  # a definition whose end ctags did not find
        name, path, start, end = parts[0], parts[1], int(parts[2]), int(parts[3])
        found.append((end - start + 1, name, "%s:%d" % (path, start)))
    return found


def p90(lengths):
    """The 90th percentile by nearest rank: the smallest length that at least
    90% of the functions do not exceed."""
    s = sorted(lengths)
    return s[max(0, math.ceil(0.9 * len(s)) - 1)] if s else 0


def summary(label, fns, limit):
    lengths = [n for n, _, _ in fns]
    return ("%-11s %4d functions, p90 %3d, longest %3d, over %d: %3d, over %d: %2d"
            % (label, len(fns), p90(lengths), max(lengths, default=0), AIM,
               sum(n > AIM for n in lengths), limit, sum(n > limit for n in lengths)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("source_dir")
    ap.add_argument("--enforce", action="store_true", help="fail when a limit is broken")
    ap.add_argument("--max", type=int, default=100, help="longest a function may be")
    ap.add_argument("--p90", type=int, default=40, help="the 90th percentile must be under this")
    ap.add_argument("--top", type=int, default=15, help="how many of the longest to list")
    a = ap.parse_args()
    if not shutil.which("ctags"):
        print("check_functions: ctags is not installed (Universal Ctags: apt install "
              "universal-ctags)")
        return 77
    version = subprocess.run(["ctags", "--version"], capture_output=True, text=True).stdout
    if "Universal Ctags" not in version:
        print("check_functions: ctags is not Universal Ctags: %s" % version.split("\n")[0])
        return 77
    per_tree = {}
    try:
        for tree in TREES:
            if os.path.isdir(os.path.join(a.source_dir, tree)):
                per_tree[tree] = functions(a.source_dir, tree)
    except subprocess.CalledProcessError as e:
        print("check_functions: ctags failed: %s" % e.stderr.strip())
        return 2
    if not any(per_tree.values()):
        print("check_functions: no C function found under %s" % ", ".join(TREES))
        return 2
    broken = []
    for tree, fns in per_tree.items():
        print(summary(tree + "/", fns, a.max))
        over = [f for f in fns if f[0] > a.max]
        if over:
            broken.append("%s/: %d function(s) over %d lines" % (tree, len(over), a.max))
        if p90([n for n, _, _ in fns]) >= a.p90:
            broken.append("%s/: p90 %d is not under %d" % (tree, p90([n for n, _, _ in fns]),
                                                            a.p90))
    every = [f for fns in per_tree.values() for f in fns]
    print(summary("together", every, a.max))
    print("longest:")
    for n, name, where in sorted(every, key=lambda f: (-f[0], f[2]))[:a.top]:
        print("  %4d  %-32s %s" % (n, name, where))
    for b in broken:
        print(("FAIL: " if a.enforce else "over the limit (report only): ") + b)
    return 1 if broken and a.enforce else 0


if __name__ == "__main__":
    sys.exit(main())
