"""Procedural "one object" images: the demo model's training data.

Every image holds exactly one object (a disk or an axis-aligned square) of a random colour, size and
position on a plain or linear-gradient background, so its global structure can be counted by
:mod:`lib_upsample_guidance.demo.detector`. Images are generated on the fly from a ``torch.Generator``
and returned as float tensors ``(n, 3, size, size)`` in ``[-1, 1]`` (pixel value ``v`` in ``[0, 1]``
maps to ``2 v - 1``).

Geometry is given relative to the image side ``size``: the object's radius (half side for squares) is
``uniform(R_MIN, R_MAX) * size``; its centre keeps a margin of ``MARGIN * size`` pixels from the border.
The object colour differs from the background under it by at least ``MIN_CONTRAST`` (max over RGB
channels, in ``[0, 1]`` units) everywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

R_MIN = 0.15
R_MAX = 0.28
MARGIN = 0.06
MIN_CONTRAST = 0.4


@dataclass(frozen=True)
class ObjectInfo:
    """Ground truth of one generated image (geometry in pixels of the image it was drawn at)."""

    shape: str  # "disk" or "square"
    cx: float
    cy: float
    radius: float
    area_fraction: float  # ideal object area / image area


def _contrast_to_background(colour: torch.Tensor, c1: torch.Tensor, c2: torch.Tensor) -> torch.Tensor:
    """Per row: min over lam in [0, 1] of max_channel |colour - (c1 + lam (c2 - c1))| (21 values of lam).

    colour, c1, c2: (n, 3) -> (n,).
    """
    lam = torch.linspace(0.0, 1.0, 21, dtype=colour.dtype)[None, :, None]
    seg = c1[:, None, :] + lam * (c2 - c1)[:, None, :]
    return (colour[:, None, :] - seg).abs().amax(dim=2).amin(dim=1)


def sample_batch(
    n: int, size: int, gen: torch.Generator, *, with_info: bool = True
) -> tuple[torch.Tensor, list[ObjectInfo]]:
    """n images (n, 3, size, size) in [-1, 1] and their ground truth (deterministic given gen's state;
    the list is empty when with_info is False).

    Background: plain colour c1, or (probability 1/2) the exactly linear gradient
    bg(x, y) = c1 + (c2 - c1) p(x, y), p = 0.5 + ((x - 0.5) cos a + (y - 0.5) sin a) / (|cos a| + |sin a|),
    x, y the pixel centres in [0, 1]. Object: a disk or a square (probability 1/2 each), coverage
    clamp(r - d + 1/2, 0, 1) with d the Euclidean (disk) or Chebyshev (square) distance in pixels.
    """
    f64 = torch.float64

    def u(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen, dtype=f64)

    c1 = u(n, 3)
    gradient = u(n) < 0.5
    c2 = torch.where(gradient[:, None], u(n, 3), c1)
    angle = u(n) * (2 * math.pi)
    # Object colour: the first of 32 candidates with enough contrast against the background segment.
    cand = u(n, 32, 3)
    contrast = torch.stack([_contrast_to_background(cand[:, j], c1, c2) for j in range(32)], dim=1)
    ok = contrast >= MIN_CONTRAST
    first = torch.where(ok.any(dim=1), ok.float().argmax(dim=1), contrast.argmax(dim=1))
    colour = cand[torch.arange(n), first]
    is_disk = u(n) < 0.5
    r = (R_MIN + (R_MAX - R_MIN) * u(n)) * size
    lo = r + MARGIN * size
    cx = lo + (size - 2 * lo) * u(n)
    cy = lo + (size - 2 * lo) * u(n)

    c = (torch.arange(size, dtype=f64) + 0.5) / size
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    ca, sa = torch.cos(angle), torch.sin(angle)
    p = (
        0.5
        + ((xx[None] - 0.5) * ca[:, None, None] + (yy[None] - 0.5) * sa[:, None, None])
        / (ca.abs() + sa.abs())[:, None, None]
    )
    p = torch.where(gradient[:, None, None], p, torch.zeros_like(p))
    bg = c1[:, :, None, None] + (c2 - c1)[:, :, None, None] * p[:, None]
    px = xx[None] * size - cx[:, None, None]
    py = yy[None] * size - cy[:, None, None]
    d = torch.where(is_disk[:, None, None], torch.sqrt(px**2 + py**2), torch.maximum(px.abs(), py.abs()))
    cov = (r[:, None, None] - d + 0.5).clamp(0.0, 1.0)[:, None]
    img = bg * (1 - cov) + colour[:, :, None, None] * cov
    area = torch.where(is_disk, math.pi * r * r, 4 * r * r) / (size * size)
    infos = []
    if with_info:
        rows = zip(is_disk.tolist(), cx.tolist(), cy.tolist(), r.tolist(), area.tolist(), strict=True)
        infos = [ObjectInfo("disk" if dk else "square", a, b, rr, ar) for dk, a, b, rr, ar in rows]
    return (img * 2 - 1).to(torch.float32), infos


def expected_area_fraction() -> float:
    """E[object area / image area] under the generator: shapes equally likely, r/size ~ U(R_MIN, R_MAX).

    E[r^2] = (R_MAX^3 - R_MIN^3) / (3 (R_MAX - R_MIN)); disk area pi r^2, square 4 r^2.
    """
    er2 = (R_MAX**3 - R_MIN**3) / (3 * (R_MAX - R_MIN))
    return 0.5 * (math.pi + 4.0) * er2
