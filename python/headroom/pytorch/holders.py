"""Who still holds memory that should have come back.

When an offload or a free gives back much less than expected (a model
"unloaded" that keeps its memory), find_holders() looks for the tensors that
still use the storages in question and says what refers to them, as a path
from where the reference starts:

- a module's global: ``mypkg.cache.KEEP[0]`` (module mypkg.cache, its
  global KEEP, item 0);
- an object's attribute or a dict's key on the way: ``app.state.cache['w']``;
- a function's local variable: ``local 'x' of run() (loop.py:12)``;
- anything else the search stops at: ``a Holder .weights[3]``.

Reference cycles: a garbage collection runs with every piece of garbage kept
for a look (gc.DEBUG_SAVEALL); every tensor on those storages that was alive
only through a cycle is named with the path around the cycle (``a Node .peer
-> a Cache .back -> the Node``) and where the tensor hangs from it; a second
collection then frees them. The paths are worked out from gc's referents, so
PyTorch 1.13 and 2.x get the same report.

holder_paths(obj) is the same search for any object (the ComfyUI bridge asks
it who holds a model it unloaded), with `roots` to name objects of its own
(ComfyUI's caches) where the search should stop.

Everything is bounded (tensors reported, paths per tensor, the depth and
breadth of the search) so that a process with millions of objects still gets
an answer in a fraction of a second per tensor; each level of the search is
one pass of gc.get_referrers over the process's objects.
"""

import gc
import os
import sys
import types
import warnings

from ..readings.units import fmt_bytes

#: Tensors and paths per tensor reported, at most.
MAX_TENSORS = 16
MAX_REFERRERS = 4
#: How far up and how wide the search for a holder goes.
MAX_DEPTH = 8
MAX_FRONTIER = 64

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CO_OPTIMIZED = 0x1  # a function's code: its f_locals is a view, not a namespace
_SNAPSHOT_LOCALS = sys.version_info < (3, 13)


class Holders:
    """The result: `cycles` (descriptions of tensors that were kept only by
    reference cycles, now collected), `alive` (descriptions of tensors still
    alive with who holds them), `note` (what could not be done),
    `bytes_alive`, `bytes_in_cycles`."""

    def __init__(self):
        self.cycles, self.alive, self.note = [], [], ""
        self.bytes_alive = 0
        self.bytes_in_cycles = 0

    def text(self):
        f = fmt_bytes
        lines = []
        if self.cycles:
            lines.append("kept alive only by reference cycles (%s, now collected):"
                         % f(self.bytes_in_cycles))
            lines += ["  - " + c for c in self.cycles]
        if self.alive:
            lines.append("still alive (%s):" % f(self.bytes_alive))
            lines += ["  - " + a for a in self.alive]
        if not self.cycles and not self.alive:
            lines.append("no tensor on those storages was found alive")
        if self.note:
            lines.append(self.note)
        return "\n".join(lines)

    __str__ = text


# ---- naming objects and the references between them ----

def _kind(o):
    """An object in a few words: "a dict", "a Holder", "function f"."""
    if isinstance(o, types.FunctionType):
        return "function %s" % o.__qualname__
    if isinstance(o, types.ModuleType):
        return "module %s" % o.__name__
    if isinstance(o, type):
        return "class %s" % o.__qualname__
    return "a %s" % type(o).__name__


def _short(k):
    r = repr(k)
    return r if len(r) <= 40 else r[:37] + "..."


def _edge(parent, child):
    """How `parent` refers to `child`: ("attr", name), ("key", k),
    ("item", i), ("dict", None) for an object's __dict__, or ("ref", None)."""
    if isinstance(parent, dict):
        for k, v in list(parent.items()):
            if v is child:
                return ("key", k)
        return ("ref", None)
    if isinstance(parent, (list, tuple)):
        for i, v in enumerate(parent):
            if v is child:
                return ("item", i)
        return ("ref", None)
    if isinstance(parent, types.CellType):
        return ("attr", "cell_contents")
    if isinstance(parent, types.FunctionType):
        if parent.__closure__ and any(c is child for c in parent.__closure__):
            return ("attr", "__closure__")
        return ("ref", None)
    try:
        d = object.__getattribute__(parent, "__dict__")
    except (AttributeError, TypeError):
        d = None
    if d is child:
        return ("dict", None)
    if isinstance(d, dict):
        for k, v in list(d.items()):
            if v is child:
                return ("attr", k)
    for cls in type(parent).__mro__:
        for slot in getattr(cls, "__slots__", ()) or ():
            try:
                if object.__getattribute__(parent, slot) is child:
                    return ("attr", slot)
            except (AttributeError, TypeError):
                continue
    return ("ref", None)


