"""Stand-in for modules/processing.py (v1.10.1 @ 82a973c0), the parts around sampling.

Kept, in the real order: process_images applies override_settings, scripts.process(p) once per
generation, then per batch (n_iter): before_process_batch / process_batch hooks, setup_conds (AND prompts,
negative prompts), p.sample(...) — which (txt2img) creates a sampler, calls
process_before_every_sampling(p=, x=, noise=, c=, uc=) and samples; with hires fix sample_hr_pass sets
p.is_hr_pass, upscales the latent, creates a new sampler, calls before_hr and process_before_every_sampling
again and runs sample_img2img, then clears is_hr_pass — postprocess_batch, then the infotext per image from
p.extra_generation_params (list values indexed per image, callables called), postprocess. params.txt (what
"paste last generation" reads) is written for the first batch after process_batch and setup_conds, before
p.sample: here its text is kept in the module attribute `params_txt`.
image_conditioning: dummy zeros [B,5,1,1] for plain models, [B,5,h,w] (mask + masked latent) for inpainting
models, [B,4,h,w] for edit (ip2p) models, c_adm [B,ADM] for unCLIP. Images are returned as latents.
Left out: VAE, saving, extra networks, seeds beyond a per-image torch.Generator.
"""
import json

import torch

from modules import prompt_parser, sd_samplers, shared

params_txt = None


class Processed:
    def __init__(self, p, images, infotexts):
        self.images = images
        self.infotexts = infotexts
        self.extra_generation_params = p.extra_generation_params


class StableDiffusionProcessing:
    def __init__(self, prompt="", negative_prompt="", seed=1, width=512, height=512, steps=4, cfg_scale=7.0,
                 sampler_name="Euler", batch_size=1, n_iter=1, denoising_strength=0.75, s_min_uncond=None,
                 image_cfg_scale=None, override_settings=None, script_args=None, scripts=None,
                 extra_generation_params=None, **kwargs):
        self.prompt = prompt
        self.negative_prompt = negative_prompt
        self.seed = seed
        self.width = width
        self.height = height
        self.steps = steps
        self.cfg_scale = cfg_scale
        self.sampler_name = sampler_name
        self.batch_size = batch_size
        self.n_iter = n_iter
        self.denoising_strength = denoising_strength
        self.s_min_uncond = s_min_uncond if s_min_uncond is not None else shared.opts.s_min_uncond
        self.image_cfg_scale = image_cfg_scale
        self.override_settings = dict(override_settings or {})
        self.script_args = list(script_args or [])
        self.scripts = scripts
        self.extra_generation_params = dict(extra_generation_params or {})
        self.is_hr_pass = False
        self.sampler = None
        self.iteration = 0
        self.eta = None
        for key, value in kwargs.items():
            setattr(self, key, value)

    @property
    def sd_model(self):
        return shared.sd_model

    def init(self, all_prompts, all_seeds, all_subseeds):
        pass

    def setup_conds(self):
        prompts = prompt_parser.SdConditioning(self.prompts, width=self.width, height=self.height)
        negatives = prompt_parser.SdConditioning(
            self.negative_prompts, width=self.width, height=self.height, is_negative_prompt=True)
        self.c = prompt_parser.get_multicond_learned_conditioning(self.sd_model, prompts, self.steps)
        self.uc = prompt_parser.get_learned_conditioning(self.sd_model, negatives, self.steps)

    def noise(self, h, w, seeds):
        return torch.stack([torch.randn(4, h, w, generator=torch.Generator().manual_seed(s), dtype=torch.float64).to(self.sd_model.dtype) for s in seeds])

    def image_conditioning_for(self, x, source=None, mask=None):
        model = self.sd_model
        b, _, h, w = x.shape
        if model.model.conditioning_key == "crossattn-adm":
            return torch.zeros(b, 6, dtype=x.dtype)
        if model.cond_stage_key == "edit":
            return (source if source is not None else torch.zeros_like(x)).clone()
        if model.variant == "inpaint":
            m = torch.ones(b, 1, h, w, dtype=x.dtype) if mask is None else mask.expand(b, 1, h, w).to(x.dtype)
            masked = torch.zeros_like(x) if source is None else source * (1 - m)
            return torch.cat([m, masked], dim=1)
        return x.new_zeros(b, 5, 1, 1)


