# Stand-in for lllyasviel/stable-diffusion-webui-forge backend/diffusion_engine/sdxl.py @ dfdcbab6: the `vector`
# that StableDiffusionXL / StableDiffusionXLRefiner.get_learned_conditioning build (compiled into
# model_conds['y'] = Condition(vector) by backend/sampling/condition.py).
#   base:    clip_pooled (1280) | e(height) | e(width) | e(crop_h) | e(crop_w) | e(target_height) | e(target_width)
#   refiner: clip_pooled (1280) | e(height) | e(width) | e(crop_h) | e(crop_w) | e(aesthetic score)
# with e = Timestep(256), width/height from the prompt batch (1024 when absent), crop from opts.sdxl_crop_left/top,
# target = the same width/height. Only the vector assembly is kept (no text encoders). Test code, not Forge's.
import torch

from backend.nn.unet import Timestep

_embedder = Timestep(256)


def size_vector(clip_pooled, *, width=1024, height=1024, crop_w=0, crop_h=0, refiner=False, aesthetic=6.0):
    values = [height, width, crop_h, crop_w] + ([aesthetic] if refiner else [height, width])
    out = [_embedder(torch.Tensor([v])) for v in values]
    flat = torch.flatten(torch.cat(out)).unsqueeze(dim=0).repeat(clip_pooled.shape[0], 1).to(clip_pooled)
    return torch.cat([clip_pooled, flat], dim=1)
