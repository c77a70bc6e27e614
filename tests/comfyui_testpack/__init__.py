"""A TEST-ONLY ComfyUI node pack for checking headroom's node pack against a
real ComfyUI (integrations/comfyui/VERIFIED.md): nodes that leak, allocate
and free, or pass memory through on purpose, a model loader and an
auxiliary-model node, a real CLIP built with random weights. It is not
part of headroom's pack; link it into custom_nodes/ beside it only for the
checks (tests/comfyui_testpack/scenarios.py drives them).

Every node runs on every prompt (IS_CHANGED is NaN), so a workflow queued
again runs again. Memory is touched page by page so that it is resident and
RSS shows it.
"""

import time

_MIB = 1 << 20
_KEPT = []  # what HeadroomTestLeak never gives back


def _resident(nbytes):
    """nbytes of memory, every page written (resident)."""
    return bytearray(b"\x01") * int(nbytes)


class _Base:
    CATEGORY = "headroom test pack"
    FUNCTION = "run"
    OUTPUT_NODE = False

    @classmethod
    def IS_CHANGED(cls, **kw):
        return float("nan")


class Source(_Base):
    """Starts a chain: an INT that changes every prompt."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 2 ** 31})}}

    RETURN_TYPES = ("INT",)

    def run(self, seed):
        return (seed + int(time.time() * 1000) % 1000,)


class Leak(_Base):
    """Keeps `mib` MiB more on every call (a leak)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT",), "mib": ("INT", {"default": 20, "min": 0})}}

    RETURN_TYPES = ("INT",)

    def run(self, value, mib):
        _KEPT.append(_resident(mib * _MIB))
        return (value + 1,)


class Transient(_Base):
    """Allocates `mib` MiB, uses it, and frees it before returning."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT",), "mib": ("INT", {"default": 20, "min": 0})}}

    RETURN_TYPES = ("INT",)

    def run(self, value, mib):
        buf = _resident(mib * _MIB)
        n = buf[len(buf) // 2]
        del buf
        return (value + n,)


class Handoff(_Base):
    """Allocates `mib` MiB and hands it on as its output (freed when the
    next prompt's output replaces it in ComfyUI's cache)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT",), "mib": ("INT", {"default": 20, "min": 0})}}

    RETURN_TYPES = ("BYTES_BLOB",)

    def run(self, value, mib):
        return (_resident(mib * _MIB),)


class Sink(_Base):
    """An output node that shows what it is given (its repr, cut at 4000
    characters)."""

    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("*",)}}

    @classmethod
    def VALIDATE_INPUTS(cls, input_types):
        return True

    RETURN_TYPES = ()

    def run(self, value):
        return {"ui": {"text": [value if isinstance(value, str) else repr(value)[:4000]]}}


