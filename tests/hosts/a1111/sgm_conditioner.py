"""Stand-in for the size/score embedders of Stability-AI/generative-models that SDXL's conditioner uses (read at
0ad7de9: sgm/modules/diffusionmodules/util.py `timestep_embedding`, sgm/modules/encoders/modules.py
`ConcatTimestepEmbedderND`, configs/inference/sd_xl_base.yaml and sd_xl_refiner.yaml), with the real
dimensions, and A1111's use of them (modules/sd_models_xl.py `get_learned_conditioning`, v1.10.1).

timestep_embedding(t, 256): freqs_i = exp(-ln(10000) * i / 128) (float32), args = t.float() * freqs,
[cos(args), sin(args)]. ConcatTimestepEmbedderND(outdim=256) embeds every column of a [b, d] tensor and
concatenates them: [b, d * 256]. The conditioner concatenates the embedders' vector outputs in config order:
  base (2816):    pooled CLIP-G (1280) | original_size_as_tuple (h, w) | crop_coords_top_left (top, left) |
                  target_size_as_tuple (h, w)
  refiner (2560): pooled CLIP-G (1280) | original_size_as_tuple (h, w) | crop_coords_top_left | aesthetic_score
A1111 fills original = target = (height, width) of the SdConditioning batch (1024 when absent), crop from
opts.sdxl_crop_top/left, aesthetic score from opts.sdxl_refiner_high/low_aesthetic_score (negative prompts).
"""
import math

import torch

POOLED_DIM = 1280
OUTDIM = 256


def timestep_embedding(timesteps, dim=OUTDIM, max_period=10000):
    half = dim // 2
    exponent = torch.arange(0, half, dtype=torch.float32) * (-math.log(max_period) / half)
    freqs = torch.exp(exponent)
    args = timesteps.reshape(-1, 1).float() * freqs.reshape(1, -1)
    return torch.cat([args.cos(), args.sin()], dim=1)


def concat_timestep_embedder_nd(x):
    """[b, d] -> [b, d * 256]: each column embedded on its own, in column order."""
    if x.ndim == 1:
        x = x[:, None]
    b, d = x.shape
    return timestep_embedding(x.reshape(b * d)).reshape(b, d * OUTDIM)


def conditioner_vector(pooled, *, height, width, crop_top=0, crop_left=0, refiner=False, aesthetic_score=6.0):
    """The `vector` A1111's SDXL (refiner) conditioner returns for a batch of pooled text embeddings."""
    rows = pooled.shape[0]

    def column(*values):
        return concat_timestep_embedder_nd(torch.tensor([list(values)] * rows, dtype=torch.float32))

    parts = [pooled.float(), column(height, width), column(crop_top, crop_left)]
    parts.append(column(aesthetic_score) if refiner else column(height, width))
    return torch.cat(parts, dim=1)
