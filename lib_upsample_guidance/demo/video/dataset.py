"""Procedural clips of one disk moving in a straight line at constant velocity: the video demo's data.

A clip is a float tensor ``(3, frames, size, size)`` in ``[-1, 1]`` (channels first, then the frame axis, as
the core's video resampler expects the trailing axes (frames, height, width)). Batches are
``(n, 3, frames, size, size)``.

Geometry is relative to the side ``size``: radius ``uniform(R_MIN, R_MAX) * size``; the centre moves on the
segment from ``p0`` to ``p1`` (both uniform in the square that keeps a margin of ``MARGIN * size`` from the
border to the disk), reaching ``p0 + (p1 - p0) * f / (frames - 1)`` at frame ``f``. The background is one plain
colour per clip; the disk's colour differs from it by at least ``MIN_CONTRAST`` (max over RGB, [0, 1] units).
"""

from __future__ import annotations

import torch

R_MIN = 0.14
R_MAX = 0.22
MARGIN = 0.04
MIN_CONTRAST = 0.4


def sample_clips(n: int, frames: int, size: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n clips (n, 3, frames, size, size) in [-1, 1] and their tracks (n, frames, 2): the disk centre
    (x, y) in pixels of the clip, at every frame. Deterministic given gen's state."""
    f64 = torch.float64

    def u(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen, dtype=f64)

    bg = u(n, 3)
    cand = u(n, 16, 3)
    contrast = (cand - bg[:, None]).abs().amax(dim=2)
    ok = contrast >= MIN_CONTRAST
    first = torch.where(ok.any(dim=1), ok.float().argmax(dim=1), contrast.argmax(dim=1))
    colour = cand[torch.arange(n), first]
    r = (R_MIN + (R_MAX - R_MIN) * u(n)) * size
    lo = r + MARGIN * size
    span = size - 2 * lo
    p0 = lo[:, None] + span[:, None] * u(n, 2)
    p1 = lo[:, None] + span[:, None] * u(n, 2)
    frac = torch.arange(frames, dtype=f64) / max(1, frames - 1)
    track = p0[:, None] + (p1 - p0)[:, None] * frac[None, :, None]  # (n, F, 2)

    c = torch.arange(size, dtype=f64) + 0.5
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    dx = xx[None, None] - track[..., 0, None, None]
    dy = yy[None, None] - track[..., 1, None, None]
    cov = (r[:, None, None, None] - torch.sqrt(dx**2 + dy**2) + 0.5).clamp(0.0, 1.0)  # (n, F, H, W)
    cov = cov[:, None]
    clip = bg[:, :, None, None, None] * (1 - cov) + colour[:, :, None, None, None] * cov
    return (clip * 2 - 1).to(torch.float32), track.to(torch.float32)
