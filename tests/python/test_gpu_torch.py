"""The torch and traces steps of the GPU validation (bench/gpu/torch_bench.py,
bench/gpu/traces.py), run here for what does not need a GPU: the models'
shapes on CPU, the largest-batch search against a stand-in that runs out of
memory above a known size, the children's result protocol, a CPU child of
the benchmark measured for real, the judgement and the report, and the
snapshot import and replay on a shared PyTorch trace (the SKIP path of both
scripts is test_gpu_stepkit's, with every step's). Nothing here claims a GPU
result."""

import os
import sys
import time

import pytest

from conftest import REPO, cli_or_skip, torch_or_skip

GPU = os.path.join(REPO, "bench", "gpu")
if GPU not in sys.path:
    sys.path.insert(0, GPU)

import stepkit as sk  # noqa: E402
import torch_common as tc  # noqa: E402

TRACES = os.path.join(REPO, "..", "shared", "traces")
SHARED = "cs336-ctx256-forward-mixed.pickle"


# ---- models on CPU -----------------------------------------------------------------


def test_unet_keeps_the_latent_shape_and_uses_the_timestep():
    torch = torch_or_skip()
    import unet

    torch.manual_seed(0)
    m = unet.UNet2D(in_ch=4, ch=16, mults=(1, 2, 4), attn_heads=4).eval()
    x = torch.randn(2, 4, 16, 16)
    with torch.no_grad():
        y1 = m(x, torch.tensor([10.0, 10.0]))
        y2 = m(x, torch.tensor([900.0, 900.0]))
        z = unet.denoise(m, x, 3, cond_scale=7.5)
    assert y1.shape == x.shape and z.shape == x.shape
    assert not torch.allclose(y1, y2), "the timestep embedding does not reach the output"
    assert torch.isfinite(z).all()
    # Two downsamplings: the attention block sees 4x4 = 16 positions.
    seen = []
    h = m.attn.register_forward_hook(lambda mod, inp, out: seen.append(tuple(inp[0].shape)))
    with torch.no_grad():
        m(x, torch.tensor([1.0, 1.0]))
    h.remove()
    assert seen == [(2, 64, 4, 4)]


def test_unet_odd_latent_size_still_round_trips():
    torch = torch_or_skip()
    import unet

    m = unet.UNet2D(in_ch=4, ch=8, mults=(1, 2), attn_heads=2).eval()
    with torch.no_grad():
        assert m(torch.randn(1, 4, 15, 15), torch.tensor([3.0])).shape == (1, 4, 15, 15)


def test_workloads_build_and_step_on_cpu():
    torch = torch_or_skip()
    import torch_models

    wl = torch_models.build({"model": "resnet_mini", "batch": 3, "size": 32}, "cpu",
                            torch.float32)
    y = wl.step()
    assert y.shape == (3, 1000)
    wl.try_batch(5)  # a forward at another batch size
    u = torch_models.build({"model": "unet", "batch": 1, "latent": 16, "ch": 16, "mults": [1, 2],
                            "heads": 2, "steps": 2}, "cpu", torch.float32)
    a = u.step()
    b = u.step()  # the schedule's last step: the latents start again
    c = u.step()
    assert a.shape == b.shape == c.shape == (1, 4, 16, 16)
    assert "one denoising step" in u.unit and "latents 16x16x4" in u.describe
    with pytest.raises(ValueError, match="unknown model 'vgg'"):
        torch_models.build({"model": "vgg"}, "cpu", torch.float32)


def test_missing_packages_are_named():
    torch = torch_or_skip()
    import importlib.util

    import torch_models

    for model, pkg in (("resnet50", "torchvision"), ("gpt2", "transformers"),
                       ("llama", "transformers")):
        if importlib.util.find_spec(pkg) is not None:
            continue
        with pytest.raises(torch_models.ModelUnavailable, match="%s needs %s" % (model, pkg)):
            torch_models.build({"model": model}, "cpu", torch.float32)
        import torch_bench

        assert torch_bench.missing_package(model) == pkg


def test_spec_labels_are_distinct():
    import torch_bench
    import traces

    for quick in (False, True):
        labels = [tc.spec_label(s) for s, *_ in torch_bench.plan(quick)]
        assert len(labels) == len(set(labels))
        assert {s["model"] for s, *_ in torch_bench.plan(quick)} == {"resnet50", "gpt2", "unet"}
        assert [tc.spec_label(s) for s, _ in traces.plan(quick)]
    assert tc.spec_label({"model": "gpt2", "batch": 8, "prompt": 128, "new": 64}) == \
        "gpt2-b8-p128-n64"
    assert tc.spec_label({"model": "unet"}) == "unet-b1-64x64"


# ---- the largest-batch search ---------------------------------------------------------


