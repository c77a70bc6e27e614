"""Loops whose memory behaviour is known, run as real processes with headroom.stage().

    python3 verdict_scenarios.py NAME [--frames N] [--malloc fixed]

runs scenario NAME and prints one JSON line per frame: the frame, VmRSS from
/proc/self/status, the stages the report names and any growth it names no
stage for; then a last line with the report's text. The tests
(test_verdicts.py) and the verdict matrix (bench/verdicts.py) run these.
Tensors are PyTorch's when it is importable, else bytearrays; each is written
so that its pages are resident. `--malloc fixed` gives glibc a fixed mmap
threshold of 1 MiB (every block of 1 MiB or more its own mapping).

Each scenario is (frames, stages in a frame, truth): truth is the stage that
keeps memory, or None.
"""

import ctypes
import json
import sys

import headroom
from headroom import stages

MIB = 1 << 20

try:
    import torch
except ImportError:
    torch = None


def tensor(mib):
    """`mib` MiB written (all pages resident)."""
    if torch is not None:
        return torch.ones(mib * MIB // 4, dtype=torch.float32)
    b = bytearray(mib * MIB)
    b[::4096] = b"\x01" * len(b[::4096])
    return b


KEPT = []


def lipsync_lump(frames, leak_mib=0, leak_in="decode"):
    """Audio features, denoising, decoding: each stage makes its tensors and
    all of them are freed together after the frame (outside any stage)."""
    for f in range(frames):
        with stages.stage("audio"):
            a = tensor(2)
            if leak_in == "audio" and leak_mib:
                KEPT.append(tensor(leak_mib))
        with stages.stage("denoise"):
            z = tensor(8)
        with stages.stage("decode"):
            img = tensor(24)
            if leak_in == "decode" and leak_mib:
                KEPT.append(tensor(leak_mib))
        del a, z, img
        yield f


def lipsync_with(frames, leak_mib=0):
    """The same three stages, each keeping its output in a variable the
    next frame assigns inside the stage (the old output is freed there)."""
    a = z = img = None
    for f in range(frames):
        with stages.stage("audio"):
            a = tensor(2)
        with stages.stage("denoise"):
            tmp = tensor(16)  # working memory, freed inside
            del tmp
            z = tensor(8)
        with stages.stage("decode"):
            if leak_mib:
                KEPT.append(tensor(leak_mib))
            img = tensor(24)
        yield f
    del a, z, img


def lipsync_functions(frames, leak_mib=0):
    """The same three stages written as functions: each returns its output,
    and the caller's next frame replaces it (the old output is freed right
    after the stage that made the new one, outside it)."""

    @headroom.stage("audio")
    def audio():
        return tensor(2)

    @headroom.stage("denoise")
    def denoise(a):
        tmp = tensor(16)  # working memory, freed inside
        del tmp
        return tensor(8)

    @headroom.stage("decode")
    def decode(z):
        if leak_mib:
            KEPT.append(tensor(leak_mib))
        return tensor(24)

    a = z = img = None
    for f in range(frames):
        a = audio()
        z = denoise(a)
        img = decode(z)
        yield f
    del a, z, img


def single(frames, leak_mib=0):
    """One stage, "infer", with working memory freed inside each call."""
    out = None
    for f in range(frames):
        with stages.stage("infer"):
            work = tensor(12)
            out = tensor(4)
            del work
            if leak_mib:
                KEPT.append(tensor(leak_mib))
        yield f
    del out


def sawtooth(frames):
    """A cache that gains 4 MiB a call and is flushed every 8th call, beside
    two stages with transients."""
    cache = []
    for f in range(frames):
        with stages.stage("prepare"):
            x = tensor(4)
        with stages.stage("cache"):
            if len(cache) == 8:
                cache.clear()
            cache.append(tensor(4))
        with stages.stage("write"):
            y = tensor(8)
        del x, y
        yield f


def warmup(frames):
    """An encoder whose cache fills over its first 8 calls and then stays."""
    cache = []
    for f in range(frames):
        with stages.stage("prepare"):
            x = tensor(4)
        with stages.stage("encode"):
            if len(cache) < 8:
                cache.append(tensor(4))
            y = tensor(8)
        with stages.stage("write"):
            z = tensor(2)
        del x, y, z
        yield f


def outside(frames):
    """lipsync_with; between frames, outside any stage, 2 MiB are appended
    to a list that is never cleared."""
    for f in lipsync_with(frames):
        KEPT.append(tensor(2))
        yield f


def one_off(frames):
    """A model of 256 MiB loaded on the 5th call of "load" and kept."""
    model = []
    for f in range(frames):
        with stages.stage("load"):
            if f == 4:
                model.append(tensor(256))
        with stages.stage("infer"):
            x = tensor(8)
        with stages.stage("write"):
            y = tensor(4)
        del x, y
        yield f


#: name: (loop, frames, truth). truth: the part that keeps the memory, None
#: when nothing does, or a tuple of the parts RSS cannot tell apart (the
#: report then names none and lists them).
SCENARIOS = {
    "flat_lump": (lipsync_lump, 80, None),
    "flat_with": (lipsync_with, 80, None),
    "flat_functions": (lipsync_functions, 80, None),
    "sawtooth": (sawtooth, 80, None),
    "warmup": (warmup, 80, None),
    "one_off": (one_off, 80, None),
    "leak1_single": (lambda n: single(n, 1), 40, "infer"),
    "leak2_with": (lambda n: lipsync_with(n, 2), 40, "decode"),
    "leak2_outside": (outside, 40, "outside stages, between decode and audio"),
    "leak2_functions": (lambda n: lipsync_functions(n, 2), 40,
                        ("decode", "outside stages, between decode and audio")),
    "leak2_lump": (lambda n: lipsync_lump(n, 2), 40, ("audio", "denoise", "decode")),
}


def vmrss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return None


def main(argv):
    name = argv[1]
    if "--malloc" in argv and argv[argv.index("--malloc") + 1] == "fixed":
        ctypes.CDLL(None).mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
    fn, frames, _truth = SCENARIOS[name]
    if "--frames" in argv:
        frames = int(argv[argv.index("--frames") + 1])
    for f in fn(frames):
        v = stages.verdicts()
        print(json.dumps({"frame": f + 1, "vmrss": vmrss(), "named": v.named("rss"),
                          "unattributed": [{"kind": u["kind"], "candidates": u["candidates"]}
                                           for u in v.unattributed if u["key"] == "rss"]}),
              flush=True)
    print(json.dumps({"report": str(stages.report())}))


if __name__ == "__main__":
    main(sys.argv)