def _hop(edge):
    kind, x = edge
    if kind == "key":
        return "[%s]" % _short(x)
    if kind == "item":
        return "[%d]" % x
    if kind == "attr":
        return ".%s" % x
    if kind == "dict":
        return ""
    return " -> "


# ---- who holds an object still alive ----

def _our_frame(f):
    return f.f_code.co_filename.startswith(_PACKAGE)


def _root(o, child, roots, modules):
    """(text, kind of its hop to `child`) when `o` is a root (a module's
    globals, a frame, one that `roots` names), else None."""
    if isinstance(o, types.FrameType):
        for k, v in list(o.f_locals.items()):
            if v is child:
                return "local %r of %s() (%s:%d)" % (k, o.f_code.co_name,
                                                      os.path.basename(o.f_code.co_filename),
                                                      o.f_lineno), None
        return "a frame of %s()" % o.f_code.co_name, None
    if isinstance(o, dict) and id(o) in modules:
        for k, v in list(o.items()):
            if v is child:
                return "%s.%s" % (modules[id(o)], k), None
        return "module %s" % modules[id(o)], None
    if roots is not None:
        try:
            name = roots(o)
        except Exception:  # noqa: BLE001 - a caller's namer must not break the search
            name = None
        if name is not None:
            edge = _edge(o, child)
            return name + (" -> %s " % _kind(child) if edge[0] == "ref" else _hop(edge)), \
                edge[0]
    return None


