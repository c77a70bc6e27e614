"""Per-node memory (headroom.comfy.pernode) through the stand-in of
ComfyUI's execution module (tests/python/comfy_standin/execution.py: NOT
ComfyUI; the real one is checked in integrations/comfyui/VERIFIED.md). The
nodes here allocate real memory, so what is recorded is checked against
this process's own RSS from /proc."""

import pytest

from headroom.comfy import pernode
from headroom.comfy import models as comfy_models
from headroom.readings import detection, procfs

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
    # and unmapped on its own, so RSS follows them exactly (and the C heap's
    # live bytes too).
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


needs_lib = pytest.mark.skipif(not detection.available(),
                               reason="the verdict's trend test is libheadroom's")


def verdict_run(ex, g, n):
    """Runs `g` n times with the hook installed; returns (tracker, first
    prompt a node was named or None, the names then, RSS read from /proc
    before the run and after each prompt)."""
    tr = pernode.Tracker()
    assert pernode.install(ex, tr)
    pe = ex.PromptExecutor()
    first, names = None, []
    rss = [procfs.rss_bytes()]
    for i in range(n):
        pe.execute(g, "p%d" % i)
        rss.append(procfs.rss_bytes())
        v = tr.verdicts()
        if first is None and (v["leaks"] or v["unattributed"]):
            first, names = i + 1, [x["node"] for x in v["leaks"]]
    return tr, first, names, rss


@needs_lib
def test_a_node_leaking_among_three_is_named_alone_within_30_prompts(ex):
    with comfy_models._events_lock:
        del comfy_models._events[:]
    tr, first, names, rss = verdict_run(
        ex, graph(("Transient", 8), ("Keep", 4), ("Transient", 8)), 30)
    grown = rss[-1] - rss[0]
    assert 30 * 4 * M - 8 * M <= grown <= 30 * 4 * M + 16 * M  # the leak, read from /proc
    assert first is not None and first <= 30 and names == ["Keep #3"]
    v = tr.verdicts()
    assert [x["node"] for x in v["leaks"]] == ["Keep #3"] and v["unattributed"] == []
    assert 3.5 * M <= v["leaks"][0]["kept_per_call"] <= 4.5 * M
    text = tr.verdict_text()
    assert text.startswith("per-node verdict:\n  possible leak: Keep #3 keeps +4.0 MiB")
    # Named once among the panel's events, however many prompts follow.
    ex.PromptExecutor().execute(graph(("Transient", 8), ("Keep", 4), ("Transient", 8)), "px")
    leaks = [e for e in comfy_models.events() if e["kind"] == "leak"]
    assert len(leaks) == 1 and "Keep #3" in leaks[0]["text"]
    # A node that no longer runs keeps its verdict, saying when it last ran.
    pe = ex.PromptExecutor()
    pe.execute(graph(("Transient", 8)), "py")
    assert "(it last ran 1 prompts ago)" in tr.verdict_text()


@needs_lib
def test_a_workflow_that_frees_what_it_allocates_gets_no_verdict_in_50_prompts(ex):
    tr, first, names, rss = verdict_run(
        ex, graph(("Transient", 20), ("Transient", 20), ("Transient", 3)), 50)
    assert first is None, tr.verdict_text()
    # RSS (read from /proc) is flat once the allocator holds its blocks.
    assert max(rss[10:]) - min(rss[10:]) < 2 * M
    assert tr.verdict_text().startswith("per-node verdict: no leak")


def test_verdict_text_before_any_prompt_and_without_the_hook():
    tr = pernode.Tracker()
    assert tr.verdict_text().startswith("per-node verdict: none (not installed")
    tr.installed = True
    assert tr.verdict_text() == "per-node verdict: no prompt judged yet"
    st = tr.panel()
    assert st["installed"] and st["last_prompt"] is None and st["verdict"] == []


@needs_lib
def test_without_heap_readings_nodes_are_judged_by_rss_and_the_verdict_says_so(ex, monkeypatch):
    from headroom.readings import heap

    monkeypatch.setattr(heap, "status", lambda: "off for the test")
    tr = pernode.Tracker(read=lambda: pernode.read()[:3] + (None,))
    pernode.install(ex, tr)
    pe = ex.PromptExecutor()
    for i in range(25):
        pe.execute(graph(("Keep", 4)), "p%d" % i)
    v = tr.verdicts()
    assert [(x["node"], x["by"]) for x in v["leaks"]] == [("Keep #2", "rss")]
    text = tr.verdict_text()
    assert "keeps +4.0 MiB of RSS" in text
    assert "(the C heap is not read: off for the test; by RSS, growth shows" in text
    assert tr.last_prompt()["nodes"][1]["heap_change"] is None
