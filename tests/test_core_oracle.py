"""Closed-form oracle: Gaussian data whose exact denoisers are known, in every convention, and deliberate
mutants of the method that the oracle must catch.

Data: x0 = U(y) + P_h(z), y ~ N(0, v_y I) at the base size, z ~ N(0, v_z I), P_h = I - U D (the high band).
Its covariance is k v_y P_l + v_z P_h (P_l = U D), so the exact full-size posterior mean is a per-band
shrinkage, and the base-size data (D(x0) = y) has the exact denoiser v_y/(v_y + s^2) * x_low. Consequences:
  * UG applied to the exact full-size denoiser, with the exact base-size denoiser, changes nothing (any w);
  * UG with w = 1 applied to a wrong full-size denoiser recovers the exact low band and keeps its high band.
Both fail if the low-res noise level, the input power scaling or the down operator is wrong.
"""

import math

import pytest
import torch
from _reference import F64, ref_low_pass, ref_up, sd_alphas_cumprod

from lib_upsample_guidance import (
    DiscreteVP,
    KarrasSigma,
    RectifiedFlow,
    UpsampleGuidedDenoiser,
    guided_eps,
    guided_x0,
    plan_low_res,
)
from lib_upsample_guidance.core.conventions import DiscreteSigmaTable
from lib_upsample_guidance.core.resample import Resampler, make_resampler

V_Y, V_Z = 0.8, 0.3
CASES = [
    ((16, 16), (8, 8), "box"),
    ((24, 24), (8, 8), "box"),
    ((16, 24), (8, 12), "box"),
    ((12, 12), (8, 8), "spectral"),
]
IDS = ["box2x", "box3x", "box-nonsquare", "spectral1.5x"]


def col(v):
    return torch.as_tensor(v, dtype=F64).reshape(-1, 1, 1, 1)


class Gaussian:
    """Exact denoisers for the two-band Gaussian, with bands from the independent reference operators."""

    def __init__(self, high, low, kind):
        self.high, self.low, self.kind = high, low, kind
        self.k = (high[0] * high[1]) / (low[0] * low[1])

    def bands(self, x):
        lo = ref_low_pass(x, self.low, self.kind)
        return lo, x - lo

    def x0_given_ve(self, x, sigma):
        """E[x0 | x = x0 + sigma eps]: band variances k v_y (low) and v_z (high)."""
        lo, hi = self.bands(x)
        s2 = col(sigma) ** 2
        return self.k * V_Y / (self.k * V_Y + s2) * lo + V_Z / (V_Z + s2) * hi

    def naive_x0_given_ve(self, x, sigma):
        """A wrong full-size model: treats every pixel as having the base data's variance v_y."""
        return V_Y / (V_Y + col(sigma) ** 2) * x

    @staticmethod
    def base_x0_given_ve(x_low, sigma_low):
        """The exact base-size denoiser for y ~ N(0, v_y I)."""
        return V_Y / (V_Y + col(sigma_low) ** 2) * x_low

    def noisy(self, sigma, seed=0, batch=2):
        g = torch.Generator().manual_seed(seed)
        low = torch.randn(batch, 3, *self.low, generator=g, dtype=F64) * math.sqrt(V_Y)
        high_band = self.bands(torch.randn(batch, 3, *self.high, generator=g, dtype=F64) * math.sqrt(V_Z))[1]
        x0 = ref_up(low, self.high, self.kind) + high_band
        return x0 + col(sigma) * torch.randn(batch, 3, *self.high, generator=g, dtype=F64)


def model_for(g: Gaussian, full):
    """A k-diffusion denoiser that answers with `full` at the target size and exactly at the base size."""

    def den(x, sigma, **extra):
        if tuple(x.shape[-2:]) == g.high:
            return full(x, sigma)
        assert tuple(x.shape[-2:]) == g.low
        return g.base_x0_given_ve(x, sigma)

    return den


