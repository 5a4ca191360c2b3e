"""Stand-ins for the extensions A1111 users run beside ours (tests only; load inside `a1111_host()`).

Written from their source, keeping the names, attributes and decisions our adapter can observe; the
networks are tiny stand-ins:

* sd-webui-controlnet (Mikubill/sd-webui-controlnet @ 56cec5b2): `ControlParams` (scripts/hook.py 162-236:
  `_hint_cond` behind the `hint_cond` property whose setter clears `used_hint_cond*`, `hr_hint_cond`,
  `hr_option`, `soft_injection`, `disabled_by_hr_option`), `UnetHook.hook` replacing the UNet's forward
  (990-992, `_original_forward` kept) and the forward's decisions (511-537 hint selection by the height
  nearest to 8 * x and `is_in_high_res_fix`; 539-548 VAE latent for reference-only; 571-... units skipped
  when `guidance_stopped` or `disabled_by_hr_option`; 642-648 forced soft injection of canny/mlsd in the
  hires pass; 733-790 reference-only's reference pass at the latent's size). The ControlNet model adds its
  hint features to an x-sized map in place (scripts/cldm.py 387-389 `h += guided_hint`): a hint of another
  size raises there. T2I-Adapter features are resized to the map (`aligned_adding`, 245-265). The script
  (scripts/controlnet.py) has title "ControlNet" and keeps the hook as `latest_network`; postprocess
  restores the forward.
* Kohya Hires.fix (wcde/sd-webui-kohya-hiresfix, scripts/khrfix.py): `Scaler(scale, block, scaler)`
  interpolating before its block, swapped into `input_blocks[d]` / `output_blocks[-(d+1)]`.
* Self Attention Guidance (ashen-sensored/sd_webui_SAG, scripts/SAG.py): title "Self Attention Guidance",
  module global `sag_enabled` set by process().
* Regional Prompter (hako-mikan, scripts/rp.py): title "Regional Prompter", `self.active`.
* AnimateDiff (continue-revolution, scripts/animatediff.py): title "AnimateDiff", one unit argument with
  `.enable`.
* Tiled Diffusion (pkuliyi2015/multidiffusion-upscaler): MultiDiffusion replaces
  `sampler.model_wrap_cfg.inner_model.forward` with its `kdiff_forward` (tile_methods/multidiffusion.py
  15-23); Mixture of Diffusers replaces `sd_model.apply_model`, keeping `apply_model_original_md`
  (tile_methods/mixtureofdiffusers.py 18-21).
"""

import enum
import math

import torch
import torch.nn.functional as F
from modules import scripts


class ControlModelType(enum.Enum):
    ControlNet = "ControlNet, Lvmin Zhang"
    T2I_Adapter = "T2I_Adapter, Chong Mou"
    AttentionInjection = "AttentionInjection, Lvmin Zhang"
    IPAdapter = "IPAdapter, Hu Ye"
    Controlllite = "Controlllite, Kohya"

    @property
    def is_controlnet(self):
        return self is ControlModelType.ControlNet


class HiResFixOption(enum.Enum):
    BOTH = "Both"
    LOW_RES_ONLY = "Low res only"
    HIGH_RES_ONLY = "High res only"


class ControlParams:
    def __init__(
        self,
        control_model,
        preprocessor,
        hint_cond,
        weight,
        control_model_type,
        hr_hint_cond=None,
        hr_option=HiResFixOption.BOTH,
        soft_injection=False,
        start=0.0,
        stop=1.0,
    ):
        self.control_model = control_model
        self.preprocessor = preprocessor
        self._hint_cond = hint_cond
        self.weight = weight
        self.guidance_stopped = False
        self.start_guidance_percent = start
        self.stop_guidance_percent = stop
        self.control_model_type = control_model_type
        self.hr_hint_cond = hr_hint_cond
        self.hr_option = hr_option
        self.soft_injection = soft_injection
        self.used_hint_cond = None
        self.used_hint_cond_latent = None
        self.used_hint_inpaint_hijack = None

    @property
    def hint_cond(self):
        return self._hint_cond

    @hint_cond.setter
    def hint_cond(self, value):
        self._hint_cond = value
        self.used_hint_cond = None
        self.used_hint_cond_latent = None
        self.used_hint_inpaint_hijack = None

    def disabled_by_hr_option(self, is_in_high_res_fix):
        if self.hr_option == HiResFixOption.BOTH:
            return False
        if self.hr_option == HiResFixOption.LOW_RES_ONLY:
            return is_in_high_res_fix
        return not is_in_high_res_fix


def _fixed(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64) / math.sqrt(shape[1])


