"""Post-CFG guidance for the ComfyUI family of sampling backends: ComfyUI, Forge main (`backend.*`, which
descends from ComfyUI), old Forge (`ldm_patched.*`) and reForge.

These hosts call every function in model_options["sampler_post_cfg_function"] with the same args dict
(denoised, cond, uncond, cond_denoised, uncond_denoised, input, sigma, model, model_options, and on ComfyUI /
reForge cond_scale). For the combined (CFG) x0 prediction `den` of the noisy latent x at noise level sigma
the function returns

    den_guided = den + w * U( den_low - D(den) )

where den_low is the same CFG combination of the model's cond/uncond x0 predictions for the low-resolution
query (D(x) at the low-res noise level of the core's convention: sigma / sqrt(k) for eps/v predictors, the
rectified-flow time for 'const' predictors), computed with the host's own batched condition call
(calc_cond_uncond_batch on Forge, calc_cond_batch on ComfyUI). All the math is the core's (planner,
conventions, step); this module is the host glue the Forge and ComfyUI adapters share (adapters never import
each other). Host modules are imported lazily inside functions.

Videos whose frames are folded into the batch (an adapter's GuidanceContext.video hook: sd-forge-animatediff on
old Forge) take the (frames, H, W) plan of core.video; their low-res call is the same host batch call, told the
low-res frame count (VideoJob.frames_of_call).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from typing import Any

import torch

from ..core.conventions import KarrasSigma, NoiseConvention, RectifiedFlow
from ..core.planner import LowResPlan, ModelFamily, plan_low_res
from ..core.step import prepare_low_res_query
from ..core.video import VideoPlan, plan_video, prepare_folded_video_query
from ..webui.conditioning import is_stateless_cfg_function, size_vector_lowerer
from ..webui.generation import GuardState, UnsupportedInput, describe

__all__ = [
    "GuidanceContext",
    "VideoJob",
    "guided_denoised",
    "make_post_cfg_function",
    "remove_ours",
    "lower_condition",
    "lower_conditions",
    "lower_area",
    "active_at",
    "combine_cfg",
    "model_sampling_of",
    "convention_for_predictor",
    "is_flow",
    "is_v_prediction",
    "MARK_ATTR",
]

MARK_ATTR = "_upsample_guidance_post_cfg"


# --------------------------------------------------------------------------------------------------
# Model sampling / predictor


def model_sampling_of(model: Any) -> Any:
    """The predictor of a Forge main KModel (`.predictor`) or the ldm_patched BaseModel (`.model_sampling`)."""
    predictor = getattr(model, "predictor", None)
    if predictor is None:
        predictor = getattr(model, "model_sampling", None)
    if predictor is None:
        raise UnsupportedInput(
            f"the model ({type(model).__name__}) has neither .predictor nor .model_sampling"
        )
    return predictor


def is_flow(predictor: Any) -> bool:
    """True for rectified-flow ('const') predictors: Forge main prediction_type, ldm_patched CONST mixin."""
    if getattr(predictor, "prediction_type", None) == "const":
        return True
    return any(cls.__name__ == "CONST" for cls in type(predictor).__mro__)


def is_v_prediction(predictor: Any) -> bool:
    if getattr(predictor, "prediction_type", None) == "v_prediction":
        return True
    return any(cls.__name__ == "V_PREDICTION" for cls in type(predictor).__mro__)


def _sigma_table(predictor: Any) -> torch.Tensor | None:
    sigmas = getattr(predictor, "sigmas", None)
    if isinstance(sigmas, torch.Tensor) and sigmas.ndim == 1 and sigmas.numel() >= 2:
        return sigmas.detach().to("cpu", torch.float64)
    return None


def convention_for_predictor(predictor: Any) -> NoiseConvention:
    """The core's noise convention for a Forge predictor / ldm_patched model_sampling object.

    'const' (flow: Flux, SD3): RectifiedFlow, level = t = sigma in [0, 1]. Anything else the hosts run
    through calc_cond_uncond_batch lives in the k-diffusion sigma space (x = x0 + sigma*eps, x0 output):
    KarrasSigma, with the model's own time from its sigma table (abar = 1 / (1 + sigma^2), interpolated in
    log sigma like the WebUIs); without a table every step counts as t = 1.
    """
    if is_flow(predictor):
        return RectifiedFlow(output="x0")
    prediction_type = getattr(predictor, "prediction_type", None)
    mro = {cls.__name__ for cls in type(predictor).__mro__}
    if prediction_type not in (None, "epsilon", "eps", "v_prediction", "edm") or "COSMOS_RFLOW" in mro:
        raise UnsupportedInput(f"unsupported predictor {type(predictor).__name__} ({prediction_type})")
    alphas_cumprod = getattr(predictor, "alphas_cumprod", None)
    if isinstance(alphas_cumprod, torch.Tensor) and alphas_cumprod.ndim == 1 and alphas_cumprod.numel() >= 2:
        return KarrasSigma.from_alphas_cumprod(alphas_cumprod.detach().to("cpu", torch.float64), output="x0")
    sigmas = _sigma_table(predictor)
    if sigmas is not None and bool(torch.all(sigmas[1:] > sigmas[:-1])) and bool(sigmas[0] > 0):
        return KarrasSigma.from_alphas_cumprod(1.0 / (1.0 + sigmas**2), output="x0")
    return KarrasSigma(None, output="x0")


# --------------------------------------------------------------------------------------------------
# Low-resolution conditioning


def _downsampled_condition_object(obj: Any, tensor: torch.Tensor, down: Callable) -> Any:
    new = down(tensor)
    copier = getattr(obj, "_copy_with", None)
    if callable(copier):
        return copier(new)
    clone = copy.copy(obj)
    clone.cond = new
    return clone


def lower_area(area: tuple, size: tuple[int, int], low_size: tuple[int, int]) -> tuple:
    """An area (h, w, y, x) in latent px of the target size `size`, mapped onto the low-res latent.

    Edges map by the per-axis factor s = size / low_size and round outwards (start floor(y / s), end
    ceil((y + h) / s), clipped to the low size, at least 1 px), so an area on whole multiples of s maps exactly
    and a mask inside the area keeps all of its support. ("percentage", ...) areas are size-free: unchanged.
    """
    if len(area) > 0 and area[0] == "percentage":
        return tuple(area)
    if len(area) != 4:
        raise UnsupportedInput(f"a conditioning area with {len(area)} entries is not supported")
    h, w, y, x = (int(v) for v in area)
    spans = []
    for start, length, full, low in ((y, h, size[0], low_size[0]), (x, w, size[1], low_size[1])):
        lo = min(low - 1, math.floor(start * low / full))
        hi = max(lo + 1, min(low, math.ceil((start + length) * low / full)))
        spans.append((lo, hi - lo))
    (y_low, h_low), (x_low, w_low) = spans
    return (h_low, w_low, y_low, x_low)


def lower_condition(
    cond: dict,
    size: tuple[int, int],
    down: Callable[[torch.Tensor], torch.Tensor],
    *,
    low_size: tuple[int, int] | None = None,
    lower_vector: Callable[[torch.Tensor], torch.Tensor] | None = None,
    lower_rows: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict:
    """A copy of one compiled condition dict for the low-res call.

    Spatial tensors the size of the latent (model_conds entries of shape [B, C, H, W] such as c_concat /
    image_cond of inpainting models, and a 'mask' of shape [B, H, W]) are replaced by D applied to them;
    everything else (cross-attention, pooled vectors, Flux guidance, strength, ControlNet, hooks) is shared.
    Area-restricted conditions are mapped with lower_area when low_size is given, else raise UnsupportedInput.
    lower_vector: applied to a 2-D model_conds["y"] (SDXL's size-conditioned vector), when given.
    lower_rows: applied (after lower_vector) to every other model_conds tensor, when given: a video's
    per-frame rows (text embeddings of prompt travel, vectors) at the low-res frame count.
    """
    if "area" in cond and cond["area"] is not None:
        if low_size is None:
            raise UnsupportedInput("area-restricted conditioning (regional prompts) is not supported")
    out = dict(cond)
    if low_size is not None and cond.get("area") is not None:
        out["area"] = lower_area(cond["area"], size, low_size)
    mask = cond.get("mask")
    if isinstance(mask, torch.Tensor):
        if tuple(mask.shape[-2:]) != size:
            raise UnsupportedInput(
                f"a conditioning mask of shape {tuple(mask.shape)} does not match the latent"
            )
        out["mask"] = down(mask)
    if lower_vector is not None and isinstance(cond.get("pooled_output"), torch.Tensor):
        out["pooled_output"] = lower_vector(cond["pooled_output"])
    model_conds = cond.get("model_conds")
    if isinstance(model_conds, dict):
        lowered = {}
        for key, obj in model_conds.items():
            tensor = getattr(obj, "cond", None)
            if isinstance(tensor, torch.Tensor) and tensor.ndim >= 4 and tuple(tensor.shape[-2:]) == size:
                lowered[key] = _downsampled_condition_object(obj, tensor, down)
            elif (
                key == "y"
                and lower_vector is not None
                and isinstance(tensor, torch.Tensor)
                and tensor.ndim == 2
            ):
                lowered[key] = _downsampled_condition_object(obj, tensor, lower_vector)
            else:
                lowered[key] = obj
            kept = lowered[key]
            if lower_rows is not None and kept is obj and isinstance(tensor, torch.Tensor):
                lowered[key] = _downsampled_condition_object(obj, tensor, lower_rows)
            elif lower_rows is not None and key == "y" and kept is not obj:
                lowered[key] = _downsampled_condition_object(kept, kept.cond, lower_rows)
        out["model_conds"] = lowered
    return out


def active_at(cond: dict, level: float) -> bool:
    """Whether a condition with a time window (ComfyUI's timestep_start / timestep_end, in sigma: active while
    timestep_end <= sigma <= timestep_start) is active at the full-size step's level."""
    start, end = cond.get("timestep_start"), cond.get("timestep_end")
    return not ((start is not None and level > start) or (end is not None and level < end))


def lower_conditions(
    conds: list | None,
    size: tuple[int, int],
    down: Callable,
    *,
    low_size: tuple[int, int] | None = None,
    lower_vector: Callable[[torch.Tensor], torch.Tensor] | None = None,
    lower_rows: Callable[[torch.Tensor], torch.Tensor] | None = None,
    window_level: float | None = None,
) -> list | None:
    """lower_condition for each dict of a condition list (None stays None).

    window_level: the full-size step's level; conditions with a time window are kept or dropped by it and
    lose the window, so the low-res call (at a lower level) uses exactly the conditions the full-size call used.
    """
    if conds is None:
        return None
    if window_level is not None:
        conds = [
            {k: v for k, v in c.items() if k not in ("timestep_start", "timestep_end")}
            for c in conds
            if active_at(c, window_level)
        ]
    return [
        lower_condition(c, size, down, low_size=low_size, lower_vector=lower_vector, lower_rows=lower_rows)
        for c in conds
    ]


def combine_cfg(
    cond_pred: torch.Tensor,
    uncond_pred: torch.Tensor,
    cond_scale: float,
    conds: list,
    *,
    x: torch.Tensor | None = None,
    level: torch.Tensor | None = None,
    model: Any = None,
    model_options: dict | None = None,
    and_strength: bool = True,
    unconds: list | None = None,
) -> torch.Tensor:
    """The hosts' CFG combination, so that the low-res rows are combined exactly like the full-size ones.

    With a custom CFG function in model_options["sampler_cfg_function"] known to be stateless (DynamicThresholding,
    RescaleCFG; webui.conditioning.is_stateless_cfg_function): x - fn(args), args as the host builds them
    (cond/uncond as x - prediction). A function that may keep state between calls (reForge's APG keeps momentum
    and resets it when the width changes) is not called on the low-res rows: they get plain CFG. Otherwise
    uncond + (cond - uncond) * scale * s, s = sum of the AND-prompt strengths when it is not 1 and and_strength
    (Forge's sampling_function_inner, ldm_patched's sampling_function / cfg_function); ComfyUI's cfg_function
    has no such factor (and_strength=False).
    """
    cfg_function = (model_options or {}).get("sampler_cfg_function")
    if cfg_function is not None and x is not None and is_stateless_cfg_function(cfg_function):
        args = {
            "cond": x - cond_pred,
            "uncond": x - uncond_pred,
            "cond_scale": cond_scale,
            "timestep": level,
            "input": x,
            "sigma": level,
            "cond_denoised": cond_pred,
            "uncond_denoised": uncond_pred,
            "model": model,
            "model_options": model_options,
            "input_cond": conds,
            "input_uncond": unconds,
        }
        return x - cfg_function(args)
    if not and_strength:
        return uncond_pred + (cond_pred - uncond_pred) * cond_scale
    edit_strength = sum(float(c.get("strength", 1.0)) for c in conds)
    factor = cond_scale if math.isclose(edit_strength, 1.0) else cond_scale * edit_strength
    return uncond_pred + (cond_pred - uncond_pred) * factor


def _host_calc_cond_uncond_batch(model: Any) -> Callable:
    """calc_cond_uncond_batch of the running host: Forge main (`backend`) for a KModel with .predictor,
    ldm_patched (old Forge, reForge) otherwise."""
    if getattr(model, "predictor", None) is not None:
        from backend.sampling.sampling_function import calc_cond_uncond_batch
    else:
        from ldm_patched.modules.samplers import calc_cond_uncond_batch
    return calc_cond_uncond_batch


# --------------------------------------------------------------------------------------------------
# The post-CFG function


@dataclass(frozen=True)
class VideoJob:
    """A video the host samples with its frames folded into the batch ("(b f)": row b * F + f), seen by one
    post-CFG call (the Forge adapter: sd-forge-animatediff, adapters/forge_animatediff.py).

    frames: F per video; temporal_factor: m_t >= 1 (the low-res query has round(F / m_t) frames);
    frames_of_call(f): a context manager around the low-res call of f frames per video (tells the video
    extension its frame count); on_query(f): told the low-res frame count of a guided step (infotext);
    refusal: why this video cannot be guided (raised as UnsupportedInput only when a step would be guided).
    """

    frames: int
    temporal_factor: float
    frames_of_call: Callable[[int], AbstractContextManager]
    on_query: Callable[[int], None] | None = None
    refusal: str | None = None


def _rows_down(query: Any, frames: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """D for a condition tensor of a folded video query: per-frame rows (a multiple of `frames`) get D along
    frames (and space when they have the frame size); masks [rows, H, W] through a channel axis; tensors
    with other row counts (one row broadcast to every frame) are unchanged."""

    hw = tuple(query.plan.target_size[1:])

    def down(t: torch.Tensor) -> torch.Tensor:
        spatial = t.ndim >= 3 and tuple(t.shape[-2:]) == hw
        if t.ndim < 1 or t.shape[0] == 0 or t.shape[0] % frames:
            if spatial:
                raise UnsupportedInput(
                    f"a conditioning tensor of shape {tuple(t.shape)} has no row per frame of the video"
                )
            return t
        if spatial and t.ndim == 3:
            return query.down_rows(t.unsqueeze(1)).squeeze(1)
        return query.down_rows(t)

    return down


@dataclass
class GuidanceContext:
    """Everything the post-CFG function needs for one model patch (built by the adapter).

    cfg_scale: the generation's CFG scale for this pass (Forge: p.cfg_scale, or p.hr_cfg in Forge main's hires
    pass), used unless the host passes args["cond_scale"] (ComfyUI, reForge), a conditioning modifier of the
    adapter recorded the scale the host passes to its sampling function this step (host_cond_scale: Forge main
    sets 1 on skip-early-CFG / NGMS steps), or the host skipped uncond (then 1).
    state: the per-generation guard, or state_of(args) -> guard when the adapter keys it on the sampling run
    (ComfyUI). on_first_guided(ctx): called once, the first time guidance changes a step (Forge: infotext).
    and_strength: multiply the CFG scale by the sum of the AND-prompt strengths when it is not 1 (Forge's
    A1111 emulation); False where the host weights conditions by strength inside its batch call (ComfyUI).
    condition_features: how the low-res conditions follow ComfyUI's own conditions (lower_conditions):
    "area" maps area-restricted conditions (else refused), "size_vector" gives SDXL's `y` the low-res size
    (core.size_conditioning), "windows" evaluates timestep_start / timestep_end at the full-size level.
    """

    guidance_scale: float
    eta: float
    base_size_px: int | tuple[int, int]
    family: ModelFamily
    resampler: str
    cfg_scale: float | None
    state: GuardState | None = None
    calc_cond_uncond_batch: Callable | None = None
    p: Any = None  # the processing object, for the infotext
    state_of: Callable[[dict], GuardState] | None = None
    on_first_guided: Callable[[GuidanceContext], None] | None = None
    and_strength: bool = True
    condition_features: frozenset[str] = frozenset()
    refusal: Callable[[dict], str | None] | None = None
    video: Callable[[dict], VideoJob | None] | None = None
    low_res_call: Callable[[dict, list, torch.Tensor], AbstractContextManager[dict]] | None = None
    host_cond_scale: float | None = None
    _plans: dict = field(default_factory=dict)
    _conventions: dict = field(default_factory=dict)

    def plan(self, size: tuple[int, int]) -> LowResPlan | None:
        if size not in self._plans:
            self._plans[size] = plan_low_res(
                size,
                self.base_size_px,
                latent_factor=self.family.latent_factor,
                granularity=self.family.granularity,
                resampler=self.resampler,
            )
        return self._plans[size]

    def video_plan(self, frames: int, size: tuple[int, int], temporal_factor: float) -> VideoPlan | None:
        key = ("video", frames, size, temporal_factor)
        if key not in self._plans:
            self._plans[key] = plan_video(
                frames,
                size,
                self.base_size_px,
                temporal_factor=temporal_factor,
                latent_factor=self.family.latent_factor,
                granularity=self.family.granularity,
                resampler=self.resampler,
            )
        return self._plans[key]

    def convention(self, predictor: Any) -> NoiseConvention:
        key = id(predictor)
        if key not in self._conventions:
            self._conventions[key] = (predictor, convention_for_predictor(predictor))
        return self._conventions[key][1]


def guided_denoised(args: dict, ctx: GuidanceContext) -> torch.Tensor:
    """The guided x0 prediction for one post-CFG call (args: Forge's post-CFG dict), or args["denoised"]
    unchanged when no guidance applies to this call (target not above the base size, weight 0)."""
    denoised = args["denoised"]
    x = args["input"]
    model = args["model"]
    if x.ndim != 4:
        raise UnsupportedInput(f"expected a 4-D latent [B, C, H, W], got shape {tuple(x.shape)}")
    size = (int(x.shape[-2]), int(x.shape[-1]))
    video = ctx.video(args) if ctx.video is not None else None
    if video is None:
        plan = ctx.plan(size)
    else:  # frames folded into the batch: the (F, H, W) plan
        plan = ctx.video_plan(video.frames, size, video.temporal_factor)
    if plan is None:
        return denoised
    convention = ctx.convention(model_sampling_of(model))
    sigma = torch.as_tensor(args["sigma"]).reshape(-1)
    if sigma.numel() == 1 and x.shape[0] > 1:
        sigma = sigma.expand(x.shape[0])
    weights = {"convention": convention, "guidance_scale": ctx.guidance_scale, "eta": ctx.eta}
    if video is None:
        query = prepare_low_res_query(x, sigma, plan=plan, **weights)
    else:
        query = prepare_folded_video_query(x, sigma, frames=video.frames, plan=plan, **weights)
    if query is None:
        return denoised
    reason = video.refusal if video is not None else None
    if reason is None and ctx.refusal is not None:
        reason = ctx.refusal(args)
    if reason is not None:  # before any low-res call: the host's prediction is kept
        raise UnsupportedInput(reason)
    low_size = tuple(plan.low_size[-2:])

    conds = args["cond"]
    uncond = args.get("uncond")
    uncond_pred = args.get("uncond_denoised")
    # The host skipped the uncond rows (CFG 1, its CFG-1 optimisation, NGMS / skip-early-CFG steps): then
    # its uncond prediction is None or all zeros, its effective scale is 1, and the low-res call skips them too.
    uncond_skipped = uncond is None or uncond_pred is None or not bool(torch.any(uncond_pred != 0))
    host_scale, ctx.host_cond_scale = ctx.host_cond_scale, None
    if "cond_scale" in args:
        cond_scale = float(args["cond_scale"])
    elif host_scale is not None:
        cond_scale = host_scale
    elif uncond_skipped:
        cond_scale = 1.0
    elif ctx.cfg_scale is None:
        raise UnsupportedInput("the host passed no cond_scale to the post-CFG function")
    else:
        cond_scale = float(ctx.cfg_scale)

    features = ctx.condition_features
    state = ctx.state_of(args) if ctx.state_of is not None else ctx.state
    lowering = {
        "low_size": low_size if "area" in features else None,
        "lower_vector": size_vector_lowerer(
            ctx.p,
            state,
            latent_size=size,
            low_latent_size=low_size,
            latent_factor=ctx.family.latent_factor,
        )
        if "size_vector" in features
        else None,
        "window_level": float(sigma[0]) if "windows" in features else None,
    }
    if video is None:
        down = query.downsample_condition
    else:  # per-frame rows: D on (frames, H, W) / along frames (prompt travel); the frame count told below
        down = lowering["lower_rows"] = _rows_down(query, video.frames)
    conds_low = lower_conditions(conds, size, down, **lowering)
    unconds_low = None if uncond_skipped else lower_conditions(uncond, size, down, **lowering)
    calc = ctx.calc_cond_uncond_batch or _host_calc_cond_uncond_batch(model)
    level_low = torch.as_tensor(query.level).to(device=sigma.device, dtype=sigma.dtype).reshape(-1)
    with ExitStack() as stack:
        low_options = args["model_options"]
        if ctx.low_res_call is not None:
            low_options = stack.enter_context(ctx.low_res_call(args, conds + (uncond or []), sigma))
        if video is not None:
            stack.enter_context(video.frames_of_call(query.low_frames))
            if video.on_query is not None:
                video.on_query(query.low_frames)
        cond_low, uncond_low = calc(model, conds_low, unconds_low, query.x, level_low, low_options)
    den_low = combine_cfg(
        cond_low,
        uncond_low,
        cond_scale,
        conds,
        x=query.x,
        level=level_low,
        model=model,
        model_options=args["model_options"],
        and_strength=ctx.and_strength,
        unconds=None if uncond_skipped else uncond,
    )
    guided = query.apply(denoised, den_low)
    if guided.shape != denoised.shape:
        raise RuntimeError(
            f"guided prediction has shape {tuple(guided.shape)}, expected {tuple(denoised.shape)}"
        )
    if not bool(torch.isfinite(guided).all()) and bool(torch.isfinite(denoised).all()):
        raise FloatingPointError("the guided prediction is not finite")
    return guided.to(denoised.dtype)


def make_post_cfg_function(ctx: GuidanceContext) -> Callable[[dict], torch.Tensor]:
    """A post-CFG function (args dict -> denoised) applying guided_denoised; any exception returns
    args["denoised"] unchanged and turns guidance off for the rest of the generation with one warning."""

    def upsample_guidance_post_cfg(args: dict) -> torch.Tensor:
        denoised = args["denoised"]
        state = ctx.state_of(args) if ctx.state_of is not None else ctx.state
        if state.off:
            return denoised
        try:
            guided = guided_denoised(args, ctx)
        except Exception as exc:  # never lose the user's image
            hires = bool(getattr(ctx.p, "is_hr_pass", False))
            state.turn_off(describe(exc), ctx.p, level=args.get("sigma"), hires=hires)
            return denoised
        if guided is not denoised and not state.ran:
            state.ran = True
            if ctx.on_first_guided is not None:
                ctx.on_first_guided(ctx)
        return guided

    setattr(upsample_guidance_post_cfg, MARK_ATTR, True)
    return upsample_guidance_post_cfg


def remove_ours(model_options: dict) -> None:
    """Drop our post-CFG functions and conditioning modifiers (marked with MARK_ATTR) from model_options."""
    for key in ("sampler_post_cfg_function", "conditioning_modifiers"):
        fns = model_options.get(key)
        if fns:
            model_options[key] = [f for f in fns if not getattr(f, MARK_ATTR, False)]
