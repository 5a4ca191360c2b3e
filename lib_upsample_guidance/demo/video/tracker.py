"""Is a sampled clip right? One object in every frame, moving in a straight line at constant speed.

For one clip (3, F, H, W) in [-1, 1], frame by frame with the image demo's background model and threshold
(:func:`lib_upsample_guidance.demo.detector.foreground_mask`): the 4-connected components of at least
``MIN_AREA_FRACTION`` of the frame are the objects. The clip is correct when

1. every frame holds exactly one object;
2. its centroid (x, y) / side, fitted by a straight line in the frame index (least squares per coordinate),
   leaves no residual above ``TRACK_TOLERANCE`` (a fraction of the side): straight, constant-velocity motion
   (no jumps, no reversal, no teleporting);
3. its area varies by at most ``AREA_RATIO`` (largest / smallest over the frames): the same object throughout;
4. its size is one the data has: the mean area (fraction of the frame) lies in the data's disk-area range
   ``[pi R_MIN^2, pi R_MAX^2]`` widened by ``AREA_RATIO ** 0.5`` on each side (``SIZE_RANGE``: a radius at most
   19% outside the data's radii; the detector measures data disks 0.95-1.17 times pi r^2). Plain sampling at
   twice the size shrinks the object below it; without this a shrunken disk counted as correct.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..detector import MIN_AREA_FRACTION, components_with_centroids, foreground_mask
from .dataset import R_MAX, R_MIN

TRACK_TOLERANCE = 0.08
AREA_RATIO = 2.0
SIZE_RANGE = (math.pi * R_MIN**2 / AREA_RATIO**0.5, math.pi * R_MAX**2 * AREA_RATIO**0.5)  # mean area / frame


@dataclass(frozen=True)
class ClipCheck:
    """What the tracker found in one clip."""

    counts: tuple[int, ...]  # objects per frame
    track_residual: float  # max distance of a centroid from the fitted line, / side (inf if no track)
    area_ratio: float  # largest / smallest object area over the frames (inf if no track)
    mean_area: float  # mean object area / frame area (0 if no track)

    @property
    def one_object(self) -> bool:
        return all(c == 1 for c in self.counts)

    @property
    def data_size(self) -> bool:
        """The object's mean area is one the data has (criterion 4)."""
        return SIZE_RANGE[0] <= self.mean_area <= SIZE_RANGE[1]

    @property
    def ok(self) -> bool:
        return (
            self.one_object
            and self.track_residual <= TRACK_TOLERANCE
            and self.area_ratio <= AREA_RATIO
            and self.data_size
        )


def check_clip(clip: torch.Tensor) -> ClipCheck:
    """Track the object through one clip (3, F, H, W) in [-1, 1]."""
    _, frames, h, w = clip.shape
    counts, cx, cy, areas = [], [], [], []
    for f in range(frames):
        objs = [
            o
            for o in components_with_centroids(foreground_mask(clip[:, f]))
            if o[0] >= MIN_AREA_FRACTION * h * w
        ]
        counts.append(len(objs))
        if objs:
            n, x, y = max(objs)
            cx.append(x / w)
            cy.append(y / h)
            areas.append(n / (h * w))
    if len(areas) != frames or frames < 2:
        return ClipCheck(tuple(counts), float("inf"), float("inf"), float(np.mean(areas)) if areas else 0.0)
    idx = np.arange(frames, dtype=np.float64)
    residual = 0.0
    for coord in (np.array(cx), np.array(cy)):
        fit = np.polyval(np.polyfit(idx, coord, 1), idx)
        residual = max(residual, float(np.abs(coord - fit).max()))
    return ClipCheck(tuple(counts), residual, max(areas) / min(areas), float(np.mean(areas)))


def check_clips(clips: torch.Tensor) -> list[ClipCheck]:
    """:func:`check_clip` on every clip of a batch (n, 3, F, H, W)."""
    return [check_clip(c) for c in clips]
