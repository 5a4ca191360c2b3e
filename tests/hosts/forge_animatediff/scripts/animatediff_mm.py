"""Stand-in for sd-forge-animatediff's scripts/animatediff_mm.py (see README.md)."""

import sys
from dataclasses import dataclass

import torch


@dataclass
class ADParams:
    enable: bool = True
    video_length: int = 8
    batch_size: int = 4  # context length of the motion module's windows
    stride: int = 1
    overlap: int = 1
    closed_loop: str = "R-P"
    step: int = 0


def motion(h):
    """The motion module stand-in: rows regrouped into videos of ad_params.batch_size frames."""
    f = mm_animatediff.ad_params.batch_size
    if h.shape[0] % f:
        raise RuntimeError(f"rows {h.shape[0]} are not whole videos of {f} frames")
    v = h.reshape(h.shape[0] // f, f, *h.shape[1:])
    pos = torch.arange(f, dtype=h.dtype).reshape(1, f, *([1] * (h.ndim - 1)))
    mm_animatediff.motion_calls.append((h.shape[0], f))
    return (v + 0.3 * v.mean(dim=1, keepdim=True) + 0.05 * pos).reshape(h.shape)


class AnimateDiffMM:
    def __init__(self):
        self.ad_params = None
        self.motion_calls = []

    def inject(self, sd_model):
        unet = sd_model.forge_objects.unet.clone()

        def mm_block_modifier(x, identifier, layer, layer_index, ts, transformer_options):
            block_type, block_idx = transformer_options["block"]
            if (
                layer_index == len(ts) - 1
                and block_type == "input"
                and block_idx == 1
                and identifier == "after"
            ):
                return motion(x)
            return x

        infv2v = sys.modules["scripts.animatediff_infv2v"]
        unet.set_model_unet_function_wrapper(infv2v.AnimateDiffInfV2V.mm_sd_forward)
        unet.add_block_inner_modifier(mm_block_modifier)
        sd_model.forge_objects.unet = unet


mm_animatediff = AnimateDiffMM()
