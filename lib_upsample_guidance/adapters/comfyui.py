"""ComfyUI adapter: the "Upsample Guidance" model patch node.

MODEL in, MODEL out: a clone of the input ModelPatcher (the input is never mutated) with a post-CFG function
in model_options["sampler_post_cfg_function"]. ComfyUI's cfg_function calls it after every CFG combination,
from every sampler and scheduler, KSampler and SamplerCustom(Advanced) alike, with the combined x0 prediction
`den` of the noisy latent x at sigma, and it returns

    den_guided = den + w * U( den_low - D(den) )

den_low being the same CFG combination of the model's predictions for the low-resolution query, computed with
ComfyUI's own calc_cond_batch. The function, the noise conventions (EPS / V_PREDICTION / EDM / CONST read off
the model's own model_sampling), the condition lowering and the CFG combination are the ones the Forge adapter
uses (comfy_family.postcfg; Forge's backend descends from ComfyUI's); the math is the core's.

ComfyUI specifics: its cfg_function passes cond_scale and has no AND-prompt strength factor; area conditions
(Conditioning Set Area) are mapped to the low-res latent, SDXL's `y` gets the low-res size when it embeds the
generation's size (core.size_conditioning), conditions with a time window are chosen at the full-size sigma;
ControlNet resizes its hint to the latent it is called with (comfy.controlnet), so it needs nothing here.
Videos sampled by AnimateDiff-Evolved or through ComfyUI's context windows are refused with one warning
(comfyui_video: why).
The per-generation guard is keyed on the sampling run (model_options["transformer_options"]["sample_sigmas"],
one per KSampler / SamplerCustom run) and kept on the patch, never in module globals.

comfy modules are imported lazily inside functions: importing this module outside ComfyUI is harmless.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ..comfy_family.postcfg import (
    MARK_ATTR,
    GuidanceContext,
    convention_for_predictor,
    is_v_prediction,
    make_post_cfg_function,
    model_sampling_of,
    remove_ours,
)
from ..core.planner import MODEL_FAMILIES, ModelFamily
from ..core.resample import RESAMPLER_KINDS
from ..webui.generation import WARNING_PREFIX, GuardState, UnsupportedInput, describe
from ..webui.settings import BASE_RANGE, ETA_RANGE, SCALE_RANGE
from .comfyui_video import video_refusal

__all__ = [
    "input_types",
    "validate_inputs",
    "patch_model",
    "detect_model_family",
    "comfy_calc_cond_uncond_batch",
    "refuse_unsafe_patches",
    "RunGuard",
]

CONDITION_FEATURES = frozenset({"area", "size_vector", "windows"})


def input_types() -> dict:
    """The node's INPUT_TYPES: ranges are the WebUIs' (webui.settings), a tooltip on every input."""
    return {
        "required": {
            "model": ("MODEL", {"tooltip": "The diffusion model to patch (a patched copy is returned)."}),
            "guidance_scale": (
                "FLOAT",
                {
                    "default": 1.0,
                    "min": SCALE_RANGE[0],
                    "max": SCALE_RANGE[1],
                    "step": 0.05,
                    "tooltip": "Weight of the low-resolution correction (paper: theta). 1 replaces the low "
                    "frequencies with the model's answer at its trained size; 0 = the input model, unchanged.",
                },
            ),
            "eta": (
                "FLOAT",
                {
                    "default": 0.6,
                    "min": ETA_RANGE[0],
                    "max": ETA_RANGE[1],
                    "step": 0.05,
                    "tooltip": "Fraction of the noise schedule, from the noisy end, on which guidance is on "
                    "(paper: eta). Guidance shapes the layout early; later steps refine details at full size.",
                },
            ),
            "base_resolution": (
                "INT",
                {
                    "default": 0,
                    "min": 0,
                    "max": BASE_RANGE[1],
                    "step": 8,
                    "tooltip": "The model's trained resolution in pixels; 0 = from the model (SD1 512, SD2 768 "
                    "(512 for epsilon checkpoints), SDXL 1024, SD3 1024, Flux 1024). Images at or below it "
                    "are not changed.",
                },
            ),
            "resampler": (
                list(RESAMPLER_KINDS),
                {
                    "default": "auto",
                    "tooltip": "How the latent is resized between the two resolutions: box (average / repeat, "
                    "integer factors), spectral (DCT, any factor); auto picks box for integer factors.",
                },
            ),
        }
    }


def validate_inputs(
    guidance_scale: Any = None, eta: Any = None, base_resolution: Any = None, resampler: Any = None
) -> bool | str:
    """True, or a one-line message ComfyUI shows for the node (VALIDATE_INPUTS).

    None (not given, or, in ComfyUI, an input fed by a link whose value is not known before execution) is not
    checked here; patch_model checks every value when the node runs."""
    values = (guidance_scale, eta, base_resolution, resampler)
    defaults = (1.0, 0.6, 0, "auto")
    try:
        _checked(*(d if v is None else v for v, d in zip(values, defaults, strict=True)))
    except ValueError as exc:
        return str(exc)
    return True


def _checked(guidance_scale: Any, eta: Any, base_resolution: Any, resampler: Any) -> tuple:
    def number(value: Any, name: str, lo: float, hi: float) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"{name} must be a number in [{lo:g}, {hi:g}], got {value!r}")
        if not lo <= value <= hi:
            raise ValueError(f"{name} must be in [{lo:g}, {hi:g}], got {value!r}")
        return float(value)

    scale = number(guidance_scale, "guidance_scale", *SCALE_RANGE)
    eta_value = number(eta, "eta", *ETA_RANGE)
    base = number(base_resolution, "base_resolution", 0, BASE_RANGE[1])
    if base != int(base) or (base != 0 and base < BASE_RANGE[0]):
        raise ValueError(
            f"base_resolution must be 0 (from the model) or whole pixels in [{BASE_RANGE[0]}, {BASE_RANGE[1]}], "
            f"got {base_resolution!r}"
        )
    if resampler not in RESAMPLER_KINDS:
        raise ValueError(f"resampler must be one of {', '.join(RESAMPLER_KINDS)}, got {resampler!r}")
    return scale, eta_value, int(base), str(resampler)


def detect_model_family(model: Any) -> ModelFamily:
    """The model family of a comfy BaseModel, from its model_config class (comfy.supported_models).

    SD 2.x: 768 px for v-prediction checkpoints, 512 px for epsilon ones. Families whose latent layout or time
    axis the guidance was not built for (video, audio, cascades, upscalers, pixel-space) raise UnsupportedInput.
    """
    config = getattr(model, "model_config", None)
    names = [cls.__name__ for cls in type(config).__mro__] if config is not None else []
    if not names or names[0] in _UNSUPPORTED_CONFIGS:
        raise UnsupportedInput(
            f"model {type(config).__name__ if config is not None else type(model).__name__} is not supported "
            "(supported: SD 1.x, SD 2.x, SDXL, SD3, Flux)"
        )
    if "Flux" in names or "Chroma" in names:
        return MODEL_FAMILIES["flux"]
    if "SD3" in names:
        return MODEL_FAMILIES["sd3"]
    if "SDXL" in names or "SDXLRefiner" in names:
        return MODEL_FAMILIES["sdxl"]
    if "SD20" in names:
        return MODEL_FAMILIES["sd2" if is_v_prediction(model_sampling_of(model)) else "sd2_eps"]
    if "SD15" in names:
        return MODEL_FAMILIES["sd1"]
    raise UnsupportedInput(f"model {names[0]} is not supported (supported: SD 1.x, SD 2.x, SDXL, SD3, Flux)")


_UNSUPPORTED_CONFIGS = frozenset(
    {
        "SD_X4Upscaler",
        "LotusD",
        "Flux2",
        "ChromaRadiance",
        "SVD_img2vid",
        "SV3D_u",
        "SV3D_p",
        "Stable_Zero123",
    }
)


def comfy_calc_cond_uncond_batch(
    model: Any, conds: list, unconds: list | None, x: torch.Tensor, level: torch.Tensor, model_options: dict
) -> tuple[torch.Tensor, torch.Tensor]:
    """The cond and uncond x0 predictions of the low-res rows, the way ComfyUI's sampling_function gets them:
    model_options["sampler_calc_cond_batch_function"] when set, else comfy.samplers.calc_cond_batch; a
    skipped uncond (None) comes back as zeros.

    Raises UnsupportedInput for the patches refuse_unsafe_patches names.
    """
    refuse_unsafe_patches(model_options)
    batch = [conds, unconds]
    custom = model_options.get("sampler_calc_cond_batch_function")
    if custom is not None:
        out = custom(
            {"conds": batch, "input": x, "sigma": level, "model": model, "model_options": model_options}
        )
    else:
        import comfy.samplers

        out = comfy.samplers.calc_cond_batch(model, batch, x, level, model_options)
    return out[0], out[1]


def refuse_unsafe_patches(model_options: dict) -> None:
    """UnsupportedInput for model patches the low-res call cannot live with:

    - pre-CFG functions (model_options["sampler_pre_cfg_function"]: APG, TCFG, FreSca, ...), refused rather
      than mirrored: some keep state across calls (APG's momentum resets when sigma rises, which the low-res
      call's lower sigma would trigger), and skipping them would silently undo them in the low frequencies;
    - Self-Attention Guidance running after this patch: SAG reads the uncond attention its attn1 patch recorded
      during the sampler's own call, and the low-res call would overwrite it with maps of another size (SAG
      would then fail the whole generation). SAG before this patch (Upsample Guidance nearer the sampler) is fine.
    """
    if model_options.get("sampler_pre_cfg_function"):
        raise UnsupportedInput(
            "a pre-CFG model patch (APG, TCFG, FreSca, ...) is active; upsample guidance cannot be combined with it"
        )
    post = list(model_options.get("sampler_post_cfg_function") or [])
    ours = [i for i, fn in enumerate(post) if getattr(fn, MARK_ATTR, False)]
    later = post[ours[0] + 1 :] if ours else []
    if any(getattr(fn, "__qualname__", "").startswith("SelfAttentionGuidance.") for fn in later):
        raise UnsupportedInput(
            "Self-Attention Guidance is applied after Upsample Guidance; put the Upsample Guidance node after it "
            "(nearer the sampler)"
        )


@dataclass
class RunGuard:
    """The per-generation guard of one patch: a fresh GuardState for every sampling run.

    ComfyUI gives every run (KSampler, SamplerCustom, each stage of KSamplerAdvanced) its own model_options
    copy with transformer_options["sample_sigmas"]; the run is recognised by that object's identity (kept
    referenced here, so the identity cannot be reused), else by the model_options dict itself.
    """

    key: Any = None
    state: GuardState | None = None

    def state_of(self, args: dict) -> GuardState:
        options = args.get("model_options") or {}
        key = (options.get("transformer_options") or {}).get("sample_sigmas")
        if key is None:
            key = options
        if self.state is None or key is not self.key:
            self.key, self.state = key, GuardState()
        return self.state


def patch_model(
    model: Any, guidance_scale: float, eta: float, base_resolution: int, resampler: str
) -> tuple[Any]:
    """The node's function: (patched clone of `model`,), or (model,) itself when nothing is to be guided.

    Scale 0 returns the input model (bit-identical output). An input that cannot be guided (an unsupported
    model family, a model without model_sampling) returns the input model with ONE console warning. Bad
    inputs raise ValueError with a one-line message (the node's VALIDATE_INPUTS catches them first).
    """
    scale, eta_value, base, kind = _checked(guidance_scale, eta, base_resolution, resampler)
    if scale == 0.0:
        return (model,)
    try:
        diffusion_model = model.model
        family = detect_model_family(diffusion_model)
        convention_for_predictor(model_sampling_of(diffusion_model))  # refuse an unknown predictor now
        patched = model.clone()
        remove_ours(patched.model_options)
        guard = RunGuard()
        ctx = GuidanceContext(
            guidance_scale=scale,
            eta=eta_value,
            base_size_px=base or family.base_size_px,
            family=family,
            resampler=kind,
            cfg_scale=None,  # ComfyUI passes args["cond_scale"]; a host that does not is refused
            calc_cond_uncond_batch=comfy_calc_cond_uncond_batch,
            state_of=guard.state_of,
            and_strength=False,
            condition_features=CONDITION_FEATURES,
            refusal=video_refusal,  # AnimateDiff-Evolved, ComfyUI's context windows: one warning, unguided
        )
        patched.set_model_sampler_post_cfg_function(make_post_cfg_function(ctx))
    except Exception as exc:  # never lose the user's image: the input model, unguided, one warning
        print(
            f"{WARNING_PREFIX} the model is not patched: {describe(exc)} (images are made without guidance)"
        )
        return (model,)
    return (patched,)
