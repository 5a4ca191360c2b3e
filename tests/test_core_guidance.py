"""The guided prediction: band properties, eps form == x0 form in every convention, CFG commutation."""

import math

import pytest
import torch
from _reference import sd_alphas_cumprod

from lib_upsample_guidance import (
    DiscreteVP,
    KarrasSigma,
    RectifiedFlow,
    guided_eps,
    guided_x0,
    make_resampler,
)
from lib_upsample_guidance.core.conventions import DiscreteSigmaTable

F64 = torch.float64
RESAMPLERS = [
    make_resampler((8, 12), (4, 6)),  # box 2x
    make_resampler((9, 9), (3, 3)),  # box 3x
    make_resampler((12, 10), (8, 6), "spectral"),  # any size
]


@pytest.mark.parametrize("r", RESAMPLERS, ids=["box2", "box3", "spectral"])
def test_w1_low_band_is_the_low_res_prediction_and_high_band_untouched(r):
    g = torch.Generator().manual_seed(0)
    den = torch.randn(3, 4, *r.high_size, generator=g, dtype=F64)
    den_low = torch.randn(3, 4, *r.low_size, generator=g, dtype=F64)
    out = guided_x0(den, den_low, r, 1.0)
    assert torch.allclose(r.down(out), den_low, atol=1e-12)
    for w in (0.0, 0.5, 1.0, 1.7):
        out = guided_x0(den, den_low, r, w)
        high = out - r.up(r.down(out))
        assert torch.allclose(high, den - r.up(r.down(den)), atol=1e-12)
        # the low band moves linearly in w towards den_low
        assert torch.allclose(r.down(out), (1 - w) * r.down(den) + w * den_low, atol=1e-12)
    assert torch.equal(guided_x0(den, den_low, r, 0.0), den)


def test_per_row_weights():
    r = RESAMPLERS[0]
    den = torch.randn(2, 4, *r.high_size, dtype=F64)
    den_low = torch.randn(2, 4, *r.low_size, dtype=F64)
    out = guided_x0(den, den_low, r, torch.tensor([0.0, 1.0], dtype=F64))
    assert torch.equal(out[0], den[0])
    assert torch.allclose(r.down(out[1:]), den_low[1:], atol=1e-12)
    with pytest.raises(ValueError, match="one value per row"):
        guided_x0(den, den_low, r, torch.ones(3))


def test_mismatched_low_res_shape_is_a_value_error():
    r = RESAMPLERS[0]
    with pytest.raises(ValueError, match="low-resolution prediction has shape"):
        guided_x0(torch.zeros(2, 4, 8, 12), torch.zeros(2, 4, 4, 4), r, 1.0)


# eps form == x0 form. For each convention: arbitrary (random) model predictions for the full-size and the
# low-res query, written in eps, converted to x0 with the convention's own relation between x, x0 and eps
# (written here independently), guided in both spaces, and compared after converting back.


@pytest.mark.parametrize("r", RESAMPLERS, ids=["box2", "box3", "spectral"])
def test_eps_and_x0_forms_agree_karras_sigma(r):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, *r.high_size, generator=g, dtype=F64) * 3
    sigma = torch.tensor([2.5, 0.7], dtype=F64)
    x_low, sigma_low = KarrasSigma().low_res_query(x, sigma, r)
    eps = torch.randn_like(x)
    eps_low = torch.randn_like(x_low)
    s, s_low = sigma.view(-1, 1, 1, 1), sigma_low.view(-1, 1, 1, 1)
    den, den_low = x - s * eps, x_low - s_low * eps_low  # x = x0 + sigma eps
    for w in (1.0, 0.6):
        x0_g = guided_x0(den, den_low, r, w)
        eps_g = guided_eps(eps, eps_low, r, w)
        assert torch.allclose(x0_g, x - s * eps_g, atol=1e-10)


@pytest.mark.parametrize("r", RESAMPLERS, ids=["box2", "box3", "spectral"])
def test_eps_and_x0_forms_agree_discrete_vp_with_fractional_tau(r):
    ac = sd_alphas_cumprod()
    conv = DiscreteVP(ac)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 4, *r.high_size, generator=g, dtype=F64)
    t = torch.tensor([981.0, 421.0], dtype=F64)
    x_low, tau = conv.low_res_query(x, t, r)
    assert torch.any(tau != tau.round())  # fractional tau really is exercised

    def ab(time):  # a, b from the table at (possibly fractional) time, via sigma = b/a
        sig = DiscreteSigmaTable(ac).t_to_sigma(time).view(-1, 1, 1, 1)
        a = 1 / torch.sqrt(1 + sig**2)
        return a, sig * a

    a, b = ab(t)
    a_l, b_l = ab(tau)
    eps, eps_low = torch.randn_like(x), torch.randn_like(x_low)
    den = (x - b * eps) / a  # x_t = a x0 + b eps
    den_low = (x_low - b_l * eps_low) / a_l
    eps_g = guided_eps(eps, eps_low, r, 1.0)
    x0_g = guided_x0(den, den_low, r, 1.0)
    # the two agree exactly when tau's table point sits where the SNR relation says (k * SNR(t))
    assert torch.allclose(x0_g, (x - b * eps_g) / a, atol=1e-8)


