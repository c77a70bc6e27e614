"""Who still holds memory that should have come back.

When an offload or a free gives back much less than expected (a model
"unloaded" that keeps its memory), find_holders() looks for the tensors that
still use the storages in question and says what refers to them.

- Reference cycles first: where PyTorch has its reference-cycle tools
  (torch.utils.viz._cycles, PyTorch 2.x), a garbage collection runs with
  every piece of garbage kept for a look (what _cycles.observe_garbage does,
  done at once instead of from a profile hook), and every tensor on those
  storages that was alive only through a cycle is named with the objects of
  the cycle that point to it, in _cycles' own annotations; a second
  collection then frees them. Where PyTorch has no such observer (1.13), the report says so
  and a plain gc.collect() runs.
- Then the tensors still alive: gc.get_objects() is searched for tensors on
  the storages (bounded by `limit`), and gc.get_referrers() of each, with a
  step further for containers, says who holds them: a module's global, an
  object's attribute, a list, a frame's local variable.

Everything is bounded (tensors reported, referrers per tensor) so that a
process with millions of objects still gets an answer in a fraction of a
second per thousand tensors.
"""

import gc
import sys
import types
import warnings

from ..readings.units import fmt_bytes

#: Tensors and referrers reported, at most.
MAX_TENSORS = 16
MAX_REFERRERS = 4


class Holders:
    """The result: `cycles` (descriptions of tensors that were kept only by
    reference cycles, now collected), `alive` (descriptions of tensors still
    alive with who holds them), `cycle_observer` (True when PyTorch's cycle
    observer was used), `note` (what could not be done), `bytes_alive`."""

    def __init__(self):
        self.cycles, self.alive, self.cycle_observer, self.note = [], [], False, ""
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


def _name_in(container, obj):
    """How `container` refers to `obj`, in words."""
    if isinstance(container, dict):
        for k, v in container.items():
            if v is obj:
                return "key %r of a dict" % (k,)
        return "a dict"
    if isinstance(container, (list, tuple)):
        for i, v in enumerate(container):
            if v is obj:
                return "item %d of a %s of %d" % (i, type(container).__name__, len(container))
    if isinstance(container, types.FrameType):
        for k, v in container.f_locals.items():
            if v is obj:
                return "local %r of %s()" % (k, container.f_code.co_name)
        return "a frame of %s()" % container.f_code.co_name
    return "a %s" % type(container).__name__


def _owner_of(container, skip):
    """Who holds a container: a module's global, an object's __dict__."""
    for r in gc.get_referrers(container):
        if id(r) in skip:
            continue
        if isinstance(r, dict):
            for mod in list(sys.modules.values()):
                if getattr(mod, "__dict__", None) is r:
                    for k, v in r.items():
                        if v is container:
                            return "global %r of module %s" % (k, mod.__name__)
            for o in gc.get_referrers(r):
                if getattr(o, "__dict__", None) is r and id(o) not in skip:
                    for k, v in r.items():
                        if v is container:
                            return "attribute %r of a %s" % (k, type(o).__name__)
    return None


def _referrers_text(obj, skip):
    out = []
    skip = set(skip) | {id(sys._getframe())}
    for r in gc.get_referrers(obj):
        if id(r) in skip or isinstance(r, types.FrameType) and r.f_code.co_filename == __file__:
            continue
        what = _name_in(r, obj)
        owner = _owner_of(r, skip | {id(obj)}) if isinstance(r, (dict, list, tuple)) else None
        out.append(what + (", " + owner if owner else ""))
        if len(out) >= MAX_REFERRERS:
            break
    return out or ["no referrer found (held from C++ or by the interpreter)"]


def _cycles_module():
    try:
        from torch.utils.viz import _cycles

        return _cycles if hasattr(_cycles, "observe_garbage") else None
    except Exception:
        return None


def _collect_cycles(torch, ptrs, h):
    """Runs a garbage collection with every piece of garbage kept for a look
    (what torch.utils.viz._cycles.observe_garbage does, done at once instead
    of from a profile hook); the matching tensors found there were alive
    only through cycles. With PyTorch's _cycles they are named by its
    annotations of the cycle; a second collection frees them."""
    found = []
    old = gc.get_debug()
    gc.set_debug(old | gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        garbage = list(gc.garbage)
        gc.garbage.clear()
    finally:
        gc.set_debug(old)
    cyc = _cycles_module()  # imported after the collection: an import may collect
    h.cycle_observer = cyc is not None
    try:
        for o in garbage:
            if _matches(o, torch, ptrs):
                refs = _cycle_refs(cyc, o, garbage) if cyc else []
                found.append((_tensor_text(o), _storage_ptr(o), refs))
        o = None  # noqa: F841 - the loop variable would keep the last one alive
    finally:
        del garbage
        gc.collect()
    if cyc is None:
        h.note = ("this PyTorch (%s) has no torch.utils.viz._cycles (PyTorch 2.x), so what "
                  "holds a tensor inside a reference cycle cannot be named; the cycles were "
                  "collected" % torch.__version__)
    seen = set()
    for text, (ptr, nbytes), refs in found[:MAX_TENSORS]:
        h.cycles.append(text + ": held by " + ("; ".join(refs) or "a reference cycle"))
        if ptr not in seen:
            seen.add(ptr)
            h.bytes_in_cycles += nbytes


def _cycle_refs(cyc, o, garbage):
    """How the other objects of the cycle refer to tensor `o`, named by
    PyTorch's annotations ("dict[2] ['w']")."""
    refs = []
    for g in garbage:
        if g is o or isinstance(g, types.FrameType):
            continue
        try:
            for name, target in _annotated(cyc, g):
                if target is o:
                    refs.append("%s %s" % (cyc.object_annotation(g).split("\n")[0], name))
        except Exception:  # noqa: BLE001 - an annotation is a courtesy
            continue
        if len(refs) >= MAX_REFERRERS:
            break
    return refs


def _annotated(cyc, g):
    refs = cyc.annotated_references(g)
    # PyTorch returns {id(target): [names]}; pair names with their objects.
    out = []
    for ref in gc.get_referents(g):
        for name in refs.get(id(ref), ()):
            out.append((name, ref))
    return out


def find_holders(storage_ptrs, collect=True):
    """A Holders report for the storages whose data pointers are in
    `storage_ptrs` (an iterable of ints). collect: run the garbage collection
    first (under PyTorch's cycle observer where there is one)."""
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
        h.alive.append("%s: held by %s" % (_tensor_text(t), "; ".join(_referrers_text(t, skip))))
    t = alive = None  # noqa: F841 - let the tensors go
