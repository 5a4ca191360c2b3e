"""AUTOMATIC1111 adapter: upsample guidance through the CFG denoiser callbacks (A1111 1.9.x, 1.10.x, dev).

How it runs (HOST_API.md §3):

* ``on_cfg_denoiser`` fires after the CFG denoiser has built its batch: rows ``[cond rows (AND-expanded)...,
  B uncond rows]`` (edit models: ``[cond..., uncond..., image-uncond...]``). We only note the params object
  (read again later, so changes by callbacks that run after ours are seen) on the denoiser's inner model —
  the one object both callbacks can reach.
* ``on_cfg_denoised`` fires with the model outputs ``x_out`` in the same layout (fake uncond rows when the
  host skipped uncond). We evaluate the model once more on the low-resolution query of the evaluated rows,
  through ``params.inner_model`` with a fresh condition dict per call, and replace ``x_out`` in place by
  the core's guided prediction (``LowResQuery.apply``: x0 rows for k-diffusion samplers,
  eps rows for DDIM/PLMS/UniPC). The correction is affine, so applying it per row before CFG equals
  applying it to the combined result (SPEC §3).

Conventions: k-diffusion samplers pass sigma and get x0 (:class:`KarrasSigma`, time from the model's
alphas_cumprod); the timesteps samplers pass the integer-valued t and get eps (:class:`DiscreteVP`);
SD3 (A1111 dev) is rectified flow (:class:`RectifiedFlow`).

Never lose a generation: everything after the enable check runs under one ``try``; on any exception the
step's output is left exactly as the host computed it, guidance is turned off for the rest of that
generation and ONE warning says why. Disabled (no state on ``p``) = both callbacks return at once.
Per-generation state lives on ``p`` (attribute :data:`STATE_ATTR`), never in module globals.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from modules import prompt_parser, script_callbacks, shared

from ..core.conventions import DiscreteVP, KarrasSigma, NoiseConvention, RectifiedFlow
from ..core.planner import MODEL_FAMILIES, LowResPlan, plan_low_res
from ..core.step import LowResQuery, prepare_low_res_query
from ..core.v_prediction import eps_at_fractional_t
from ..core.video import VideoPlan, plan_video, prepare_folded_video_query
from ..webui import animatediff, infotext
from ..webui import forecast as _forecast
from ..webui import settings as _settings
from ..webui.conditioning import size_vector_lowerer
from ..webui.generation import GuardState, UnsupportedInput, describe
from ..webui.settings import DEFAULT_FAMILY_BASES, WARNING_PREFIX, UGSettings
from . import a1111_extensions

__all__ = [
    "STATE_ATTR",
    "WARNING_PREFIX",
    "DEFAULT_FAMILY_BASES",
    "GenerationState",
    "UnsupportedInput",
    "begin_generation",
    "forecast",
    "generation_state",
    "model_family",
    "register_callbacks",
    "on_cfg_denoiser",
    "on_cfg_denoised",
]

STATE_ATTR = "_upsample_guidance_a1111"
PENDING_ATTR = "_upsample_guidance_pending"


def model_family(sd_model: Any) -> str:
    """Family key of an A1111 model (a key of DEFAULT_FAMILY_BASES); models without a flag count as SD 1.x."""
    return _settings.model_family(sd_model) or "sd1"


@dataclass(kw_only=True)
class GenerationState(GuardState):
    """What one generation (one process_images call) needs across its sampling steps.

    family_bases: trained base size per family key (Settings tab) for base_resolution "auto".
    Inherited from GuardState: off_reason / turn_off (guidance off after a failure, one warning) and ran
    (guidance changed at least one step; the infotext is written then).
    """

    settings: UGSettings
    family_bases: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_FAMILY_BASES))
    _plans: dict = field(default_factory=dict)
    video_frames: tuple[int, int] | None = None  # AnimateDiff job guided: (frames, low-res frames)

    def base_px(self, family_key: str) -> int:
        if self.settings.base_resolution is not None:
            return int(self.settings.base_resolution)
        return int(self.family_bases.get(family_key, DEFAULT_FAMILY_BASES.get(family_key, 512)))

    def plan(self, size: tuple[int, int], family_key: str) -> LowResPlan | None:
        key = (size, family_key)
        if key not in self._plans:
            family = MODEL_FAMILIES[family_key]
            self._plans[key] = plan_low_res(
                size,
                self.base_px(family_key),
                latent_factor=family.latent_factor,
                granularity=family.granularity,
                resampler=self.settings.resampler,
            )
        return self._plans[key]

    def video_plan(
        self, run: animatediff.AnimateDiffRun, size: tuple[int, int], family_key: str
    ) -> VideoPlan | None:
        """The (frames, H, W) plan of an AnimateDiff job (temporal factor: webui.animatediff)."""
        factor = animatediff.temporal_factor(run, getattr(self.settings, "temporal_factor", "auto"))
        key = ("video", run.frames, factor, size, family_key)
        if key not in self._plans:
            family = MODEL_FAMILIES[family_key]
            self._plans[key] = plan_video(
                run.frames,
                size,
                self.base_px(family_key),
                temporal_factor=factor,
                latent_factor=family.latent_factor,
                granularity=family.granularity,
                resampler=self.settings.resampler,
            )
        return self._plans[key]


def begin_generation(
    p: Any, settings: UGSettings, family_bases: Mapping[str, int] | None = None
) -> GenerationState | None:
    """Start (or clear) the per-generation state on p. Disabled or scale 0: state cleared, None returned."""
    if not settings.enabled or settings.guidance_scale == 0:
        setattr(p, STATE_ATTR, None)
        return None
    bases = dict(DEFAULT_FAMILY_BASES)
    bases.update({k: int(v) for k, v in (family_bases or {}).items() if k in bases})
    state = GenerationState(settings=settings, family_bases=bases)
    setattr(p, STATE_ATTR, state)
    return state


def generation_state(p: Any) -> GenerationState | None:
    """The state begin_generation put on p, or None."""
    state = getattr(p, STATE_ATTR, None)
    return state if isinstance(state, GenerationState) else None


def register_callbacks() -> None:
    """Register the two CFG callbacks (call once per script load; re-registering replaces, never stacks)."""
    remove = getattr(script_callbacks, "remove_callbacks_for_function", None)
    if remove is not None:
        remove(on_cfg_denoiser)
        remove(on_cfg_denoised)
    script_callbacks.on_cfg_denoiser(on_cfg_denoiser)
    script_callbacks.on_cfg_denoised(on_cfg_denoised)


@dataclass
class _Pending:
    params: Any  # the CFGDenoiserParams of this model evaluation
    state: GenerationState


def on_cfg_denoiser(params: Any) -> None:
    """Note this evaluation's batch (params) on the inner model, if guidance is on for this generation."""
    p = getattr(getattr(params, "denoiser", None), "p", None)
    state = generation_state(p)
    if state is None or state.off:
        return
    try:
        if getattr(p, "is_hr_pass", False) and not state.settings.guide_hires_pass:
            return
        inner = params.denoiser.inner_model
        setattr(inner, PENDING_ATTR, _Pending(params, state))
    except Exception as exc:  # never lose the user's image
        state.turn_off(describe(exc), p, level=getattr(params, "sigma", None), hires=_hires(p))


