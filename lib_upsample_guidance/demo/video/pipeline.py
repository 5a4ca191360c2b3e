"""The sampling methods the video bench and demo compare, all from the same initial noise.

A clip size is (frames, side). Methods (N steps, the same sampler and Karras schedule everywhere):

- ``base``: N steps at the trained size (8 frames of 16 px) from ``sqrt(k) D(eps)``: the target noise
  projected by the core's video resampling pair (unit variance again), so the base clip shares its noise.
- ``plain``: N steps at the target size from ``eps``, the model called as is (frames beyond the 8 it was
  trained on, and/or a larger frame).
- ``ug``: as ``plain`` with the model wrapped in the core's ``UpsampleGuidedVideoDenoiser`` (temporal factor
  target frames / 8, base size 16 px, theta, eta).
- ``ug_folded``: ``ug`` through the folded layout ((clips frames), 3, H, W) that AnimateDiff uses; the same
  result (a check of the frame folding, not a different method).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ...core import UpsampleGuidedVideoDenoiser, plan_video
from ..sampling import SAMPLERS, Progress, karras_sigmas
from .wrapper import VideoModelDenoiser

METHODS = ("base", "plain", "ug", "ug_folded")
LABELS = {"base": "base size", "plain": "plain", "ug": "upsample guidance", "ug_folded": "UG, folded frames"}


@dataclass
class VideoSettings:
    """Sampling settings shared by every method."""

    base_size: int = 16
    base_frames: int = 8
    steps: int = 20
    sampler: str = "dpmpp_2m"
    theta: float = 1.0
    eta: float = 1.0


@dataclass
class VideoResult:
    clips: torch.Tensor  # (n, 3, F, H, W) in [-1, 1]
    seconds: float
    model_pixels: int


def initial_noise(n: int, frames: int, size: int, seed: int) -> torch.Tensor:
    """Standard normal noise (n, 3, frames, size, size) from a seeded CPU generator."""
    return torch.randn(n, 3, frames, size, size, generator=torch.Generator().manual_seed(seed))


def project_noise(eps: torch.Tensor, s: VideoSettings) -> torch.Tensor:
    """sqrt(k) D(eps) at the base clip size (D maps white noise of variance 1 to variance 1/k)."""
    frames, size = eps.shape[2], eps.shape[-1]
    plan = plan_video(
        frames, (size, size), s.base_size, temporal_factor=frames / s.base_frames, latent_factor=1
    )
    if plan is None:
        return eps
    rs = plan.resampler()
    return rs.down(eps) * rs.k**0.5


def guided(den: VideoModelDenoiser, s: VideoSettings, frames: int, *, folded: bool = False):
    """The video model wrapped by the core's public video entry point (its time axis = the model's own t)."""
    kw = dict(layout="folded", frames=frames, frames_kwarg="num_frames") if folded else {}
    return UpsampleGuidedVideoDenoiser(
        den,
        base_size=s.base_size,
        temporal_factor=frames / s.base_frames if frames > s.base_frames else 1,
        guidance_scale=s.theta,
        eta=s.eta,
        sigma_to_t=den.sigma_to_t,
        **kw,
    )


def run_method(
    method: str, den: VideoModelDenoiser, eps: torch.Tensor, s: VideoSettings, *, progress: bool = False
) -> VideoResult:
    """Sample with one method from the target-size noise ``eps`` (n, 3, F, H, W)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    sample = SAMPLERS[s.sampler]
    sigmas = karras_sigmas(s.steps)
    frames, size = eps.shape[2], eps.shape[-1]
    pix0, t0 = den.pixels, time.time()
    label = f"{LABELS[method]} " + (
        f"{s.base_frames}f {s.base_size}px" if method == "base" else f"{frames}f {size}px"
    )
    cb = Progress(label, enabled=progress) if progress else None
    if method == "base":
        out = sample(den, project_noise(eps, s) * sigmas[0], sigmas, cb)
    elif method == "plain":
        out = sample(den, eps * sigmas[0], sigmas, cb)
    elif method == "ug":
        out = sample(guided(den, s, frames), eps * sigmas[0], sigmas, cb)
    else:
        n = eps.shape[0]
        den_f = VideoModelDenoiser(den.model, folded=True)
        x = eps.transpose(1, 2).reshape(n * frames, 3, size, size)
        out = sample(guided(den_f, s, frames, folded=True), x * sigmas[0], sigmas, cb)
        out = out.reshape(n, frames, 3, size, size).transpose(1, 2)
        den.calls += den_f.calls
        den.pixels += den_f.pixels
    return VideoResult(out.clamp(-1, 1), time.time() - t0, den.pixels - pix0)