def holder_paths(obj, roots=None, max_paths=MAX_REFERRERS, max_depth=MAX_DEPTH, skip=()):
    """Who holds `obj`: up to max_paths texts, each a path from where the
    reference starts down to obj ("mypkg.KEEP[0]", "local 'x' of f() (a.py:3)",
    "a Holder.w"). roots(o) may name objects the search stops at (return a
    text, or None to go on); the path then starts with that text. Searches up
    to max_depth references up; a path that reaches no root within that
    starts at the last object found. Frames of this package and the ids in
    `skip` are not holders. Returns [] when nothing Python can see refers to
    obj (it is held from C++ or by the interpreter)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # looking at objects touches deprecated attributes
        return _search(obj, roots, max_paths, max_depth, set(skip))


def _frame_locals(internal):
    """{id(value): "local 'x' of f() (file:line)"} over the stacks of every
    thread, less this package's frames: a running function's locals are no
    object gc can find as a referrer."""
    out = {}
    for top in sys._current_frames().values():
        f = top
        while f is not None:
            if not _our_frame(f) and f.f_code.co_flags & _CO_OPTIMIZED:
                loc = f.f_locals
                for k, v in list(loc.items()):
                    out.setdefault(id(v), "local %r of %s() (%s:%d)" % (
                        k, f.f_code.co_name, os.path.basename(f.f_code.co_filename),
                        f.f_lineno))
                if _SNAPSHOT_LOCALS and isinstance(loc, dict):
                    # Before 3.13 f_locals is a snapshot the frame keeps: it
                    # would keep what the function deletes alive.
                    loc.clear()
            f = f.f_back
        top = f = None
    return out


def _search(obj, roots, max_paths, max_depth, skip):
    modules = {id(m.__dict__): getattr(m, "__name__", name) for name, m in
               list(sys.modules.items()) if isinstance(getattr(m, "__dict__", None), dict)}
    down = {}  # id(o) -> (child, edge): one step from o toward obj
    seen = {id(obj)}
    internal = {id(down), id(seen), id(skip), id(modules)}
    local = _frame_locals(internal)
    found = [local[id(obj)]] if id(obj) in local else []
    frontier, ends = [obj], []
    me = id(sys._getframe())  # the id only: the frame in its own local is a cycle
    for _depth in range(max_depth):
        args = tuple(frontier)
        nxt = []
        internal.update((id(args), id(frontier), id(nxt)))
        for r in gc.get_referrers(*args):
            if id(r) in internal or id(r) in skip or id(r) == me or (
                    isinstance(r, types.FrameType) and _our_frame(r)):
                continue
            for child in gc.get_referents(r):
                if id(child) not in seen or child is r:
                    continue
                root = _root(r, child, roots, modules)
                if root is None and id(r) in local and id(r) not in seen:
                    edge = _edge(r, child)
                    root = local[id(r)] + _hop_from(r, child), edge[0]
                if root is not None:
                    text = root[0] + _hops(child, down, obj, root[1])
                    if text not in found:
                        found.append(text)
                elif id(r) not in seen:
                    seen.add(id(r))
                    step = (child, _edge(r, child))
                    internal.add(id(step))
                    down[id(r)] = step
                    nxt.append(r)
                break
            if len(found) >= max_paths:
                return found[:max_paths]
        if not nxt:
            break
        ends, frontier = nxt, nxt[:MAX_FRONTIER]
    if found:
        return found
    # A loop, not a comprehension: one would make obj a cell of this frame,
    # and the search would find that cell holding it.
    for o in ends[:max_paths]:
        found.append(_kind(o) + _hops(o, down, obj))
    return found


def _hop_from(parent, child):
    """The one hop from `parent` (a local's value) to `child`."""
    edge = _edge(parent, child)
    if edge[0] == "ref":
        return " -> %s " % _kind(child)
    return _hop(edge)


def _hops(o, down, target, prev=None):
    """The hops from `o` down to `target`, in words (".w", "['k']", "[3]");
    an object's __dict__ and its key read as an attribute. prev: the kind of
    the hop that led to `o`."""
    text, cur = "", o
    while cur is not target:
        child, edge = down[id(cur)]
        kind, x = edge
        if kind == "key" and prev == "dict" and isinstance(x, str):
            text += ".%s" % x
        elif kind == "ref":
            text += " -> %s " % _kind(child)
        elif kind != "dict":
            text += _hop(edge)
        prev, cur = kind, child
    return text


def path_down(root, target, limit=20000):
    """The hops from `root` down to `target` (".outputs.cache['k'][0].model"),
    or None when `target` is not within `limit` objects below `root`. A
    breadth-first walk through dicts, lists, tuples and objects' attributes:
    cheap where the caller knows where to look (a cache), where holder_paths
    would scan every object of the process at each step up."""
    seen, level = {id(root)}, [(root, "")]
    while level and len(seen) < limit:
        nxt = []
        for o, text in level:
            for label, child in _children(o):
                if child is target:
                    return text + label
                if id(child) not in seen and len(seen) < limit:
                    seen.add(id(child))
                    nxt.append((child, text + label))
        level = nxt
    return None


def _children(o):
    """(hop text, object) for what a container or an object's attributes hold."""
    if isinstance(o, dict):
        return [("[%s]" % _short(k), v) for k, v in list(o.items())]
    if isinstance(o, (list, tuple)):
        return [("[%d]" % i, v) for i, v in enumerate(o)]
    if isinstance(o, (str, bytes, int, float, type, types.ModuleType, types.FunctionType)):
        return []
    try:
        d = object.__getattribute__(o, "__dict__")
    except (AttributeError, TypeError):
        return []
    return [(".%s" % k, v) for k, v in list(d.items())] if isinstance(d, dict) else []


# ---- tensors on given storages ----

def _storage_ptr(t):
    st = t.untyped_storage() if hasattr(t, "untyped_storage") else t.storage()
    return st.data_ptr(), st.nbytes()


def _tensor_text(t):
    try:
        nbytes = _storage_ptr(t)[1]
    except Exception:
        nbytes = 0
    return "%s %s %s on %s (%s)" % (type(t).__name__, t.dtype, tuple(t.shape), t.device,
                                     fmt_bytes(nbytes))


def _matches(obj, torch, ptrs):
    try:
        if not isinstance(obj, torch.Tensor) or obj.device.type == "meta":
            return False
        return _storage_ptr(obj)[0] in ptrs
    except Exception:
        return False


def _collect_cycles(torch, ptrs, h):
    """Runs a garbage collection with every piece of garbage kept for a look;
    the matching tensors found there were alive only through cycles, and are
    named by the path around their cycle. A second collection frees them."""
    found = []
    old = gc.get_debug()
    gc.set_debug(old | gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        garbage = list(gc.garbage)
        gc.garbage.clear()
    finally:
        gc.set_debug(old)
    try:
        for o in garbage:
            if _matches(o, torch, ptrs):
                found.append((_tensor_text(o), _storage_ptr(o), cycle_text(o, garbage)))
        o = None  # noqa: F841 - the loop variable would keep the last one alive
    finally:
        del garbage
        gc.collect()
    seen = set()
    for text, (ptr, nbytes), where in found[:MAX_TENSORS]:
        h.cycles.append(text + ": " + where)
        if ptr not in seen:
            seen.add(ptr)
            h.bytes_in_cycles += nbytes


def cycle_text(obj, garbage):
    """Where `obj` hangs among the unreachable objects `garbage`: "held by a
    dict['embeds'], in the cycle a dict['self'] -> the dict"."""
    ids = {id(g): g for g in garbage}
    owned = set()  # objects' __dict__s: their objects stand for them
    for g in garbage:
        try:
            owned.add(id(object.__getattribute__(g, "__dict__")))
        except (AttributeError, TypeError):
            continue
    holders = [g for g in garbage if g is not obj and id(g) not in owned
               and not isinstance(g, types.FrameType) and any(r is obj for r in _refs(g))]
    if not holders:
        return "held by a reference cycle"
    out = []
    for hold in holders[:MAX_REFERRERS]:
        edge = _edge(hold, obj)
        where = _kind(hold) + (_hop(edge) if edge[0] != "ref" else "")
        path = _shortest_cycle(hold, ids)
        out.append("held by %s, in the cycle %s" % (where, path) if path else
                   "held by %s, which a reference cycle holds" % where)
    return "; ".join(out)


def _shortest_cycle(start, ids, limit=10000):
    """The path around the shortest cycle through `start` among `ids`'
    objects, in words; "" when none is found within `limit` steps."""
    prev = {id(start): None}
    queue, steps = [start], 0
    while queue and steps < limit:
        nxt = []
        for o in queue:
            for r in _refs(o):
                steps += 1
                if r is start:
                    chain = [o]
                    while prev[id(chain[-1])] is not None:
                        chain.append(prev[id(chain[-1])])
                    return _cycle_words(chain[::-1] + [start])
                if id(r) in ids and id(r) not in prev:
                    prev[id(r)] = o
                    nxt.append(r)
        queue = nxt
    return ""


def _refs(o):
    """What `o` refers to, an object's attributes directly (its __dict__,
    made a dict only when first asked for, is looked through)."""
    out = []
    try:
        d = object.__getattribute__(o, "__dict__") if not isinstance(o, type) else None
    except (AttributeError, TypeError):
        d = None
    if not isinstance(d, dict):
        d = None
    for r in gc.get_referents(o):
        if d is not None and r is d:
            out.extend(d.values())
        else:
            out.append(r)
    return out


def _cycle_words(objs):
    """objs[0] ... objs[-1] (the same object): "a Node.peer -> a Cache.back
    -> the Node"; an object's __dict__ and its key read as an attribute."""
    first = _kind(objs[0])
    words, i = first, 0
    while i < len(objs) - 1:
        edge = _edge(objs[i], objs[i + 1])
        if edge[0] == "dict" and i + 2 < len(objs):
            key = _edge(objs[i + 1], objs[i + 2])
            words += ".%s" % key[1] if key[0] == "key" else ""
            i += 2
        else:
            words += _hop(edge) if edge[0] != "ref" else ""
            i += 1
        nxt = objs[i]
        if nxt is objs[0]:
            words += " -> the %s" % first[2:] if first.startswith("a ") else " -> " + first
        else:
            words += " -> " + _kind(nxt)
    return words


def find_holders(storage_ptrs, collect=True):
    """A Holders report for the storages whose data pointers are in
    `storage_ptrs` (an iterable of ints). collect: run the garbage collection
    first, to name and free what only reference cycles held."""
    import torch

    ptrs = set(int(p) for p in storage_ptrs if p)
    h = Holders()
    if not ptrs:
        return h
    with warnings.catch_warnings():
        # Looking at every object touches deprecated module attributes.
        warnings.simplefilter("ignore")
        if collect:
            _collect_cycles(torch, ptrs, h)
        _find_alive(torch, ptrs, h)
    return h


def _find_alive(torch, ptrs, h):
    alive, seen_storage = [], set()
    for o in gc.get_objects():
        if _matches(o, torch, ptrs):
            alive.append(o)
            if len(alive) >= MAX_TENSORS:
                break
    # The ids only: a frame kept in its own local would be a cycle that keeps
    # the tensors alive until the next collection.
    skip = {id(alive), id(sys._getframe())}
    for t in alive:
        ptr, nbytes = _storage_ptr(t)
        if ptr not in seen_storage:
            seen_storage.add(ptr)
            h.bytes_alive += nbytes
        paths = holder_paths(t, skip=skip)
        h.alive.append("%s: held by %s" % (_tensor_text(t), "; ".join(paths) or (
            "nothing Python can see (held from C++ or by the interpreter)")))
    t = alive = None  # noqa: F841 - let the tensors go
