"""The holders report: who keeps an object alive, as a path from where the
reference starts; reference cycles by the path around them. The same on
PyTorch 1.13 and 2.x (the paths come from gc, not from PyTorch)."""

import gc

import pytest

from headroom.pytorch import holders

from conftest import torch_or_skip

KEEP = []


class Holder:
    def __init__(self, value):
        self.weights = {"unet": [0, value]}


class Slotted:
    __slots__ = ("tensor",)


class Node:
    pass


class Cache:
    pass


def test_a_module_global_is_module_dot_name():
    # (No assert around the call: pytest keeps an assert's parts in locals.)
    KEEP.append(object())
    try:
        paths = holders.holder_paths(KEEP[0])
        assert paths == ["test_holders.KEEP[0]"]
    finally:
        KEEP.clear()


def test_attributes_keys_and_slots_on_the_way():
    global HOLDER, SLOT
    HOLDER = Holder(object())
    SLOT = Slotted()
    SLOT.tensor = object()
    try:
        paths = holders.holder_paths(HOLDER.weights["unet"][1])
        assert paths == ["test_holders.HOLDER.weights['unet'][1]"]
        paths = holders.holder_paths(SLOT.tensor)
        assert paths == ["test_holders.SLOT.tensor"]
    finally:
        del HOLDER, SLOT


def test_a_local_variable_names_its_function():
    def run():
        model = object()
        return holders.holder_paths(model)

    (path,) = run()
    assert path.startswith("local 'model' of run() (test_holders.py:")


def test_a_root_of_the_callers_choosing():
    box = Holder(object())
    # A caller's own containers (ComfyUI's caches) end the search with a name.
    paths = holders.holder_paths(box.weights["unet"][1],
                                 roots=lambda o: "the box" if o is box else None)
    assert paths == ["the box.weights['unet'][1]"]


def test_nothing_python_sees():
    paths = holders.holder_paths(object())
    assert paths == []


CHAIN = [object()]
for _ in range(holders.MAX_DEPTH + 2):
    CHAIN = [CHAIN]


def innermost():
    x = CHAIN
    while isinstance(x, list):
        x = x[0]
    return x


def test_a_search_that_finds_no_root_starts_at_the_last_object():
    paths = holders.holder_paths(innermost(), max_depth=3)
    assert paths == ["a list[0][0][0]"], paths


def storage(t):
    st = t.untyped_storage() if hasattr(t, "untyped_storage") else t.storage()
    return st.data_ptr()


def test_cycles_are_named_by_the_path_around_them():
    torch = torch_or_skip()
    enabled = gc.isenabled()
    gc.disable()  # the cycles must live until the report's own collection
    try:
        d = {"embeds": torch.ones(1 << 16)}
        d["self"] = d
        n, c = Node(), Cache()
        n.peer, c.back, c.w = c, n, torch.ones(1 << 18)
        ptrs = [storage(d["embeds"]), storage(c.w)]
        del d, n, c
        h = holders.find_holders(ptrs)
    finally:
        if enabled:
            gc.enable()
    assert sorted(h.cycles) == sorted([
        "Tensor torch.float32 (65536,) on cpu (256.0 KiB): held by a dict['embeds'], in the "
        "cycle a dict['self'] -> the dict",
        "Tensor torch.float32 (262144,) on cpu (1.0 MiB): held by a Cache.w, in the cycle a "
        "Cache.back -> a Node.peer -> the Cache"]), h.cycles
    assert h.bytes_in_cycles == (1 << 18) + (1 << 20) and h.alive == [] and h.note == ""
    assert "kept alive only by reference cycles (1.2 MiB, now collected)" in h.text()


def test_a_tensor_still_alive_names_its_holders():
    torch = torch_or_skip()
    t = torch.ones(1 << 10)
    KEEP.append(t.view(32, 32))  # another tensor on the same storage
    try:
        h = holders.find_holders([storage(t)])
        assert h.bytes_alive == 4096 and h.cycles == []
        assert any(a.startswith("Tensor torch.float32 (32, 32) on cpu (4.0 KiB): held by "
                                "test_holders.KEEP[0]") for a in h.alive), h.alive
        assert any("local 't' of test_a_tensor_still_alive_names_its_holders()" in a
                   for a in h.alive), h.alive
    finally:
        KEEP.clear()


def test_the_search_keeps_nothing_alive():
    import weakref

    x = Holder(None)
    KEEP.append(x)
    holders.holder_paths(x)
    r = weakref.ref(x)
    KEEP.clear()
    del x
    assert r() is None  # no frame, list or step of the search kept it


@pytest.mark.parametrize("depth", [1, 2])
def test_depth_is_bounded(depth):
    paths = holders.holder_paths(innermost(), max_depth=depth)
    assert paths == ["a list" + "[0]" * depth], paths


def test_a_walk_down_from_where_the_caller_knows_to_look():
    target = object()
    box = Holder(target)
    cache = {"k": [box], "other": list(range(100))}
    assert holders.path_down(cache, target) == "['k'][0].weights['unet'][1]"
    assert holders.path_down(cache, object()) is None
    # Bounded: a target further than `limit` objects down is not found.
    assert holders.path_down(cache, target, limit=3) is None