@pytest.mark.parametrize("r", RESAMPLERS, ids=["box2", "box3", "spectral"])
def test_eps_and_x0_forms_agree_v_prediction(r):
    """v = a eps - b x0 (VP); a v-model's x0 and eps are derived from v; both guided forms agree."""
    conv = KarrasSigma()
    g = torch.Generator().manual_seed(3)
    x_ve = torch.randn(2, 4, *r.high_size, generator=g, dtype=F64) * 2
    sigma = torch.tensor([1.3, 4.0], dtype=F64)
    x_low, sigma_low = conv.low_res_query(x_ve, sigma, r)

    def split(xv, sig, v):  # VE input, VP-v output -> (x0, eps)
        s = sig.view(-1, 1, 1, 1)
        a = 1 / torch.sqrt(1 + s**2)
        b = s * a
        xt = a * xv
        return a * xt - b * v, b * xt + a * v

    v, v_low = torch.randn_like(x_ve), torch.randn_like(x_low)
    x0, eps = split(x_ve, sigma, v)
    x0_low, eps_low = split(x_low, sigma_low, v_low)
    s = sigma.view(-1, 1, 1, 1)
    assert torch.allclose(x0 + s * eps, x_ve, atol=1e-10)  # the split is consistent
    assert torch.allclose(
        guided_x0(x0, x0_low, r, 1.2), x_ve - s * guided_eps(eps, eps_low, r, 1.2), atol=1e-10
    )


@pytest.mark.parametrize("r", RESAMPLERS, ids=["box2", "box3", "spectral"])
def test_eps_and_x0_forms_agree_rectified_flow(r):
    conv = RectifiedFlow()
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 4, *r.high_size, generator=g, dtype=F64)
    t = torch.tensor([0.9, 0.35], dtype=F64)
    x_low, t_low = conv.low_res_query(x, t, r)
    eps, eps_low = torch.randn_like(x), torch.randn_like(x_low)
    tt, tl = t.view(-1, 1, 1, 1), t_low.view(-1, 1, 1, 1)
    den = (x - tt * eps) / (1 - tt)  # x = (1-t) x0 + t eps
    den_low = (x_low - tl * eps_low) / (1 - tl)
    assert torch.allclose(
        guided_x0(den, den_low, r, 1.0), (x - tt * guided_eps(eps, eps_low, r, 1.0)) / (1 - tt), atol=1e-10
    )


@pytest.mark.parametrize("r", RESAMPLERS, ids=["box2", "box3", "spectral"])
def test_guidance_commutes_with_classifier_free_guidance(r):
    g = torch.Generator().manual_seed(5)
    shape, low = (2, 4, *r.high_size), (2, 4, *r.low_size)
    cond, uncond = torch.randn(shape, generator=g, dtype=F64), torch.randn(shape, generator=g, dtype=F64)
    cond_l, uncond_l = torch.randn(low, generator=g, dtype=F64), torch.randn(low, generator=g, dtype=F64)
    scale = 7.5

    def cfg(c, u):
        return u + scale * (c - u)

    before = cfg(guided_x0(cond, cond_l, r, 1.1), guided_x0(uncond, uncond_l, r, 1.1))
    after = guided_x0(cfg(cond, uncond), cfg(cond_l, uncond_l), r, 1.1)
    assert torch.allclose(before, after, atol=1e-9)
    eps_before = cfg(guided_eps(cond, cond_l, r, 0.8), guided_eps(uncond, uncond_l, r, 0.8))
    eps_after = guided_eps(cfg(cond, uncond), cfg(cond_l, uncond_l), r, 0.8)
    assert torch.allclose(eps_before, eps_after, atol=1e-9)


def test_guided_eps_uses_sqrt_k_not_k():
    """With eps_low = sqrt(k) D(eps) (the query's noise, rescaled), guided_eps is a no-op; with k it is not."""
    r = RESAMPLERS[0]
    eps = torch.randn(1, 4, *r.high_size, dtype=F64)
    assert torch.allclose(guided_eps(eps, math.sqrt(r.k) * r.down(eps), r, 1.0), eps, atol=1e-12)
    assert not torch.allclose(guided_eps(eps, r.k * r.down(eps), r, 1.0), eps, atol=1e-3)
