"""The inference loops the torch and traces steps run: real architectures
with random weights, built without downloading anything.

A workload is named by a spec dict ({"model": "resnet50", "batch": 32, ...})
and built by build(spec, device, dtype) into a Workload: step() runs one
iteration (the unit the benchmark times), try_batch(b) runs one forward at
another batch size (the largest-batch search), and `unit` says what one
iteration is. torchvision and transformers are imported only when a model
needs them; ModelUnavailable says which package is missing.

Models:
  resnet50    torchvision's resnet50, eval, no_grad, 224x224 images.
  resnet_mini a small bottleneck ResNet in plain torch (the same kinds of
              layers as resnet50), for runs without torchvision.
  gpt2        transformers' GPT-2 (GPT2Config(): 12 layers, 768 wide, 124M),
              prefill of `prompt` tokens then `new` tokens decoded one at a
              time through the KV cache (greedy, fixed length).
  llama       transformers' Llama with a small LlamaConfig (8 layers, 1024
              wide, grouped-query attention), the same decoding loop.
  unet        the UNet of unet.py on 4-channel latents, one denoising step
              with classifier-free guidance (the batch runs twice).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from torch import nn  # noqa: E402

import torch_common as tc  # noqa: E402
import unet as unet_mod  # noqa: E402


class ModelUnavailable(Exception):
    """A model that cannot be built here; the message says why."""


DEFAULTS = tc.MODEL_DEFAULTS
spec_label = tc.spec_label


class Workload:
    def __init__(self, name, unit, step, try_batch=None, describe=""):
        self.name = name
        self.unit = unit
        self.step = step
        self.try_batch = try_batch
        self.describe = describe


# ---- a small ResNet in plain torch ---------------------------------------------


class Bottleneck(nn.Module):
    def __init__(self, cin, mid, stride):
        super().__init__()
        cout = 4 * mid
        self.body = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True), nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.down = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                   nn.BatchNorm2d(cout))
                     if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x):
        return torch.relu(self.body(x) + self.down(x))


class ResNetMini(nn.Module):
    """Stem, then one bottleneck block per stage with widths `widths`, global
    pooling and a classifier: resnet50's layer kinds at a fraction of its size."""

    def __init__(self, widths=(16, 32, 64, 128), classes=1000):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 7, stride=2, padding=3, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True),
                                  nn.MaxPool2d(3, stride=2, padding=1))
        blocks, cin = [], widths[0]
        for i, w in enumerate(widths):
            blocks.append(Bottleneck(cin, w, 1 if i == 0 else 2))
            cin = 4 * w
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


# ---- builders --------------------------------------------------------------------


def _sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _image_model(model, s, device, dtype, size):
    model = model.eval().to(device=device, dtype=dtype)
    x = torch.randn(s["batch"], 3, size, size, device=device, dtype=dtype)

    def step():
        with torch.no_grad():
            return model(x)

    def try_batch(b):
        with torch.no_grad():
            xb = torch.randn(b, 3, size, size, device=device, dtype=dtype)
            y = model(xb)
            _sync(device)
            del xb, y

    return step, try_batch


def _resnet50(s, device, dtype):
    try:
        import torchvision
    except ImportError as e:
        raise ModelUnavailable("resnet50 needs torchvision: %s" % e) from None
    step, tb = _image_model(torchvision.models.resnet50(weights=None), s, device, dtype, 224)
    return Workload("resnet50", "one forward of the batch", step, tb,
                    "torchvision resnet50, random weights, eval, no_grad, %s, 224x224, batch %d"
                    % (str(dtype).replace("torch.", ""), s["batch"]))


def _resnet_mini(s, device, dtype):
    size = s.get("size", 64)
    step, tb = _image_model(ResNetMini(), s, device, dtype, size)
    return Workload("resnet_mini", "one forward of the batch", step, tb,
                    "a small bottleneck ResNet, eval, no_grad, %dx%d, batch %d"
                    % (size, size, s["batch"]))


