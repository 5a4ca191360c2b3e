"""Stand-in for modules/sd_samplers_lcm.py (v1.10.1): the LCM sampler.

LCMCompVisDenoiser is a DiscreteEpsDDPMDenoiser over the 50 LCM timesteps (every 20th of 1000, ending at 999);
sigma -> t is the nearest of those (in log sigma) mapped back to the 1000-step axis; the output is the
consistency function c_skip * x + c_out * x0 with scaled timestep 10 t and sigma_data 0.5. CFGDenoiserLCM is a
plain CFGDenoiser whose inner_model is that denoiser (sigma in, x0-like out). sample_lcm: x0 prediction, then
fresh noise at the next sigma.
"""
import torch
from k_diffusion.external import DiscreteEpsDDPMDenoiser

from modules import sd_samplers_cfg_denoiser, sd_samplers_common, sd_samplers_kdiffusion, shared


class LCMCompVisDenoiser(DiscreteEpsDDPMDenoiser):
    def __init__(self, model):
        total, lcm_steps = 1000, 50
        self.skip_steps = total // lcm_steps
        picked = model.alphas_cumprod[torch.arange(self.skip_steps - 1, total, self.skip_steps)]
        super().__init__(model, picked.to(torch.float32), quantize=None)

    def sigma_to_t(self, sigma, quantize=None):
        nearest = (sigma.log() - self.log_sigmas[:, None]).abs().argmin(dim=0).view(sigma.shape)
        return nearest * self.skip_steps + (self.skip_steps - 1)

    def get_eps(self, *args, **kwargs):
        return self.inner_model.apply_model(*args, **kwargs)

    def forward(self, input, sigma, **kwargs):
        sigma_b = sigma.reshape(-1, *([1] * (input.ndim - 1)))
        c_out, c_in = -sigma_b, 1 / (sigma_b**2 + 1) ** 0.5
        x0 = input + self.get_eps(input * c_in, self.sigma_to_t(sigma), **kwargs) * c_out
        scaled_t = (self.sigma_to_t(sigma) * 10.0).reshape(sigma_b.shape).to(input.dtype)
        c_skip = 0.25 / (scaled_t**2 + 0.25)
        c_scale = scaled_t / (scaled_t**2 + 0.25) ** 0.5
        return c_scale * x0 + c_skip * input


def sample_lcm(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    extra_args = extra_args or {}
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        x = denoised
        if sigmas[i + 1] > 0:
            x = x + sigmas[i + 1] * torch.randn_like(x)
    return x


class CFGDenoiserLCM(sd_samplers_cfg_denoiser.CFGDenoiser):
    @property
    def inner_model(self):
        if self.model_wrap is None:
            self.model_wrap = LCMCompVisDenoiser(shared.sd_model)
        return self.model_wrap


class LCMSampler(sd_samplers_kdiffusion.KDiffusionSampler):
    def __init__(self, funcname, sd_model, options=None):
        super().__init__(funcname, sd_model, options)
        self.model_wrap_cfg = CFGDenoiserLCM(self)
        self.model_wrap = self.model_wrap_cfg.inner_model


samplers_data_lcm = [
    sd_samplers_common.SamplerData("LCM", lambda model: LCMSampler(sample_lcm, model), ["k_lcm"], {})
]
