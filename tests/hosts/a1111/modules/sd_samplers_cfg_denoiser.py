"""Stand-in for modules/sd_samplers_cfg_denoiser.py (v1.10.1 @ 82a973c0): CFGDenoiser.forward.

Kept, in the real order: multicond reconstruction (AND rows), the condition dict per conditioning_key
(crossattn-adm: c_crossattn + c_adm with zero image_uncond; dict conds (SDXL): {**cond, c_concat};
otherwise c_crossattn + c_concat), the row layout [cond rows (AND-expanded)..., B uncond rows] or the edit
model's three chunks, on_cfg_denoiser with read-back of x/image_cond/sigma/text_cond/text_uncond, skipping
uncond (skip early CFG / NGMS), the two padding options, the batched or chunked inner_model calls (separate
cond / uncond calls when token lengths differ), fake uncond rows, on_cfg_denoised (x_out changed in place
counts, nothing is read back), combine_denoised / combine_denoised_for_edit_model with
cond_scale_miltiplier, on_cfg_after_cfg with read-back, self.step += 1.
Left out: refiner switch, mask blending, live previews.
"""
import torch

from modules import prompt_parser, shared
from modules.script_callbacks import (
    AfterCFGCallbackParams,
    CFGDenoisedParams,
    CFGDenoiserParams,
    cfg_after_cfg_callback,
    cfg_denoised_callback,
    cfg_denoiser_callback,
)
from modules.shared import opts, state


def catenate_conds(conds):
    if not isinstance(conds[0], dict):
        return torch.cat(conds)
    return {key: torch.cat([c[key] for c in conds]) for key in conds[0].keys()}


def subscript_cond(cond, a, b):
    if not isinstance(cond, dict):
        return cond[a:b]
    return {key: vec[a:b] for key, vec in cond.items()}


def pad_cond(tensor, repeats, empty):
    if not isinstance(tensor, dict):
        return torch.cat([tensor, empty.repeat((tensor.shape[0], repeats, 1))], axis=1)
    tensor['crossattn'] = pad_cond(tensor['crossattn'], repeats, empty)
    return tensor


