"""Stand-ins for Forge's built-in extensions that patch the UNet beside ours (tests only).

Written from lllyasviel/stable-diffusion-webui-forge @ dfdcbab6, keeping what our adapter can observe:
the names (our adapter recognises patches by qualified name), the patcher calls, the closures and the
post-CFG contracts; the arithmetic is the upstream one where it matters for the tests.

* extensions-builtin/sd_forge_kohya_hrfix/scripts/kohya_hrfix.py: PatchModelAddDownscale.patch -> an
  input_block_patch that resizes h by 1/downscale_factor at block `block_number` while
  sigma_end <= sigma <= sigma_start (percent_to_sigma of start/end percent), and an output_block_patch that
  resizes h back to the skip's size.
* extensions-builtin/sd_forge_freeu/scripts/forge_freeu.py: patch_freeu_v2 -> an output_block_patch
  (size-independent scaling; here: a fixed channel scale on h).
* extensions-builtin/sd_forge_sag/scripts/forge_sag.py: SelfAttentionGuidance.patch -> attn1 replacement
  in ("middle", 0, 0) recording the uncond attention scores (nonlocal attn_scores) and a post-CFG function
  blurring the uncond prediction where that map attends (create_blur_map reshapes the map to the latent's
  size / ratio), re-evaluating the uncond there and adding (degraded - sag) * scale;
  disable_cfg1_optimization.
* extensions-builtin/forge_preprocessor_inpaint/scripts/preprocessor_inpaint.py: inpaint_only's post-CFG
  blend `denoised * mask + latent * (1 - mask)`.
* extensions-builtin/forge_preprocessor_reference/scripts/forge_reference.py: PreprocessorReference's
  attn1_proc (set_model_replace_all) testing its window (closure sigma_min, sigma_max) against
  transformer_options["sigmas"].
"""

import math

import torch
import torch.nn.functional as F
from backend.sampling.sampling_function import calc_cond_uncond_batch


def resize(h, width, height):
    return F.interpolate(h, size=(height, width), mode="nearest-exact")


class PatchModelAddDownscale:
    def patch(self, model, block_number, downscale_factor, start_percent, end_percent):
        sigma_start = model.model.predictor.percent_to_sigma(start_percent)
        sigma_end = model.model.predictor.percent_to_sigma(end_percent)

        def input_block_patch(h, transformer_options):
            if transformer_options["block"][1] == block_number:
                sigma = transformer_options["sigmas"][0].item()
                if sigma <= sigma_start and sigma >= sigma_end:
                    h = resize(
                        h, round(h.shape[-1] / downscale_factor), round(h.shape[-2] / downscale_factor)
                    )
            return h

        def output_block_patch(h, hsp, transformer_options):
            if h.shape[2] != hsp.shape[2]:
                h = resize(h, hsp.shape[-1], hsp.shape[-2])
            return h, hsp

        m = model.clone()
        m.set_model_input_block_patch(input_block_patch)
        m.set_model_output_block_patch(output_block_patch)
        return (m,)


def patch_freeu_v2(unet_patcher, b1, calls):
    def output_block_patch(h, hsp, transformer_options):
        calls.append(tuple(h.shape[-2:]))
        return h * b1, hsp

    m = unet_patcher.clone()
    m.set_model_output_block_patch(output_block_patch)
    return m


def attention_basic_with_sim(q, k, v, heads):
    b, _, dim = q.shape
    scale = (dim // heads) ** -0.5
    sim = torch.einsum("b i d, b j d -> b i j", q, k) * scale
    sim = sim.softmax(dim=-1)
    return torch.einsum("b i j, b j d -> b i d", sim, v), sim


def create_blur_map(x0, attn, threshold=1.0):
    _, hw1, hw2 = attn.shape
    b, _, lh, lw = x0.shape
    attn = attn.reshape(b, -1, hw1, hw2)
    mask = attn.mean(1, keepdim=False).sum(1, keepdim=False) > threshold
    ratio = 2 ** (math.ceil(math.sqrt(lh * lw / hw1)) - 1).bit_length()
    h, w = math.ceil(lh / ratio), math.ceil(lw / ratio)
    mask = mask.reshape(b, h, w).unsqueeze(1).type(attn.dtype)
    mask = F.interpolate(mask, (lh, lw))
    blurred = F.avg_pool2d(F.pad(x0, (1, 1, 1, 1), mode="reflect"), 3, stride=1)
    return blurred * mask + x0 * (1 - mask)


class SelfAttentionGuidance:
    def __init__(self):
        self.map_sizes_used = []  # token count of the map each post-CFG call used

    def patch(self, model, scale, threshold=1.0):
        m = model.clone()
        attn_scores = None
        outer = self

        def attn_and_record(q, k, v, extra_options):
            nonlocal attn_scores
            heads = extra_options["n_heads"]
            cond_or_uncond = extra_options["cond_or_uncond"]
            b = q.shape[0] // len(cond_or_uncond)
            out, sim = attention_basic_with_sim(q, k, v, heads=heads)
            if 1 in cond_or_uncond:
                uncond_index = cond_or_uncond.index(1)
                n_slices = heads * b
                attn_scores = sim[n_slices * uncond_index : n_slices * (uncond_index + 1)]
            return out

        def post_cfg_function(args):
            uncond_attn = attn_scores
            outer.map_sizes_used.append(int(uncond_attn.shape[1]))
            model_ = args["model"]
            uncond_pred = args["uncond_denoised"]
            uncond = args["uncond"]
            cfg_result = args["denoised"]
            sigma = args["sigma"]
            x = args["input"]
            degraded = create_blur_map(uncond_pred, uncond_attn, threshold)
            degraded_noised = degraded + x - uncond_pred
            sag, _ = calc_cond_uncond_batch(
                model_, uncond, None, degraded_noised, sigma, args["model_options"]
            )
            return cfg_result + (degraded - sag) * scale

        m.set_model_sampler_post_cfg_function(post_cfg_function, disable_cfg1_optimization=True)
        m.set_model_attn1_replace(attn_and_record, "middle", 0, 0)
        return (m,)


class PreprocessorInpaintOnly:
    def process_before_every_sampling(self, unet, latent_image, latent_mask):
        def post_cfg(args):
            denoised = args["denoised"]
            return denoised * latent_mask.to(denoised) + latent_image.to(denoised) * (
                1.0 - latent_mask.to(denoised)
            )

        m = unet.clone()
        m.set_model_sampler_post_cfg_function(post_cfg)
        return m


class PreprocessorReference:
    def process_before_every_sampling(self, unet, start_percent, end_percent):
        sigma_max = unet.model.predictor.percent_to_sigma(start_percent)
        sigma_min = unet.model.predictor.percent_to_sigma(end_percent)

        def attn1_proc(q, k, v, transformer_options):
            sigma = transformer_options["sigmas"][0].item()
            if not (sigma_min <= sigma <= sigma_max):
                return attention_basic_with_sim(q, k, v, 1)[0]
            return attention_basic_with_sim(q, k, v, 1)[0]  # (the recorded reference is left out here)

        m = unet.clone()
        m.set_model_replace_all(attn1_proc, "attn1")
        return m


class RegionalPrompterScript:
    def __init__(self, active):
        self.active = active

    def title(self):
        return "Regional Prompter"
