"""Registry.use() on a hot module: per call, and per step of a forward loop
beside accelerate's hooks on the same module and loop.

Per call: `with registry.use(m): pass` and its kin, median and 99th
percentile of single calls (perf_counter), as before.

Per step, when accelerate is importable: one small model (Linear 512x512,
GELU, Linear 512x512; batch 1; torch on one thread) is built once per
configuration with the same weights, and each step is one forward pass:
  - bare:              m(x)
  - Registry.use():    with registry.use(m): m(x)   (resident on the CPU device)
  - AlignDevicesHook:  m(x) with accelerate's AlignDevicesHook(execution_device="cpu")
                       on the model (add_hook_to_module), its lightest hook
  - cpu_offload:       m(x) after accelerate.cpu_offload(m, execution_device="cpu")
Rounds alternate the configurations (the order rotates each round), each a
block of STEPS steps timed with the thread's CPU clock (the machine may be
shared: what another process takes is not counted) and the wall clock. A
configuration's overhead is the median over rounds of its block minus the
bare block of the same round, per step; the ratios divide overheads.

Usage: python3 bench/python_use.py [rounds]
Prints markdown."""

import statistics
import sys
import time

import torch

import headroom
from python_overhead import measure  # bench/, beside this file
from python_registry import MIB, blob

STEPS = 200


def per_call():
    """(name, median ns, p99 ns) of the calls python.md has always listed."""
    r = headroom.Registry(device="cpu", budget_bytes=1 << 30)
    mods = [blob(MIB) for _ in range(4)]
    for i, m in enumerate(mods):
        r.register(m, "m%d" % i)
    for m in mods:
        with r.use(m):
            pass
    hot = mods[0]

    def use_one():
        with r.use(hot):
            pass

    def use_two():
        with r.use(mods[1], mods[2]):
            pass

    rows = [("with registry.use(m): pass (resident)", *measure(use_one, 20000)),
            ("with registry.use(a, b): pass (resident)", *measure(use_two, 20000)),
            ("registry.require(m) (resident)", *measure(lambda: r.require(hot), 20000)),
            ("registry.releasable_bytes() (4 modules)", *measure(r.releasable_bytes, 20000))]
    r.close()
    return rows


def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(512, 512), torch.nn.GELU(),
                               torch.nn.Linear(512, 512)).eval()


def configurations(accelerate):
    """[(name, step function)], and the registry to close."""
    from accelerate.hooks import AlignDevicesHook, add_hook_to_module

    x = torch.randn(1, 512)
    bare, used, aligned, offloaded = model(), model(), model(), model()
    r = headroom.Registry(device="cpu", budget_bytes=1 << 30)
    r.register(used, "model")
    with r.use(used):
        pass
    add_hook_to_module(aligned, AlignDevicesHook(execution_device="cpu"))
    offloaded = accelerate.cpu_offload(offloaded, execution_device="cpu")

    def s_bare():
        bare(x)

    def s_use():
        with r.use(used):
            used(x)

    def s_use_alone():
        with r.use(used):
            pass

    return [("bare forward", s_bare), ("Registry.use()", s_use),
            ("AlignDevicesHook", lambda: aligned(x)), ("cpu_offload", lambda: offloaded(x)),
            ("use() alone, no forward", s_use_alone)], r


def per_step(accelerate, rounds):
    """{name: ([cpu ns per step per round], [wall ns ...])}."""
    cfgs, r = configurations(accelerate)
    out = {name: ([], []) for name, _ in cfgs}
    torch.set_num_threads(1)
    with torch.no_grad():
        for _, fn in cfgs:  # warm up
            for _ in range(STEPS):
                fn()
        for k in range(rounds):
            for name, fn in cfgs[k % len(cfgs):] + cfgs[:k % len(cfgs)]:
                c0, w0 = time.thread_time_ns(), time.perf_counter_ns()
                for _ in range(STEPS):
                    fn()
                c1, w1 = time.thread_time_ns(), time.perf_counter_ns()
                out[name][0].append((c1 - c0) / STEPS)
                out[name][1].append((w1 - w0) / STEPS)
    r.close()
    return out


def overhead(out, name, clock):
    """Median over rounds of (name's step - the bare step of the same round)."""
    return statistics.median(a - b for a, b in zip(out[name][clock], out["bare forward"][clock]))


def write_per_step(w, accelerate, rounds):
    out = per_step(accelerate, rounds)
    w("\n## Registry.use() per step beside accelerate's hooks\n\n")
    w("torch %s on one thread, accelerate %s; the model is Linear(512, 512), GELU, "
      "Linear(512, 512) at batch 1 on the CPU (a resident module: use() decides and keeps "
      "the books, nothing moves). %d rounds of %d steps per configuration, alternating; "
      "`overhead` is the median over rounds of the step minus the bare step of the same round "
      "(bench/python_use.py). CPU: the thread's CPU clock; wall: perf_counter.\n\n"
      % (torch.__version__, accelerate.__version__, rounds, STEPS))
    w("| per step | CPU median µs | CPU overhead µs | wall median µs | wall overhead µs | "
      "overhead / AlignDevicesHook's (CPU) | overhead / cpu_offload's (CPU) |\n"
      "| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n")
    align = overhead(out, "AlignDevicesHook", 0)
    offl = overhead(out, "cpu_offload", 0)
    for name in out:
        cpu, wall = statistics.median(out[name][0]), statistics.median(out[name][1])
        if name == "bare forward":
            w("| %s | %.1f | | %.1f | | | |\n" % (name, cpu / 1e3, wall / 1e3))
        elif name.startswith("use() alone"):
            w("| %s | %.1f | | %.1f | | %.2fx | %.2fx |\n" % (
                name, cpu / 1e3, wall / 1e3, cpu / align, cpu / offl))
        else:
            oc, ow = overhead(out, name, 0), overhead(out, name, 1)
            w("| %s | %.1f | %.1f | %.1f | %.1f | %.2fx | %.2fx |\n" % (
                name, cpu / 1e3, oc / 1e3, wall / 1e3, ow / 1e3, oc / align, oc / offl))


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 120
    w = sys.stdout.write
    w("## Registry: use() on hot modules\n\n")
    w("torch %s on the CPU device (the moves leave the data in place: this is the Python and "
      "library cost of the decision and the bookkeeping); bench/python_use.py.\n\n"
      % torch.__version__)
    w("| call | median | p99 |\n| --- | ---: | ---: |\n")
    for name, med, p99 in per_call():
        w("| `%s` | %.1f µs | %.1f µs |\n" % (name, med / 1e3, p99 / 1e3))
    try:
        import accelerate
    except ImportError:
        w("\n(accelerate is not installed in this Python: the per-step comparison with its "
          "hooks is left out; run bench/python.sh with HR_BENCH_PYTHON naming a Python that has "
          "torch and accelerate.)\n")
        return
    write_per_step(w, accelerate, rounds)


if __name__ == "__main__":
    main()
