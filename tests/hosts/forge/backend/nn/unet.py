# Stand-in for lllyasviel/stable-diffusion-webui-forge backend/nn/unet.py @ dfdcbab6: timestep_embedding and the
# Timestep module the SDXL engines use to embed sizes (dim 256, max_period 10000: float32 frequencies
# exp(-ln(10000) * i / half), arguments t.float() * freqs, [cos, sin]). Test code, not Forge's.
import math

import torch


def timestep_embedding(timesteps, dim, max_period=10000):
    half = dim // 2
    i = torch.arange(half, dtype=torch.float32)
    freqs = torch.exp(i * (-math.log(max_period) / half)).to(timesteps.device)
    args = timesteps.float().reshape(-1, 1) * freqs.reshape(1, -1)
    return torch.cat([args.cos(), args.sin()], dim=-1)


class Timestep(torch.nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, t):
        return timestep_embedding(t, self.dim)
