"""Videos on ComfyUI (a private helper of adapters/comfyui.py): which video samplers the node refuses, and why.

Read from the real sources (notes/issue13_comfyui.md has the details and line numbers):

* Kosinkadink/ComfyUI-AnimateDiff-Evolved (ADE, d8d163c): its OUTER_SAMPLE wrapper (`animatediff/sampling.py`
  `outer_sample_wrapper`, 432-607) puts its global state in the sampling run's
  `model_options["transformer_options"]["ADGS"]` (448), takes the video length from the latent batch
  (`params.full_length = latents.size(0)`, 456) and tells the motion modules that length (or the context
  length) as STATE (`helper.set_video_length`, 307 / 315); it replaces comfy.samplers.sampling_function by
  `evolved_sampling_function` (361, 609-642), which adds `transformer_options["ad_params"]` (full_length,
  context_length, sub_idxs; 176-184) and passes that model_options to cfg_function, so our post-CFG function
  sees both keys. The motion module groups rows "(b f) d c -> (b d) f c" with f = that stored length
  (`motion_module_ad.py` 1498), its effect / scale masks are prepared for `full_length` frames of the hidden
  states' size (926-932, 1123-1138); sliding context windows are a CALC_COND_BATCH wrapper keyed on ADGS
  (`sliding_calc_cond_batch`, 757), stepping by `ADGS.current_step`, and the GroupNorm hack divides the batch
  by full_length / context_length (195-215). Custom CFG (a per-frame cond_scale tensor), keyframes, prompt
  scheduling and image injection change the call further. The low-res call of upsample guidance would run
  inside that state (a different spatial size, possibly another frame count, and the context schedule of the
  sampler's own step); nothing here can prove that correct, so an ADE run is refused: one warning, the video
  is made with ADE's own predictions.
* ComfyUI's own context windows (v0.8.0 `comfy/context_windows.py`, the "Context Windows" nodes put an
  `IndexListContextHandler` in `model_options["context_handler"]`, comfy_extras/nodes_context_windows.py:43):
  `comfy.samplers.calc_cond_batch` (samplers.py:203-207) hands the call to the handler, whose `execute`
  (context_windows.py:226) looks the call's sigma up in `transformer_options["sample_sigmas"]` (`set_step`,
  213-218) and raises when it is not one of the sampler's sigmas, as the low-res level never is: refused the
  same way, with a message that names it instead of that exception.
"""

from __future__ import annotations

__all__ = ["video_refusal", "ANIMATEDIFF_EVOLVED_KEYS"]

# transformer_options keys that AnimateDiff-Evolved sets for its sampling runs (ADGS: outer_sample_wrapper;
# ad_params: evolved_sampling_function, documented by ADE as a public surface for other extensions).
ANIMATEDIFF_EVOLVED_KEYS = ("ADGS", "ad_params")


def video_refusal(args: dict) -> str | None:
    """Why this post-CFG call (ComfyUI's args dict) cannot be guided, or None.

    Checked only when a step would be guided (GuidanceContext.refusal): the generation then finishes with the
    host's own predictions and one console warning."""
    options = args.get("model_options") or {}
    transformer = options.get("transformer_options") or {}
    if any(key in transformer for key in ANIMATEDIFF_EVOLVED_KEYS):
        return (
            "AnimateDiff-Evolved is sampling this model; its motion modules and context windows keep the "
            "frame count and step of the sampler's own call, which the low-res call cannot be shown to follow "
            "(upsample guidance does not support AnimateDiff-Evolved; the video is made without it)"
        )
    if options.get("context_handler") is not None:
        return (
            "ComfyUI's context windows (Context Windows node) are active; they split the model call at the "
            "sampler's own sigmas, which the low-res call does not use (upsample guidance does not support "
            "context windows; the video is made without it)"
        )
    return None
