"""Stand-in for sd-webui-animatediff's scripts/animatediff_infv2v.py forward hook (see README.md)."""

from types import MethodType

import torch


def _mm():
    import sys

    return sys.modules["scripts.animatediff_mm"].mm_animatediff


def uniform(video_length, batch_size, overlap):
    """Context windows at step 0, stride 1, loop setting 'R-P'."""
    if video_length <= batch_size:
        yield list(range(batch_size))
        return
    for j in range(0, video_length - overlap, batch_size - overlap):
        yield [e % video_length for e in range(j, j + batch_size)]


def motion(out):
    """The motion module stand-in: rows regrouped into videos of ad_params.batch_size frames; each frame
    gets 0.3 x its group's mean and 0.05 x its position in the group added."""
    f = _mm().ad_params.batch_size
    if out.shape[0] % f:
        raise RuntimeError(f"rows {out.shape[0]} are not whole videos of {f} frames")
    v = out.reshape(out.shape[0] // f, f, *out.shape[1:])
    pos = torch.arange(f, dtype=out.dtype).reshape(1, f, *([1] * (out.ndim - 1)))
    return (v + 0.3 * v.mean(dim=1, keepdim=True) + 0.05 * pos).reshape(out.shape)


def mm_sd_forward(self, x_in, sigma_in, cond):
    ad_params = _mm().ad_params
    x_out = torch.zeros_like(x_in)
    for context in uniform(ad_params.video_length, ad_params.batch_size, ad_params.overlap):
        _context = context + [c + ad_params.video_length for c in context]
        out = self.original_forward(
            x_in[_context],
            sigma_in[_context],
            cond={k: ([v[0][_context]] if isinstance(v, list) else v[_context]) for k, v in cond.items()},
        )
        x_out = x_out.to(dtype=out.dtype)
        x_out[_context] = motion(out)
    return x_out


def install(cfg_denoiser):
    """What AnimateDiff's on_cfg_denoiser does at step 0."""
    inner = cfg_denoiser.inner_model
    inner.original_forward = inner.forward
    inner.forward = MethodType(mm_sd_forward, inner)
