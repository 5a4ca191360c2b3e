# Stand-in for lllyasviel/stable-diffusion-webui-forge backend/sampling/sampling_function.py @ dfdcbab6:
#  * calc_cond_uncond_batch(model, cond, uncond, x_in, timestep, model_options) -> (out_cond, out_uncond):
#    x0 predictions; entries weighted by 'strength' and averaged (cond) ; uncond=None -> zeros; one batched
#    apply_model call per group; does NOT run pre/post-CFG functions.
#  * sampling_function_inner(...): the CFG-1 optimisation (uncond skipped when cond_scale ~ 1 unless
#    model_options["disable_cfg1_optimization"]), the CFG combination with the AND-strength sum, and the
#    post-CFG loop with upstream's args keys: denoised, cond, uncond, model, uncond_denoised, cond_denoised,
#    sigma, model_options, input (no cond_scale).
#  * sampling_function(self, denoiser_params, cond_scale, cond_composition): compiles A1111 conds, attaches
#    an image_cond of x's size as model_conds['c_concat'], runs model_options['conditioning_modifiers'] (each
#    gets and returns model, x, timestep, uncond, cond, cond_scale, model_options, seed) and then
#    sampling_function_inner with the cond_scale the caller passed (Forge's CFGDenoiser passes 1 on
#    skip-early-CFG / NGMS steps, modules/sd_samplers_cfg_denoiser.py).
# ControlNet as upstream (255-266): the first entry's 'control' (the patcher's linked list) gets the shared
# transformer_options and is called as control.get_control(input_x, timestep, cond copy, n entries); its
# result goes to apply_model as `control`.
# Test code, simplified (no area/mask blending, no memory management).
import math

import torch

from backend.sampling.condition import Condition, compile_conditions, compile_weighted_conditions


def calc_cond_uncond_batch(model, cond, uncond, x_in, timestep, model_options):
    entries = [(c, 0) for c in cond] + ([(u, 1) for u in uncond] if uncond is not None else [])
    outs = [torch.zeros_like(x_in), torch.zeros_like(x_in)]
    counts = [torch.full_like(x_in, 1e-37), torch.full_like(x_in, 1e-37)]
    if not entries:
        return outs[0], outs[1]
    batch = x_in.shape[0]
    conditioning = []
    for entry, _ in entries:
        conditioning.append({k: v.process_cond(batch_size=batch, device=x_in.device) for k, v in entry["model_conds"].items()})
    keys = conditioning[0].keys()
    c = {k: conditioning[0][k].concat([d[k] for d in conditioning[1:]]) for k in keys}
    transformer_options = dict(model_options.get("transformer_options", {}))
    transformer_options["cond_or_uncond"] = [kind for _, kind in entries]
    transformer_options["sigmas"] = timestep
    c["transformer_options"] = transformer_options
    n = len(entries)
    x_cat = torch.cat([x_in] * n)
    t_cat = torch.cat([timestep] * n)
    control = entries[0][0].get("control")
    if control is not None:
        node = control
        while node is not None:
            node.transformer_options = transformer_options
            node = node.previous_controlnet
        c["control"] = control.get_control(x_cat, t_cat, dict(c), n)
    if "model_function_wrapper" in model_options:
        output = model_options["model_function_wrapper"](model.apply_model, {"input": x_cat, "timestep": t_cat, "c": c, "cond_or_uncond": transformer_options["cond_or_uncond"]})
    else:
        output = model.apply_model(x_cat, t_cat, **c)
    for (entry, kind), out in zip(entries, output.chunk(n)):
        strength = entry.get("strength", 1.0)
        outs[kind] += out * strength
        counts[kind] += strength
    return outs[0] / counts[0], outs[1] / counts[1]


def sampling_function_inner(model, x, timestep, uncond, cond, cond_scale, model_options={}, seed=None, return_full=False):
    edit_strength = sum(item.get("strength", 1) for item in cond)
    if math.isclose(cond_scale, 1.0) and not model_options.get("disable_cfg1_optimization", False):
        uncond_ = None
    else:
        uncond_ = uncond
    cond_pred, uncond_pred = calc_cond_uncond_batch(model, cond, uncond_, x, timestep, model_options)
    if "sampler_cfg_function" in model_options:
        args = {"cond": x - cond_pred, "uncond": x - uncond_pred, "cond_scale": cond_scale, "timestep": timestep, "input": x,
                "sigma": timestep, "cond_denoised": cond_pred, "uncond_denoised": uncond_pred, "model": model, "model_options": model_options}
        cfg_result = x - model_options["sampler_cfg_function"](args)
    elif not math.isclose(edit_strength, 1.0):
        cfg_result = uncond_pred + (cond_pred - uncond_pred) * cond_scale * edit_strength
    else:
        cfg_result = uncond_pred + (cond_pred - uncond_pred) * cond_scale
    for fn in model_options.get("sampler_post_cfg_function", []):
        args = {"denoised": cfg_result, "cond": cond, "uncond": uncond, "model": model, "uncond_denoised": uncond_pred,
                "cond_denoised": cond_pred, "sigma": timestep, "model_options": model_options, "input": x}
        cfg_result = fn(args)
    if return_full:
        return cfg_result, cond_pred, uncond_pred
    return cfg_result


def sampling_function(self, denoiser_params, cond_scale, cond_composition):
    unet_patcher = self.inner_model.inner_model.forge_objects.unet
    model = unet_patcher.model
    x = denoiser_params.x
    timestep = denoiser_params.sigma
    uncond = compile_conditions(denoiser_params.text_uncond)
    cond = compile_weighted_conditions(denoiser_params.text_cond, cond_composition)
    image_cond = unet_patcher.extra_concat_condition if unet_patcher.extra_concat_condition is not None else denoiser_params.image_cond
    if isinstance(image_cond, torch.Tensor) and image_cond.shape[0] == x.shape[0] and image_cond.shape[2:] == x.shape[2:]:
        for entry in (uncond or []) + cond:
            entry["model_conds"]["c_concat"] = Condition(image_cond)
    model_options, seed = unet_patcher.model_options, None
    for modifier in model_options.get("conditioning_modifiers", []):
        model, x, timestep, uncond, cond, cond_scale, model_options, seed = modifier(
            model, x, timestep, uncond, cond, cond_scale, model_options, seed)
    return sampling_function_inner(model, x, timestep, uncond, cond, cond_scale, model_options, seed, return_full=True)
