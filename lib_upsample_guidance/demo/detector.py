"""Deterministic object counter for the demo's "one object" images.

For one image (3, H, W) in [-1, 1]:

1. Background model: per channel, a plane ``b(x, y) = c0 + c1 x + c2 y`` fitted by least squares to the
   border ring (``ring = max(1, round(min(H, W) / 16))`` pixels wide); refitted twice on the ring pixels whose
   residual (max over channels, [0, 1] units) is below ``FG_THRESHOLD`` so an object touching the border
   does not bend the fit. The training backgrounds are exactly such planes.
2. Foreground: pixels whose max-channel distance to the background exceeds ``FG_THRESHOLD`` (0.2 in [0, 1]
   units; the generator guarantees a contrast of at least 0.4).
3. Objects: 4-connected components of the foreground with at least ``MIN_AREA_FRACTION`` of the image's
   pixels (smaller specks are noise, not structure).

The image's structure is right when exactly one object is found.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

FG_THRESHOLD = 0.2
MIN_AREA_FRACTION = 0.01


@dataclass(frozen=True)
class Detection:
    """Objects found in one image: their areas as fractions of the image area, largest first."""

    areas: tuple[float, ...]

    @property
    def count(self) -> int:
        return len(self.areas)

    @property
    def ok(self) -> bool:
        """Exactly one object (the structure the training data always has)."""
        return len(self.areas) == 1


def _fit_background(img: np.ndarray) -> np.ndarray:
    """Per-channel plane fitted to the border ring, robustly; img (3, H, W) in [0, 1] -> (3, H, W)."""
    _, h, w = img.shape
    ring = max(1, round(min(h, w) / 16))
    yy, xx = np.mgrid[0:h, 0:w]
    mask = np.zeros((h, w), dtype=bool)
    mask[:ring, :] = mask[-ring:, :] = mask[:, :ring] = mask[:, -ring:] = True
    design = np.stack([np.ones(h * w), xx.ravel() / w, yy.ravel() / h], axis=1)
    flat = img.reshape(3, -1).T  # (HW, 3)
    use = mask.ravel()
    bg = None
    for _ in range(3):
        if use.sum() < 3:
            break
        coef, *_ = np.linalg.lstsq(design[use], flat[use], rcond=None)
        bg = design @ coef  # (HW, 3)
        resid = np.abs(flat - bg).max(axis=1)
        use = mask.ravel() & (resid < FG_THRESHOLD)
    if bg is None:  # the whole border is foreground: fall back to the median border colour
        bg = np.broadcast_to(np.median(flat[mask.ravel()], axis=0), flat.shape)
    return bg.T.reshape(img.shape)


def _components(mask: np.ndarray) -> list[int]:
    """Sizes of the 4-connected components of a boolean (H, W) mask (iterative flood fill)."""
    return [n for n, _, _ in components_with_centroids(mask)]


def components_with_centroids(mask: np.ndarray) -> list[tuple[int, float, float]]:
    """(size, mean x, mean y) of each 4-connected component of a boolean (H, W) mask, in pixels with
    pixel centres at +0.5 (iterative flood fill)."""
    h, w = mask.shape
    seen = np.zeros_like(mask)
    found = []
    for y0, x0 in zip(*np.nonzero(mask), strict=True):
        if seen[y0, x0]:
            continue
        seen[y0, x0] = True
        stack, n, sx, sy = [(int(y0), int(x0))], 0, 0.0, 0.0
        while stack:
            y, x = stack.pop()
            n, sx, sy = n + 1, sx + x + 0.5, sy + y + 0.5
            for yy, xx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= yy < h and 0 <= xx < w and mask[yy, xx] and not seen[yy, xx]:
                    seen[yy, xx] = True
                    stack.append((yy, xx))
        found.append((n, sx / n, sy / n))
    return found


def foreground_mask(image: torch.Tensor) -> np.ndarray:
    """Boolean (H, W) foreground mask of one image (3, H, W) in [-1, 1] (steps 1 and 2 above)."""
    img = ((image.detach().float().cpu().numpy() + 1.0) / 2.0).clip(0.0, 1.0).astype(np.float64)
    bg = _fit_background(img)
    return np.abs(img - bg).max(axis=0) > FG_THRESHOLD


def detect(image: torch.Tensor) -> Detection:
    """Objects in one image (3, H, W) in [-1, 1]."""
    mask = foreground_mask(image)
    total = mask.size
    sizes = sorted((s for s in _components(mask) if s >= MIN_AREA_FRACTION * total), reverse=True)
    return Detection(tuple(s / total for s in sizes))


def detect_batch(images: torch.Tensor) -> list[Detection]:
    """:func:`detect` on every image of a batch (n, 3, H, W)."""
    return [detect(img) for img in images]


def structure_rate(images: torch.Tensor) -> float:
    """Fraction of images (n, 3, H, W) in which exactly one object is found."""
    dets = detect_batch(images)
    return sum(d.ok for d in dets) / max(1, len(dets))
