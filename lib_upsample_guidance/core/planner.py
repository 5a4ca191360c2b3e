"""Choosing the low-resolution size (SPEC §6).

Input: the target latent size (H, W), the model's trained base size in pixels, the latent factor (8 for SD
VAEs; 1 for pixel models) and the size granularity g the model needs (in latent pixels: a multiple of 8 for
the SD1/SD2 UNet's three downsamplings, 4 for SDXL's two, 2 for the patchified Flux/SD3 transformers).

Rule:
1. A target whose area is not larger than the base area is not guided (None, a no-op).
2. The ideal per-axis factor is s* = sqrt(target area / base area): it keeps the aspect ratio and aims the
   low-res query at the base area.
3. Prefer an exact integer factor s (box pair) that divides H and W, leaves multiples of g, and lies within
   INTEGER_FACTOR_TOLERANCE of s* (per axis); the closest in log scale wins.
4. Otherwise use the spectral pair with (h, w) = (H, W) / s* rounded to multiples of g (at least g, at most
   the target).
With resampler="box" the tolerance is waived (the closest integer factor that divides is taken); with
"spectral" step 3 is skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from .resample import RESAMPLER_KINDS, Resampler, make_resampler

__all__ = [
    "LowResPlan",
    "ModelFamily",
    "MODEL_FAMILIES",
    "INTEGER_FACTOR_TOLERANCE",
    "plan_low_res",
    "cached_resampler",
]

# An integer factor s is taken when 1/1.25 <= s*/s <= 1.25, i.e. the low-res area is within
# [0.64, 1.5625] x the base area. 2x is taken for 1536x1024 from a 512 base (s* = 2.45), not for 768 (s* = 1.5).
INTEGER_FACTOR_TOLERANCE = 1.25


@dataclass(frozen=True)
class ModelFamily:
    """Trained base size (px), latent factor and size granularity (latent px) of a model family."""

    name: str
    base_size_px: int
    latent_factor: int
    granularity: int


MODEL_FAMILIES: dict[str, ModelFamily] = {
    "sd1": ModelFamily("sd1", 512, 8, 8),
    "sd2": ModelFamily("sd2", 768, 8, 8),  # SD 2.x v-prediction (768-v)
    "sd2_eps": ModelFamily("sd2_eps", 512, 8, 8),  # SD 2.x epsilon checkpoints (512-base, inpainting, depth)
    "sdxl": ModelFamily("sdxl", 1024, 8, 4),
    "sd3": ModelFamily("sd3", 1024, 8, 2),
    "flux": ModelFamily("flux", 1024, 8, 2),
}


@lru_cache(maxsize=32)
def cached_resampler(high_size: tuple[int, ...], low_size: tuple[int, ...], kind: str) -> Resampler:
    """make_resampler, memoised per size pair (the spectral matrices are then built once per size)."""
    return make_resampler(high_size, low_size, kind)


def _fmt_factor(s: float) -> str:
    return f"{s:.2f}".rstrip("0").rstrip(".") + "x"


@dataclass(frozen=True)
class LowResPlan:
    """Target and low-resolution latent sizes (H, W) and the resampler kind joining them."""

    target_size: tuple[int, int]
    low_size: tuple[int, int]
    kind: str

    @property
    def factor(self) -> tuple[float, float]:
        """Per-axis factors (s_h, s_w) = target / low."""
        return (self.target_size[0] / self.low_size[0], self.target_size[1] / self.low_size[1])

    @property
    def k(self) -> float:
        """Pixel ratio s_h * s_w: target pixels per low-res pixel."""
        return self.factor[0] * self.factor[1]

    def resampler(self) -> Resampler:
        return cached_resampler(self.target_size, self.low_size, self.kind)

    def describe(self, latent_factor: int = 8) -> str:
        """e.g. '1536x1024 -> guided from 768x512 (2x, box)' (width x height in pixels)."""
        (th, tw), (lh, lw) = self.target_size, self.low_size
        s_h, s_w = self.factor
        factor = _fmt_factor(s_h) if abs(s_h - s_w) < 5e-3 else f"{_fmt_factor(s_w)}/{_fmt_factor(s_h)}"
        f = latent_factor
        return f"{tw * f}x{th * f} -> guided from {lw * f}x{lh * f} ({factor}, {self.kind})"


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value) or value <= 0:
        raise ValueError(f"{name} must be a positive whole number, got {value!r}")
    return int(value)


def _size_pair(value, name: str) -> tuple[int, int]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        v = _positive_int(value, name)
        return (v, v)
    try:
        h, w = value
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number or a (height, width) pair, got {value!r}") from None
    return (_positive_int(h, name), _positive_int(w, name))


def plan_low_res(
    target_size: tuple[int, int],
    base_size_px: int | tuple[int, int],
    *,
    latent_factor: int = 8,
    granularity: int = 1,
    resampler: str = "auto",
) -> LowResPlan | None:
    """The low-resolution size for a target latent size, or None when the target is not larger than the base.

    target_size: (H, W) in latent pixels; base_size_px: trained base size in image pixels (int = square, or
    (height, width)); latent_factor: image pixels per latent pixel; granularity: the low-res size is a
    multiple of this (latent pixels); resampler: "auto", "box" or "spectral".
    """
    H, W = _size_pair(target_size, "target size")
    bh_px, bw_px = _size_pair(base_size_px, "base size")
    f = _positive_int(latent_factor, "latent factor")
    g = _positive_int(granularity, "size granularity")
    if resampler not in RESAMPLER_KINDS:
        raise ValueError(f"resampler must be one of {', '.join(RESAMPLER_KINDS)}; got {resampler!r}")

    base_area = (bh_px / f) * (bw_px / f)
    if H * W <= base_area:
        return None
    s_ideal = math.sqrt(H * W / base_area)

    if resampler != "spectral":
        best = None
        for s in range(2, max(H, W) + 1):
            if H % s or W % s or (H // s) % g or (W // s) % g:
                continue
            ratio = s_ideal / s
            if resampler == "auto" and not (
                1 / INTEGER_FACTOR_TOLERANCE <= ratio <= INTEGER_FACTOR_TOLERANCE
            ):
                continue
            score = abs(math.log(ratio))
            if best is None or score < best[0]:
                best = (score, s)
        if best is not None:
            s = best[1]
            return LowResPlan((H, W), (H // s, W // s), "box")

    def axis(n: int) -> int:
        if n <= g:
            return n
        return min(max(g, round(n / s_ideal / g) * g), (n // g) * g)

    low = (axis(H), axis(W))
    if low == (H, W):
        return None
    return LowResPlan((H, W), low, "spectral")