class TinyControlNet(torch.nn.Module):
    """cldm stand-in: hint block (/8) added in place to an x-sized map, one residual out."""

    def __init__(self, hidden=12, in_channels=4, seed=7):
        super().__init__()
        self.hint_weight = torch.nn.Parameter(_fixed((hidden, 3, 1, 1), seed), requires_grad=False)
        self.in_weight = torch.nn.Parameter(
            _fixed((hidden, in_channels, 3, 3), seed + 1), requires_grad=False
        )

    def forward(self, x, hint, timesteps, context):
        guided_hint = F.conv2d(F.avg_pool2d(hint.to(x.dtype), 8), self.hint_weight.to(x.dtype))
        h = F.conv2d(x, self.in_weight.to(x.dtype), padding=1)
        h += guided_hint  # cldm.py: raises when the hint is not 8x the latent
        return [0.5 * h]


class TinyAdapter(torch.nn.Module):
    """T2I-Adapter stand-in: features at the hint's size / 8, resized to the map by aligned_adding."""

    def __init__(self, hidden=12, seed=11):
        super().__init__()
        self.weight = torch.nn.Parameter(_fixed((hidden, 3, 1, 1), seed), requires_grad=False)

    def forward(self, hint):
        return [0.5 * F.conv2d(F.avg_pool2d(hint, 8), self.weight.to(hint.dtype))]


def aligned_adding(base, x):
    if x.shape[-2:] != base.shape[-2:]:
        x = F.interpolate(x, size=base.shape[-2:], mode="nearest")
    return base + x


def vae_encode(image):
    """Stand-in VAE: 8x average pooling, 3 -> 4 channels."""
    pooled = F.avg_pool2d(image, 8)
    return torch.cat([pooled, pooled.mean(1, keepdim=True)], dim=1)


class UnetHook:
    def __init__(self):
        self.model = None
        self.control_params = None
        self.is_in_high_res_fix = False
        self.log = []  # one entry per UNet call
        self.vae_encodes = []

    def hook(self, model, sd_ldm, control_params, process):
        self.model = model
        self.sd_ldm = sd_ldm
        self.control_params = control_params
        outer = self

        def forward(self_, x, timesteps=None, context=None, y=None, **kwargs):
            entry = {"x": tuple(x.shape[-2:]), "units": {}, "ref": None, "hints": {}}
            is_in_high_res_fix = False
            for param in outer.control_params:
                if param.used_hint_cond is None:
                    param.used_hint_cond = param.hint_cond
                    param.used_hint_cond_latent = None
                    param.used_hint_inpaint_hijack = None
                if isinstance(param.hr_hint_cond, torch.Tensor) and x.ndim == 4 and param.hint_cond.ndim == 4:
                    h_lr = param.hint_cond.shape[2]
                    h_hr = param.hr_hint_cond.shape[2]
                    h = x.shape[2] * 8
                    if abs(h - h_lr) < abs(h - h_hr):
                        is_in_high_res_fix = False
                        if param.used_hint_cond is not param.hint_cond:
                            param.used_hint_cond = param.hint_cond
                            param.used_hint_cond_latent = None
                    else:
                        is_in_high_res_fix = True
                        if param.used_hint_cond is not param.hr_hint_cond:
                            param.used_hint_cond = param.hr_hint_cond
                            param.used_hint_cond_latent = None
            outer.is_in_high_res_fix = is_in_high_res_fix
            entry["in_hr"] = is_in_high_res_fix
            for param in outer.control_params:
                if (
                    param.used_hint_cond_latent is None
                    and param.control_model_type == ControlModelType.AttentionInjection
                ):
                    param.used_hint_cond_latent = vae_encode(param.used_hint_cond)
                    outer.vae_encodes.append(tuple(param.used_hint_cond.shape[-2:]))
            residual = 0.0
            bank = 0.0
            for i, param in enumerate(outer.control_params):
                if param.guidance_stopped or param.disabled_by_hr_option(is_in_high_res_fix):
                    continue
                hint = param.used_hint_cond
                forced_soft = is_in_high_res_fix and any(
                    k in param.preprocessor["name"] for k in ("canny", "mlsd")
                )
                soft = bool(param.soft_injection or forced_soft)
                scale = param.weight * (0.825**12 if soft else 1.0)
                if param.control_model_type.is_controlnet:
                    if hint.shape[1] == 4:  # ControlNet inpaint protocol (hook.py 596-601): RGB + mask
                        m = (hint[:, 3:4] > 0.5).to(hint.dtype)
                        hint_in = hint[:, 0:3] * (1 - m) - m
                    else:
                        hint_in = hint
                    control = param.control_model(x=x, hint=hint_in, timesteps=timesteps, context=context)
                    residual = residual + control[0] * scale
                elif param.control_model_type == ControlModelType.T2I_Adapter:
                    feats = param.control_model(hint.to(x.dtype))
                    residual = (
                        feats[0] * scale
                        if isinstance(residual, float)
                        else aligned_adding(residual, feats[0] * scale)
                    )
                elif param.control_model_type == ControlModelType.AttentionInjection:
                    abar = outer.sd_ldm.alphas_cumprod.to(x.dtype)[
                        torch.round(timesteps.double()).long().clamp(0, 999)
                    ]
                    ref_xt = abar.sqrt().reshape(-1, 1, 1, 1) * param.used_hint_cond_latent.to(x.dtype)
                    ref_out = outer.model._original_forward(
                        ref_xt.expand(x.shape[0], -1, -1, -1), timesteps, context, y
                    )
                    entry["ref"] = tuple(ref_xt.shape[-2:])
                    bank = bank + 0.1 * param.weight * ref_out.mean((2, 3), keepdim=True)
                else:
                    continue
                entry["units"][i] = (tuple(hint.shape[-2:]), soft)
                entry["hints"][i] = hint
            outer.log.append(entry)
            conv_in = outer.model.conv_in

            def add_control(module, inputs, output):
                out = output
                if not isinstance(residual, float):
                    out = aligned_adding(out, residual.to(out.dtype))
                if not isinstance(bank, float):
                    out = out + bank[:, : out.shape[1]].to(out.dtype).mean(1, keepdim=True)
                return out

            handle = conv_in.register_forward_hook(add_control)
            try:
                return outer.model._original_forward(x, timesteps, context, y)
            finally:
                handle.remove()

        model._original_forward = model.forward
        model.forward = forward.__get__(model, type(model))

    def restore(self):
        if self.model is not None and hasattr(self.model, "_original_forward"):
            self.model.forward = self.model._original_forward
            del self.model._original_forward


