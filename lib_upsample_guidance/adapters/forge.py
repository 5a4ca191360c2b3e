"""Forge-family adapter: Forge main (2.x, `backend.*`), old Forge (`ldm_patched.*`) and reForge.

Forge never fires on_cfg_denoised and its inner model cannot be called, so guidance runs as a post-CFG
function on a clone of the UNet patcher (`p.sd_model.forge_objects.unet`), added in the AlwaysOn script's
process_before_every_sampling. On every model evaluation the function receives the combined (CFG) x0
prediction `den` for the noisy latent x at noise level sigma and returns

    den_guided = den + w * U( den_low - D(den) )

where den_low is the same CFG combination of the model's cond/uncond x0 predictions for the low-resolution
query (D(x) at the low-res noise level of the core's convention: sigma / sqrt(k) for eps/v predictors,
the rectified-flow time for 'const' predictors), computed with the host's own calc_cond_uncond_batch.
All the math is the core's (planner, conventions, step); the post-CFG glue is shared with the ComfyUI adapter
(comfy_family.postcfg: Forge's backend descends from ComfyUI's); this module only speaks Forge.

Forge modules are imported lazily inside functions, so importing this module on A1111 is harmless.
Per-generation state lives on `p` (attribute `_upsample_guidance_forge_state`), never in module globals.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..comfy_family.postcfg import (
    MARK_ATTR,
    GuidanceContext,
    _sigma_table,
    combine_cfg,
    convention_for_predictor,
    guided_denoised,
    is_flow,
    is_v_prediction,
    lower_condition,
    lower_conditions,
    make_post_cfg_function,
    model_sampling_of,
    remove_ours,
)
from ..comfy_family.postcfg import MARK_ATTR as _MARK_ATTR  # noqa: F401  (tests and callers)
from ..core.planner import MODEL_FAMILIES, ModelFamily, plan_low_res
from ..core.video import plan_video
from ..webui import animatediff, infotext
from ..webui import forecast as _forecast
from ..webui.generation import WARNING_PREFIX, GuardState, UnsupportedInput, describe
from . import forge_animatediff, forge_extensions

__all__ = [
    "process_before_every_sampling",
    "ForgeGenerationState",
    "generation_state",
    "begin_generation",
    "forecast",
    "make_post_cfg_function",
    "detect_model_family",
    "convention_for_predictor",
    "model_sampling_of",
    "on_cfg_denoiser",
    "register_callbacks",
    "WARNING_PREFIX",
    "STATE_ATTR",
    # shared with the ComfyUI adapter, re-exported for callers of this module
    "GuidanceContext",
    "guided_denoised",
    "lower_condition",
    "lower_conditions",
    "combine_cfg",
]

STATE_ATTR = "_upsample_guidance_forge_state"


@dataclass(kw_only=True)
class ForgeGenerationState(GuardState):
    """Per-generation state (GuardState: off after a failure with one warning; ran: guidance changed a step).
    infotext: the entries to write into p's infotext the first time guidance changes a step.
    patch_args: (settings, family_bases) while the current sampling pass is guided (None otherwise): lets the
    CFG-denoiser callback patch a model the host swapped in mid-pass (the SDXL refiner)."""

    infotext: dict[str, str] | None = None
    patch_args: tuple | None = None


def generation_state(p: Any) -> ForgeGenerationState:
    """The state object of this generation (created on first use and stored on p)."""
    state = getattr(p, STATE_ATTR, None)
    if not isinstance(state, ForgeGenerationState):
        state = ForgeGenerationState()
        setattr(p, STATE_ATTR, state)
    return state


def begin_generation(p: Any) -> ForgeGenerationState:
    """A fresh state for a new generation on p (drops one copied from another processing object)."""
    state = ForgeGenerationState()
    setattr(p, STATE_ATTR, state)
    return state


# --------------------------------------------------------------------------------------------------
# Model family (the predictor, the noise convention, the low-res conditions, the CFG combination and the
# post-CFG function itself are shared with the ComfyUI adapter: comfy_family.postcfg)


def detect_model_family(sd_model: Any, model: Any) -> ModelFamily:
    """The model family of the loaded checkpoint (base size, latent factor, size granularity).

    Forge main engines and A1111-style models carry is_sdxl / is_sd3 / is_sd2 / is_sd1 flags (SD 2.x: 768 px
    for v-prediction, 512 px for epsilon checkpoints); Flux and Chroma
    engines (Forge main) and ldm_patched model classes are recognised by class name; a flow predictor
    without a recognised name counts as Flux (1024 px, granularity 2).
    """
    names = (type(sd_model).__name__.lower(), type(model).__name__.lower())
    if any("flux" in n or "chroma" in n for n in names):
        return MODEL_FAMILIES["flux"]
    if getattr(sd_model, "is_sd3", False) is True or any(n in ("sd3", "stablediffusion3") for n in names):
        return MODEL_FAMILIES["sd3"]
    if getattr(sd_model, "is_sdxl", False) is True or any(
        "sdxl" in n or "stablediffusionxl" in n for n in names
    ):
        return MODEL_FAMILIES["sdxl"]
    if getattr(sd_model, "is_sd2", False) is True:
        # SD 2.x v-prediction checkpoints are 768-v; the epsilon ones (512-base, inpainting, depth) are 512
        if is_v_prediction(model_sampling_of(model)):
            return MODEL_FAMILIES["sd2"]
        return MODEL_FAMILIES["sd2_eps"]
    if is_flow(model_sampling_of(model)):
        return MODEL_FAMILIES["flux"]
    return MODEL_FAMILIES["sd1"]


def _write_infotext(ctx: GuidanceContext) -> None:
    """Add the settings to p's infotext (guidance ran). XYZ cells share one dict: write into a copy."""
    p = ctx.p
    if p is None or not ctx.state.infotext:
        return
    extra = getattr(p, "extra_generation_params", {})
    if all(extra.get(k) == v for k, v in ctx.state.infotext.items()):
        return  # already written before sampling (forecast)
    p.extra_generation_params = {**extra, **ctx.state.infotext}


