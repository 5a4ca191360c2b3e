"""The guided prediction (SPEC §3).

In x0 space, with den the model's x0 prediction at the target size and den_low its x0 prediction for the
low-resolution query (which estimates D(x0)):

    den_guided = den + w * U(den_low - D(den))

In eps space (the paper's form; eps_low estimates sqrt(k) * D(eps)):

    eps_guided = eps + w * U(eps_low / sqrt(k) - D(eps))

Both are the same update for every convention in `conventions`. w = 0 is plain sampling; w = 1 replaces the
low band D(den) by den_low exactly, and the high band (den - U(D(den))) is untouched for every w. Because the
update is affine in the predictions, applying it to the cond and uncond rows before classifier-free guidance
equals applying it once to the combined result (with the same CFG scale on the low-res rows).
"""

from __future__ import annotations

import math

import torch

from .conventions import rows
from .resample import Resampler

__all__ = ["guided_x0", "guided_eps", "guided"]

Weight = float | torch.Tensor


def _weight(weight: Weight, ref: torch.Tensor) -> torch.Tensor | float:
    if isinstance(weight, torch.Tensor):
        if weight.ndim > 1 or (weight.ndim == 1 and weight.shape[0] not in (1, ref.shape[0])):
            raise ValueError(
                f"guidance weight must be a scalar or one value per row ({ref.shape[0]}), "
                f"got shape {tuple(weight.shape)}"
            )
        return rows(weight, ref).to(ref.dtype)
    return float(weight)


def _check_pair(pred: torch.Tensor, pred_low: torch.Tensor, resampler: Resampler) -> None:
    n = len(resampler.low_size)
    expected = tuple(pred.shape[:-n]) + resampler.low_size
    if tuple(pred_low.shape) != expected:
        raise ValueError(
            f"upsample guidance: the low-resolution prediction has shape {tuple(pred_low.shape)}, "
            f"expected {expected} for a target prediction of shape {tuple(pred.shape)}"
        )


def guided_x0(den: torch.Tensor, den_low: torch.Tensor, resampler: Resampler, weight: Weight) -> torch.Tensor:
    """den + w * U(den_low - D(den)) — x0 predictions."""
    _check_pair(den, den_low, resampler)
    w = _weight(weight, den)
    return den + w * resampler.up(den_low.to(den.dtype) - resampler.down(den))


def guided_eps(
    eps: torch.Tensor, eps_low: torch.Tensor, resampler: Resampler, weight: Weight
) -> torch.Tensor:
    """eps + w * U(eps_low / sqrt(k) - D(eps)) — eps predictions."""
    _check_pair(eps, eps_low, resampler)
    w = _weight(weight, eps)
    low = eps_low.to(eps.dtype) / math.sqrt(resampler.k)
    return eps + w * resampler.up(low - resampler.down(eps))


def guided(
    pred: torch.Tensor, pred_low: torch.Tensor, resampler: Resampler, weight: Weight, output: str
) -> torch.Tensor:
    """Dispatch on the prediction space: output "x0" -> guided_x0, "eps" -> guided_eps."""
    if output == "x0":
        return guided_x0(pred, pred_low, resampler, weight)
    if output == "eps":
        return guided_eps(pred, pred_low, resampler, weight)
    raise ValueError(f"output must be 'x0' or 'eps', got {output!r}")
