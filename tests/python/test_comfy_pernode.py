"""Per-node memory (headroom.comfy.pernode) through the stand-in of
ComfyUI's execution module (tests/python/comfy_standin/execution.py: NOT
ComfyUI; the real one is checked in integrations/comfyui/VERIFIED.md). The
nodes here allocate real memory, so what is recorded is checked against
this process's own RSS from /proc."""

import pytest

from headroom.comfy import pernode
from headroom.readings import procfs

import comfy_standin

M = 1 << 20
KEPT = []


def resident(n):
    return bytearray(b"\x01") * n


class Keep:
    FUNCTION = "run"

    def run(self, value, mib):
        KEPT.append(resident(mib * M))
        return (value,)

    @classmethod
    def IS_CHANGED(cls, **kw):
        return float("nan")


class Transient:
    FUNCTION = "run"

    def run(self, value, mib):
        b = resident(mib * M)
        n = b[0]
        del b
        return (value + n,)

    @classmethod
    def IS_CHANGED(cls, **kw):
        return float("nan")


class Const:
    FUNCTION = "run"

    def run(self, value):
        return (value,)


class Boom:
    FUNCTION = "run"

    def run(self, value):
        raise RuntimeError("boom")


NODES = {"Keep": Keep, "Transient": Transient, "Const": Const, "Boom": Boom}


def graph(*chain):
    """A chain of nodes, ids "1".."n": Const first, then (class, mib)."""
    g = {"1": {"class_type": "Const", "inputs": {"value": 1}}}
    for i, (cls, mib) in enumerate(chain, start=2):
        g[str(i)] = {"class_type": cls, "inputs": {"value": [str(i - 1), 0], "mib": mib}}
    return g


@pytest.fixture
def ex():
    mod = comfy_standin.execution()
    mod.NODE_CLASS_MAPPINGS.update(NODES)
    yield mod
    del KEPT[:]


def run(ex, tr, g, n, prefix="p"):
    pe = ex.PromptExecutor()
    for i in range(n):
        pe.execute(g, "%s%d" % (prefix, i))
    return pe


@pytest.mark.parametrize("sync", [False, True])
def test_each_node_is_measured_around_its_execution(sync):
    ex = comfy_standin.execution(sync=sync)
    ex.NODE_CLASS_MAPPINGS.update(NODES)
    tr = pernode.Tracker()
    assert pernode.install(ex, tr) is True and tr.installed and tr.why == ""
    rss0 = procfs.rss_bytes()
    # Sizes over glibc's largest mmap threshold (32 MiB): each is mapped
    # and unmapped on its own, so RSS follows them exactly.
    run(ex, tr, graph(("Transient", 40), ("Keep", 34)), 3)
    rss1 = procfs.rss_bytes()
    ps = tr.prompts()
    assert [p["id"] for p in ps] == ["p0", "p1", "p2"]
    for p in ps:
        keys = [n["key"] for n in p["nodes"]]
        assert keys == ["Const #1", "Transient #2", "Keep #3"]
        by = {n["key"]: n for n in p["nodes"]}
        # Keep holds 34 MiB more after each call; Transient gives its 40 back.
        assert 33.5 * M <= by["Keep #3"]["rss_change"] <= 35 * M
        assert abs(by["Transient #2"]["rss_change"]) < 2 * M
        assert all(n["calls"] == 1 for n in p["nodes"])
        # The prompt's own change is the nodes' plus what happened outside them.
        assert p["rss1"] - p["rss0"] == sum(n["rss_change"] for n in p["nodes"]) \
            + p["outside_change"]
    # The tracker's books agree with the process's RSS read independently.
    assert abs((ps[-1]["rss1"] - ps[0]["rss0"]) - (rss1 - rss0)) < 2 * M
    assert 100 * M <= rss1 - rss0 <= 106 * M
    text = tr.last_prompt_text()
    assert text.startswith("per-node memory of the last prompt (p2,")
    assert "Keep #3" in text and "(outside the nodes)" in text


def test_cached_nodes_are_marked_and_the_hook_is_installed_once(ex):
    tr = pernode.Tracker()
    assert pernode.install(ex, tr) and pernode.install(ex, tr)
    wrapped = ex.execute
    assert pernode.install(ex, tr) and ex.execute is wrapped  # not wrapped twice
    run(ex, tr, {"1": {"class_type": "Const", "inputs": {"value": 1}}}, 2)
    first, second = tr.prompts()
    assert first["nodes"][0]["cached"] is False and second["nodes"][0]["cached"] is True
    assert first["nodes"][0]["calls"] == second["nodes"][0]["calls"] == 1


def test_a_failing_node_still_ends_its_prompt(ex):
    tr = pernode.Tracker()
    pernode.install(ex, tr)
    pe = run(ex, tr, {"1": {"class_type": "Const", "inputs": {"value": 1}},
                      "2": {"class_type": "Boom", "inputs": {"value": ["1", 0]}}}, 1)
    assert pe.success is False and str(pe.error) == "boom"
    (p,) = tr.prompts()
    assert [n["key"] for n in p["nodes"]] == ["Const #1", "Boom #2"]


def test_a_broken_reading_never_breaks_comfyuis_execution(ex):
    def bad():
        raise OSError("no /proc")

    tr = pernode.Tracker(read=bad)
    pernode.install(ex, tr)
    pe = run(ex, tr, graph(("Transient", 1)), 2)
    assert pe.success is True and tr.errors > 0 and tr.prompts() == []


def test_without_comfyuis_execution_it_says_why(monkeypatch):
    import sys
    import types

    monkeypatch.delitem(sys.modules, "execution", raising=False)
    tr = pernode.Tracker()
    assert pernode.install(None, tr) is False and "not loaded" in tr.why

    assert pernode.install(types.ModuleType("execution"), tr) is False
    assert "no execution.execute and PromptExecutor.execute" in tr.why
    old = types.ModuleType("execution")
    old.execute = lambda server, prompt, outputs, current_item: None  # another signature
    old.PromptExecutor = type("PromptExecutor", (), {"execute": lambda self, *a: None})
    assert pernode.install(old, tr) is False
    assert "takes no dynprompt, current_item, prompt_id" in tr.why
    assert tr.last_prompt() is None and "no prompt finished yet" in tr.last_prompt_text()


def test_async_nodes_follow_comfyuis_execute(monkeypatch):
    import sys

    monkeypatch.delitem(sys.modules, "execution", raising=False)
    assert pernode.async_nodes() is False
    monkeypatch.setitem(sys.modules, "execution", comfy_standin.execution())
    assert pernode.async_nodes() is True
    monkeypatch.setitem(sys.modules, "execution", comfy_standin.execution(sync=True))
    assert pernode.async_nodes() is False
