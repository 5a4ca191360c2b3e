"""A tiny deterministic latent diffusion model standing in for an SD checkpoint (not a host mirror).

The real A1111 objects the extension reaches through are shared.sd_model (alphas_cumprod, parameterization,
cond_stage_key, model.conditioning_key, is_sd1/is_sd2/is_sdxl/is_sd3, cond_stage_model_empty_prompt,
get_learned_conditioning, apply_model(x, t, cond)) — this class has those, with a small convolutional
"UNet" (fixed random weights from a seed) that works at any spatial size and has a global (low-frequency)
path, so guidance visibly changes its output. Text conditioning is a deterministic embedding of the prompt
text: 77 tokens per chunk, a second chunk for prompts of more than 20 words (token-length mismatch).
"""
import hashlib
import math

import torch

CTX_DIM = 8
VEC_DIM = 6
ADM_DIM = 6


def _generator(text):
    seed = int.from_bytes(hashlib.sha256(text.encode("utf8")).digest()[:8], "little")
    return torch.Generator().manual_seed(seed)


def embed_text(text, dtype=torch.float32):
    chunks = 2 if len(text.split()) > 20 else 1
    return torch.randn(77 * chunks, CTX_DIM, generator=_generator("ctx:" + text), dtype=torch.float64).to(dtype)


def embed_vector(text, dtype=torch.float32):
    return torch.randn(VEC_DIM, generator=_generator("vec:" + text), dtype=torch.float64).to(dtype)