class CFGDenoiser(torch.nn.Module):
    def __init__(self, sampler):
        super().__init__()
        self.model_wrap = None
        self.mask = None
        self.nmask = None
        self.init_latent = None
        self.steps = None
        self.total_steps = None
        self.step = 0
        self.image_cfg_scale = None
        self.padded_cond_uncond = False
        self.padded_cond_uncond_v0 = False
        self.sampler = sampler
        self.p = None
        self.cond_scale_miltiplier = 1.0
        self.need_last_noise_uncond = False
        self.last_noise_uncond = None

    @property
    def inner_model(self):
        raise NotImplementedError()

    def combine_denoised(self, x_out, conds_list, uncond, cond_scale):
        denoised_uncond = x_out[-uncond.shape[0]:]
        denoised = torch.clone(denoised_uncond)
        for i, conds in enumerate(conds_list):
            for cond_index, weight in conds:
                denoised[i] += (x_out[cond_index] - denoised_uncond[i]) * (weight * cond_scale)
        return denoised

    def combine_denoised_for_edit_model(self, x_out, cond_scale):
        out_cond, out_img_cond, out_uncond = x_out.chunk(3)
        return out_uncond + cond_scale * (out_cond - out_img_cond) + self.image_cfg_scale * (out_img_cond - out_uncond)

    def get_pred_x0(self, x_in, x_out, sigma):
        return x_out

    def pad_cond_uncond(self, cond, uncond):
        empty = shared.sd_model.cond_stage_model_empty_prompt
        num_repeats = (cond.shape[1] - uncond.shape[1]) // empty.shape[1]
        if num_repeats < 0:
            cond = pad_cond(cond, -num_repeats, empty)
            self.padded_cond_uncond = True
        elif num_repeats > 0:
            uncond = pad_cond(uncond, num_repeats, empty)
            self.padded_cond_uncond = True
        return cond, uncond

    def pad_cond_uncond_v0(self, cond, uncond):
        is_dict_cond = isinstance(uncond, dict)
        uncond_vec = uncond['crossattn'] if is_dict_cond else uncond
        if uncond_vec.shape[1] < cond.shape[1]:
            last = uncond_vec[:, -1:]
            uncond_vec = torch.hstack([uncond_vec, last.repeat([1, cond.shape[1] - uncond_vec.shape[1], 1])])
            self.padded_cond_uncond_v0 = True
        elif uncond_vec.shape[1] > cond.shape[1]:
            uncond_vec = uncond_vec[:, :cond.shape[1]]
            self.padded_cond_uncond_v0 = True
        if is_dict_cond:
            uncond['crossattn'] = uncond_vec
        else:
            uncond = uncond_vec
        return cond, uncond

    def forward(self, x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond):
        is_edit_model = shared.sd_model.cond_stage_key == "edit" and self.image_cfg_scale is not None and self.image_cfg_scale != 1.0

        conds_list, tensor = prompt_parser.reconstruct_multicond_batch(cond, self.step)
        uncond = prompt_parser.reconstruct_cond_batch(uncond, self.step)

        batch_size = len(conds_list)
        repeats = [len(conds_list[i]) for i in range(batch_size)]

        if shared.sd_model.model.conditioning_key == "crossattn-adm":
            image_uncond = torch.zeros_like(image_cond)
            def make_condition_dict(c_crossattn, c_adm):
                return {"c_crossattn": [c_crossattn], "c_adm": c_adm}
        else:
            image_uncond = image_cond
            if isinstance(uncond, dict):
                def make_condition_dict(c_crossattn, c_concat):
                    return {**c_crossattn, "c_concat": [c_concat]}
            else:
                def make_condition_dict(c_crossattn, c_concat):
                    return {"c_crossattn": [c_crossattn], "c_concat": [c_concat]}

        index = torch.repeat_interleave(torch.arange(batch_size), torch.as_tensor(repeats))
        x_repeated = x.index_select(0, index)
        sigma_repeated = sigma.index_select(0, index)
        image_cond_repeated = image_cond.index_select(0, index)

        if not is_edit_model:
            x_in = torch.cat([x_repeated, x])
            sigma_in = torch.cat([sigma_repeated, sigma])
            image_cond_in = torch.cat([image_cond_repeated, image_uncond])
        else:
            x_in = torch.cat([x_repeated, x, x])
            sigma_in = torch.cat([sigma_repeated, sigma, sigma])
            image_cond_in = torch.cat([image_cond_repeated, image_uncond, torch.zeros_like(self.init_latent)])

        denoiser_params = CFGDenoiserParams(x_in, image_cond_in, sigma_in, state.sampling_step, state.sampling_steps, tensor, uncond, self)
        cfg_denoiser_callback(denoiser_params)
        x_in = denoiser_params.x
        image_cond_in = denoiser_params.image_cond
        sigma_in = denoiser_params.sigma
        tensor = denoiser_params.text_cond
        uncond = denoiser_params.text_uncond
        skip_uncond = False

        if shared.opts.skip_early_cond != 0. and self.step / self.total_steps <= shared.opts.skip_early_cond:
            skip_uncond = True
            self.p.extra_generation_params["Skip Early CFG"] = shared.opts.skip_early_cond
        elif (self.step % 2 or shared.opts.s_min_uncond_all) and s_min_uncond > 0 and sigma[0] < s_min_uncond and not is_edit_model:
            skip_uncond = True
            self.p.extra_generation_params["NGMS"] = s_min_uncond

        if skip_uncond:
            x_in = x_in[:-batch_size]
            sigma_in = sigma_in[:-batch_size]

        self.padded_cond_uncond = False
        self.padded_cond_uncond_v0 = False
        if shared.opts.pad_cond_uncond_v0 and _tokens(tensor) != _tokens(uncond):
            tensor, uncond = self.pad_cond_uncond_v0(tensor, uncond)
        elif shared.opts.pad_cond_uncond and _tokens(tensor) != _tokens(uncond):
            tensor, uncond = self.pad_cond_uncond(tensor, uncond)

        if _tokens(tensor) == _tokens(uncond) or skip_uncond:
            if is_edit_model:
                cond_in = catenate_conds([tensor, uncond, uncond])
            elif skip_uncond:
                cond_in = tensor
            else:
                cond_in = catenate_conds([tensor, uncond])

            if shared.opts.batch_cond_uncond:
                x_out = self.inner_model(x_in, sigma_in, cond=make_condition_dict(cond_in, image_cond_in))
            else:
                x_out = torch.zeros_like(x_in)
                for a in range(0, x_out.shape[0], batch_size):
                    b = a + batch_size
                    x_out[a:b] = self.inner_model(x_in[a:b], sigma_in[a:b], cond=make_condition_dict(subscript_cond(cond_in, a, b), image_cond_in[a:b]))
        else:
            x_out = torch.zeros_like(x_in)
            chunk = batch_size * 2 if shared.opts.batch_cond_uncond else batch_size
            n_cond = _rows(tensor)
            for a in range(0, n_cond, chunk):
                b = min(a + chunk, n_cond)
                if not is_edit_model:
                    c_crossattn = subscript_cond(tensor, a, b)
                else:
                    c_crossattn = torch.cat([tensor[a:b], uncond], dim=0)
                x_out[a:b] = self.inner_model(x_in[a:b], sigma_in[a:b], cond=make_condition_dict(c_crossattn, image_cond_in[a:b]))
            if not skip_uncond:
                n_unc = _rows(uncond)
                x_out[-n_unc:] = self.inner_model(x_in[-n_unc:], sigma_in[-n_unc:], cond=make_condition_dict(uncond, image_cond_in[-n_unc:]))

        denoised_image_indexes = torch.as_tensor([c[0][0] for c in conds_list], dtype=torch.long)
        if skip_uncond:
            fake_uncond = x_out.index_select(0, denoised_image_indexes)
            x_out = torch.cat([x_out, fake_uncond])

        denoised_params = CFGDenoisedParams(x_out, state.sampling_step, state.sampling_steps, self.inner_model)
        cfg_denoised_callback(denoised_params)

        if self.need_last_noise_uncond:
            self.last_noise_uncond = torch.clone(x_out[-_rows(uncond):])

        uncond_rows = torch.empty(_rows(uncond))
        if is_edit_model:
            denoised = self.combine_denoised_for_edit_model(x_out, cond_scale * self.cond_scale_miltiplier)
        elif skip_uncond:
            denoised = self.combine_denoised(x_out, conds_list, uncond_rows, 1.0)
        else:
            denoised = self.combine_denoised(x_out, conds_list, uncond_rows, cond_scale * self.cond_scale_miltiplier)

        self.sampler.last_latent = self.get_pred_x0(x_in.index_select(0, denoised_image_indexes), x_out.index_select(0, denoised_image_indexes), sigma)

        after_params = AfterCFGCallbackParams(denoised, state.sampling_step, state.sampling_steps)
        cfg_after_cfg_callback(after_params)
        denoised = after_params.x

        self.step += 1
        return denoised


def _tokens(c):
    return (c['crossattn'] if isinstance(c, dict) else c).shape[1]


def _rows(c):
    return (c['crossattn'] if isinstance(c, dict) else c).shape[0]