def oom_above(limit, exc=None, calls=None):
    def try_batch(b):
        if calls is not None:
            calls.append(b)
        if b > limit:
            raise (exc or RuntimeError)("CUDA out of memory. Tried to allocate %d MiB" % b)

    return try_batch


@pytest.mark.parametrize("limit,start,cap", [
    (1, 1, 1 << 16), (2, 1, 1 << 16), (3, 1, 1 << 16), (37, 1, 1 << 16), (1000, 16, 1 << 16),
    (5, 16, 8192), (8191, 16, 8192), (12345, 16, 1 << 16)])
def test_find_max_batch_is_exact(limit, start, cap):
    calls = []
    r = tc.find_max_batch(oom_above(limit, calls=calls), start=start, cap=cap)
    assert r["max_batch"] == limit
    assert r["first_failure"] == limit + 1
    assert r["exact"] and not r["capped"] and r["stopped"] is None
    assert [t[0] for t in r["trials"]] == calls
    # Doubling then bisection: logarithmic, not linear.
    assert len(calls) <= 2 * (cap.bit_length() + 1)


def test_find_max_batch_at_the_cap_and_below_the_start():
    r = tc.find_max_batch(oom_above(10 ** 9), start=16, cap=100)
    assert r["max_batch"] == 100 and r["capped"] and r["exact"] and r["first_failure"] is None
    r = tc.find_max_batch(oom_above(0), start=4, cap=100)
    assert r["max_batch"] == 0 and r["first_failure"] == 1 and r["exact"]


def test_find_max_batch_with_torch_out_of_memory_error():
    torch = torch_or_skip()
    cls = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError",
                                                              None)
    if cls is None:
        pytest.skip("this torch (%s) has no OutOfMemoryError" % torch.__version__)

    def try_batch(b):
        if b > 300:
            raise cls("Allocation on device 0 would exceed allowed memory")  # no "out of memory"

    assert tc.find_max_batch(try_batch, start=16, cap=4096)["max_batch"] == 300


def test_find_max_batch_stops_at_another_error_and_at_the_deadline():
    def broken(b):
        if b >= 64:
            raise ValueError("cuDNN error: CUDNN_STATUS_NOT_SUPPORTED")

    r = tc.find_max_batch(broken, start=8, cap=4096)
    assert r["max_batch"] == 32 and r["stopped"] == "error" and not r["exact"]
    assert "CUDNN_STATUS_NOT_SUPPORTED" in r["error"] and r["trials"][-1] == [64, "error"]
    n = [0]

    def deadline():
        n[0] += 1
        return n[0] > 5

    r = tc.find_max_batch(oom_above(10000), start=1, cap=1 << 20, deadline=deadline)
    assert r["stopped"] == "deadline" and r["max_batch"] == 16 and len(r["trials"]) == 5
    assert not r["exact"]
    with pytest.raises(ValueError):
        tc.find_max_batch(oom_above(1), start=0)


# ---- children -------------------------------------------------------------------------


def test_run_child_reports_ok_failed_crashed_and_timeout():
    # The child protocol; how children are run and killed is test_gpu_stepkit's.
    py = sys.executable
    r = tc.run_child([py, "-c", "print('noise'); print(%r + '{\"x\": 1}')" % tc.RESULT_PREFIX])
    assert r["status"] == "ok" and r["result"] == {"x": 1} and r["rc"] == 0
    assert r["ended"] is None
    r = tc.run_child([py, "-c", "import sys; sys.stderr.write('boom\\n'); sys.exit(3)"])
    assert r["status"] == "failed" and r["rc"] == 3
    assert r["ended"] == "failed (exit 3): boom"
    r = tc.run_child([py, "-c", "print('exit 0 without a result line')"])
    assert r["status"] == "failed" and r["rc"] == 0 and r["result"] is None
    code = ("import os; print(%r + '{\"batch\": 8, \"outcome\": \"ok\"}', flush=True); "
            "print(%r + '{\"batch\": 16', flush=True); os.abort()"
            % (tc.TRIAL_PREFIX, tc.TRIAL_PREFIX))
    r = tc.run_child([py, "-c", code])
    assert r["status"] == "crashed" and r["trials"] == [{"batch": 8, "outcome": "ok"}]
    assert r["ended"].startswith("crashed (SIGABRT)")
    t0 = time.monotonic()
    r = tc.run_child([py, "-c", "import time; time.sleep(60)"], timeout=1)
    assert r["status"] == "timeout" and time.monotonic() - t0 < 20
    assert r["ended"] == "killed after its 1 s timeout"


