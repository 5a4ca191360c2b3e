"""Independent reference computations for the core tests: written from the paper's equations with torch
primitives (pooling, nearest interpolation, FFT), sharing no code with lib_upsample_guidance."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

F64 = torch.float64


def fft_dct_ortho(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal DCT-II along the last axis via the FFT of the even extension."""
    n = x.shape[-1]
    v = torch.cat([x, x.flip(-1)], dim=-1)
    spec = torch.fft.fft(v, dim=-1)[..., :n]
    k = torch.arange(n, dtype=F64)
    c = (spec * torch.exp(-1j * math.pi * k / (2 * n))).real / 2
    scale = torch.full((n,), math.sqrt(2.0 / n), dtype=F64)
    scale[0] = math.sqrt(1.0 / n)
    return c * scale


def fft_idct_ortho(c: torch.Tensor) -> torch.Tensor:
    n = c.shape[-1]
    m = fft_dct_ortho(torch.eye(n, dtype=F64))  # m[i] = DCT of unit vector i, so m = C^T
    return c @ m.T


def _spectral_down_last(x: torch.Tensor, n: int) -> torch.Tensor:
    big = x.shape[-1]
    return math.sqrt(n / big) * fft_idct_ortho(fft_dct_ortho(x)[..., :n])


def _spectral_up_last(y: torch.Tensor, big: int) -> torch.Tensor:
    n = y.shape[-1]
    coeffs = torch.zeros(*y.shape[:-1], big, dtype=y.dtype)
    coeffs[..., :n] = fft_dct_ortho(y)
    return math.sqrt(big / n) * fft_idct_ortho(coeffs)


def ref_down(x: torch.Tensor, low: tuple[int, int], kind: str) -> torch.Tensor:
    """D on the last two axes: average pooling (box) or DCT truncation (spectral)."""
    H, W = x.shape[-2:]
    if kind == "box":
        return F.avg_pool2d(x, (H // low[0], W // low[1]))
    y = _spectral_down_last(x, low[1])
    return _spectral_down_last(y.transpose(-1, -2), low[0]).transpose(-1, -2)


def ref_up(y: torch.Tensor, high: tuple[int, int], kind: str) -> torch.Tensor:
    """U on the last two axes: nearest repeat (box) or DCT zero-padding (spectral)."""
    if kind == "box":
        return F.interpolate(y, size=high, mode="nearest")
    x = _spectral_up_last(y, high[1])
    return _spectral_up_last(x.transpose(-1, -2), high[0]).transpose(-1, -2)


def ref_low_pass(x: torch.Tensor, low: tuple[int, int], kind: str) -> torch.Tensor:
    """The low-band projection U(D(x))."""
    return ref_up(ref_down(x, low, kind), tuple(x.shape[-2:]), kind)


def sd_alphas_cumprod(n: int = 1000) -> torch.Tensor:
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, n, dtype=F64) ** 2
    return torch.cumprod(1 - betas, 0)


def kdiffusion_style_sigma_to_t(sigma: torch.Tensor, log_sigmas: torch.Tensor) -> torch.Tensor:
    """k-diffusion DiscreteSchedule.sigma_to_t (cumsum/argmax formulation, log-sigma interpolation)."""
    log_sigma = sigma.log()
    dists = log_sigma - log_sigmas[:, None]
    low_idx = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=log_sigmas.shape[0] - 2)
    high_idx = low_idx + 1
    low, high = log_sigmas[low_idx], log_sigmas[high_idx]
    w = ((low - log_sigma) / (low - high)).clamp(0, 1)
    return (1 - w) * low_idx + w * high_idx


def karras_sigmas(
    n: int, sigma_min: float = 0.0292, sigma_max: float = 14.61, rho: float = 7.0
) -> torch.Tensor:
    ramp = torch.linspace(0, 1, n, dtype=F64)
    min_r, max_r = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (max_r + ramp * (min_r - max_r)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros([1])])


# Samplers in the k-diffusion convention (model(x, sigma * s_in, **extra) -> x0), from Karras et al. 2022
# and Lu et al. 2022, written here so that the library is driven by samplers it never saw.


def sample_euler(model, x, sigmas, extra=None):
    extra = extra or {}
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        den = model(x, sigmas[i] * s_in, **extra)
        d = (x - den) / sigmas[i]
        x = x + d * (sigmas[i + 1] - sigmas[i])
    return x


def sample_heun(model, x, sigmas, extra=None):
    extra = extra or {}
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        den = model(x, sigmas[i] * s_in, **extra)
        d = (x - den) / sigmas[i]
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = (x_2 - model(x_2, sigmas[i + 1] * s_in, **extra)) / sigmas[i + 1]
            x = x + (d + d_2) / 2 * dt
    return x


def sample_dpmpp_2m(model, x, sigmas, extra=None):
    extra = extra or {}
    s_in = x.new_ones([x.shape[0]])
    old_den = None
    for i in range(len(sigmas) - 1):
        den = model(x, sigmas[i] * s_in, **extra)
        t, t_next = -sigmas[i].log(), -sigmas[i + 1].log()
        h = t_next - t
        if old_den is None or sigmas[i + 1] == 0:
            x = (sigmas[i + 1] / sigmas[i]) * x - (-h).expm1() * den
        else:
            h_last = t - (-sigmas[i - 1].log())
            r = h_last / h
            den_d = (1 + 1 / (2 * r)) * den - (1 / (2 * r)) * old_den
            x = (sigmas[i + 1] / sigmas[i]) * x - (-h).expm1() * den_d
        old_den = den
    return x


def ref_down_video(x: torch.Tensor, low: tuple[int, int, int], kinds: tuple[str, str, str]) -> torch.Tensor:
    """D on the last three axes (frames, height, width), one pair per axis: all box -> 3-D average pooling;
    otherwise axis by axis (box: mean of each run, spectral: DCT truncation)."""
    high = tuple(x.shape[-3:])
    if all(k == "box" for k in kinds):
        return F.avg_pool3d(x, tuple(h // lo for h, lo in zip(high, low, strict=True)))
    for axis, n, kind in zip((-3, -2, -1), low, kinds, strict=True):
        v = x.movedim(axis, -1)
        if v.shape[-1] != n:
            v = (
                v.unflatten(-1, (n, v.shape[-1] // n)).mean(-1)
                if kind == "box"
                else _spectral_down_last(v, n)
            )
        x = v.movedim(-1, axis)
    return x


def ref_up_video(y: torch.Tensor, high: tuple[int, int, int], kinds: tuple[str, str, str]) -> torch.Tensor:
    """U on the last three axes: nearest repeat (box) or DCT zero-padding (spectral), per axis."""
    if all(k == "box" for k in kinds):
        return F.interpolate(y, size=high, mode="nearest")
    for axis, n, kind in zip((-3, -2, -1), high, kinds, strict=True):
        v = y.movedim(axis, -1)
        if v.shape[-1] != n:
            v = v.repeat_interleave(n // v.shape[-1], dim=-1) if kind == "box" else _spectral_up_last(v, n)
        y = v.movedim(-1, axis)
    return y
