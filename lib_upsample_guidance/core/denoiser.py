"""UpsampleGuidedDenoiser: upsample guidance around any k-diffusion-style denoiser.

The wrapped `denoiser(x, sigma, **extra)` returns the x0 prediction for x = x0 + sigma*eps (crowsonkb
k-diffusion convention). Calling the wrapper with the same arguments returns

    den + w(t) * U(den_low - D(den)),   den_low = denoiser(D(x), sigma / sqrt(k), **extra_low)

where D/U and k come from the planner (base_size in the denoiser's own pixels, latent factor 1), w(t) is the
schedule (theta where t >= 1 - eta, t = sigma_to_t(sigma) in [0, 1]; sigma_to_t=None: always on) and
extra_low is `extra` with every tensor whose trailing two axes equal x's spatial size downsampled by D
(spatial conditioning such as concat images); other extras pass through unchanged. It drops into
k_diffusion.sampling samplers unchanged: `sample_euler(UpsampleGuidedDenoiser(model, base_size=(32, 32)), x, sigmas)`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .conventions import KarrasSigma
from .planner import LowResPlan, _size_pair, plan_low_res
from .resample import RESAMPLER_KINDS
from .schedule import validate_eta, validate_guidance_scale
from .step import LowResQuery, prepare_low_res_query

__all__ = ["UpsampleGuidedDenoiser"]


def map_tensors(obj: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """`obj` with fn applied to every tensor inside it (nested dicts, lists and tuples rebuilt; anything else
    kept): how the wrappers bring extra model arguments to the low-res call."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, dict):
        return {key: map_tensors(value, fn) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(map_tensors(value, fn) for value in obj)
    return obj


def _downsample_spatial(obj: Any, query: LowResQuery, size: tuple[int, int]) -> Any:
    """Extras whose last two axes are the image's (concat conditioning) go through D; the rest is kept."""
    return map_tensors(
        obj, lambda t: query.downsample_condition(t) if t.ndim >= 3 and tuple(t.shape[-2:]) == size else t
    )


def set_common_settings(
    wrapper: torch.nn.Module,
    denoiser: Callable[..., torch.Tensor],
    base_size: int | tuple[int, int],
    guidance_scale: float,
    eta: float,
    sigma_to_t: Callable[[torch.Tensor], torch.Tensor] | None,
    resampler: str,
) -> None:
    """Validate and store the settings every guided-denoiser wrapper has (image and video)."""
    if not callable(denoiser):
        raise ValueError("denoiser must be callable as denoiser(x, sigma, **extra)")
    wrapper.inner_model = denoiser
    wrapper.base_size = _size_pair(base_size, "base size")
    wrapper.guidance_scale = validate_guidance_scale(guidance_scale)
    wrapper.eta = validate_eta(eta)
    if resampler not in RESAMPLER_KINDS:
        raise ValueError(f"resampler must be one of {', '.join(RESAMPLER_KINDS)}; got {resampler!r}")
    wrapper.resampler = resampler
    wrapper.convention = KarrasSigma(sigma_to_t)


class UpsampleGuidedDenoiser(torch.nn.Module):
    """Wrap a k-diffusion denoiser so that sampling above its base size keeps the base size's layout.

    Args:
        denoiser: callable (x, sigma, **extra) -> x0 prediction.
        base_size: (height, width) the denoiser was trained at, in its own pixels (an int means square).
        guidance_scale: theta, >= 0 (1 replaces the low band exactly; 0 is plain sampling).
        eta: fraction of the time axis, from the noisy end, that is guided, in [0, 1].
        sigma_to_t: sigma -> normalised time in [0, 1]; None: guidance on at every step.
        resampler: "auto" (box for integer factors, else spectral), "box" or "spectral".
    """

    def __init__(
        self,
        denoiser: Callable[..., torch.Tensor],
        *,
        base_size: int | tuple[int, int],
        guidance_scale: float = 1.0,
        eta: float = 0.6,
        sigma_to_t: Callable[[torch.Tensor], torch.Tensor] | None = None,
        resampler: str = "auto",
    ):
        super().__init__()
        set_common_settings(self, denoiser, base_size, guidance_scale, eta, sigma_to_t, resampler)

    def plan_for(self, size: tuple[int, int]) -> LowResPlan | None:
        """The low-res plan for a spatial size (H, W), or None when it is not larger than the base."""
        return plan_low_res(
            tuple(size), self.base_size, latent_factor=1, granularity=1, resampler=self.resampler
        )

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, **extra: Any) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim < 3:
            raise ValueError(
                f"x must be a tensor [batch, ..., height, width], got {getattr(x, 'shape', x)!r}"
            )
        den = self.inner_model(x, sigma, **extra)
        if tuple(den.shape) != tuple(x.shape):
            raise ValueError(
                f"the denoiser returned shape {tuple(den.shape)} for an input of shape {tuple(x.shape)}"
            )
        size = tuple(x.shape[-2:])
        query = prepare_low_res_query(
            x,
            sigma,
            plan=self.plan_for(size),
            convention=self.convention,
            guidance_scale=self.guidance_scale,
            eta=self.eta,
        )
        if query is None:
            return den
        den_low = self.inner_model(
            query.x, query.level.to(x.dtype), **_downsample_spatial(extra, query, size)
        )
        return query.apply(den, den_low)