def on_cfg_denoised(params: Any) -> None:
    """Replace params.x (the model outputs, in place) by the guided outputs for the noted batch."""
    inner = getattr(params, "inner_model", None)
    pending = getattr(inner, PENDING_ATTR, None)
    if not isinstance(pending, _Pending):
        return
    try:
        delattr(inner, PENDING_ATTR)
    except AttributeError:
        pass
    state = pending.state
    if state.off:
        return
    try:
        guided = guided_outputs(pending.params, params.x, inner, state)
        if guided is None:
            return
        params.x.copy_(guided)
        if state.mark_guided():  # first guided step of this batch: the keys, if no forecast wrote them
            _write_infotext(pending.params.denoiser.p, state)
    except Exception as exc:  # never lose the user's image: x_out is untouched until the copy above
        p = getattr(pending.params.denoiser, "p", None)
        state.turn_off(describe(exc), p, level=getattr(pending.params, "sigma", None), hires=_hires(p))


def _hires(p: Any) -> bool:
    return bool(getattr(p, "is_hr_pass", False))


def _infotext_params(
    p: Any, state: GenerationState, sd_model: Any, video_frames: tuple[int, int] | None = None
) -> dict[str, str]:
    """The UG keys of p; video_frames (an AnimateDiff job: frames, low-res frames) adds the temporal ones."""
    params = infotext.make_params(
        state.settings,
        base_px=state.base_px(model_family(sd_model)),
        hires_used=bool(getattr(p, "enable_hr", False)),
    )
    if video_frames is not None:  # AnimateDiff: the temporal setting and what it does
        setting = getattr(state.settings, "temporal_factor", "auto")
        params.update(animatediff.infotext_params(setting, *video_frames))
    return params