def hint_image(height, width, seed=3, channels=3):
    """A control image as ControlNet prepares it: [1, 3, H, W] in [0, 1] (4 channels: RGB + inpaint mask)."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, channels, height, width, generator=g, dtype=torch.float64)


class ControlNetScript(scripts.Script):
    """units: list of dicts with ControlParams keywords (hint_cond, hr_hint_cond, ...) built per generation."""

    def __init__(self, units=()):
        super().__init__()
        self.units = list(units)
        self.latest_network = None

    def title(self):
        return "ControlNet"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def process(self, p, *args):
        if not self.units:
            return
        params = [ControlParams(**unit) for unit in self.units]
        self.latest_network = UnetHook()
        self.latest_network.hook(p.sd_model.model.diffusion_model, p.sd_model, params, p)
        self.log = self.latest_network.log  # kept for the tests after postprocess drops the hook

    def postprocess(self, p, processed, *args):
        if self.latest_network is not None:
            self.latest_network.restore()
            self.latest_network = None


class Scaler(torch.nn.Module):
    def __init__(self, scale, block, scaler):
        super().__init__()
        self.scale = scale
        self.block = block
        self.scaler = scaler

    def forward(self, x, *args):
        x = F.interpolate(x, scale_factor=self.scale, mode=self.scaler)
        return self.block(x, *args)


sag_enabled = False


class SAGScript(scripts.Script):
    def title(self):
        return "Self Attention Guidance"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def process(self, p, *args):
        global sag_enabled
        sag_enabled = bool(args[0]) if args else False


class RegionalPrompterScript(scripts.Script):
    def __init__(self, active=False):
        super().__init__()
        self.active = active

    def title(self):
        return "Regional Prompter"

    def show(self, is_img2img):
        return scripts.AlwaysVisible


class AnimateDiffProcess:
    def __init__(self, enable=False):
        self.enable = enable


class AnimateDiffScript(scripts.Script):
    def title(self):
        return "AnimateDiff"

    def show(self, is_img2img):
        return scripts.AlwaysVisible


class MultiDiffusion:
    """Tiled Diffusion's MultiDiffusion delegate: hooks the CFG denoiser's inner model forward."""

    def __init__(self, sampler):
        self.sampler = sampler

    def hook(self):
        inner = self.sampler.model_wrap_cfg.inner_model
        self.sampler_forward = inner.forward
        inner.forward = self.kdiff_forward

    def kdiff_forward(self, x_in, sigma_in, cond):
        return self.sampler_forward(x_in, sigma_in, cond=cond)


class MixtureOfDiffusers:
    """Tiled Diffusion's Mixture of Diffusers delegate: hooks sd_model.apply_model."""

    def hook(self, sd_model):
        self.sd_model = sd_model
        sd_model.apply_model_original_md = sd_model.apply_model
        sd_model.apply_model = self.apply_model_hijack

    def apply_model_hijack(self, x_in, t_in, cond):
        return self.sd_model.apply_model_original_md(x_in, t_in, cond)

    def unhook(self):
        self.sd_model.apply_model = self.sd_model.apply_model_original_md
        del self.sd_model.apply_model_original_md