def _base_size(settings: Any, family: ModelFamily, family_bases: dict[str, int] | None) -> int:
    """The base resolution in px: the setting, or for "auto" the Settings-tab value of the family
    (the family's own default where the tab has none, e.g. Flux)."""
    base = getattr(settings, "base_resolution", "auto")
    if base in (None, "auto", "Auto", "", 0):
        return int((family_bases or {}).get(family.name, family.base_size_px))
    return int(base)


def _pass_cfg_scale(p: Any) -> float:
    if getattr(p, "is_hr_pass", False) and getattr(p, "hr_cfg", None) is not None:
        return float(p.hr_cfg)
    return float(getattr(p, "cfg_scale", 1.0))


def process_before_every_sampling(p: Any, settings: Any, family_bases: dict[str, int] | None = None) -> None:
    """Patch a clone of p.sd_model.forge_objects.unet with the guidance post-CFG function.

    settings: the extension's settings (enabled, guidance_scale, eta, base_resolution "auto" | px, resampler,
    guide_hires_pass); family_bases: the Settings tab's base size per family key, for "auto".
    Disabled, a zero guidance scale, or an unguided hires pass: nothing is touched. The infotext is written
    the first time guidance changes a step.
    Idempotent: a function of ours already on the patcher is replaced, never stacked (Forge calls this hook
    twice in the hires pass and resets forge_objects before each pass).
    """
    state = getattr(p, STATE_ATTR, None)
    if isinstance(state, ForgeGenerationState):
        state.patch_args = None  # this pass is guided only if it is patched below
    if not getattr(settings, "enabled", False):
        return
    if getattr(p, "is_hr_pass", False) and not getattr(settings, "guide_hires_pass", True):
        return
    if float(getattr(settings, "guidance_scale", 0.0)) == 0.0:
        return
    state = generation_state(p)
    if state.off:
        return
    try:
        _patch(p, p.sd_model, settings, family_bases, state)
        state.patch_args = (settings, family_bases)
    except Exception as exc:
        state.turn_off(describe(exc), p, hires=bool(getattr(p, "is_hr_pass", False)))


def make_cond_scale_recorder(ctx: GuidanceContext) -> Callable:
    """A conditioning modifier (Forge main, old Forge, reForge: model_options["conditioning_modifiers"], called
    with the arguments of the host's sampling function just before it) that records the CFG scale the host
    uses for this model evaluation (Forge main sets 1 on skip-early-CFG / NGMS steps) and changes nothing."""

    def upsample_guidance_cond_scale(model, x, timestep, uncond, cond, cond_scale, model_options, seed):
        try:
            ctx.host_cond_scale = float(cond_scale)
        except (TypeError, ValueError):
            ctx.host_cond_scale = None
        return model, x, timestep, uncond, cond, cond_scale, model_options, seed

    setattr(upsample_guidance_cond_scale, MARK_ATTR, True)
    return upsample_guidance_cond_scale


def _is_patched(unet: Any) -> bool:
    fns = getattr(unet, "model_options", {}).get("sampler_post_cfg_function") or []
    return any(getattr(f, MARK_ATTR, False) for f in fns)