def _write_infotext(p: Any, state: GenerationState) -> None:
    params = _infotext_params(p, state, shared.sd_model, state.video_frames)
    if all(p.extra_generation_params.get(k) == v for k, v in params.items()):
        return  # already written before sampling (forecast)
    # XYZ plot cells are shallow copies of one p sharing this dict: write into our own copy
    p.extra_generation_params = {**p.extra_generation_params, **params}


def forecast(p: Any, state: GenerationState) -> _forecast.Forecast:
    """Before sampling (process_batch): which passes of p guidance will change (webui/forecast.py).

    Passes: the first pass (unless hires. fix starts from a given first-pass image) at (height, width) / 8,
    and the hires. fix pass at hr_upscale_to_y/x / 8 when it is guided. Each uses the host's own schedule
    for its sampler and the convention that sampler's CFG denoiser gets at sampling time. An AnimateDiff job
    (its parameters are set in its before_process, before this) is planned over (frames, H, W) as at sampling
    time, so a clip guided in time only is forecast too, and its keys include `UG temporal factor` and
    `UG frames`.
    """
    sd_model = getattr(p, "sd_model", None) or shared.sd_model
    family_key = model_family(sd_model)
    factor = MODEL_FAMILIES[family_key].latent_factor
    settings = state.settings
    ad_run = animatediff.running_job()
    video_frames = None
    passes: list[tuple[bool, tuple[int, int]]] = []
    enable_hr = bool(getattr(p, "enable_hr", False)) and not _forecast.is_img2img(p)
    if not (enable_hr and getattr(p, "firstpass_image", None) is not None):
        passes.append((False, (int(p.height) // factor, int(p.width) // factor)))
    if enable_hr and settings.guide_hires_pass:
        size = (int(p.hr_upscale_to_y) // factor, int(p.hr_upscale_to_x) // factor)
        passes.append((True, size))
    results = []
    for hires, size in passes:
        if ad_run is None:
            plan = state.plan(size, family_key)
        else:
            plan = state.video_plan(ad_run, size, family_key)
            if plan is not None and video_frames is None:
                video_frames = (ad_run.frames, plan.low_size[0])
        levels = convention = None
        if plan is not None:
            schedule = _forecast.host_pass_schedule(p, hires=hires)
            try:
                convention = convention_for(schedule.sampler.model_wrap_cfg, sd_model)
            except UnsupportedInput:  # refused at the first guided call: no step will be guided
                convention = None
            levels = schedule.levels
        results.append(
            _forecast.pass_forecast(hires, plan, levels, convention, settings.guidance_scale, settings.eta)
        )
    return _forecast.Forecast(results, _infotext_params(p, state, sd_model, video_frames))


# --------------------------------------------------------------------------------------------------
# The guided rows


def _host_class(module: str, name: str) -> type | None:
    mod = sys.modules.get(module)
    cls = getattr(mod, name, None) if mod is not None else None
    return cls if isinstance(cls, type) else None


def _sampler_kind(denoiser: Any) -> str:
    """ "timesteps" (DDIM/PLMS/UniPC: t in, eps out) or "kdiffusion" (sigma in, x0 out)."""
    timesteps_cls = _host_class("modules.sd_samplers_timesteps", "CFGDenoiserTimesteps")
    if timesteps_cls is not None and isinstance(denoiser, timesteps_cls):
        return "timesteps"
    kdiff_cls = _host_class("modules.sd_samplers_kdiffusion", "CFGDenoiserKDiffusion")
    if kdiff_cls is not None and isinstance(denoiser, kdiff_cls):
        return "kdiffusion"
    # LCM (sd_samplers_lcm.CFGDenoiserLCM): a CFGDenoiser over LCMCompVisDenoiser, which takes sigma and returns
    # the consistency function's x0 estimate (c_skip * x + c_out * x0, c_skip ~ 0 except at the last sigmas)
    lcm_cls = _host_class("modules.sd_samplers_lcm", "CFGDenoiserLCM")
    if lcm_cls is not None and isinstance(denoiser, lcm_cls):
        return "kdiffusion"
    raise UnsupportedInput(f"unsupported sampler wrapper {type(denoiser).__name__}")


def convention_for(denoiser: Any, sd_model: Any) -> NoiseConvention:
    """The noise convention of this denoiser + model (see module docstring)."""
    kind = _sampler_kind(denoiser)
    if getattr(sd_model, "is_sd3", False):
        if kind != "kdiffusion":
            raise UnsupportedInput("SD3 is guided only with k-diffusion samplers")
        return RectifiedFlow(output="x0")
    alphas_cumprod = getattr(sd_model, "alphas_cumprod", None)
    if alphas_cumprod is None:
        raise UnsupportedInput("the model has no alphas_cumprod schedule")
    alphas_cumprod = torch.as_tensor(alphas_cumprod).detach().float().cpu()
    if kind == "timesteps":
        return DiscreteVP(alphas_cumprod, output="eps")
    return KarrasSigma.from_alphas_cumprod(alphas_cumprod, output="x0")


def _rows(cond: Any) -> int:
    return int((cond["crossattn"] if isinstance(cond, dict) else cond).shape[0])


def _tokens(cond: Any) -> int:
    return int((cond["crossattn"] if isinstance(cond, dict) else cond).shape[1])


def _cat_conds(conds: list) -> Any:
    if isinstance(conds[0], dict):
        return {key: torch.cat([c[key] for c in conds]) for key in conds[0]}
    return torch.cat(conds)


def _same_rows(rows: int) -> int:
    return rows


def _map_cond(cond: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    if isinstance(cond, dict):
        return {key: fn(value) for key, value in cond.items()}
    return fn(cond)


def _slice_cond(cond: Any, a: int, b: int) -> Any:
    if isinstance(cond, dict):
        return {key: value[a:b] for key, value in cond.items()}
    return cond[a:b]


def _uncond_skipped(denoiser: Any, sigma_in: torch.Tensor, is_edit: bool) -> bool:
    """The host's rule for dropping the uncond rows this step (skip early CFG, NGMS), as in v1.10.1."""
    opts = shared.opts
    skip_early = float(getattr(opts, "skip_early_cond", 0.0) or 0.0)
    step = int(getattr(denoiser, "step", 0))
    total = getattr(denoiser, "total_steps", None) or 0
    if skip_early != 0.0 and total and step / total <= skip_early:
        return True
    extra = getattr(getattr(denoiser, "sampler", None), "sampler_extra_args", None) or {}
    s_min_uncond = float(extra.get("s_min_uncond", 0.0) or 0.0)
    every = bool(getattr(opts, "s_min_uncond_all", False))
    return bool(
        (step % 2 or every) and s_min_uncond > 0 and float(sigma_in[0]) < s_min_uncond and not is_edit
    )


def _first_cond_rows(denoiser: Any, n_images: int) -> list[int]:
    """Index of each image's first cond row (where the host copies its fake uncond row from)."""
    extra = getattr(getattr(denoiser, "sampler", None), "sampler_extra_args", None) or {}
    cond = extra.get("cond")
    if cond is not None:
        conds_list, _ = prompt_parser.reconstruct_multicond_batch(cond, denoiser.step)
        if len(conds_list) == n_images:
            return [int(c[0][0]) for c in conds_list]
    raise UnsupportedInput("cannot locate the cond rows of each image")


def _lower_vector(text: Any, lower: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """A dict conditioning (SDXL: crossattn + vector) with its vector lowered; other conditionings as is."""
    if isinstance(text, dict) and isinstance(text.get("vector"), torch.Tensor):
        return {**text, "vector": lower(text["vector"])}
    return text


def _make_condition_dict(sd_model: Any, text: Any) -> Callable[[Any, torch.Tensor], dict]:
    """The host's condition dict for its conditioning key (fresh dict and lists per call)."""
    key = getattr(getattr(sd_model, "model", None), "conditioning_key", None)
    if key == "crossattn-adm":
        return lambda c, image: {"c_crossattn": [c], "c_adm": image}
    if isinstance(text, dict):
        return lambda c, image: {**c, "c_concat": [image]}
    return lambda c, image: {"c_crossattn": [c], "c_concat": [image]}


def _low_image_cond(image_cond: torch.Tensor, x: torch.Tensor, query: LowResQuery) -> torch.Tensor:
    """Spatial image conditioning (inpainting mask + latent, ip2p image, depth) at the low-res size;
    non-spatial conditioning (the [B, 5, 1, 1] dummy, unCLIP's c_adm) unchanged."""
    if image_cond.ndim >= 3 and tuple(image_cond.shape[-2:]) == tuple(x.shape[-2:]):
        return query.downsample_condition(image_cond)
    if image_cond.ndim >= 3 and tuple(image_cond.shape[-2:]) != (1, 1):
        raise UnsupportedInput(
            f"image conditioning of spatial size {tuple(image_cond.shape[-2:])} does not match the latent "
            f"size {tuple(x.shape[-2:])}"
        )
    return image_cond


def _call_inner(inner: Any, x: torch.Tensor, level: torch.Tensor, cond: dict) -> torch.Tensor:
    # AnimateDiff's forward is the one replacement we go through (webui.animatediff); others are refused
    if "forward" in getattr(inner, "__dict__", {}) and animatediff.animatediff_run(inner) is None:
        raise UnsupportedInput(
            "another extension replaced the model's forward (e.g. Tiled Diffusion); "
            "the low-resolution call would go through it"
        )
    return inner(x, level, cond=cond)
    if "forward" in getattr(inner, "__dict__", {}):
        raise UnsupportedInput(
            "another extension replaced the model's forward (e.g. Tiled Diffusion); "
            "the low-resolution call would go through it"
        )
    return inner(x, level, cond=cond)


def guided_outputs(
    dparams: Any, x_out: torch.Tensor, inner: Any, state: GenerationState
) -> torch.Tensor | None:
    """The guided model outputs for one CFG-denoiser evaluation, or None when nothing is guided.

    dparams: the CFGDenoiserParams noted by on_cfg_denoiser (x, sigma, image_cond, text_cond, text_uncond,
    denoiser); x_out: the host's outputs in the same row layout. Raises on anything unexpected.
    """
    denoiser = dparams.denoiser
    sd_model = shared.sd_model
    x_in, sigma_in, image_cond_in = dparams.x, dparams.sigma, dparams.image_cond
    text_cond, text_uncond = dparams.text_cond, dparams.text_uncond
    if x_in.ndim != 4:
        raise UnsupportedInput(f"expected a 4-D latent batch, got shape {tuple(x_in.shape)}")
    if tuple(x_out.shape) != tuple(x_in.shape):
        raise UnsupportedInput(
            f"model outputs have shape {tuple(x_out.shape)}, inputs {tuple(x_in.shape)}: unknown row layout"
        )
    family_key = model_family(sd_model)
    size = (int(x_in.shape[-2]), int(x_in.shape[-1]))
    ad_run = animatediff.animatediff_run(inner)  # AnimateDiff's forward on inner: a video, frames in rows
    plan = state.plan(size, family_key) if ad_run is None else state.video_plan(ad_run, size, family_key)
    if plan is None:
        return None  # at or below the base size: nothing to do (e.g. the first pass of hires fix)

    is_edit = getattr(sd_model, "cond_stage_key", None) == "edit" and getattr(
        denoiser, "image_cfg_scale", None
    ) not in (None, 1.0)
    n_cond, n_images = _rows(text_cond), _rows(text_uncond)
    n_total = n_cond + n_images * (2 if is_edit else 1)
    if x_in.shape[0] != n_total:
        raise UnsupportedInput(
            f"unexpected row layout: {x_in.shape[0]} rows for {n_cond} cond and {n_images} uncond rows"
        )
    if ad_run is not None and (n_images != ad_run.frames or n_cond != n_images or is_edit):
        raise UnsupportedInput(
            f"AnimateDiff batch of {n_cond} cond and {n_images} uncond rows for {ad_run.frames} frames "
            "(AND prompts and edit models are not supported with AnimateDiff)"
        )
    skipped = _uncond_skipped(denoiser, sigma_in, is_edit)
    first_rows: list[int] = []
    if skipped:
        first_rows = _first_cond_rows(denoiser, n_images)
        fake = x_out[n_cond:]
        if not all(torch.equal(fake[i], x_out[first_rows[i]]) for i in range(n_images)):
            raise UnsupportedInput("the skipped-uncond rows are not copies of the cond rows")
    n_eval = n_cond if skipped else n_total

    convention = convention_for(denoiser, sd_model)
    prepare = prepare_low_res_query
    if ad_run is not None:  # rows are frames: the folded video query (same interface, rows mapped)
        prepare = partial(prepare_folded_video_query, frames=ad_run.frames)
    query = prepare(
        x_in[:n_eval],
        sigma_in[:n_eval],
        plan=plan,
        convention=convention,
        guidance_scale=state.settings.guidance_scale,
        eta=state.settings.eta,
    )
    if query is None:
        return None  # weight 0 on every row (outside the guided part of the noise range)
    if ad_run is not None:
        state.video_frames = (ad_run.frames, query.low_frames)

    level = query.level.to(device=sigma_in.device)
    if sigma_in.is_floating_point():
        level = level.to(sigma_in.dtype)
    if ad_run is None:
        image_low = _low_image_cond(image_cond_in[:n_eval], x_in, query)
        low_rows = _same_rows
    else:
        image_low, low_rows = query.down_rows(image_cond_in[:n_eval]), query.low_rows

    # SDXL family: the low-res rows get the size conditioning of a generation at the low-res size
    if isinstance(text_cond, dict) or isinstance(text_uncond, dict):
        lower = size_vector_lowerer(
            getattr(denoiser, "p", None),
            state,
            latent_size=plan.target_size,
            low_latent_size=plan.low_size,
            latent_factor=MODEL_FAMILIES[family_key].latent_factor,
        )
        text_cond, text_uncond = _lower_vector(text_cond, lower), _lower_vector(text_uncond, lower)

    if not skipped and _tokens(text_cond) != _tokens(text_uncond):
        opts = shared.opts
        if getattr(opts, "pad_cond_uncond_v0", False) and hasattr(denoiser, "pad_cond_uncond_v0"):
            text_cond, text_uncond = denoiser.pad_cond_uncond_v0(text_cond, text_uncond)
        elif getattr(opts, "pad_cond_uncond", False) and hasattr(denoiser, "pad_cond_uncond"):
            text_cond, text_uncond = denoiser.pad_cond_uncond(text_cond, text_uncond)
    if ad_run is not None:  # per-frame text rows (prompt travel) at the low-res frames
        text_cond, text_uncond = (_map_cond(t, query.down_rows) for t in (text_cond, text_uncond))
    make = _make_condition_dict(sd_model, text_uncond)

    # (text, first row, end row) groups evaluated with one call each
    if skipped:
        groups = [(text_cond, 0, n_cond)]
    elif _tokens(text_cond) == _tokens(text_uncond):
        texts = [text_cond, text_uncond] + ([text_uncond] if is_edit else [])
        groups = [(_cat_conds(texts), 0, n_total)]
    else:
        groups = [(text_cond, 0, n_cond), (text_uncond, n_cond, n_cond + n_images)]
        if is_edit:
            groups.append((text_uncond, n_cond + n_images, n_total))

    chunk = low_rows(n_images) if not getattr(shared.opts, "batch_cond_uncond", True) else None
    pieces = []
    frames = animatediff.frames_of_call(ad_run, query.low_frames) if ad_run is not None else nullcontext()
    # beside other extensions: ControlNet hints at the low-res size, Deep Shrink out; refuses (raises) the rest;
    # AnimateDiff: told the low-res call's frame count; everything restored after
    frame_rows = (
        None
        if ad_run is None
        else a1111_extensions.FrameRows(ad_run.frames, query.down_rows, query.low_frames)
    )
    with (
        a1111_extensions.low_res_call(
            denoiser.p, sd_model, denoiser, x_in.shape[-2:], query.x.shape[-2:], frame_rows
        ),
        frames,
    ):
        for text, a, b in ((t, low_rows(a), low_rows(b)) for t, a, b in groups):
            step = chunk or (b - a)
            for s in range(a, b, step):
                e = min(s + step, b)
                cond = make(_slice_cond(text, s - a, e - a), image_low[s:e])
                pieces.append(_call_inner(inner, query.x[s:e], level[s:e], cond))
    pred_low = torch.cat(pieces)
    if isinstance(convention, DiscreteVP) and getattr(sd_model, "parameterization", "eps") == "v":
        # CompVisTimestepsVDenoiser converted v -> eps at int(tau): redo it at the query's fractional tau
        pred_low = eps_at_fractional_t(pred_low, query.x, level, sd_model.alphas_cumprod, convention.table)

    guided_rows = query.apply(x_out[:n_eval], pred_low)
    result = x_out.clone()
    result[:n_eval] = guided_rows.to(x_out.dtype)
    if skipped:
        result[n_cond:] = result[torch.as_tensor(first_rows, dtype=torch.long, device=x_out.device)]
    if bool(torch.isfinite(x_out).all()) and not bool(torch.isfinite(result).all()):
        raise FloatingPointError("the guided prediction is not finite")
    return result
