"""Forge-family adapter: Forge main (2.x, `backend.*`), old Forge (`ldm_patched.*`) and reForge.

Forge never fires on_cfg_denoised and its inner model cannot be called, so guidance runs as a post-CFG
function on a clone of the UNet patcher (`p.sd_model.forge_objects.unet`), added in the AlwaysOn script's
process_before_every_sampling. On every model evaluation the function receives the combined (CFG) x0
prediction `den` for the noisy latent x at noise level sigma and returns

    den_guided = den + w * U( den_low - D(den) )

where den_low is the same CFG combination of the model's cond/uncond x0 predictions for the low-resolution
query (D(x) at the low-res noise level of the core's convention: sigma / sqrt(k) for eps/v predictors,
the rectified-flow time for 'const' predictors), computed with the host's own calc_cond_uncond_batch.
All the math is the core's (planner, conventions, step); this module only speaks Forge.

Forge modules are imported lazily inside functions, so importing this module on A1111 is harmless.
Per-generation state lives on `p` (attribute `_upsample_guidance_forge_state`), never in module globals.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..core.conventions import KarrasSigma, NoiseConvention, RectifiedFlow
from ..core.planner import MODEL_FAMILIES, LowResPlan, ModelFamily, plan_low_res
from ..core.step import prepare_low_res_query
from ..webui import infotext
from ..webui.conditioning import is_stateless_cfg_function, size_vector_lowerer
from ..webui.generation import WARNING_PREFIX, GuardState, UnsupportedInput, describe

__all__ = [
    "process_before_every_sampling",
    "ForgeGenerationState",
    "generation_state",
    "begin_generation",
    "make_post_cfg_function",
    "on_cfg_denoiser",
    "register_callbacks",
    "detect_model_family",
    "convention_for_predictor",
    "model_sampling_of",
    "WARNING_PREFIX",
    "STATE_ATTR",
]

_MARK_ATTR = "_upsample_guidance_post_cfg"
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
# Model sampling / predictor and model family


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


def _is_flow(predictor: Any) -> bool:
    """True for rectified-flow ('const') predictors: Forge main prediction_type, ldm_patched CONST mixin."""
    if getattr(predictor, "prediction_type", None) == "const":
        return True
    return any(cls.__name__ == "CONST" for cls in type(predictor).__mro__)


def _is_v_prediction(predictor: Any) -> bool:
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
    if _is_flow(predictor):
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
        if _is_v_prediction(model_sampling_of(model)):
            return MODEL_FAMILIES["sd2"]
        return MODEL_FAMILIES["sd2_eps"]
    if _is_flow(model_sampling_of(model)):
        return MODEL_FAMILIES["flux"]
    return MODEL_FAMILIES["sd1"]


# --------------------------------------------------------------------------------------------------
# Low-resolution conditioning


def _with_tensor(obj: Any, new: torch.Tensor) -> Any:
    """A copy of a host condition object (Condition / CONDRegular) holding `new` instead of its tensor."""
    copier = getattr(obj, "_copy_with", None)
    if callable(copier):
        return copier(new)
    clone = copy.copy(obj)
    clone.cond = new
    return clone


def lower_condition(
    cond: dict,
    size: tuple[int, int],
    down: Callable[[torch.Tensor], torch.Tensor],
    lower_vector: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict:
    """A copy of one compiled condition dict for the low-res call.

    Spatial tensors the size of the latent (model_conds entries of shape [B, C, H, W] such as c_concat /
    image_cond of inpainting models, and a 'mask' of shape [B, H, W]) are replaced by D applied to them;
    the SDXL-family vector (model_conds 'y', Forge main Condition / ldm_patched CONDRegular, and the
    'pooled_output' copy) by lower_vector (the vector of a generation at the low-res size); everything else
    (cross-attention, Flux guidance, strength, ControlNet, hooks) is shared.
    Area-restricted conditions cannot be mapped and raise UnsupportedInput.
    """
    if "area" in cond and cond["area"] is not None:
        raise UnsupportedInput("area-restricted conditioning (regional prompts) is not supported")
    out = dict(cond)
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
                lowered[key] = _with_tensor(obj, down(tensor))
            elif key == "y" and lower_vector is not None and isinstance(tensor, torch.Tensor):
                new = lower_vector(tensor)
                lowered[key] = obj if new is tensor else _with_tensor(obj, new)
            else:
                lowered[key] = obj
        out["model_conds"] = lowered
    return out


def lower_conditions(
    conds: list | None, size: tuple[int, int], down: Callable, lower_vector: Callable | None = None
) -> list | None:
    """lower_condition for each dict of a condition list (None stays None)."""
    if conds is None:
        return None
    return [lower_condition(c, size, down, lower_vector) for c in conds]


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
) -> torch.Tensor:
    """The hosts' CFG combination, so that the low-res rows are combined exactly like the full-size ones.

    With a custom CFG function in model_options["sampler_cfg_function"] known to be stateless (Forge's
    DynamicThresholding, RescaleCFG; webui.conditioning.is_stateless_cfg_function): x - fn(args), args as the
    host builds them (cond/uncond as x - prediction). A function that may keep state between calls (reForge's
    APG keeps momentum and resets it when the width changes) is not called on the low-res rows: they get
    plain CFG. Plain CFG: uncond + (cond - uncond) * scale * s, s = sum of the AND-prompt strengths when it is
    not 1 (Forge's sampling_function_inner, ldm_patched's sampling_function / cfg_function).
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
        }
        return x - cfg_function(args)
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


