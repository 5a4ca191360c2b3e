"""WebUI glue shared by the A1111 and Forge-family adapters for the low-res call's conditioning.

SDXL-family size conditioning: the host builds `vector` (A1111) / `y` (Forge, reForge) from the generation's
size in pixels (A1111 `modules/sd_models_xl.py`, Forge `backend/diffusion_engine/sdxl.py`: original = target =
(p.height, p.width); in the hires pass (p.hr_upscale_to_y, p.hr_upscale_to_x)). The low-res call must see the
vector of a generation at the low-res size; the math is core.size_conditioning.low_res_size_vector (one
function for every host), this module only finds the host's full size and warns once when it cannot be matched.

Custom CFG functions (Forge / reForge `model_options["sampler_cfg_function"]`): only those known to be
stateless are called on the low-res rows (`is_stateless_cfg_function`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..core.size_conditioning import layout_of, low_res_size_vector
from .generation import GuardState

__all__ = [
    "full_size_candidates",
    "lower_size_vector",
    "size_vector_lowerer",
    "STATELESS_CFG_FUNCTIONS",
    "is_stateless_cfg_function",
]


def full_size_candidates(p: Any, latent_size: tuple[int, int], latent_factor: int) -> list[tuple[int, int]]:
    """(height, width) px the host may have embedded for this pass, most likely first: the latent size times
    the latent factor, then the processing object's own size for this pass (sizes that are not multiples of
    the latent factor)."""
    sizes = [(int(latent_size[0]) * latent_factor, int(latent_size[1]) * latent_factor)]
    pairs = [("hr_upscale_to_y", "hr_upscale_to_x")] if getattr(p, "is_hr_pass", False) else []
    pairs.append(("height", "width"))
    for h_attr, w_attr in pairs:
        h, w = getattr(p, h_attr, None), getattr(p, w_attr, None)
        if isinstance(h, int | float) and isinstance(w, int | float) and h > 0 and w > 0:
            size = (int(h), int(w))
            if size not in sizes:
                sizes.append(size)
    return sizes


def lower_size_vector(
    vector: torch.Tensor,
    *,
    full_sizes: list[tuple[int, int]],
    low_size_px: tuple[int, int],
    state: GuardState | None,
) -> torch.Tensor:
    """The SDXL-family vector of a generation at `low_size_px` (h, w px), or `vector` itself.

    Non-SDXL vectors (SD 1.x has none, unCLIP / SD3 pooled vectors of other widths) are returned unchanged and
    silently. An SDXL-shaped vector whose size columns embed none of `full_sizes` (a user-set original size,
    an extension that rewrote it) is kept, with ONE warning per generation on `state`.
    """
    if not isinstance(vector, torch.Tensor) or layout_of(vector) is None:
        return vector
    for full in full_sizes:
        low = low_res_size_vector(vector, full, low_size_px)
        if low is not None:
            return low
    if state is not None:
        shown = " or ".join(f"{w}x{h}" for h, w in full_sizes)
        state.warn_once(
            "sdxl-size",
            f"the model's size conditioning does not embed the generation size ({shown} px); the low-res call "
            "keeps the full-size conditioning",
        )
    return vector


def size_vector_lowerer(
    p: Any,
    state: GuardState | None,
    *,
    latent_size: tuple[int, int],
    low_latent_size: tuple[int, int],
    latent_factor: int,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """vector -> lower_size_vector(vector, ...) for one step's sizes (latent units in, px inside)."""
    full_sizes = full_size_candidates(p, latent_size, latent_factor)
    low_px = (int(low_latent_size[0]) * latent_factor, int(low_latent_size[1]) * latent_factor)
    return lambda vector: lower_size_vector(vector, full_sizes=full_sizes, low_size_px=low_px, state=state)


# `__qualname__` of custom CFG functions known to be stateless (their result depends only on the args of the
# call): DynamicThresholding (Forge / reForge built-in sd_forge_dynamic_thresholding: sets its step from sigma
# on every call) and RescaleCFG (reForge-RescaleCFG extension and ldm_patched contrib nodes_model_advanced).
# Anything else (reForge APG keeps momentum per width, Forge's latent modifier, perp-neg, ...) may keep state
# across calls: the low-res rows then get plain CFG instead of a call that would disturb the host's state.
STATELESS_CFG_FUNCTIONS = frozenset(
    {
        "DynamicThresholdingNode.patch.<locals>.sampler_dyn_thresh",
        "DynamicThresholdingComfyNode.patch.<locals>.sampler_dyn_thresh",
        "DynamicThresholdingSimpleComfyNode.patch.<locals>.sampler_dyn_thresh",
        "RescaleCFG.patch.<locals>.rescale_cfg",
        "AltRescaleCFG.patch.<locals>.rescale_cfg",
    }
)


def is_stateless_cfg_function(fn: Any) -> bool:
    """True when a custom CFG function is one known to keep no state between calls."""
    return getattr(fn, "__qualname__", None) in STATELESS_CFG_FUNCTIONS
