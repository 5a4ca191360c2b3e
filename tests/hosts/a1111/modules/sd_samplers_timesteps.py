"""Stand-in for modules/sd_samplers_timesteps.py + sd_samplers_timesteps_impl.ddim (v1.10.1).

CFGDenoiserTimesteps: the "sigma" argument is the integer-valued timestep t (float tensor), the inner model
returns eps (CompVisTimestepsDenoiser) or eps converted from v (CompVisTimestepsVDenoiser, alphas indexed with
t.to(int)). DDIM with eta 0 on timesteps arange(1, 1000, 1000 // steps); img2img/hires start at t_enc."""
import numpy as np
import torch

from modules import sd_samplers_common, shared
from modules.sd_samplers_cfg_denoiser import CFGDenoiser


class CompVisTimestepsDenoiser(torch.nn.Module):
    def __init__(self, model, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.inner_model = model

    def forward(self, input, timesteps, **kwargs):
        return self.inner_model.apply_model(input, timesteps, **kwargs)


class CompVisTimestepsVDenoiser(torch.nn.Module):
    def __init__(self, model, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.inner_model = model

    def predict_eps_from_z_and_v(self, x_t, t, v):
        ac = self.inner_model.alphas_cumprod
        return torch.sqrt(ac)[t.to(torch.int), None, None, None] * v + torch.sqrt(1 - ac)[t.to(torch.int), None, None, None] * x_t

    def forward(self, input, timesteps, **kwargs):
        model_output = self.inner_model.apply_model(input, timesteps, **kwargs)
        return self.predict_eps_from_z_and_v(input, timesteps, model_output)


class CFGDenoiserTimesteps(CFGDenoiser):
    def __init__(self, sampler):
        super().__init__(sampler)
        self.alphas = shared.sd_model.alphas_cumprod
        self.mask_before_denoising = True

    def get_pred_x0(self, x_in, x_out, sigma):
        ts = sigma.to(dtype=int)
        a_t = self.alphas[ts][:, None, None, None]
        return (x_in - (1 - a_t).sqrt() * x_out) / a_t.sqrt()

    @property
    def inner_model(self):
        if self.model_wrap is None:
            denoiser = CompVisTimestepsVDenoiser if shared.sd_model.parameterization == "v" else CompVisTimestepsDenoiser
            self.model_wrap = denoiser(shared.sd_model)
        return self.model_wrap


def ddim(model, x, timesteps, extra_args=None, callback=None, disable=None, eta=0.0):
    alphas_cumprod = model.inner_model.inner_model.alphas_cumprod
    timesteps = torch.as_tensor(timesteps)
    alphas = alphas_cumprod[timesteps]
    alphas_prev = alphas_cumprod[torch.nn.functional.pad(timesteps[:-1], pad=(1, 0))].to(torch.float64)
    s_in = x.new_ones((x.shape[0]))
    for i in range(len(timesteps) - 1):  # like the real loop: len(timesteps) - 1 model calls
        index = len(timesteps) - 1 - i
        e_t = model(x, timesteps[index].item() * s_in, **extra_args)
        a_t = alphas[index].item()
        a_prev = alphas_prev[index].item()
        pred_x0 = (x - (1 - a_t) ** 0.5 * e_t) / a_t ** 0.5
        x = a_prev ** 0.5 * pred_x0 + (1 - a_prev) ** 0.5 * e_t
        if callback is not None:
            callback({'x': x, 'i': i, 'sigma': 0, 'sigma_hat': 0, 'denoised': pred_x0})
    return x


samplers_data_timesteps = [
    sd_samplers_common.SamplerData('DDIM', lambda model: CompVisSampler('ddim', model), ['ddim'], {}),
]


class CompVisSampler(sd_samplers_common.Sampler):
    def __init__(self, funcname, sd_model):
        super().__init__(funcname)
        self.func = ddim
        self.model_wrap_cfg = CFGDenoiserTimesteps(self)
        self.model_wrap = self.model_wrap_cfg.inner_model

    def get_timesteps(self, p, steps):
        return np.arange(0, 1000, 1000 // steps) + 1

    def sample_img2img(self, p, x, noise, conditioning, unconditional_conditioning, steps=None, image_conditioning=None):
        steps, t_enc = sd_samplers_common.setup_img2img_steps(p, steps)
        timesteps = self.get_timesteps(p, steps)
        timesteps_sched = timesteps[:t_enc]
        alphas_cumprod = shared.sd_model.alphas_cumprod
        sqrt_alpha = torch.sqrt(alphas_cumprod[timesteps_sched[-1]])
        xi = x * sqrt_alpha + noise * torch.sqrt(1 - alphas_cumprod[timesteps_sched[-1]])
        self.initialize(p)
        self.model_wrap_cfg.init_latent = x
        self.last_latent = x
        self.sampler_extra_args = {
            'cond': conditioning, 'image_cond': image_conditioning, 'uncond': unconditional_conditioning,
            'cond_scale': p.cfg_scale, 's_min_uncond': self.s_min_uncond,
        }
        return self.launch_sampling(t_enc + 1, lambda: self.func(self.model_wrap_cfg, xi, timesteps_sched, extra_args=self.sampler_extra_args, disable=False, callback=self.callback_state))

    def sample(self, p, x, conditioning, unconditional_conditioning, steps=None, image_conditioning=None):
        steps = steps or p.steps
        timesteps = torch.as_tensor(self.get_timesteps(p, steps))
        self.initialize(p)
        self.last_latent = x
        self.sampler_extra_args = {
            'cond': conditioning, 'image_cond': image_conditioning, 'uncond': unconditional_conditioning,
            'cond_scale': p.cfg_scale, 's_min_uncond': self.s_min_uncond,
        }
        return self.launch_sampling(steps, lambda: self.func(self.model_wrap_cfg, x, timesteps, extra_args=self.sampler_extra_args, disable=False, callback=self.callback_state))