def test_child_env_sets_one_allocator():
    base = {"PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:64", "HEADROOM_ALLOC_CONF": "x",
            "PYTHONPATH": "/elsewhere"}
    e = tc.child_env("native", base)
    assert "PYTORCH_CUDA_ALLOC_CONF" not in e and "HEADROOM_ALLOC_CONF" not in e
    assert e["PYTHONPATH"].split(os.pathsep) == [os.path.join(sk.REPO, "python"), "/elsewhere"]
    assert tc.child_env("expandable", base)["PYTORCH_CUDA_ALLOC_CONF"] == \
        "expandable_segments:True"
    assert tc.child_env("cudaMallocAsync", base)["PYTORCH_CUDA_ALLOC_CONF"] == \
        "backend:cudaMallocAsync"
    assert "PYTORCH_CUDA_ALLOC_CONF" not in tc.child_env("headroom", base)
    with pytest.raises(ValueError, match="unknown allocator"):
        tc.child_env("jemalloc", base)


def report_of(module, body, out):
    """The <step>.md a step writes with `body` under its heading."""
    step = sk.Step(module.STEP, module.NUMBER, module.TITLE, 60, ["--out", str(out)])
    step.finish("PASS", "test", body, {})
    return (out / (module.STEP + ".md")).read_text()


def test_benchmark_children_measure_on_cpu(tmp_path):
    torch_or_skip()
    import torch_bench

    budget = sk.Budget(300)
    timed = [({"model": "resnet_mini", "batch": 2, "size": 32}, 1, 4, 0.5),
             ({"model": "unet", "batch": 1, "latent": 16, "ch": 16, "mults": [1, 2], "heads": 2},
              1, 4, 0.5)]
    rows = torch_bench.run_loops(timed, ("native",), budget, 0, 120, device="cpu",
                                 dtype="float32")
    assert [r["status"] for r in rows] == ["ok", "ok"], rows
    for r in rows:
        assert r["it_per_s"] > 0 and 3 <= r["iters"] <= 4 and len(r["times_s"]) == r["iters"]
        assert r["peak_reserved"] is None and r["torch"]
    mb, ballast = torch_bench.run_maxbatch(("native",), budget, {"free_gib": 1, "start": 1,
                                                                 "cap": 3, "search_s": 30},
                                           device="cpu", dtype="float32", model="resnet_mini")
    assert ballast is None
    assert mb[0]["status"] == "ok" and mb[0]["max_batch"] == 3 and mb[0]["capped"]
    assert [t[0] for t in mb[0]["trials"]] == [1, 2, 3]
    verdict, failures, judged = torch_bench.judge(rows)
    assert verdict == "SKIP" and judged == 0  # no headroom rows on CPU
    md = report_of(torch_bench, torch_bench.render(rows, mb, ballast, verdict, failures, judged,
                                                   True, 300, 1.0), tmp_path)
    assert md.startswith("## 3. PyTorch allocators side by side\n")
    assert "### resnet_mini-b2" in md and "### unet-b1-16x16" in md
    assert "| native | 2 | %.2f | 1.000 |" % rows[0]["it_per_s"] in md
    assert "Largest resnet50 batch" in md and "| native | 3 | 1.000 |" in md


def test_budget_marks_rows_not_run():
    import torch_bench

    spent = sk.Budget(5)
    rows = torch_bench.run_loops([({"model": "resnet_mini", "batch": 1}, 1, 2, 0.1)],
                                 tc.ALLOCATOR_NAMES, spent, 0, 10, device="cpu",
                                 runner=lambda *a, **k: pytest.fail("no child may start"))
    assert [r["status"] for r in rows] == ["not run"] * 4
    assert rows[0]["note"] == "the step's time budget ran out"


