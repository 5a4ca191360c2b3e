# Stand-in for ldm_patched/modules/samplers.py:
#  * old Forge @ bfee03d8: calc_cond_uncond_batch (156) and sampling_function (278-305) — CFG-1 optimisation,
#    AND-strength CFG, post-CFG args {denoised, cond, uncond, model, uncond_denoised, cond_denoised, sigma,
#    model_options, input}.
#  * reForge @ 3b56b268 (STYLE = "reforge"): cfg_function (372-409) — post-CFG args also carry cond_scale and
#    uncond is the skipped list (None) under the CFG-1 optimisation; calc_cond_uncond_batch is a wrapper.
#  * ControlNet as upstream old Forge (get_area_and_mult 65, calc_cond_uncond_batch 245-252): the entries'
#    'control' gets the shared transformer_options and is called as control.get_control(input_x, timestep,
#    cond copy, n entries); its result goes to apply_model as `control`.
#  * model_options['model_function_wrapper'](model.apply_model, {input, timestep, c, cond_or_uncond}) when set
#    (upstream 255-258).
# Test code, simplified (no area/mask/hooks/memory management).
import math

import torch

STYLE = "old_forge"


def calc_cond_uncond_batch(model, cond, uncond, x_in, timestep, model_options):
    entries = [(c, 0) for c in cond] + ([(u, 1) for u in uncond] if uncond is not None else [])
    outs = [torch.zeros_like(x_in), torch.zeros_like(x_in)]
    counts = [torch.full_like(x_in, 1e-37), torch.full_like(x_in, 1e-37)]
    if not entries:
        return outs[0], outs[1]
    conditioning = [{k: v.process_cond(batch_size=x_in.shape[0], device=x_in.device) for k, v in e["model_conds"].items()} for e, _ in entries]
    c = {k: conditioning[0][k].concat([d[k] for d in conditioning[1:]]) for k in conditioning[0]}
    transformer_options = dict(model_options.get("transformer_options", {}))
    transformer_options["cond_or_uncond"] = [kind for _, kind in entries]
    c["transformer_options"] = transformer_options
    transformer_options["sigmas"] = timestep
    n = len(entries)
    control = entries[0][0].get("control")
    if control is not None:
        node = control
        while node is not None:
            node.transformer_options = transformer_options
            node = node.previous_controlnet
        c["control"] = control.get_control(torch.cat([x_in] * n), torch.cat([timestep] * n), dict(c), n)
    if "model_function_wrapper" in model_options:  # upstream 255-256 (AnimateDiff's context windows)
        info = {"input": torch.cat([x_in] * n), "timestep": torch.cat([timestep] * n), "c": c,
                "cond_or_uncond": [kind for _, kind in entries]}
        output = model_options["model_function_wrapper"](model.apply_model, info)
    else:
        output = model.apply_model(torch.cat([x_in] * n), torch.cat([timestep] * n), **c)
    for (entry, kind), out in zip(entries, output.chunk(n)):
        strength = entry.get("strength", 1.0)
        outs[kind] += out * strength
        counts[kind] += strength
    return outs[0] / counts[0], outs[1] / counts[1]


def sampling_function(model, x, timestep, uncond, cond, cond_scale, model_options={}, seed=None):
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
        if STYLE == "reforge":
            args["cond_scale"] = cond_scale
            args["uncond"] = uncond_
        cfg_result = fn(args)
    return cfg_result
