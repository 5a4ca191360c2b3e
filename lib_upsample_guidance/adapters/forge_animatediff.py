"""sd-forge-animatediff on old Forge (a private helper of adapters/forge.py): the low-res call through it.

Which AnimateDiff runs on the Forge family (sources and the evidence: README "Video", notes issue13_forge):

* Forge main (2.x, `backend.*`): none. continue-revolution/sd-forge-animatediff (= the forge/master branch of
  sd-webui-animatediff, b20f751, 2.0.2-f) imports `modules_forge.unet_patcher` and `ldm_patched.*`, which
  Forge main removed: its scripts fail to load, so there is no AnimateDiff job to guide or refuse.
* old Forge (`ldm_patched`, up to the tag `previous`): sd-forge-animatediff b20f751 runs, and is guided here.
* reForge (main since 53f43166, 2024-07-14): the extension loads and patches the UNet, but reForge's UNet
  (`forward_timestep_embed`) no longer calls `block_inner_modifiers`, so the motion modules never run and
  the frames are sampled as separate images: refused with one warning (nothing a temporal plan could follow).

How it hooks the model (b20f751, file:line there):

* `scripts/animatediff_mm.py:54-130` `inject` (from the script's process_before_every_sampling): a clone of
  `forge_objects.unet` with `set_model_unet_function_wrapper(AnimateDiffInfV2V.mm_sd_forward)` (:123) and a
  block inner modifier `mm_block_modifier` (:75-89, :124) that runs the motion module after the last layer of
  input blocks 1, 2, 4, 5, 7, 8, 10, 11, before/after the output blocks and in the middle block.
* `scripts/animatediff_infv2v.py:103-154` `mm_sd_forward(apply_model, info)`: calc_cond_uncond_batch's
  batch (rows [uncond frames, cond frames] or one of them) in context windows of `ad_params.batch_size`
  out of `ad_params.video_length` frames (`uniform`, :32-77); every cond tensor / list / control with
  2 x video_length or video_length rows is sliced with the window.
* `motion_module.py:323-340`: the temporal attention groups rows "(b f) d c -> (b d) f c" with
  f = `ad_params.batch_size`.
* `scripts/animatediff_ui.py:147-157` `set_p`: the WebUI batch size is the number of frames.

So a guided step's low-res call is calc_cond_uncond_batch on the folded low-res video with the model's own
model_options: it goes through mm_sd_forward and the motion modules like the full call. With a temporal
factor the query has f = F / m_t frames and, for that call, `ad_params.video_length = f` and
`batch_size = min(context, f)` (webui.animatediff.frames_of_call, the same as on A1111).

Host modules are imported lazily inside functions.
"""

from __future__ import annotations

from contextlib import nullcontext
from functools import partial
from typing import Any

from ..comfy_family.postcfg import VideoJob
from ..webui import animatediff
from . import forge_extensions

__all__ = [
    "AD_FORWARD",
    "AD_BLOCK_MODIFIER",
    "has_animatediff",
    "unet_calls_block_inner_modifiers",
    "video_job",
    "forecast_job",
]

AD_FORWARD = "AnimateDiffInfV2V.mm_sd_forward"  # model_options["model_function_wrapper"]
AD_BLOCK_MODIFIER = "AnimateDiffMM.inject.<locals>.mm_block_modifier"  # transformer_options

REFORGE_REASON = (
    "AnimateDiff's motion modules do not run on this host (its UNet does not call block_inner_modifiers, "
    "as in reForge since 2024-07): the frames are separate images, so the video is not guided"
)


def has_animatediff(model_options: dict) -> bool:
    """True when sd-forge-animatediff's forward wrapper is on this model (its inject() ran)."""
    return forge_extensions.qualname(model_options.get("model_function_wrapper")) == AD_FORWARD


def unet_calls_block_inner_modifiers() -> bool:
    """Whether the host's UNet calls transformer_options["block_inner_modifiers"] (old Forge's
    ldm_patched openaimodel.forward_timestep_embed does; reForge's since 53f43166 does not)."""
    try:
        from ldm_patched.ldm.modules.diffusionmodules import openaimodel
    except ImportError:
        return False
    code = getattr(getattr(openaimodel, "forward_timestep_embed", None), "__code__", None)
    return code is not None and "block_inner_modifiers" in code.co_consts


def _motion_modules_on(model_options: dict) -> bool:
    modifiers = (model_options.get("transformer_options") or {}).get("block_inner_modifiers") or []
    return any(forge_extensions.qualname(f) == AD_BLOCK_MODIFIER for f in modifiers)


def video_job(args: dict, settings: Any, infotext: dict[str, str] | None) -> VideoJob | None:
    """The post-CFG call's video when sd-forge-animatediff runs on the model, else None (an image).

    settings.temporal_factor: None / "auto" (frames / context length when longer) or m_t >= 1; infotext: the
    generation's pending infotext entries, which get `UG temporal factor` and `UG frames` once guided.
    """
    model_options = args["model_options"]
    if not has_animatediff(model_options):
        return None
    setting = getattr(settings, "temporal_factor", None)
    run = animatediff.running_job()
    rows = int(args["input"].shape[0])
    refusal = None
    if run is None:
        refusal = "AnimateDiff's forward is on the model but its job parameters could not be read"
    elif not _motion_modules_on(model_options) or not unet_calls_block_inner_modifiers():
        refusal = REFORGE_REASON
    elif len(args.get("cond") or []) > 1 or len(args.get("uncond") or []) > 1:
        refusal = "AND prompts with AnimateDiff: its windows take the batch as [uncond frames, cond frames]"
    elif rows != run.frames:
        refusal = (
            f"AnimateDiff batch of {rows} rows for {run.frames} frames (its batch size is the frame count)"
        )
    if refusal is not None:
        return VideoJob(rows, 1.0, lambda _frames: nullcontext(), refusal=refusal)
    factor = animatediff.temporal_factor(run, setting)
    conds = list(args.get("cond") or []) + list(args.get("uncond") or [])
    if factor > 1.0 and forge_extensions.control_chain(conds):
        refusal = "ControlNet with AnimateDiff and a temporal factor above 1: its hints are per frame"

    def on_query(low_frames: int) -> None:
        if infotext is not None:
            infotext.update(animatediff.infotext_params(setting, run.frames, low_frames))

    return VideoJob(run.frames, factor, partial(animatediff.frames_of_call, run), on_query, refusal)


def forecast_job(settings: Any) -> tuple[animatediff.AnimateDiffRun, float] | None:
    """Before sampling (the infotext forecast): the AnimateDiff job and its temporal factor m_t when its
    motion modules will run on this host, else None (an image; or reForge's video, which video_job refuses).
    AnimateDiff's before_process has set its job parameters by then (b20f751 scripts/animatediff.py:51-54)."""
    run = animatediff.running_job()
    if run is None or not unet_calls_block_inner_modifiers():
        return None
    return run, animatediff.temporal_factor(run, getattr(settings, "temporal_factor", None))