class TinyUNet(torch.nn.Module):
    def __init__(self, in_channels=4, out_channels=4, vec_dim=0, hidden=12, seed=1234, dtype=torch.float32):
        super().__init__()
        g = torch.Generator().manual_seed(seed)

        def conv(cin, cout, k):
            layer = torch.nn.Conv2d(cin, cout, k, padding=k // 2)
            with torch.no_grad():
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) / math.sqrt(cin * k * k))
                layer.bias.copy_(torch.randn(layer.bias.shape, generator=g) * 0.1)
            return layer

        def linear(cin, cout):
            layer = torch.nn.Linear(cin, cout)
            with torch.no_grad():
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) / math.sqrt(cin))
                layer.bias.zero_()
            return layer

        self.hidden = hidden
        self.conv_in = conv(in_channels, hidden, 3)
        self.conv_mid = conv(hidden, hidden, 3)
        self.conv_out = conv(hidden, out_channels, 3)
        self.time = linear(hidden, hidden)
        self.ctx = linear(CTX_DIM, hidden)
        self.vec = linear(vec_dim, hidden) if vec_dim else None
        self.mix = linear(hidden, hidden)
        self.to(dtype)

    def forward(self, x, timesteps, context=None, y=None):
        x = x.to(self.conv_in.weight.dtype)
        t = torch.as_tensor(timesteps, dtype=x.dtype).reshape(-1)
        if t.numel() == 1:
            t = t.expand(x.shape[0])
        freqs = torch.exp(-math.log(10000.0) * torch.arange(self.hidden // 2, dtype=x.dtype) / (self.hidden // 2))
        angles = t[:, None] * freqs[None]
        temb = self.time(torch.cat([torch.cos(angles), torch.sin(angles)], dim=1))
        c = self.ctx(context.to(x.dtype).mean(1))
        if self.vec is not None and y is not None:
            c = c + self.vec(y.to(x.dtype))
        h = self.conv_in(x) + (temb + c)[:, :, None, None]
        h = torch.nn.functional.silu(h)
        h = h + self.mix(h.mean((2, 3)))[:, :, None, None]
        h = torch.nn.functional.silu(self.conv_mid(h))
        return self.conv_out(h)


class DiffusionWrapper(torch.nn.Module):
    def __init__(self, diffusion_model, conditioning_key):
        super().__init__()
        self.diffusion_model = diffusion_model
        self.conditioning_key = conditioning_key


def embed_pooled(text, dtype=torch.float32):
    return torch.randn(1280, generator=_generator("pooled:" + text), dtype=torch.float64).to(dtype)


class TinySDModel(torch.nn.Module):
    """kind: "sd1" | "sd2" | "sdxl" | "sd3"; variant: "txt" | "inpaint" | "edit" | "unclip".

    sgm_vector: "base" | "refiner" (SDXL only): `vector` as the real conditioner builds it (sgm_conditioner:
    pooled 1280 | size embeddings, 2816 / 2560 wide) from the batch's width / height; None: a 6-wide stand-in.
    """

    def __init__(self, kind="sd1", parameterization="eps", variant="txt", dtype=torch.float32, seed=1234,
                 sgm_vector=None):
        super().__init__()
        self.kind = kind
        self.variant = variant
        self.parameterization = parameterization
        self.is_sd1 = kind == "sd1"
        self.is_sd2 = kind == "sd2"
        self.is_sdxl = kind == "sdxl"
        self.is_sd3 = kind == "sd3"
        self.is_sdxl_inpaint = self.is_sdxl and variant == "inpaint"
        self.cond_stage_key = "edit" if variant == "edit" else "txt"
        self.latent_channels = 4
        self.dtype = dtype
        betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
        self.register_buffer("alphas_cumprod", torch.cumprod(1.0 - betas, dim=0).to(torch.float32))
        extra = {"inpaint": 5, "edit": 4}.get(variant, 0)
        conditioning_key = {"inpaint": "hybrid", "edit": "hybrid", "unclip": "crossattn-adm"}.get(variant, "crossattn")
        self.sgm_vector = sgm_vector
        vec_dim = VEC_DIM if self.is_sdxl else ADM_DIM if variant == "unclip" else 0
        if sgm_vector is not None:
            vec_dim = 2816 if sgm_vector == "base" else 2560
        self.model = DiffusionWrapper(TinyUNet(4 + extra, 4, vec_dim=vec_dim, seed=seed, dtype=dtype), conditioning_key)
        self.cond_stage_model_empty_prompt = embed_text("", dtype)[None]
        self.apply_model_calls = []

    def get_learned_conditioning(self, texts):
        crossattn = torch.stack([embed_text(t, self.dtype) for t in texts])
        if self.is_sdxl and self.sgm_vector is not None:
            import sgm_conditioner
            from modules import shared

            opts = shared.opts
            negative = getattr(texts, "is_negative_prompt", False)
            score = getattr(opts, "sdxl_refiner_low_aesthetic_score" if negative else "sdxl_refiner_high_aesthetic_score",
                            2.5 if negative else 6.0)
            vector = sgm_conditioner.conditioner_vector(
                torch.stack([embed_pooled(t) for t in texts]),
                height=getattr(texts, "height", None) or 1024, width=getattr(texts, "width", None) or 1024,
                crop_top=getattr(opts, "sdxl_crop_top", 0), crop_left=getattr(opts, "sdxl_crop_left", 0),
                refiner=self.sgm_vector == "refiner", aesthetic_score=score)
            return {"crossattn": crossattn, "vector": vector.to(self.dtype)}
        if self.is_sdxl:
            return {"crossattn": crossattn, "vector": torch.stack([embed_vector(t, self.dtype) for t in texts])}
        return crossattn

    def apply_model(self, x, t, cond):
        # like sd_hijack_unet's wrapper: conditioning tensors are cast in place (hence: a fresh dict per call)
        for key, value in list(cond.items()):
            if isinstance(value, list):
                cond[key] = [v.to(self.dtype) if isinstance(v, torch.Tensor) else v for v in value]
        self.apply_model_calls.append((tuple(x.shape), torch.as_tensor(t).detach().clone()))
        key = self.model.conditioning_key
        net = self.model.diffusion_model
        if self.is_sdxl:
            if self.is_sdxl_inpaint:
                x = torch.cat([x] + cond["c_concat"], dim=1)
            return net(x, t, cond["crossattn"], cond["vector"])
        context = torch.cat(cond["c_crossattn"], 1)
        if key == "hybrid":
            return net(torch.cat([x] + cond["c_concat"], dim=1), t, context)
        if key == "crossattn-adm":
            return net(x, t, context, cond["c_adm"])
        return net(x, t, context)