@pytest.mark.parametrize("high,low,kind", CASES, ids=IDS)
@pytest.mark.parametrize("w", [1.0, 0.5])
def test_exact_denoiser_is_a_fixed_point_of_guidance(high, low, kind, w):
    g = Gaussian(high, low, kind)
    wrapper = UpsampleGuidedDenoiser(model_for(g, g.x0_given_ve), base_size=low, guidance_scale=w, eta=1.0)
    assert wrapper.plan_for(high).low_size == low and wrapper.plan_for(high).kind == kind
    for sigma in (14.0, 2.0, 0.3):
        x = g.noisy(sigma)
        s = torch.full((2,), sigma, dtype=F64)
        assert torch.allclose(wrapper(x, s), g.x0_given_ve(x, s), atol=1e-10)


@pytest.mark.parametrize("high,low,kind", CASES, ids=IDS)
def test_guidance_recovers_the_exact_low_band_of_a_wrong_model(high, low, kind):
    g = Gaussian(high, low, kind)
    wrapper = UpsampleGuidedDenoiser(
        model_for(g, g.naive_x0_given_ve), base_size=low, guidance_scale=1.0, eta=1.0
    )
    x = g.noisy(3.0, seed=1)
    s = torch.full((2,), 3.0, dtype=F64)
    out = wrapper(x, s)
    exact_lo, _ = g.bands(g.x0_given_ve(x, s))
    naive_lo, naive_hi = g.bands(g.naive_x0_given_ve(x, s))
    out_lo, out_hi = g.bands(out)
    assert torch.allclose(out_lo, exact_lo, atol=1e-10)
    assert torch.allclose(out_hi, naive_hi, atol=1e-10)
    assert not torch.allclose(naive_lo, exact_lo, atol=1e-2)  # the test has something to fix


@pytest.mark.parametrize("high,low,kind", CASES, ids=IDS)
def test_discrete_vp_eps_oracle(high, low, kind):
    """Exact eps-models in the discrete VP convention; fractional tau read through the model's own table."""
    g = Gaussian(high, low, kind)
    ac = sd_alphas_cumprod()
    table = DiscreteSigmaTable(ac)
    conv = DiscreteVP(ac)
    plan = plan_low_res(high, low, latent_factor=1)
    r = plan.resampler()

    def eps_model(x_t, t, variance_low_band):
        sig = col(table.t_to_sigma(t))
        a = 1 / torch.sqrt(1 + sig**2)
        b = sig * a
        if variance_low_band is None:  # base-size model
            x0 = a * V_Y / (a**2 * V_Y + b**2) * x_t
        else:
            lo, hi = g.bands(x_t)
            x0 = (
                a * variance_low_band / (a**2 * variance_low_band + b**2) * lo
                + a * V_Z / (a**2 * V_Z + b**2) * hi
            )
        return (x_t - a * x0) / b

    for t_int in (999, 700, 350):
        t = torch.tensor([t_int, t_int])
        a_t = col(ac[t].sqrt())
        x_t = a_t * g.noisy(0.0, seed=t_int) + col((1 - ac[t]).sqrt()) * torch.randn(2, 3, *high, dtype=F64)
        x_low, tau = conv.low_res_query(x_t, t, r)
        eps = eps_model(x_t, t.to(F64), g.k * V_Y)
        out = guided_eps(eps, eps_model(x_low, tau, None), r, 1.0)
        assert torch.allclose(out, eps, atol=1e-9), t_int


