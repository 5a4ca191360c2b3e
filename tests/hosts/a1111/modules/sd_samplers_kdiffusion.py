"""Stand-in for modules/sd_samplers_kdiffusion.py (v1.10.1): CFGDenoiserKDiffusion.inner_model
(CompVisVDenoiser for v models, else CompVisDenoiser, built lazily from shared.sd_model), KDiffusionSampler
with sample() (x scaled by sigmas[0], extra args cond/image_cond/uncond/cond_scale/s_min_uncond) and
sample_img2img() (noise added at sigmas[steps - t_enc - 1], launch_sampling(t_enc + 1)). Karras schedule."""
import k_diffusion
import torch

from modules import sd_samplers_cfg_denoiser, sd_samplers_common, shared

samplers_k_diffusion = [
    ('Euler a', 'sample_euler_ancestral', ['k_euler_a'], {"uses_ensd": True}),
    ('Euler', 'sample_euler', ['k_euler'], {}),
    ('Heun', 'sample_heun', ['k_heun'], {"second_order": True}),
    ('DPM++ 2M', 'sample_dpmpp_2m', ['k_dpmpp_2m'], {"scheduler": "karras"}),
]

samplers_data_k_diffusion = [
    sd_samplers_common.SamplerData(label, lambda model, funcname=funcname: KDiffusionSampler(funcname, model), aliases, options)
    for label, funcname, aliases, options in samplers_k_diffusion
]


class CFGDenoiserKDiffusion(sd_samplers_cfg_denoiser.CFGDenoiser):
    @property
    def inner_model(self):
        if self.model_wrap is None:
            denoiser_constructor = getattr(shared.sd_model, 'create_denoiser', None)
            if denoiser_constructor is not None:
                self.model_wrap = denoiser_constructor()
            else:
                denoiser = k_diffusion.external.CompVisVDenoiser if shared.sd_model.parameterization == "v" else k_diffusion.external.CompVisDenoiser
                self.model_wrap = denoiser(shared.sd_model, quantize=shared.opts.enable_quantization)
        return self.model_wrap


class KDiffusionSampler(sd_samplers_common.Sampler):
    def __init__(self, funcname, sd_model, options=None):
        super().__init__(funcname)
        self.options = options or {}
        self.func = funcname if callable(funcname) else getattr(k_diffusion.sampling, funcname)
        self.model_wrap_cfg = CFGDenoiserKDiffusion(self)
        self.model_wrap = self.model_wrap_cfg.inner_model

    def get_sigmas(self, p, steps):
        sigma_min, sigma_max = self.model_wrap.sigmas[0].item(), self.model_wrap.sigmas[-1].item()
        if self.config.options.get("scheduler") == "karras" or p.sampler_name == "Euler a":
            return k_diffusion.sampling.get_sigmas_karras(steps, sigma_min, sigma_max)
        t = torch.linspace(len(self.model_wrap.sigmas) - 1, 0, steps)
        return k_diffusion.sampling.append_zero(self.model_wrap.t_to_sigma(t))

    def sample_img2img(self, p, x, noise, conditioning, unconditional_conditioning, steps=None, image_conditioning=None):
        steps, t_enc = sd_samplers_common.setup_img2img_steps(p, steps)
        sigmas = self.get_sigmas(p, steps)
        sigma_sched = sigmas[steps - t_enc - 1:]
        xi = x + noise * sigma_sched[0]
        self.initialize(p)
        self.model_wrap_cfg.init_latent = x
        self.last_latent = x
        self.sampler_extra_args = {
            'cond': conditioning, 'image_cond': image_conditioning, 'uncond': unconditional_conditioning,
            'cond_scale': p.cfg_scale, 's_min_uncond': self.s_min_uncond,
        }
        return self.launch_sampling(t_enc + 1, lambda: self.func(self.model_wrap_cfg, xi, sigma_sched, extra_args=self.sampler_extra_args, disable=False, callback=self.callback_state))

    def sample(self, p, x, conditioning, unconditional_conditioning, steps=None, image_conditioning=None):
        steps = steps or p.steps
        sigmas = self.get_sigmas(p, steps)
        x = x * sigmas[0]
        self.initialize(p)
        self.last_latent = x
        self.sampler_extra_args = {
            'cond': conditioning, 'image_cond': image_conditioning, 'uncond': unconditional_conditioning,
            'cond_scale': p.cfg_scale, 's_min_uncond': self.s_min_uncond,
        }
        return self.launch_sampling(steps, lambda: self.func(self.model_wrap_cfg, x, sigmas, extra_args=self.sampler_extra_args, disable=False, callback=self.callback_state))
