"""A compact diffusion-style UNet in plain PyTorch, for the GPU validation's
PyTorch loops (diffusers is not installed there).

The shape follows Stable Diffusion's UNet at small scale: a sinusoidal
timestep embedding through an MLP, residual blocks (GroupNorm, SiLU, 3x3
convolutions, the time embedding added in between), two downsampling
stages with skip connections carried to the matching upsampling stages, and
a self-attention block at the lowest resolution. A denoising loop runs it N
times on 4-channel latents with a simple Euler-style update, which is what
allocates like a sampler: the same activations, step after step.

Random weights; nothing is downloaded. Imports torch only.
"""

import math

import torch
from torch import nn
import torch.nn.functional as F


def timestep_embedding(t, dim):
    """Sinusoidal embedding of timesteps `t` (shape [B]) into [B, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device,
                                                        dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def _groups(ch):
    # GroupNorm needs the channel count divisible by the group count.
    for g in (32, 16, 8, 4, 2, 1):
        if ch % g == 0:
            return g
    return 1


class ResBlock(nn.Module):
    def __init__(self, cin, cout, temb):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.temb = nn.Linear(temb, cout)
        self.norm2 = nn.GroupNorm(_groups(cout), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb(F.silu(emb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return h + self.skip(x)


class SelfAttention(nn.Module):
    """Multi-head self-attention over the pixels of a feature map."""

    def __init__(self, ch, heads):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(_groups(ch), ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.out = nn.Conv2d(ch, ch, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        # [b, heads, hw, d]: attention over the h*w positions.
        q, k, v = (t.transpose(-1, -2) for t in (q, k, v))
        if hasattr(F, "scaled_dot_product_attention"):
            a = F.scaled_dot_product_attention(q, k, v)
        else:  # PyTorch before 2.0
            w_ = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
            a = w_ @ v
        a = a.transpose(-1, -2).reshape(b, c, h, w)
        return x + self.out(a)


class UNet2D(nn.Module):
    """UNet on [B, in_ch, H, W] with H and W divisible by 2**(len(mults)-1).

    ch: base channels; mults: channel multiplier per resolution level (one
    downsampling between levels); attn_heads: heads of the self-attention
    block at the lowest level."""

    def __init__(self, in_ch=4, ch=128, mults=(1, 2, 4), attn_heads=8, temb=None):
        super().__init__()
        temb = temb or 4 * ch
        self.ch = ch
        self.time = nn.Sequential(nn.Linear(ch, temb), nn.SiLU(), nn.Linear(temb, temb))
        self.inp = nn.Conv2d(in_ch, ch, 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        chans = []
        cur = ch
        for i, m in enumerate(mults):
            self.down.append(ResBlock(cur, ch * m, temb))
            cur = ch * m
            chans.append(cur)
            last = i == len(mults) - 1
            self.downsample.append(nn.Identity() if last else
                                   nn.Conv2d(cur, cur, 3, stride=2, padding=1))
        self.mid1 = ResBlock(cur, cur, temb)
        self.attn = SelfAttention(cur, attn_heads)
        self.mid2 = ResBlock(cur, cur, temb)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, m in reversed(list(enumerate(mults))):
            skip = chans.pop()
            self.up.append(ResBlock(cur + skip, ch * m, temb))
            cur = ch * m
            self.upsample.append(nn.Identity() if i == 0 else nn.Sequential(
                nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cur, cur, 3, padding=1)))
        self.norm = nn.GroupNorm(_groups(cur), cur)
        self.outp = nn.Conv2d(cur, in_ch, 3, padding=1)

    def forward(self, x, t):
        emb = self.time(timestep_embedding(t, self.ch).to(x.dtype))
        h = self.inp(x)
        skips = []
        for block, ds in zip(self.down, self.downsample):
            h = block(h, emb)
            skips.append(h)
            h = ds(h)
        h = self.mid2(self.attn(self.mid1(h, emb)), emb)
        for block, us in zip(self.up, self.upsample):
            s = skips.pop()
            if h.shape[-2:] != s.shape[-2:]:
                h = F.interpolate(h, size=s.shape[-2:], mode="nearest")
            h = block(torch.cat([h, s], dim=1), emb)
            h = us(h)
        return self.outp(F.silu(self.norm(h)))


def denoise(model, latents, steps, cond_scale=None):
    """Runs `steps` denoising steps on `latents` and returns the result: the
    model predicts the noise at each timestep, and an Euler step on a linear
    schedule removes it. With cond_scale, each step runs the batch twice (the
    conditional and unconditional halves of classifier-free guidance) and
    mixes them, as samplers do."""
    x = latents
    ts = torch.linspace(999, 0, steps, device=x.device)
    for i in range(steps):
        x = denoise_step(model, x, ts[i], 1.0 / steps, cond_scale)
    return x


def denoise_step(model, x, t, dt, cond_scale=None):
    """One step of denoise(): the unit the benchmark times."""
    if cond_scale is None:
        eps = model(x, t.expand(x.shape[0]))
    else:
        xx = torch.cat([x, x])
        eps_c, eps_u = model(xx, t.expand(xx.shape[0])).chunk(2)
        eps = eps_u + cond_scale * (eps_c - eps_u)
    return x - dt * eps