def _patch(
    p: Any, sd_model: Any, settings: Any, family_bases: dict[str, int] | None, state: ForgeGenerationState
) -> None:
    """Replace sd_model.forge_objects.unet by a clone carrying our post-CFG function (run first, so other
    post-CFG terms apply on top of ours) and CFG-scale recorder."""
    forge_objects = sd_model.forge_objects
    unet = forge_objects.unet.clone()
    remove_ours(unet.model_options)
    family = detect_model_family(sd_model, unet.model)
    ctx = GuidanceContext(
        guidance_scale=float(settings.guidance_scale),
        eta=float(settings.eta),
        base_size_px=_base_size(settings, family, family_bases),
        family=family,
        resampler=str(getattr(settings, "resampler", "auto")),
        cfg_scale=_pass_cfg_scale(p),
        state=state,
        p=p,
        on_first_guided=_write_infotext,
        condition_features=frozenset({"size_vector"}),
        refusal=forge_extensions.refusal_for(p),
        low_res_call=forge_extensions.low_res_call,
        # sd-forge-animatediff (old Forge): its video through its own forward and motion modules
        video=lambda args: forge_animatediff.video_job(args, settings, state.infotext),
    )
    state.infotext = infotext.make_params(
        settings, base_px=ctx.base_size_px, hires_used=bool(getattr(p, "enable_hr", False))
    )
    # a new list: clones must never share it
    modifiers = list(unet.model_options.get("conditioning_modifiers", []))
    unet.model_options["conditioning_modifiers"] = modifiers + [make_cond_scale_recorder(ctx)]
    post_cfg = make_post_cfg_function(ctx)
    unet.set_model_sampler_post_cfg_function(post_cfg)
    forge_extensions.run_first(unet.model_options, post_cfg)
    forge_objects.unet = unet


def register_callbacks() -> None:
    """Register on_cfg_denoiser with the host (call once per script load; re-registering replaces)."""
    from modules import script_callbacks

    remove = getattr(script_callbacks, "remove_callbacks_for_function", None)
    if remove is not None:
        remove(on_cfg_denoiser)
    script_callbacks.on_cfg_denoiser(on_cfg_denoiser)


def on_cfg_denoiser(params: Any) -> None:
    """CFG-denoiser callback (Forge main, old Forge, reForge; it fires after the host's refiner switch and
    before the model call): when the host swapped the model mid-pass (the SDXL refiner: apply_refiner reloads
    the checkpoint without process_before_every_sampling), patch the new model too, so guidance continues on
    it. A failure turns guidance off with one warning (the steps before keep their guidance and infotext)."""
    p = getattr(getattr(params, "denoiser", None), "p", None)
    state = getattr(p, STATE_ATTR, None)
    if not isinstance(state, ForgeGenerationState) or state.off or state.patch_args is None:
        return
    try:
        sd_model = p.sd_model
        if _is_patched(sd_model.forge_objects.unet):
            return
        settings, family_bases = state.patch_args
        _patch(p, sd_model, settings, family_bases, state)
    except Exception as exc:
        state.turn_off(
            f"the model changed during sampling (refiner) and could not be guided: {describe(exc)}", p
        )


def forecast(p: Any, settings: Any, family_bases: dict[str, int] | None = None) -> _forecast.Forecast:
    """Before sampling (process_batch): which passes of p guidance will change (webui/forecast.py).

    The first pass (unless hires. fix starts from a given first-pass image) and the guided hires. fix pass;
    levels in Forge's sigma space, the one the post-CFG function sees (DDIM-type samplers: the model's sigma
    of each timestep, as Forge's CFG denoiser converts them); convention from the model's predictor. An
    sd-forge-animatediff job (old Forge) is planned over (frames, H, W) as at sampling time; its keys include
    `UG temporal factor` and `UG frames`.
    """
    model = p.sd_model.forge_objects.unet.model
    family = detect_model_family(p.sd_model, model)
    predictor = model_sampling_of(model)
    convention = convention_for_predictor(predictor)
    base = _base_size(settings, family, family_bases)
    factor = family.latent_factor
    passes: list[tuple[bool, tuple[int, int]]] = []
    enable_hr = bool(getattr(p, "enable_hr", False)) and not _forecast.is_img2img(p)
    if not (enable_hr and getattr(p, "firstpass_image", None) is not None):
        passes.append((False, (int(p.height) // factor, int(p.width) // factor)))
    if enable_hr and getattr(settings, "guide_hires_pass", True):
        passes.append((True, (int(p.hr_upscale_to_y) // factor, int(p.hr_upscale_to_x) // factor)))
    video = forge_animatediff.forecast_job(settings)
    video_frames = None
    results = []
    for hires, size in passes:
        layout = {"latent_factor": factor, "granularity": family.granularity, "resampler": settings.resampler}
        if video is None:
            plan = plan_low_res(size, base, **layout)
        else:
            run, temporal_factor = video
            plan = plan_video(run.frames, size, base, temporal_factor=temporal_factor, **layout)
            if plan is not None and video_frames is None:
                video_frames = (run.frames, plan.low_size[0])
        levels = None
        if plan is not None:
            schedule = _forecast.host_pass_schedule(p, hires=hires)
            levels = schedule.levels
            if schedule.kind == "timestep":
                table = _sigma_table(predictor)
                if table is None:
                    raise UnsupportedInput("no sigma table for a timestep sampler")
                levels = table[levels.round().long().clamp(0, table.numel() - 1)]
        results.append(
            _forecast.pass_forecast(
                hires, plan, levels, convention, float(settings.guidance_scale), float(settings.eta)
            )
        )
    params = infotext.make_params(settings, base_px=base, hires_used=bool(getattr(p, "enable_hr", False)))
    if video_frames is not None:
        params.update(animatediff.infotext_params(getattr(settings, "temporal_factor", None), *video_frames))
    return _forecast.Forecast(results, params)