def _decoder(model, s, device, dtype, vocab):
    model = model.eval().to(device=device, dtype=dtype)
    g = torch.Generator(device="cpu").manual_seed(0)
    prompt = torch.randint(0, vocab, (s["batch"], s["prompt"]), generator=g).to(device)

    def step():
        # Prefill, then `new` tokens one at a time through the KV cache:
        # greedy and of fixed length, so every iteration allocates alike.
        with torch.no_grad():
            out = model(input_ids=prompt, use_cache=True)
            past = out.past_key_values
            nxt = out.logits[:, -1:].argmax(-1)
            for _ in range(s["new"] - 1):
                out = model(input_ids=nxt, past_key_values=past, use_cache=True)
                past = out.past_key_values
                nxt = out.logits[:, -1:].argmax(-1)
            return nxt

    return step


def _gpt2(s, device, dtype):
    try:
        from transformers import GPT2Config, GPT2LMHeadModel
    except ImportError as e:
        raise ModelUnavailable("gpt2 needs transformers: %s" % e) from None
    cfg = GPT2Config()
    step = _decoder(GPT2LMHeadModel(cfg), s, device, dtype, cfg.vocab_size)
    return Workload("gpt2", "prefill + %d decoded tokens" % s["new"], step, None,
                    "transformers GPT-2 (GPT2Config(), 124M), random weights, %s, batch %d, "
                    "prompt %d, %d new tokens via the KV cache"
                    % (str(dtype).replace("torch.", ""), s["batch"], s["prompt"], s["new"]))


def _llama(s, device, dtype):
    try:
        from transformers import LlamaConfig, LlamaForCausalLM
    except ImportError as e:
        raise ModelUnavailable("llama needs transformers: %s" % e) from None
    cfg = LlamaConfig(hidden_size=1024, intermediate_size=2816, num_hidden_layers=8,
                      num_attention_heads=16, num_key_value_heads=4, vocab_size=32000,
                      max_position_embeddings=2048)
    step = _decoder(LlamaForCausalLM(cfg), s, device, dtype, cfg.vocab_size)
    return Workload("llama", "prefill + %d decoded tokens" % s["new"], step, None,
                    "transformers Llama (8 layers, 1024 wide, GQA 16/4 heads), random weights, "
                    "%s, batch %d, prompt %d, %d new tokens via the KV cache"
                    % (str(dtype).replace("torch.", ""), s["batch"], s["prompt"], s["new"]))


def _unet(s, device, dtype):
    model = unet_mod.UNet2D(in_ch=4, ch=s["ch"], mults=tuple(s["mults"]),
                            attn_heads=s["heads"]).eval().to(device=device, dtype=dtype)
    n = s["latent"]
    x = [torch.randn(s["batch"], 4, n, n, device=device, dtype=dtype)]
    steps = max(2, s.get("steps", 20))
    ts = torch.linspace(999, 0, steps, device=device)
    i = [0]

    def step():
        # One step of a `steps`-step sampler; the latents carry over, and the
        # schedule starts again after its last step.
        with torch.no_grad():
            t = ts[i[0] % steps]
            i[0] += 1
            x[0] = unet_mod.denoise_step(model, x[0], t, 1.0 / steps, cond_scale=7.5)
            if i[0] % steps == 0:
                x[0] = torch.randn_like(x[0])
            return x[0]

    params = sum(p.numel() for p in model.parameters())
    return Workload("unet", "one denoising step (batch %d twice, guidance)" % s["batch"], step,
                    None, "UNet of bench/gpu/unet.py (%.0fM parameters, channels %d x %s, "
                    "attention at the lowest level), random weights, %s, latents %dx%dx4, "
                    "batch %d with classifier-free guidance"
                    % (params / 1e6, s["ch"], list(s["mults"]), str(dtype).replace("torch.", ""),
                       n, n, s["batch"]))


BUILDERS = {"resnet50": _resnet50, "resnet_mini": _resnet_mini, "gpt2": _gpt2, "llama": _llama,
            "unet": _unet}


def build(spec, device, dtype):
    """The Workload for `spec` on `device` in `dtype`, weights random
    (seeded). Raises ModelUnavailable when a package it needs is missing."""
    m = spec.get("model")
    if m not in BUILDERS:
        raise ValueError("unknown model %r; known: %s" % (m, ", ".join(sorted(BUILDERS))))
    s = dict(DEFAULTS[m], **spec)
    torch.manual_seed(0)
    return BUILDERS[m](s, device, dtype)