@pytest.mark.parametrize("high,low,kind", CASES, ids=IDS)
def test_rectified_flow_oracle(high, low, kind):
    g = Gaussian(high, low, kind)
    r = plan_low_res(high, low, latent_factor=1).resampler()

    def x0_model(x, t, variance_low_band):
        tt = col(t)
        if variance_low_band is None:
            return (1 - tt) * V_Y / ((1 - tt) ** 2 * V_Y + tt**2) * x
        lo, hi = g.bands(x)
        shrink = lambda v: (1 - tt) * v / ((1 - tt) ** 2 * v + tt**2)  # noqa: E731
        return shrink(variance_low_band) * lo + shrink(V_Z) * hi

    for t_val in (0.95, 0.6, 0.2):
        t = torch.full((2,), t_val, dtype=F64)
        x = (1 - col(t)) * g.noisy(0.0, seed=3) + col(t) * torch.randn(2, 3, *high, dtype=F64)
        x_low, t_low = RectifiedFlow().low_res_query(x, t, r)
        den = x0_model(x, t, g.k * V_Y)
        assert torch.allclose(guided_x0(den, x0_model(x_low, t_low, None), r, 1.0), den, atol=1e-10)


# ---- mutants: each one must be caught by the oracle ----


class SigmaOverK(KarrasSigma):
    def low_res_query(self, x, level, resampler):
        return resampler.down(x), torch.as_tensor(level) / resampler.k


class NoPowerScaling(DiscreteVP):
    def low_res_query(self, x, level, resampler):
        x_low, tau = super().low_res_query(x, level, resampler)
        return resampler.down(x), tau  # tau right, but D(x_t) not divided by sqrt(P)


class StridedDown(Resampler):
    def down(self, x):
        s_h, s_w = self.high_size[0] // self.low_size[0], self.high_size[1] // self.low_size[1]
        return x[..., ::s_h, ::s_w]


def strided(r):
    return StridedDown(r.high_size, r.low_size, r.kind, r._axes, r._cache)


def oracle_error_karras(convention, resampler_fn=lambda r: r):
    g = Gaussian((16, 16), (8, 8), "box")
    r = resampler_fn(make_resampler((16, 16), (8, 8)))
    x = g.noisy(2.0, seed=5)
    s = torch.full((2,), 2.0, dtype=F64)
    x_low, s_low = convention.low_res_query(x, s, r)
    exact = g.x0_given_ve(x, s)
    out = guided_x0(exact, g.base_x0_given_ve(x_low, s_low), r, 1.0)
    return (out - exact).abs().max().item()


def test_mutant_sigma_over_k_is_caught():
    assert oracle_error_karras(KarrasSigma()) < 1e-10
    assert oracle_error_karras(SigmaOverK()) > 1e-2


def test_mutant_strided_subsampling_is_caught():
    assert oracle_error_karras(KarrasSigma(), strided) > 1e-2


def test_mutant_no_power_scaling_is_caught():
    ac = sd_alphas_cumprod()
    g = Gaussian((16, 16), (8, 8), "box")
    r = make_resampler((16, 16), (8, 8))
    table = DiscreteSigmaTable(ac)

    def eps_base(x_t, t):
        sig = col(table.t_to_sigma(t))
        a = 1 / torch.sqrt(1 + sig**2)
        b = sig * a
        return (x_t - a * (a * V_Y / (a**2 * V_Y + b**2) * x_t)) / b

    def error(conv):
        t = torch.tensor([600, 600])
        x_t = col(ac[t].sqrt()) * g.noisy(0.0, seed=7) + col((1 - ac[t]).sqrt()) * torch.randn(
            2, 3, 16, 16, dtype=F64
        )
        sig = col(table.t_to_sigma(t.to(F64)))
        a, b = 1 / torch.sqrt(1 + sig**2), sig / torch.sqrt(1 + sig**2)
        lo, hi = g.bands(x_t)
        x0 = a * g.k * V_Y / (a**2 * g.k * V_Y + b**2) * lo + a * V_Z / (a**2 * V_Z + b**2) * hi
        eps = (x_t - a * x0) / b
        x_low, tau = conv.low_res_query(x_t, t, r)
        return (guided_eps(eps, eps_base(x_low, tau), r, 1.0) - eps).abs().max().item()

    assert error(DiscreteVP(ac)) < 1e-9
    assert error(NoPowerScaling(ac)) > 1e-2
