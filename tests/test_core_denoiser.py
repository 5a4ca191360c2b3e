"""UpsampleGuidedDenoiser driven by a model and samplers the library never saw, against an independent
implementation of the paper's equations (eps form, VP parameterisation, pooling/nearest or FFT-DCT
operators), to float precision."""

import math

import pytest
import torch
from _reference import (
    F64,
    karras_sigmas,
    kdiffusion_style_sigma_to_t,
    ref_down,
    ref_up,
    sample_dpmpp_2m,
    sample_euler,
    sample_heun,
    sd_alphas_cumprod,
)

from lib_upsample_guidance import UpsampleGuidedDenoiser

AC = sd_alphas_cumprod()
LOG_SIGMAS = 0.5 * torch.log((1 - AC) / AC)


class EpsNet(torch.nn.Module):
    """A small random conv net eps(x_t, sigma, cond_image, class_scale) in the VP parameterisation."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(5, 16, 3, padding=1),
            torch.nn.SiLU(),
            torch.nn.Conv2d(16, 16, 3, padding=1),
            torch.nn.SiLU(),
            torch.nn.Conv2d(16, 3, 3, padding=1),
        ).double()

    def forward(self, x_t, sigma, cond_image, class_scale):
        emb = torch.log(sigma).reshape(-1, 1, 1, 1).expand(-1, 1, *x_t.shape[-2:])
        return self.net(torch.cat([x_t, emb, cond_image], dim=1)) * class_scale


NET = EpsNet()


def kd_denoiser(x, sigma, cond_image, class_scale):
    """k-diffusion wrapper of the VP eps-net: x = x0 + sigma eps (VE), input scaled by 1/sqrt(sigma^2+1)."""
    s = sigma.reshape(-1, 1, 1, 1)
    return x - s * NET(x / torch.sqrt(s**2 + 1), sigma, cond_image, class_scale)


def reference_guided(low, kind, theta, eta):
    """The paper's eq. in VP/eps form: eps~ = eps + w [U(eps(D x_t / sqrt(P), tau) / sqrt(k)) - U(D(eps))],
    with SNR(tau) = k SNR(t), w = theta when t/T >= 1 - eta; returned as a VE x0 denoiser."""

    def den(x, sigma, cond_image, class_scale):
        high = tuple(x.shape[-2:])
        k = (high[0] * high[1]) / (low[0] * low[1])
        s = sigma.reshape(-1, 1, 1, 1)
        a = 1 / torch.sqrt(1 + s**2)
        b = s * a
        x_t = a * x
        eps = NET(x_t, sigma, cond_image, class_scale)
        power = a**2 + b**2 / k
        snr_tau = k * a**2 / b**2  # SNR(tau) = k SNR(t)
        sigma_tau = torch.rsqrt(snr_tau).flatten()
        eps_low = NET(
            ref_down(x_t, low, kind) / torch.sqrt(power),
            sigma_tau,
            ref_down(cond_image, low, kind),
            class_scale,
        )
        t_norm = kdiffusion_style_sigma_to_t(sigma, LOG_SIGMAS) / 999
        w = ((t_norm >= 1 - eta).to(F64) * theta).reshape(-1, 1, 1, 1)
        eps_g = eps + w * (
            ref_up(eps_low, high, kind) / math.sqrt(k) - ref_up(ref_down(eps, low, kind), high, kind)
        )
        return x - s * eps_g

    return den


def sigma_to_t(sigma):
    return kdiffusion_style_sigma_to_t(sigma, LOG_SIGMAS) / 999


CASES = [
    ((16, 16), (8, 8), "box"),
    ((24, 24), (8, 8), "box"),
    ((16, 24), (8, 12), "box"),
    ((12, 12), (8, 8), "spectral"),
]
IDS = ["2x", "3x", "non-square", "1.5x-spectral"]


@pytest.mark.parametrize("high,low,kind", CASES, ids=IDS)
@pytest.mark.parametrize(
    "sampler", [sample_euler, sample_heun, sample_dpmpp_2m], ids=["euler", "heun", "dpmpp_2m"]
)
def test_matches_independent_implementation_through_samplers(high, low, kind, sampler):
    theta, eta = 1.1, 0.6
    ug = UpsampleGuidedDenoiser(
        kd_denoiser, base_size=(8, 8), guidance_scale=theta, eta=eta, sigma_to_t=sigma_to_t
    )
    assert ug.plan_for(high).low_size == low and ug.plan_for(high).kind == kind
    sigmas = karras_sigmas(8)
    g = torch.Generator().manual_seed(11)
    x = torch.randn(2, 3, *high, generator=g, dtype=F64) * sigmas[0]
    extra = {"cond_image": torch.randn(2, 1, *high, generator=g, dtype=F64), "class_scale": 0.9}
    ours = sampler(ug, x, sigmas, extra)
    ref = sampler(reference_guided(low, kind, theta, eta), x, sigmas, extra)
    plain = sampler(kd_denoiser, x, sigmas, extra)
    assert torch.allclose(ours, ref, atol=1e-11, rtol=1e-12)
    assert (ours - plain).abs().max() > 1e-3  # guidance did something


def test_scalar_sigma_and_schedule_off_and_base_size():
    ug = UpsampleGuidedDenoiser(kd_denoiser, base_size=8, eta=0.6, sigma_to_t=sigma_to_t)
    x = torch.randn(1, 3, 16, 16, dtype=F64)
    extra = {"cond_image": torch.zeros(1, 1, 16, 16, dtype=F64), "class_scale": 1.0}
    # scalar sigma is accepted
    assert torch.allclose(
        ug(x, torch.tensor(5.0, dtype=F64), **extra),
        ug(x, torch.tensor([5.0], dtype=F64), **extra),
        atol=1e-12,
    )
    # late in sampling (t/T < 0.4): exactly the plain prediction, and no extra call
    calls = []

    def counting(x, sigma, **kw):
        calls.append(tuple(x.shape))
        return kd_denoiser(x, sigma, **kw)

    ug_c = UpsampleGuidedDenoiser(counting, base_size=8, eta=0.6, sigma_to_t=sigma_to_t)
    low_sigma = torch.tensor([0.1], dtype=F64)
    assert torch.equal(ug_c(x, low_sigma, **extra), kd_denoiser(x, low_sigma, **extra))
    assert calls == [(1, 3, 16, 16)]
    # at the base size (factor 1) and with w = 0: the plain prediction, bit for bit
    x8 = torch.randn(1, 3, 8, 8, dtype=F64)
    extra8 = {"cond_image": torch.zeros(1, 1, 8, 8, dtype=F64), "class_scale": 1.0}
    assert torch.equal(
        ug(x8, torch.tensor([5.0], dtype=F64), **extra8),
        kd_denoiser(x8, torch.tensor([5.0], dtype=F64), **extra8),
    )
    ug0 = UpsampleGuidedDenoiser(kd_denoiser, base_size=8, guidance_scale=0.0)
    assert torch.equal(
        ug0(x, torch.tensor([5.0], dtype=F64), **extra),
        kd_denoiser(x, torch.tensor([5.0], dtype=F64), **extra),
    )


def test_float32_sampling_runs_and_stays_close_to_float64():
    ug = UpsampleGuidedDenoiser(kd_denoiser, base_size=8, sigma_to_t=sigma_to_t)
    sigmas = karras_sigmas(6)
    x = torch.randn(1, 3, 12, 12, dtype=F64) * sigmas[0]
    extra = {"cond_image": torch.zeros(1, 1, 12, 12, dtype=F64), "class_scale": 1.0}
    out64 = sample_euler(ug, x, sigmas, extra)
    NET.float()
    try:
        extra32 = {"cond_image": extra["cond_image"].float(), "class_scale": 1.0}
        out32 = sample_euler(ug, x.float(), sigmas.float(), extra32)
    finally:
        NET.double()
    assert out32.dtype == torch.float32
    assert torch.allclose(out32.double(), out64, atol=1e-3)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"base_size": 0}, "base size"),
        ({"base_size": (8, 8, 8)}, "base size"),
        ({"base_size": 8, "guidance_scale": -1}, "guidance scale"),
        ({"base_size": 8, "guidance_scale": float("nan")}, "guidance scale"),
        ({"base_size": 8, "eta": 1.2}, "eta"),
        ({"base_size": 8, "resampler": "lanczos"}, "resampler"),
    ],
)
def test_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        UpsampleGuidedDenoiser(kd_denoiser, **kwargs)


def test_call_errors():
    ug = UpsampleGuidedDenoiser(lambda x, s: x[..., :-1], base_size=4)
    with pytest.raises(ValueError, match="returned shape"):
        ug(torch.zeros(1, 3, 8, 8), torch.tensor([1.0]))
    ug = UpsampleGuidedDenoiser(lambda x, s: x, base_size=4)
    with pytest.raises(ValueError, match="noise level"):
        ug(torch.zeros(2, 3, 8, 8), torch.ones(3))
    with pytest.raises(ValueError, match="x must be a tensor"):
        ug(torch.zeros(8, 8), torch.ones(1))


def test_python_number_sigma_is_taken_in_x_dtype():
    """A float sigma with a float64 x reaches the low-res call as sigma / 3 to float64 precision (3x), and the
    guided output equals the one for a float64 tensor sigma bit for bit (a float32 detour errs by ~5e-8)."""
    seen = []

    def den(x, sigma):
        seen.append(torch.as_tensor(sigma))
        return x / (1 + torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, 1, 1, 1) ** 2)

    guided = UpsampleGuidedDenoiser(den, base_size=8, eta=1.0)
    x = torch.randn(2, 3, 24, 24, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out_float = guided(x, 2.3)
    low_from_float = seen[-1]
    out_tensor = guided(x, torch.tensor(2.3, dtype=torch.float64))
    assert low_from_float.dtype == torch.float64
    assert torch.equal(out_float, out_tensor)
    assert float((low_from_float - 2.3 / 3).abs().max()) < 1e-15
    # half input: the level is not rounded to half precision
    guided(x.half(), 2.3)
    assert seen[-1].dtype in (torch.float16, torch.float32)


@pytest.mark.parametrize("level", [7.3, 0.3, 481.5])
def test_every_convention_takes_a_python_level_in_x_dtype(level):
    from lib_upsample_guidance import DiscreteVP, KarrasSigma, RectifiedFlow, make_resampler

    rs = make_resampler((24, 24), (8, 8), "box")
    x = torch.randn(2, 3, 24, 24, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    conventions = {7.3: KarrasSigma(), 0.3: RectifiedFlow(), 481.5: DiscreteVP(AC)}
    conv = conventions[level]
    x_py, level_py = conv.low_res_query(x, level, rs)
    x_t, level_t = conv.low_res_query(x, torch.tensor(level, dtype=torch.float64), rs)
    assert level_py.dtype == torch.float64 and level_py.device == x.device
    assert torch.equal(level_py, level_t) and torch.equal(x_py, x_t)
