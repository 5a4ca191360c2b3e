"""The video demo's network: a small pixel-space UNet with per-frame convolutions and temporal attention.

Input ``(n, 3, frames, H, W)`` (x_t of the cosine VP schedule of :mod:`lib_upsample_guidance.demo.model`) and
time ``t`` ``(n,)``; output v ``(n, 3, frames, H, W)`` (v-prediction). The spatial layers (the image demo's
``ResBlock``) see every frame separately; after each of them a temporal attention block mixes the frames at
each pixel, as AnimateDiff's motion modules do: LayerNorm, plus a sinusoidal encoding of the absolute frame
index (0, 1, 2, ...; as AnimateDiff's ``PositionalEncoding``), multi-head self-attention over the frames,
a zero-initialised output projection, residual. The model is trained on 8-frame clips only; the frame
index encoding accepts up to ``max_frames`` frames, as AnimateDiff's accepts more frames than it was
trained on (and, like it, degrades there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..model import ResBlock, _timestep_embedding, config_to_metadata
from ..model import config_from_metadata as image_config_from_metadata

__all__ = [
    "VideoUNet",
    "VideoUNetConfig",
    "config_to_metadata",
    "config_from_metadata",
    "frame_position_encoding",
]


@dataclass(frozen=True)
class VideoUNetConfig:
    """Architecture hyper-parameters (stored in the weights file's metadata)."""

    channels: tuple[int, ...] = (24, 48, 64)
    emb_dim: int = 96
    groups: int = 8
    heads: int = 4
    max_frames: int = 64


def frame_position_encoding(frames: int, dim: int, device=None) -> torch.Tensor:
    """(frames, dim) sinusoidal encoding of the frame index f: [sin(f w_i), cos(f w_i)] with
    w_i = 10000^(-2i/dim) (interleaved as in AnimateDiff / Vaswani et al.)."""
    pos = torch.arange(frames, dtype=torch.float32, device=device)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / dim))
    pe = torch.zeros(frames, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)
    return pe


class TemporalAttention(nn.Module):
    """Self-attention over the frame axis at every pixel: h ((n F), C, H, W) -> same shape."""

    def __init__(self, channels: int, heads: int, max_frames: int) -> None:
        super().__init__()
        self.heads, self.max_frames = heads, max_frames
        self.norm = nn.LayerNorm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = nn.Linear(channels, channels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, h: torch.Tensor, frames: int) -> torch.Tensor:
        nf, c, hh, ww = h.shape
        if frames > self.max_frames:
            raise ValueError(f"the video model takes at most {self.max_frames} frames, got {frames}")
        n = nf // frames
        seq = h.reshape(n, frames, c, hh * ww).permute(0, 3, 1, 2).reshape(n * hh * ww, frames, c)
        z = self.norm(seq) + frame_position_encoding(frames, c, h.device)[None]
        q, k, v = self.qkv(z).reshape(-1, frames, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(-1, frames, c)
        seq = seq + self.out(a)
        return seq.reshape(n, hh * ww, frames, c).permute(0, 2, 3, 1).reshape(nf, c, hh, ww)


class VideoUNet(nn.Module):
    """UNet on clips (n, 3, F, H, W); H and W multiples of 2 ** (levels - 1)."""

    def __init__(self, config: VideoUNetConfig | None = None) -> None:
        super().__init__()
        cfg = config or VideoUNetConfig()
        self.config = cfg
        ch, e, g = cfg.channels, cfg.emb_dim, cfg.groups

        def temporal(c: int) -> TemporalAttention:
            return TemporalAttention(c, cfg.heads, cfg.max_frames)

        self.time_mlp = nn.Sequential(nn.Linear(e, e), nn.SiLU(), nn.Linear(e, e))
        self.conv_in = nn.Conv2d(3, ch[0], 3, padding=1)
        self.down, self.down_t, self.downsample = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        skips, cur = [], ch[0]
        for i, c in enumerate(ch):
            self.down.append(ResBlock(cur, c, e, g))
            self.down_t.append(temporal(c))
            cur = c
            skips.append(cur)
            if i < len(ch) - 1:
                self.downsample.append(nn.Conv2d(cur, cur, 3, stride=2, padding=1))
        self.mid = ResBlock(cur, cur, e, g)
        self.mid_t = temporal(cur)
        self.mid2 = ResBlock(cur, cur, e, g)
        self.up, self.up_t, self.upsample = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(len(ch))):
            self.up.append(ResBlock(cur + skips[i], ch[i], e, g))
            self.up_t.append(temporal(ch[i]))
            cur = ch[i]
            if i > 0:
                self.upsample.append(nn.Conv2d(cur, ch[i - 1], 3, padding=1))
                cur = ch[i - 1]
        self.norm_out = nn.GroupNorm(g, cur)
        self.conv_out = nn.Conv2d(cur, 3, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        n, c, frames, hh, ww = x.shape
        h = x.permute(0, 2, 1, 3, 4).reshape(n * frames, c, hh, ww)  # frames folded into the batch
        emb = self.time_mlp(_timestep_embedding(t.reshape(-1).expand(n), self.config.emb_dim))
        emb = emb.repeat_interleave(frames, dim=0)
        h = self.conv_in(h)
        skips = []
        for i, blk in enumerate(self.down):
            h = self.down_t[i](blk(h, emb), frames)
            skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        h = self.mid2(self.mid_t(self.mid(h, emb), frames), emb)
        for j, blk in enumerate(self.up):
            h = self.up_t[j](blk(torch.cat([h, skips.pop()], dim=1), emb), frames)
            if j < len(self.upsample):
                h = self.upsample[j](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        out = self.conv_out(F.silu(self.norm_out(h)))
        return out.reshape(n, frames, c, hh, ww).permute(0, 2, 1, 3, 4)


def config_from_metadata(meta: dict[str, str]) -> VideoUNetConfig:
    """Inverse of :func:`config_to_metadata` (the image model's parser, for this config)."""
    return image_config_from_metadata(meta, VideoUNetConfig)
