#!/usr/bin/env python3
"""No module of the Python package imports a module that imports it back.

The module graph is read from the sources with the ast module: an edge A -> B
for every import of B in A, at the top of the file or inside a function
(an import inside a function hides a dependency, it does not remove it).
Relative imports are resolved as Python resolves them; `from P import x`
is an edge to P.x when that is a module of the package, else to P. Edges
into or out of a package's __init__.py are left aside: a package's face
re-exports its rooms' names, and importing a room's module runs its
__init__ without an import statement saying so.

Also checked:
  - no module or package of the package is named `torch` (inside the package
    it would shadow PyTorch for code that forgets absolute imports, and it
    confuses every reader);
  - no import of a package module inside a function, unless ALLOWED_LOCAL
    names it with the reason (the only function-local imports left are of
    PyTorch and ComfyUI, so that `import headroom` imports neither).

Prints the counts (modules, edges, function-local imports of package modules
and of others) and each problem. Exit status: 0 when none is found, 1
otherwise.
usage: check_py_imports.py PACKAGE_DIR   (python/headroom)
"""
import ast
import os
import sys

# Function-local imports of package modules allowed, as {(module, imported):
# reason}. Empty when the tree is as it should be.
ALLOWED_LOCAL = {}


def modules_of(pkg_dir):
    """{dotted name: (path, is_package)} of every .py file under pkg_dir."""
    root = os.path.dirname(os.path.abspath(pkg_dir))
    out = {}
    for top, dirs, files in os.walk(pkg_dir):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for f in sorted(files):
            if not f.endswith(".py"):
                continue
            path = os.path.join(top, f)
            name = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
            is_pkg = name.endswith(".__init__")
            if is_pkg:
                name = name[:-len(".__init__")]
            out[name] = (path, is_pkg)
    return out


def _inside_function(node, parents):
    while node in parents:
        node = parents[node]
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            return True
    return False


def _targets(node, name, is_pkg, mods):
    """The package modules an import statement reaches."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in mods]
    if node.level:
        base = name.split(".") if is_pkg else name.split(".")[:-1]
        base = base[:len(base) - (node.level - 1)]
        src = ".".join(base + ([node.module] if node.module else []))
    else:
        src = node.module or ""
    out = []
    for a in node.names:
        sub = src + "." + a.name
        if sub in mods:
            out.append(sub)
        elif src in mods:
            out.append(src)
    return out


def import_graph(mods):
    """(edges {module: set of modules}, local [(module, line, target)],
    other_local count) over every import of every module."""
    edges = {m: set() for m in mods}
    local, other_local = [], 0
    for name, (path, is_pkg) in mods.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        parents = {c: p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)}
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            targets = [t for t in _targets(node, name, is_pkg, mods) if t != name]
            in_fn = _inside_function(node, parents)
            if in_fn and not targets:
                other_local += 1
            for t in targets:
                edges[name].add(t)
                if in_fn:
                    local.append((name, node.lineno, t))
    return edges, local, other_local


def cycles(edges, packages):
    """Strongly connected components of more than one module (Tarjan), on
    the graph without edges into or out of a package's __init__."""
    g = {m: [t for t in ts if t not in packages] for m, ts in edges.items() if m not in packages}
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(1000, 10 * len(g)))
    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def main(argv):
    if len(argv) != 2 or not os.path.isdir(argv[1]):
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    mods = modules_of(argv[1])
    packages = {m for m, (_, is_pkg) in mods.items() if is_pkg}
    edges, local, other_local = import_graph(mods)
    problems = []
    for name in mods:
        if name.split(".")[-1] == "torch":
            problems.append("%s: a module or package named torch (it would shadow PyTorch)"
                            % mods[name][0])
    for comp in cycles(edges, packages):
        ring = [m for m in comp]
        detail = "; ".join("%s -> %s" % (a, ", ".join(sorted(edges[a] & set(comp))))
                           for a in ring)
        problems.append("import cycle among %s (%s)" % (", ".join(ring), detail))
    for m, line, t in local:
        if (m, t) not in ALLOWED_LOCAL:
            problems.append("%s:%d: imports %s inside a function; import it at the top"
                            % (mods[m][0], line, t))
    n_edges = sum(len(v) for v in edges.values())
    print("%d modules (%d packages), %d import edges; function-local imports: %d of package "
          "modules, %d of others (torch, ComfyUI)" % (len(mods), len(packages), n_edges,
                                                      len(local), other_local))
    for p in problems:
        print("FAIL " + p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
