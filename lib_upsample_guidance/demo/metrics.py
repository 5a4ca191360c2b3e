"""Metrics of a set of demo samples: structure rate, object scale, distribution distance.

- structure rate: fraction of images in which the detector finds exactly one object.
- object area: mean over images with at least one object of the largest object's area as a fraction of the
  image; the object scale against the expected one is sqrt(area / area_ref) (1 = same relative size as
  at the base size; 0.5 = objects half as wide, relative to the image).
- distribution distance: sliced Wasserstein-1 distance between the outputs brought down to the base size
  (the core's resampling D, box or spectral) and base-size samples from independent noise, on raw pixel
  vectors: SWD = mean over P fixed random unit directions u of W1(<u, a_i>, <u, b_j>), W1 between two
  equal-size 1-D samples = mean |sorted(a) - sorted(b)|.
- detail: the high-band energy mean((x - U(D(x)))^2) (box pair, 2x per axis, at the output's own size)
  relative to that of training images drawn at the same size: about 1 = as sharp as the data, below 1 =
  blurred (e.g. an upsampled small image), above 1 = noisy.
"""

from __future__ import annotations

import math

import torch

from ..core import make_resampler
from .detector import detect_batch


def down_to(images: torch.Tensor, size: int, kind: str = "auto") -> torch.Tensor:
    """Images (n, 3, H, H) brought to (n, 3, size, size) by the core's D (identity when H == size)."""
    h = images.shape[-1]
    if h == size:
        return images
    return make_resampler((h, h), (size, size), kind).down(images)


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, projections: int = 256, seed: int = 0) -> float:
    """SWD-1 between two equal-size sets of images/vectors (n, ...), over fixed random directions."""
    a = a.reshape(a.shape[0], -1).double()
    b = b.reshape(b.shape[0], -1).double()
    if a.shape != b.shape:
        raise ValueError(f"sliced_wasserstein needs equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    dirs = torch.randn(
        a.shape[1], projections, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    dirs /= dirs.norm(dim=0, keepdim=True)
    pa, _ = torch.sort(a @ dirs, dim=0)
    pb, _ = torch.sort(b @ dirs, dim=0)
    return float((pa - pb).abs().mean())


def high_band_energy(images: torch.Tensor) -> float:
    """mean((x - U(D(x)))^2) over a batch (n, 3, H, W), H and W even, with the core's 2x box pair."""
    h, w = images.shape[-2:]
    rs = make_resampler((h, w), (h // 2, w // 2), "box")
    return float((images - rs.up(rs.down(images))).pow(2).mean())


def data_detail(size: int, n: int = 256, seed: int = 12345) -> float:
    """:func:`high_band_energy` of n training images drawn directly at ``size`` px."""
    from .dataset import sample_batch

    imgs, _ = sample_batch(n, size, torch.Generator().manual_seed(seed), with_info=False)
    return high_band_energy(imgs)


def summarise(
    images: torch.Tensor,
    *,
    base: int,
    reference: torch.Tensor | None = None,
    area_ref: float | None = None,
    detail_ref: float | None = None,
) -> dict[str, float]:
    """Metrics of one set of samples (n, 3, H, W): see the module docstring.

    reference: base-size samples from independent noise (for the distance); area_ref: the expected
    object area fraction (for the scale); detail_ref: :func:`data_detail` at the images' size.
    """
    dets = detect_batch(images)
    n = len(dets)
    areas = [d.areas[0] for d in dets if d.count]
    counts = [d.count for d in dets]
    out: dict[str, float] = {
        "n": n,
        "structure_rate": sum(c == 1 for c in counts) / n,
        "structure_interval": wilson_interval(sum(c == 1 for c in counts), n),
        "duplicate_rate": sum(c >= 2 for c in counts) / n,
        "empty_rate": sum(c == 0 for c in counts) / n,
        "mean_objects": sum(counts) / n,
        "object_area": sum(areas) / len(areas) if areas else 0.0,
    }
    if area_ref:
        out["object_scale"] = math.sqrt(out["object_area"] / area_ref)
    if detail_ref:
        out["detail"] = high_band_energy(images) / detail_ref
    if reference is not None:
        out["swd_to_base"] = sliced_wasserstein(down_to(images, base), reference)
    return out


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a rate successes / n (z = 1.96): centre (p + z^2/2n) / (1 + z^2/n),
    half-width z sqrt(p (1 - p) / n + z^2 / 4n^2) / (1 + z^2/n). Stays inside [0, 1], unlike p +- z sqrt(p(1-p)/n)."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))
