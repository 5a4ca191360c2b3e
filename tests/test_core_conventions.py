"""The low-resolution query in each noise convention.

Core identity, checked per convention: for x built from known x0 and eps, the query input is a valid noisy
sample *at the query's level* of the downsampled clean image D(x0) with unit-variance noise sqrt(k) D(eps):
    x_low == signal(level_low) * D(x0) + noise(level_low) * sqrt(k) * D(eps)
with signal/noise coefficients written here from each convention's definition.
"""

import math

import pytest
import torch
from _reference import kdiffusion_style_sigma_to_t, sd_alphas_cumprod

from lib_upsample_guidance import DiscreteVP, KarrasSigma, RectifiedFlow, make_resampler
from lib_upsample_guidance.core.conventions import DiscreteSigmaTable

F64 = torch.float64
RESAMPLERS = [
    make_resampler((8, 8), (4, 4)),
    make_resampler((9, 12), (3, 4)),
    make_resampler((12, 12), (8, 8), "spectral"),
]


def parts(r, shape, seed):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(*shape, *r.high_size, generator=g, dtype=F64)
    eps = torch.randn(*shape, *r.high_size, generator=g, dtype=F64)
    return x0, eps


def col(v):
    return v.reshape(-1, 1, 1, 1)


@pytest.mark.parametrize("r", RESAMPLERS, ids=["box2", "box3x3", "spectral"])
def test_karras_sigma_query(r):
    x0, eps = parts(r, (2, 4), 0)
    sigma = torch.tensor([14.6, 0.3], dtype=F64)
    x = x0 + col(sigma) * eps
    x_low, s_low = KarrasSigma().low_res_query(x, sigma, r)
    assert torch.allclose(s_low, sigma / math.sqrt(r.k))
    assert torch.allclose(x_low, r.down(x0) + col(s_low) * math.sqrt(r.k) * r.down(eps), atol=1e-12)


@pytest.mark.parametrize("r", RESAMPLERS, ids=["box2", "box3x3", "spectral"])
def test_discrete_vp_query(r):
    ac = sd_alphas_cumprod()
    conv = DiscreteVP(ac)
    x0, eps = parts(r, (3, 4), 1)
    t = torch.tensor([999, 500, 120])  # integer timesteps, as A1111's DDIM passes them
    a = col(ac[t].sqrt())
    b = col((1 - ac[t]).sqrt())
    x = a * x0 + b * eps
    x_low, tau = conv.low_res_query(x, t, r)
    # the query's coefficients at tau, from the table with fractional interpolation in log sigma
    sig_tau = col(DiscreteSigmaTable(ac).t_to_sigma(tau))
    a_tau = 1 / torch.sqrt(1 + sig_tau**2)
    b_tau = sig_tau * a_tau
    assert torch.allclose(x_low, a_tau * r.down(x0) + b_tau * math.sqrt(r.k) * r.down(eps), atol=1e-9)
    # SNR(tau) = k SNR(t)
    snr_t = ac[t] / (1 - ac[t])
    assert torch.allclose(1 / sig_tau.flatten() ** 2, r.k * snr_t, rtol=1e-9)


def test_discrete_vp_clamps_below_the_table_like_the_host():
    ac = sd_alphas_cumprod()
    conv = DiscreteVP(ac)
    r = make_resampler((8, 8), (2, 2))  # k = 16: sigma(t=1)/4 is below the smallest table sigma
    x = torch.randn(1, 4, 8, 8, dtype=F64)
    _, tau = conv.low_res_query(x, torch.tensor([1.0], dtype=F64), r)
    assert tau.item() == 0.0


@pytest.mark.parametrize("r", RESAMPLERS, ids=["box2", "box3x3", "spectral"])
def test_rectified_flow_query(r):
    x0, eps = parts(r, (2, 4), 2)
    t = torch.tensor([0.97, 0.4], dtype=F64)
    x = (1 - col(t)) * x0 + col(t) * eps
    x_low, t_low = RectifiedFlow().low_res_query(x, t, r)
    tl = col(t_low)
    assert torch.allclose(x_low, (1 - tl) * r.down(x0) + tl * math.sqrt(r.k) * r.down(eps), atol=1e-12)
    # SNR of flow: ((1-t)/t)^2; the query's SNR is k times the target's
    snr = ((1 - t) / t) ** 2
    assert torch.allclose(((1 - t_low) / t_low) ** 2, r.k * snr, rtol=1e-10)


def test_sigma_table_matches_kdiffusion_interpolation():
    ac = sd_alphas_cumprod()
    table = DiscreteSigmaTable(ac)
    sigmas = torch.cat(
        [
            torch.logspace(-2.5, 1.5, 97, dtype=F64),  # includes values below sigma_min and above sigma_max
            ((1 - ac) / ac).sqrt()[[0, 1, 500, 998, 999]],  # exact table points
        ]
    )
    ref = kdiffusion_style_sigma_to_t(sigmas, table.log_sigmas)
    assert torch.allclose(table.sigma_to_t(sigmas), ref, atol=1e-9)
    inside = (sigmas >= ((1 - ac[0]) / ac[0]).sqrt()) & (sigmas <= ((1 - ac[-1]) / ac[-1]).sqrt())
    assert torch.allclose(table.t_to_sigma(table.sigma_to_t(sigmas[inside])), sigmas[inside], rtol=1e-9)
    assert table.sigma_to_t(torch.tensor([1e-4], dtype=F64)).item() == 0.0
    assert table.sigma_to_t(torch.tensor([1e3], dtype=F64)).item() == 999.0
    assert table.t_to_sigma(torch.tensor([0.0], dtype=F64)).item() == pytest.approx(0.029167, rel=1e-4)


def test_karras_time_from_alphas_cumprod():
    ac = sd_alphas_cumprod()
    conv = KarrasSigma.from_alphas_cumprod(ac)
    sigma_max = ((1 - ac[-1]) / ac[-1]).sqrt()
    assert conv.normalised_time(sigma_max.reshape(1)).item() == pytest.approx(1.0)
    assert conv.normalised_time(torch.tensor([1e-5])).item() == 0.0
    assert KarrasSigma().normalised_time(torch.tensor([0.01, 5.0])).tolist() == [1.0, 1.0]


@pytest.mark.parametrize("bad", [torch.tensor([0.5]), torch.tensor([0.9, 0.95]), torch.tensor([0.5, 0.0])])
def test_bad_alphas_cumprod(bad):
    with pytest.raises(ValueError, match="alphas_cumprod"):
        DiscreteSigmaTable(bad)


def test_bad_output_space():
    with pytest.raises(ValueError, match="'x0' or 'eps'"):
        KarrasSigma(output="v")