@dataclass
class GuidanceContext:
    """Everything the post-CFG function needs for one sampling pass (built in process_before_every_sampling).

    cfg_scale: the generation's CFG scale for this pass (p.cfg_scale, or p.hr_cfg in Forge main's hires pass),
    used unless the host passes args["cond_scale"] (reForge), our conditioning modifier saw the scale the host
    passes to its sampling function this step (host_cond_scale: Forge main sets 1 on skip-early-CFG / NGMS
    steps), or the host skipped uncond (then 1).
    """

    guidance_scale: float
    eta: float
    base_size_px: int | tuple[int, int]
    family: ModelFamily
    resampler: str
    cfg_scale: float
    state: ForgeGenerationState
    calc_cond_uncond_batch: Callable | None = None
    p: Any = None  # the processing object, for the infotext
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
    plan = ctx.plan(size)
    if plan is None:
        return denoised
    convention = ctx.convention(model_sampling_of(model))
    sigma = torch.as_tensor(args["sigma"]).reshape(-1)
    if sigma.numel() == 1 and x.shape[0] > 1:
        sigma = sigma.expand(x.shape[0])
    query = prepare_low_res_query(
        x, sigma, plan=plan, convention=convention, guidance_scale=ctx.guidance_scale, eta=ctx.eta
    )
    if query is None:
        return denoised

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
    else:
        cond_scale = float(ctx.cfg_scale)
    model_options = args["model_options"]

    down = query.downsample_condition
    lower_vector = size_vector_lowerer(
        ctx.p,
        ctx.state,
        latent_size=size,
        low_latent_size=plan.low_size,
        latent_factor=ctx.family.latent_factor,
    )
    conds_low = lower_conditions(conds, size, down, lower_vector)
    unconds_low = None if uncond_skipped else lower_conditions(uncond, size, down, lower_vector)
    calc = ctx.calc_cond_uncond_batch or _host_calc_cond_uncond_batch(model)
    level_low = torch.as_tensor(query.level).to(device=sigma.device, dtype=sigma.dtype).reshape(-1)
    cond_low, uncond_low = calc(model, conds_low, unconds_low, query.x, level_low, model_options)
    den_low = combine_cfg(
        cond_low,
        uncond_low,
        cond_scale,
        conds,
        x=query.x,
        level=level_low,
        model=model,
        model_options=model_options,
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
        if ctx.state.off:
            return denoised
        try:
            guided = guided_denoised(args, ctx)
        except Exception as exc:  # never lose the user's image
            ctx.state.turn_off(describe(exc), ctx.p)
            return denoised
        if guided is not denoised and not ctx.state.ran:
            ctx.state.ran = True
            _write_infotext(ctx)
        return guided

    setattr(upsample_guidance_post_cfg, _MARK_ATTR, True)
    return upsample_guidance_post_cfg


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

    setattr(upsample_guidance_cond_scale, _MARK_ATTR, True)
    return upsample_guidance_cond_scale


def _write_infotext(ctx: GuidanceContext) -> None:
    """Add the settings to p's infotext (guidance ran). XYZ cells share one dict: write into a copy."""
    p = ctx.p
    if p is None or not ctx.state.infotext:
        return
    p.extra_generation_params = {**getattr(p, "extra_generation_params", {}), **ctx.state.infotext}


def _remove_ours(model_options: dict) -> None:
    for key in ("sampler_post_cfg_function", "conditioning_modifiers"):
        fns = model_options.get(key)
        if fns:
            model_options[key] = [f for f in fns if not getattr(f, _MARK_ATTR, False)]


def _is_patched(unet: Any) -> bool:
    fns = getattr(unet, "model_options", {}).get("sampler_post_cfg_function") or []
    return any(getattr(f, _MARK_ATTR, False) for f in fns)


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


def _patch(
    p: Any, sd_model: Any, settings: Any, family_bases: dict[str, int] | None, state: ForgeGenerationState
) -> None:
    """Replace sd_model.forge_objects.unet by a clone carrying our post-CFG function and CFG-scale recorder."""
    forge_objects = sd_model.forge_objects
    unet = forge_objects.unet.clone()
    _remove_ours(unet.model_options)
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
    )
    state.infotext = infotext.make_params(
        settings, base_px=ctx.base_size_px, hires_used=bool(getattr(p, "enable_hr", False))
    )
    # a new list: clones must never share it
    modifiers = list(unet.model_options.get("conditioning_modifiers", []))
    unet.model_options["conditioning_modifiers"] = modifiers + [make_cond_scale_recorder(ctx)]
    unet.set_model_sampler_post_cfg_function(make_post_cfg_function(ctx))
    forge_objects.unet = unet


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
        state.turn_off(describe(exc), p)


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
