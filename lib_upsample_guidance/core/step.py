"""One guided step, as host adapters call it.

    query = prepare_low_res_query(x, level, plan=plan, convention=convention,
                                  guidance_scale=theta, eta=eta)
    if query is not None:                      # None: weight 0 on every row, skip the extra call
        pred_low = host_model(query.x, query.level, <conditioning, spatial parts via
                                                      query.downsample_condition>)
        pred = query.apply(pred, pred_low)

`level` is the host's noise level (sigma, t or flow time, per `convention`), a scalar or one per row of x.
The adapter supplies only the host call; the resampling, the noise level of the query, the schedule and the
update all live here and in the modules it calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from .conventions import NoiseConvention, as_level
from .guidance import guided
from .planner import LowResPlan
from .resample import Resampler
from .schedule import guidance_weight, validate_eta, validate_guidance_scale

if TYPE_CHECKING:  # video.py imports this module
    from .video import VideoPlan

__all__ = ["LowResQuery", "prepare_low_res_query"]


@dataclass(frozen=True)
class LowResQuery:
    """The low-resolution model query for one step, and how to fold its answer back in.

    x: low-res model input; level: its noise level (one per row, in the host's convention);
    weight: guidance weight per row (float64); output: "x0" or "eps", the host's prediction space.
    """

    x: torch.Tensor
    level: torch.Tensor
    weight: torch.Tensor
    resampler: Resampler
    output: str

    def downsample_condition(self, cond: torch.Tensor) -> torch.Tensor:
        """D applied to a spatial conditioning tensor of the target size (image_cond, c_concat, masks)."""
        return self.resampler.down(cond)

    def apply(self, pred: torch.Tensor, pred_low: torch.Tensor) -> torch.Tensor:
        """The guided prediction (SPEC §3) in the host's output space."""
        return guided(pred, pred_low, self.resampler, self.weight.to(pred.device), self.output)


def prepare_low_res_query(
    x: torch.Tensor,
    level: torch.Tensor | float,
    *,
    plan: LowResPlan | VideoPlan | None,
    convention: NoiseConvention,
    guidance_scale: float,
    eta: float,
) -> LowResQuery | None:
    """The low-res query for noisy input x ([B, ..., H, W], or [B, C, F, H, W] with a video plan) at `level`,
    or None when nothing is guided.

    None when there is no plan (target not larger than the base) or the schedule gives weight 0 to every
    row. Raises ValueError when x's trailing size is not the plan's target size.
    """
    if plan is None:
        return None
    n_axes = len(plan.target_size)  # (H, W), or (F, H, W) for a video plan
    if x.ndim < n_axes + 1 or tuple(x.shape[-n_axes:]) != tuple(plan.target_size):
        raise ValueError(
            f"upsample guidance: the input has shape {tuple(x.shape)}, but the plan is for a target of "
            f"{plan.target_size}"
        )
    level = as_level(level, x)
    if level.ndim == 0:
        level = level.expand(x.shape[0])
    elif level.ndim != 1 or level.shape[0] not in (1, x.shape[0]):
        raise ValueError(
            f"upsample guidance: the noise level must be a scalar or one value per row ({x.shape[0]}), "
            f"got shape {tuple(level.shape)}"
        )
    else:
        level = level.expand(x.shape[0])
    # theta = 0 or eta = 0 gives weight 0 on every row whatever the level (schedule.guidance_weight): skip the
    # time lookup, and on a GPU the device sync of the test below
    if validate_guidance_scale(guidance_scale) == 0.0 or validate_eta(eta) == 0.0:
        return None
    weight = guidance_weight(convention.normalised_time(level), guidance_scale, eta)
    if not bool((weight > 0).any()):
        return None
    resampler = plan.resampler()
    x_low, level_low = convention.low_res_query(x, level, resampler)
    return LowResQuery(x_low, level_low, weight, resampler, convention.output)