def _row(alloc, it, res, wl="resnet50-b32", status="ok"):
    return {"workload": wl, "allocator": alloc, "status": status, "it_per_s": it,
            "peak_reserved": res, "peak_allocated": res // 2, "batch": 32}


def test_judge_against_the_targets():
    import torch_bench

    # Stand-in numbers for the judgement only; nothing here is a measurement.
    rows = [_row("native", 100.0, 1000), _row("headroom", 98.5, 900),
            _row("native", 10.0, 500, "gpt2"), _row("headroom", 9.7, 400, "gpt2"),
            _row("native", 10.0, 500, "unet"), _row("headroom", 10.0, 500, "unet"),
            _row("native", 10.0, 500, "x"), dict(_row("headroom", 0, 0, "x"), status="crashed",
                                                 note="crashed (SIGSEGV)")]
    verdict, failures, judged = torch_bench.judge(rows)
    assert verdict == "FAIL" and judged == 4
    assert rows[1]["verdict"] == "PASS"
    assert rows[3]["verdict"] == "FAIL: it/s 0.970 x native (target >= 0.98)"
    assert rows[5]["verdict"] == "FAIL: peak reserved 1.000 x native (target < 1)"
    assert "headroom crashed (SIGSEGV)" in rows[7]["verdict"]
    assert len(failures) == 3
    v, f, j = torch_bench.judge(rows[:2])
    assert (v, f, j) == ("PASS", [], 1)
    v, f, j = torch_bench.judge([_row("headroom", 1.0, 1), dict(_row("native", 0, 0),
                                                                status="timeout")])
    assert v == "FAIL" and "no native baseline" in f[0]
    md = torch_bench.render(rows, [], None, verdict, failures, judged, False, 400, 350)
    assert "FAIL on 3 of 4 workloads" in md and "- gpt2: it/s 0.970 x native" in md
    assert "| headroom | 32 | 98.50 | 0.985 |" in md


# ---- traces: import and replay ------------------------------------------------------------


def test_replay_pipeline_on_a_shared_trace(tmp_path):
    cli = cli_or_skip()
    src = os.path.join(TRACES, SHARED)
    if not os.path.exists(src):
        pytest.skip("no shared traces at %s" % TRACES)
    import traces

    reps = traces.import_and_replay(src, str(tmp_path), cli)
    assert [r["device"] for r in reps] == [0]
    # The recorded peak is the one the importer wrote into the trace header.
    header = open(tmp_path / (SHARED[:-7] + ".trace")).read(4096)
    rec = int(header.split("pytorch_peak_reserved=")[1].split()[0])
    c = traces.compare(reps[0])
    assert c["recorded_peak_reserved"] == rec
    p = reps[0]["pytorch"]["peak_reserved_bytes"]
    assert c["pytorch_like_peak_reserved"] == p
    assert c["diff_pct"] == pytest.approx((p - rec) / rec * 100)
    assert c["within"] == (abs(c["diff_pct"]) <= 3 and reps[0]["pytorch"]["ooms"] == 0)
    assert c["default_peak_reserved"] == reps[0]["default"]["peak_reserved_bytes"]
    assert traces.count_entries(src)[0] == 6587
    row = dict(c, status="ok", pickle_bytes=os.path.getsize(src), max_memory_reserved=None)
    verdict, misses = traces.judge([row])
    assert verdict == ("PASS" if c["within"] else "FAIL")
    md = report_of(traces, traces.render([row], verdict, misses, False, 170, 3.0, None),
                   tmp_path / "report")
    assert md.startswith("## 4. Real traces replayed\n")
    assert "| cs336-ctx256-forward-mixed | %d |" % c["events"] in md
    # replay_all end to end on a copy, and copy_traces keeping it.
    dst = tmp_path / "kept"
    pk = tmp_path / "copy.pickle"
    pk.write_bytes(open(src, "rb").read())
    rows = traces.replay_all([{"trace": "copy", "status": "ok", "pickle": str(pk),
                               "pickle_bytes": pk.stat().st_size}], str(tmp_path), cli)
    assert rows[0]["status"] == "ok" and rows[0]["entries"] == 6587
    assert rows[0]["diff_pct"] == c["diff_pct"]
    traces.copy_traces([{"pickle": str(pk)}], str(dst))
    assert (dst / "copy.pickle").stat().st_size == pk.stat().st_size


def test_replay_failures_are_rows_not_crashes(tmp_path):
    cli = cli_or_skip()
    import traces

    bad = tmp_path / "bad.pickle"
    bad.write_bytes(b"\x80\x04\x95")
    rows = traces.replay_all([{"trace": "bad", "status": "ok", "pickle": str(bad)}],
                             str(tmp_path), cli)
    assert rows[0]["status"] == "failed" and "truncated" in rows[0]["note"]
    v, misses = traces.judge(rows)
    assert v == "FAIL" and misses[0].startswith("bad: ")


def test_traces_judgement_counts_misses_and_extra_ooms():
    import traces

    def rep(peak, ooms=0, rec=1000):
        base = {"events": 10, "peak_live_bytes": 900, "pytorch_peak_reserved_bytes": rec,
                "pytorch_ooms": 0}
        return {"trace": "t", "device": 0,
                "pytorch": dict(base, peak_reserved_bytes=peak, ooms=ooms),
                "default": dict(base, peak_reserved_bytes=950, ooms=0)}

    assert traces.compare(rep(1029))["within"]
    assert not traces.compare(rep(1031))["within"]
    assert not traces.compare(rep(969))["within"]
    c = traces.compare(rep(1000, ooms=2))
    assert not c["within"] and "2 allocation(s) failed" in c["note"]
    rows = [dict(traces.compare(rep(1010)), status="ok"),
            dict(traces.compare(rep(1050)), status="ok")]
    v, misses = traces.judge(rows)
    assert v == "FAIL" and misses == ["t dev 0: +5.00%"]
    assert traces.judge(rows[:1]) == ("PASS", [])
