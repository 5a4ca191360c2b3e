"""When guidance is on (SPEC §5): the paper's schedule on the model's own time axis.

    w(t) = theta   where t/T >= 1 - eta   (the noisiest fraction eta of the time axis)
    w(t) = 0       elsewhere

eta = 1 means always on; eta = 0 means never (the fraction of the time axis it covers is empty).
t/T is the model's normalised time (sigma -> t), not the step index: the two differ for Karras and other
schedules.
"""

from __future__ import annotations

import math

import torch

__all__ = ["guidance_weight", "validate_guidance_scale", "validate_eta"]


def validate_guidance_scale(guidance_scale: float) -> float:
    """A finite, non-negative number (the paper uses about 1 to 1.2)."""
    try:
        value = float(guidance_scale)
    except (TypeError, ValueError):
        raise ValueError(f"guidance scale must be a number, got {guidance_scale!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"guidance scale must be a finite number >= 0, got {guidance_scale!r}")
    return value


def validate_eta(eta: float) -> float:
    """A number in [0, 1]: the fraction of the time axis, from the noisy end, that is guided."""
    try:
        value = float(eta)
    except (TypeError, ValueError):
        raise ValueError(f"eta must be a number between 0 and 1, got {eta!r}") from None
    if not (0.0 <= value <= 1.0):
        raise ValueError(f"eta must be between 0 and 1 (fraction of the noise range), got {eta!r}")
    return value


def guidance_weight(t_norm: torch.Tensor | float, guidance_scale: float, eta: float) -> torch.Tensor:
    """theta where t_norm >= 1 - eta (and eta > 0), else 0; one value per element of t_norm (float64)."""
    theta = validate_guidance_scale(guidance_scale)
    eta = validate_eta(eta)
    t = torch.as_tensor(t_norm, dtype=torch.float64)
    if eta == 0.0:
        return torch.zeros_like(t)
    on = t >= 1.0 - eta
    return torch.where(on, torch.full_like(t, theta), torch.zeros_like(t))
