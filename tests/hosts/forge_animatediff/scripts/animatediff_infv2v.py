"""Stand-in for sd-forge-animatediff's scripts/animatediff_infv2v.py (see README.md)."""

import sys

import torch


class AnimateDiffInfV2V:
    @staticmethod
    def uniform(step, video_length=0, batch_size=16, stride=1, overlap=4, loop_setting="R-P"):
        if video_length <= batch_size:
            yield list(range(batch_size))
            return
        for j in range(0, video_length - overlap, batch_size - overlap):
            yield [e % video_length for e in range(j, j + batch_size)]

    @staticmethod
    def mm_sd_forward(apply_model, info):
        ad_params = sys.modules["scripts.animatediff_mm"].mm_animatediff.ad_params
        x_out = torch.zeros_like(info["input"])
        n = ad_params.video_length
        windows = AnimateDiffInfV2V.uniform(
            ad_params.step,
            n,
            ad_params.batch_size,
            ad_params.stride,
            ad_params.overlap,
            ad_params.closed_loop,
        )
        for context in windows:
            _context = context + [c + n for c in context] if x_out.shape[0] == 2 * n else context
            info_c = {}
            for k, v in info["c"].items():
                if isinstance(v, torch.Tensor) and v.shape[0] in (n, 2 * n):
                    info_c[k] = v[_context] if v.shape[0] == 2 * n else v[context]
                elif isinstance(v, list) and len(v) in (n, 2 * n):
                    info_c[k] = [v[i] for i in (_context if len(v) == 2 * n else context)]
                else:
                    info_c[k] = v
            out = apply_model(info["input"][_context], info["timestep"][_context], **info_c)
            x_out = x_out.to(dtype=out.dtype)
            x_out[_context] = out
        return x_out
