# Stand-in for comfy/samplers.py (ComfyUI v0.8.0):
#  * get_area_and_mult (30-113): time window (timestep_start / timestep_end against sigma), area narrowing,
#    mask (with mask_strength), strength, the 8-px area feathering, model_conds.process_cond(area=...);
#  * calc_cond_batch (203) / _calc_cond_batch (216-346): per condition list, out = sum(output * mult) /
#    sum(mult) over its conditions (1e-37 start count: an empty list gives zeros), areas accumulated in place;
#  * cfg_function (353-366): sampler_cfg_function args, plain uncond + (cond - uncond) * cond_scale (no
#    AND-strength factor), post-CFG args {denoised, cond, uncond, cond_scale, model, uncond_denoised,
#    cond_denoised, sigma, model_options, input};
#  * sampling_function (370-388): the CFG-1 optimisation (uncond_ None), sampler_calc_cond_batch_function,
#    sampler_pre_cfg_function (args conds, conds_out, cond_scale, timestep, input, sigma, model, model_options).
# Test code, simplified: no hooks, default conds, ControlNet, GLIGEN, wrappers or batching heuristics (each
# condition is its own model call, which gives the same numbers for this deterministic model).
import math

import torch


def get_area_and_mult(conds, x_in, timestep_in):
    dims = tuple(x_in.shape[2:])
    if "timestep_start" in conds and timestep_in[0] > conds["timestep_start"]:
        return None
    if "timestep_end" in conds and timestep_in[0] < conds["timestep_end"]:
        return None
    area = list(conds["area"]) if "area" in conds else None
    strength = conds.get("strength", 1.0)
    input_x = x_in
    if area is not None:
        for i in range(len(dims)):
            area[i] = min(input_x.shape[i + 2] - area[len(dims) + i], area[i])
            input_x = input_x.narrow(i + 2, area[len(dims) + i], area[i])
    if "mask" in conds:
        mask = conds["mask"][: input_x.shape[0]]
        if area is not None:
            for i in range(len(dims)):
                mask = mask.narrow(i + 1, area[len(dims) + i], area[i])
        mask = mask * conds.get("mask_strength", 1.0)
        mask = mask.unsqueeze(1).repeat((input_x.shape[0] // mask.shape[0], input_x.shape[1]) + (1,) * (mask.ndim - 1))
    else:
        mask = torch.ones_like(input_x)
    mult = mask * strength
    if "mask" not in conds and area is not None:
        fuzz = 8
        for i in range(len(dims)):
            rr = min(fuzz, mult.shape[2 + i] // 4)
            if area[len(dims) + i] != 0:
                for t in range(rr):
                    m = mult.narrow(i + 2, t, 1)
                    m *= (1.0 / rr) * (t + 1)
            if (area[i] + area[len(dims) + i]) < x_in.shape[i + 2]:
                for t in range(rr):
                    m = mult.narrow(i + 2, area[i] - 1 - t, 1)
                    m *= (1.0 / rr) * (t + 1)
    conditioning = {k: v.process_cond(batch_size=x_in.shape[0], area=area) for k, v in conds["model_conds"].items()}
    return input_x, mult, conditioning, area


def calc_cond_batch(model, conds, x_in, timestep, model_options):
    out_conds, out_counts = [], []
    for cond in conds:
        out_c = torch.zeros_like(x_in)
        out_cts = torch.ones_like(x_in) * 1e-37
        for entry in cond or []:
            p = get_area_and_mult(entry, x_in, timestep)
            if p is None:
                continue
            input_x, mult, conditioning, area = p
            c = {k: v.cond for k, v in conditioning.items()}
            transformer_options = dict(model_options.get("transformer_options", {}))
            transformer_options["sigmas"] = timestep
            c["transformer_options"] = transformer_options
            output = model.apply_model(input_x, timestep, **c)
            o_c, o_cts = out_c, out_cts
            if area is not None:
                dims = len(area) // 2
                for i in range(dims):
                    o_c = o_c.narrow(i + 2, area[i + dims], area[i])
                    o_cts = o_cts.narrow(i + 2, area[i + dims], area[i])
            o_c += output * mult
            o_cts += mult
        out_conds.append(out_c / out_cts)
    return out_conds


def cfg_function(model, cond_pred, uncond_pred, cond_scale, x, timestep, model_options={}, cond=None, uncond=None):
    if "sampler_cfg_function" in model_options:
        args = {"cond": x - cond_pred, "uncond": x - uncond_pred, "cond_scale": cond_scale, "timestep": timestep, "input": x,
                "sigma": timestep, "cond_denoised": cond_pred, "uncond_denoised": uncond_pred, "model": model,
                "model_options": model_options, "input_cond": cond, "input_uncond": uncond}
        cfg_result = x - model_options["sampler_cfg_function"](args)
    else:
        cfg_result = uncond_pred + (cond_pred - uncond_pred) * cond_scale
    for fn in model_options.get("sampler_post_cfg_function", []):
        args = {"denoised": cfg_result, "cond": cond, "uncond": uncond, "cond_scale": cond_scale, "model": model,
                "uncond_denoised": uncond_pred, "cond_denoised": cond_pred, "sigma": timestep,
                "model_options": model_options, "input": x}
        cfg_result = fn(args)
    return cfg_result


def sampling_function(model, x, timestep, uncond, cond, cond_scale, model_options={}, seed=None):
    if math.isclose(cond_scale, 1.0) and model_options.get("disable_cfg1_optimization", False) is False:
        uncond_ = None
    else:
        uncond_ = uncond
    conds = [cond, uncond_]
    if "sampler_calc_cond_batch_function" in model_options:
        args = {"conds": conds, "input": x, "sigma": timestep, "model": model, "model_options": model_options}
        out = model_options["sampler_calc_cond_batch_function"](args)
    else:
        out = calc_cond_batch(model, conds, x, timestep, model_options)
    for fn in model_options.get("sampler_pre_cfg_function", []):
        args = {"conds": conds, "conds_out": out, "cond_scale": cond_scale, "timestep": timestep,
                "input": x, "sigma": timestep, "model": model, "model_options": model_options}
        out = fn(args)
    return cfg_function(model, out[0], out[1], cond_scale, x, timestep, model_options=model_options, cond=cond, uncond=uncond_)
