"""The demo's small pixel-space UNet (plain torch, no attention) and its noise schedule.

Schedule: continuous-time variance-preserving cosine schedule, t in [0, 1] (1 = pure noise):

    x_t = a(t) x0 + s(t) eps,   a(t) = cos(pi t / 2),   s(t) = sin(pi t / 2)

In the k-diffusion convention (x = x0 + sigma eps) the same state is x = x_t / a(t) with
sigma(t) = s(t) / a(t) = tan(pi t / 2), so t(sigma) = (2 / pi) atan(sigma): this is the model's own time,
the ``sigma_to_t`` given to :class:`lib_upsample_guidance.UpsampleGuidedDenoiser`.

The network predicts v = a(t) eps - s(t) x0 (v-prediction); x0 = a(t) x_t - s(t) v.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F


def t_to_sigma(t: torch.Tensor) -> torch.Tensor:
    """k-diffusion sigma of model time t: sigma = tan(pi t / 2)."""
    return torch.tan(t * (math.pi / 2))


def sigma_to_t(sigma: torch.Tensor) -> torch.Tensor:
    """Model time of a k-diffusion sigma: t = (2 / pi) atan(sigma), in [0, 1)."""
    return torch.atan(sigma) * (2 / math.pi)


@dataclass(frozen=True)
class UNetConfig:
    """Architecture hyper-parameters (stored in the weights file's metadata)."""

    channels: tuple[int, ...] = (32, 64, 96)
    blocks_per_level: int = 1
    mid_blocks: int = 2
    emb_dim: int = 128
    groups: int = 8


def _timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of 1000 t (one row per batch element), (n, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = (t.float() * 1000.0)[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with a per-channel shift from the time embedding."""

    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class SmallUNet(nn.Module):
    """Convolutional UNet: input (n, 3, H, W) noisy image x_t and time t (n,), output v (n, 3, H, W).

    H and W must be multiples of 2 ** (len(channels) - 1) (4 with the default three levels).
    """

    def __init__(self, config: UNetConfig | None = None) -> None:
        super().__init__()
        cfg = config or UNetConfig()
        self.config = cfg
        ch, e, g = cfg.channels, cfg.emb_dim, cfg.groups
        self.time_mlp = nn.Sequential(nn.Linear(e, e), nn.SiLU(), nn.Linear(e, e))
        self.conv_in = nn.Conv2d(3, ch[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips = []
        cur = ch[0]
        for i, c in enumerate(ch):
            blocks = nn.ModuleList()
            for _ in range(cfg.blocks_per_level):
                blocks.append(ResBlock(cur, c, e, g))
                cur = c
            self.down.append(blocks)
            skips.append(cur)
            if i < len(ch) - 1:
                self.downsample.append(nn.Conv2d(cur, cur, 3, stride=2, padding=1))
        self.mid = nn.ModuleList([ResBlock(cur, cur, e, g) for _ in range(cfg.mid_blocks)])
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i in reversed(range(len(ch))):
            blocks = nn.ModuleList()
            for j in range(cfg.blocks_per_level):
                blocks.append(ResBlock(cur + (skips[i] if j == 0 else 0), ch[i], e, g))
                cur = ch[i]
            self.up.append(blocks)
            if i > 0:
                self.upsample.append(nn.Conv2d(cur, ch[i - 1], 3, padding=1))
                cur = ch[i - 1]
        self.norm_out = nn.GroupNorm(g, cur)
        self.conv_out = nn.Conv2d(cur, 3, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.time_mlp(_timestep_embedding(t.reshape(-1).expand(x.shape[0]), self.config.emb_dim))
        h = self.conv_in(x)
        skips = []
        for i, blocks in enumerate(self.down):
            for blk in blocks:
                h = blk(h, emb)
            skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        for blk in self.mid:
            h = blk(h, emb)
        for j, blocks in enumerate(self.up):
            h = torch.cat([h, skips.pop()], dim=1)
            for blk in blocks:
                h = blk(h, emb)
            if j < len(self.upsample):
                h = self.upsample[j](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))


def config_to_metadata(cfg: UNetConfig) -> dict[str, str]:
    """safetensors metadata (string values) describing the architecture."""
    d = asdict(cfg)
    return {k: ",".join(str(x) for x in v) if isinstance(v, tuple) else str(v) for k, v in d.items()}


def config_from_metadata(meta: dict[str, str], config_class: type = UNetConfig) -> Any:
    """Inverse of :func:`config_to_metadata` for a config dataclass of whole numbers and tuples of them (the
    image and the video UNet's); every field must be present (KeyError otherwise), unknown keys are ignored."""
    values = {}
    for f in fields(config_class):
        raw = meta[f.name]
        values[f.name] = tuple(int(x) for x in raw.split(",")) if isinstance(f.default, tuple) else int(raw)
    return config_class(**values)