class LoadBig(_Base):
    """An nn.Sequential of `size_mib` MiB of weights (filled, so resident),
    in a ModelPatcher, loaded through load_models_gpu."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"size_mib": ("INT", {"default": 64, "min": 1}),
                             "tag": ("STRING", {"default": "a"})}}

    RETURN_TYPES = ("MODEL",)

    def run(self, size_mib, tag):
        import torch
        import comfy.model_management as mm
        import comfy.model_patcher as mp

        layers = []
        for _ in range(size_mib // 4):  # 1024 x 1024 float32: 4 MiB a layer
            lin = torch.nn.Linear(1024, 1024, bias=False)
            with torch.no_grad():
                lin.weight.normal_()
            layers.append(lin)
        p = mp.ModelPatcher(torch.nn.Sequential(*layers), load_device=mm.get_torch_device(),
                            offload_device=mm.unet_offload_device())
        p.headroom_name = "big-" + tag
        mm.load_models_gpu([p])
        return (p,)


class AddAuxDirect(_Base):
    """Registers a `size_mib` MiB auxiliary model on a clone of the MODEL
    with headroom.comfy.register_auxiliary, then loads the clone ALONE with
    ComfyUI's load_models_gpu([clone]), as a node that never heard of
    auxiliary models would."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "size_mib": ("INT", {"default": 32})}}

    RETURN_TYPES = ("MODEL",)

    def run(self, model, size_mib):
        import torch
        import comfy.model_management as mm
        from headroom import comfy as hc

        net = torch.nn.Sequential(*[torch.nn.Linear(1024, 1024, bias=False)
                                    for _ in range(size_mib // 4)])
        with torch.no_grad():
            for p in net.parameters():
                p.normal_()
        clone = model.clone()
        hc.register_auxiliary(clone, "test_aux", [net], name="aux-encoder")
        mm.unload_all_models()  # so the load below is the only one
        mm.load_models_gpu([clone])
        return (clone,)


class RandomCLIP(_Base):
    """A real ComfyUI CLIP (comfy.sd.CLIP with SD1's tokenizer and CLIP-L
    text model) with random weights: what a checkpoint loader hands on,
    without a checkpoint file."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    RETURN_TYPES = ("CLIP",)

    def run(self):
        import comfy.sd
        import comfy.sd1_clip
        import comfy.supported_models_base as smb

        import torch

        target = smb.ClipTarget(comfy.sd1_clip.SD1Tokenizer, comfy.sd1_clip.SD1ClipModel)
        clip = comfy.sd.CLIP(target=target, parameters=123_000_000)
        with torch.no_grad():  # weights as a checkpoint's would be: written, so resident
            for p in clip.cond_stage_model.parameters():
                p.normal_(0, 0.02)
        return (clip,)


class Sleep(_Base):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("*",), "seconds": ("FLOAT", {"default": 2.0})}}

    @classmethod
    def VALIDATE_INPUTS(cls, input_types):
        return True

    RETURN_TYPES = ("INT",)

    def run(self, value, seconds):
        time.sleep(seconds)
        return (1,)


class HeapCost(_Base):
    """How long glibc's mallinfo2 takes in this process (CPU time of the
    calling thread, microseconds: median and worst of `n` calls), and how
    many bytes it says are live."""

    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"n": ("INT", {"default": 200, "min": 1})}}

    RETURN_TYPES = ()

    def run(self, n):
        import ctypes

        class MI2(ctypes.Structure):
            _fields_ = [(k, ctypes.c_size_t) for k in (
                "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                "uordblks", "fordblks", "keepcost")]

        f = ctypes.CDLL(None).mallinfo2
        f.restype = MI2
        ts = []
        for _ in range(n):
            t0 = time.thread_time()
            m = f()
            ts.append(time.thread_time() - t0)
        ts.sort()
        text = "mallinfo2: median %.0f us, worst %.0f us CPU over %d calls; live %d MiB, " \
               "free chunks %d" % (ts[len(ts) // 2] * 1e6, ts[-1] * 1e6, n,
                                   (m.uordblks + m.hblkhd) >> 20, m.ordblks)
        return {"ui": {"text": [text]}}


class HeapOff(_Base):
    """Turns headroom's C heap readings off in this process (as a heap too
    fragmented to read would), so nodes are judged by RSS alone."""

    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    RETURN_TYPES = ()

    def run(self):
        from headroom.readings import heap

        heap._off("turned off by the test pack")
        return {"ui": {"text": [heap.status()]}}


NODE_CLASS_MAPPINGS = {
    "HeadroomTestSource": Source, "HeadroomTestLeak": Leak, "HeadroomTestTransient": Transient,
    "HeadroomTestHandoff": Handoff, "HeadroomTestSink": Sink, "HeadroomTestLoadBig": LoadBig,
    "HeadroomTestAddAuxDirect": AddAuxDirect, "HeadroomTestRandomCLIP": RandomCLIP,
    "HeadroomTestSleep": Sleep, "HeadroomTestHeapCost": HeapCost,
    "HeadroomTestHeapOff": HeapOff,
}
