# Stand-in for ComfyUI-AnimateDiff-Evolved animatediff/sampling.py (d8d163c); see ../README.md.
# Test code: the sampling run's state in transformer_options["ADGS"], ad_params, and a motion module that
# groups the batch rows by the video length it was told (stateful, as ADE's set_video_length).
import math

import comfy.samplers


class MotionModule:
    """Runs after the diffusion model: every frame of a video moves halfway to its video's frame mean, the
    videos being consecutive runs of `video_length` rows ("(b f)")."""

    def __init__(self):
        self.video_length = 16
        self.calls = []

    def set_video_length(self, video_length, full_length):
        self.video_length = video_length

    def __call__(self, out):
        self.calls.append(tuple(out.shape))
        f = self.video_length
        grouped = out.reshape(out.shape[0] // f, f, *out.shape[1:])
        return (0.5 * (grouped + grouped.mean(dim=1, keepdim=True))).reshape(out.shape)


def inject(model, motion_module):
    """The motion module inside the model's forward (ADE injects it into the UNet's blocks)."""
    inner = model.diffusion_model.forward

    def forward(*args, **kwargs):
        return motion_module(inner(*args, **kwargs))

    model.diffusion_model.forward = forward


class AnimateDiffGlobalState:
    def __init__(self, full_length, context_length=None):
        self.full_length = full_length
        self.context_length = context_length
        self.current_step = 0

    def create_exposed_params(self):
        return {"full_length": self.full_length, "context_length": self.context_length, "sub_idxs": None}


def outer_sample(model_options, latents, motion_module):
    """outer_sample_wrapper's setup: the run's model_options (a clone with ADGS), video length = batch size."""
    options = {**model_options, "transformer_options": dict(model_options.get("transformer_options") or {})}
    ADGS = AnimateDiffGlobalState(full_length=latents.size(0))
    options["transformer_options"]["ADGS"] = ADGS
    motion_module.set_video_length(ADGS.full_length, ADGS.full_length)
    return options


def evolved_sampling_function(model, x, timestep, uncond, cond, cond_scale, model_options=None, seed=None):
    ADGS = model_options["transformer_options"]["ADGS"]
    model_options = model_options.copy()
    model_options["transformer_options"] = model_options["transformer_options"].copy()
    model_options["transformer_options"]["ad_params"] = ADGS.create_exposed_params()
    uncond_ = uncond
    if math.isclose(cond_scale, 1.0) and model_options.get("disable_cfg1_optimization", False) is False:
        uncond_ = None
    cond_pred, uncond_pred = comfy.samplers.calc_cond_batch(
        model, [cond, uncond_], x, timestep, model_options
    )
    return comfy.samplers.cfg_function(
        model, cond_pred, uncond_pred, cond_scale, x, timestep, model_options, cond, uncond
    )
