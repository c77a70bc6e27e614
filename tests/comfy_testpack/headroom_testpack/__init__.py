"""A test-only ComfyUI node pack (tests/comfy_testpack/README.md): a model
of a given size loaded through comfy.model_management, and a node that
keeps a prompt running with it."""

import time

import torch

import comfy.model_management as mm
import comfy.model_patcher


class HeadroomTestModel:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"megabytes": ("INT", {"default": 512, "min": 64, "max": 65536,
                                                   "step": 64}),
                             "name": ("STRING", {"default": "testmodel"})}}

    RETURN_TYPES = ("HR_TEST_MODEL",)
    FUNCTION = "load"
    CATEGORY = "headroom/test"

    def load(self, megabytes, name):
        layers = []
        for _ in range(megabytes // 64):
            lin = torch.nn.Linear(4096, 4096, bias=False, device="meta")
            lin.to_empty(device="cpu")
            with torch.no_grad():
                lin.weight.fill_(1.0)  # every page touched: resident
            layers.append(lin)
        model = torch.nn.Sequential(*layers)
        patcher = comfy.model_patcher.ModelPatcher(model, mm.get_torch_device(),
                                                   mm.unet_offload_device())
        patcher.headroom_name = name
        mm.load_models_gpu([patcher])
        return (patcher,)


class HeadroomTestHold:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("HR_TEST_MODEL",),
                             "seconds": ("FLOAT", {"default": 30.0, "min": 0.0,
                                                   "max": 3600.0})}}

    RETURN_TYPES = ()
    FUNCTION = "hold"
    OUTPUT_NODE = True
    CATEGORY = "headroom/test"

    def hold(self, model, seconds):
        mm.load_models_gpu([model])  # in use, as a sampler's model is
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(0.1)
        return ()


NODE_CLASS_MAPPINGS = {"HeadroomTestModel": HeadroomTestModel,
                       "HeadroomTestHold": HeadroomTestHold}
NODE_DISPLAY_NAME_MAPPINGS = {"HeadroomTestModel": "HeadroomTest Model",
                              "HeadroomTestHold": "HeadroomTest Hold"}