class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    def __init__(self, enable_hr=False, hr_scale=2.0, hr_second_pass_steps=0, hr_sampler_name=None, **kwargs):
        super().__init__(**kwargs)
        self.enable_hr = enable_hr
        self.hr_scale = hr_scale
        self.hr_second_pass_steps = hr_second_pass_steps
        self.hr_sampler_name = hr_sampler_name

    def init(self, all_prompts, all_seeds, all_subseeds):
        if self.enable_hr:
            self.extra_generation_params["Denoising strength"] = self.denoising_strength
            self.extra_generation_params["Hires upscale"] = self.hr_scale
            self.hr_upscale_to_x = int(self.width * self.hr_scale)
            self.hr_upscale_to_y = int(self.height * self.hr_scale)

    def sample(self, conditioning, unconditional_conditioning, seeds, subseeds, subseed_strength, prompts):
        self.sampler = sd_samplers.create_sampler(self.sampler_name, self.sd_model)
        x = self.noise(self.height // 8, self.width // 8, seeds)
        if self.scripts is not None:
            self.scripts.process_before_every_sampling(p=self, x=x, noise=x, c=conditioning, uc=unconditional_conditioning)
        samples = self.sampler.sample(self, x, conditioning, unconditional_conditioning, image_conditioning=self.image_conditioning_for(x))
        if not self.enable_hr:
            return samples
        return self.sample_hr_pass(samples, seeds)

    def sample_hr_pass(self, samples, seeds):
        self.is_hr_pass = True
        target = (self.hr_upscale_to_y // 8, self.hr_upscale_to_x // 8)
        samples = torch.nn.functional.interpolate(samples, size=target, mode="nearest")
        self.sampler = sd_samplers.create_sampler(self.hr_sampler_name or self.sampler_name, self.sd_model)
        noise = self.noise(target[0], target[1], [s + 1000 for s in seeds])
        # the hires conds carry the hires size (SDXL embeds it), as A1111's calculate_hr_conds does
        prompts = prompt_parser.SdConditioning(self.prompts, width=self.hr_upscale_to_x, height=self.hr_upscale_to_y)
        negatives = prompt_parser.SdConditioning(
            self.negative_prompts, width=self.hr_upscale_to_x, height=self.hr_upscale_to_y, is_negative_prompt=True)
        self.hr_c = prompt_parser.get_multicond_learned_conditioning(self.sd_model, prompts, self.steps)
        self.hr_uc = prompt_parser.get_learned_conditioning(self.sd_model, negatives, self.steps)
        if self.scripts is not None:
            self.scripts.before_hr(self)
            self.scripts.process_before_every_sampling(p=self, x=samples, noise=noise, c=self.hr_c, uc=self.hr_uc)
        samples = self.sampler.sample_img2img(self, samples, noise, self.hr_c, self.hr_uc, steps=self.hr_second_pass_steps or self.steps, image_conditioning=self.image_conditioning_for(samples, source=samples))
        self.sampler = None
        self.is_hr_pass = False
        return samples


class StableDiffusionProcessingImg2Img(StableDiffusionProcessing):
    def __init__(self, init_latent=None, latent_mask=None, **kwargs):
        super().__init__(**kwargs)
        self.init_latent_source = init_latent
        self.latent_mask = latent_mask

    def init(self, all_prompts, all_seeds, all_subseeds):
        self.extra_generation_params["Denoising strength"] = self.denoising_strength

    def sample(self, conditioning, unconditional_conditioning, seeds, subseeds, subseed_strength, prompts):
        self.sampler = sd_samplers.create_sampler(self.sampler_name, self.sd_model)
        b = len(seeds)
        self.init_latent = self.init_latent_source.expand(b, -1, -1, -1).clone().to(self.sd_model.dtype)
        x = self.noise(self.init_latent.shape[2], self.init_latent.shape[3], seeds)
        self.image_conditioning = self.image_conditioning_for(self.init_latent, source=self.init_latent, mask=self.latent_mask)
        if self.scripts is not None:
            self.scripts.process_before_every_sampling(p=self, x=self.init_latent, noise=x, c=conditioning, uc=unconditional_conditioning)
        return self.sampler.sample_img2img(self, self.init_latent, x, conditioning, unconditional_conditioning, image_conditioning=self.image_conditioning)


def quote(text):
    if ',' not in str(text) and '\n' not in str(text) and ':' not in str(text):
        return text
    return json.dumps(text, ensure_ascii=False)


def create_infotext(p, index):
    generation_params = {
        "Steps": p.steps,
        "Sampler": p.sampler_name,
        "CFG scale": p.cfg_scale,
        "Seed": p.all_seeds[index],
        "Size": f"{p.width}x{p.height}",
        **p.extra_generation_params,
    }
    for key, value in generation_params.items():
        if isinstance(value, list):
            generation_params[key] = value[index]
        elif callable(value):
            generation_params[key] = value(**locals())
    text = ", ".join([k if k == v else f'{k}: {quote(v)}' for k, v in generation_params.items() if v is not None])
    negative = f"\nNegative prompt: {p.all_negative_prompts[index]}" if p.all_negative_prompts[index] else ""
    return f"{p.all_prompts[index]}{negative}\n{text}".strip()


def process_images(p):
    stored = {k: getattr(shared.opts, k) for k in p.override_settings}
    try:
        for k, v in p.override_settings.items():
            setattr(shared.opts, k, v)
        return process_images_inner(p)
    finally:
        for k, v in stored.items():
            setattr(shared.opts, k, v)


def process_images_inner(p):
    n = p.batch_size * p.n_iter
    p.all_prompts = [p.prompt] * n if isinstance(p.prompt, str) else list(p.prompt)
    p.all_negative_prompts = [p.negative_prompt] * n if isinstance(p.negative_prompt, str) else list(p.negative_prompt)
    p.all_seeds = [int(p.seed) + i for i in range(n)]
    p.all_subseeds = list(p.all_seeds)
    if p.scripts is not None:
        p.scripts.process(p)
    images, infotexts = [], []
    with torch.no_grad():
        p.init(p.all_prompts, p.all_seeds, p.all_subseeds)
        for it in range(p.n_iter):
            p.iteration = it
            sl = slice(it * p.batch_size, (it + 1) * p.batch_size)
            p.prompts, p.negative_prompts, p.seeds = p.all_prompts[sl], p.all_negative_prompts[sl], p.all_seeds[sl]
            p.subseeds = p.seeds
            if p.scripts is not None:
                p.scripts.before_process_batch(p, batch_number=it, prompts=p.prompts, seeds=p.seeds, subseeds=p.subseeds)
                p.scripts.process_batch(p, batch_number=it, prompts=p.prompts, seeds=p.seeds, subseeds=p.subseeds)
            p.setup_conds()
            if it == 0:
                global params_txt
                params_txt = create_infotext(p, 0)
            samples = p.sample(conditioning=p.c, unconditional_conditioning=p.uc, seeds=p.seeds, subseeds=p.subseeds, subseed_strength=0, prompts=p.prompts)
            if p.scripts is not None:
                p.scripts.postprocess_batch(p, samples, batch_number=it)
            for i in range(samples.shape[0]):
                images.append(samples[i])
                infotexts.append(create_infotext(p, it * p.batch_size + i))
    processed = Processed(p, images, infotexts)
    if p.scripts is not None:
        p.scripts.postprocess(p, processed)
    return processed
