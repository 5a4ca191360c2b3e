"""Demo samplers, schedule and model wrapper against independent computations."""

from __future__ import annotations

import math

import pytest
import torch

from lib_upsample_guidance.demo import model as demo_model
from lib_upsample_guidance.demo.sampling import img2img_sigmas, karras_sigmas, sample_dpmpp_2m, sample_euler
from lib_upsample_guidance.demo.wrapper import ModelDenoiser

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_karras_sigmas_formula() -> None:
    sig = karras_sigmas(5, 0.1, 10.0, 7.0)
    expected = [(10 ** (1 / 7) + i / 4 * (0.1 ** (1 / 7) - 10 ** (1 / 7))) ** 7 for i in range(5)] + [0.0]
    assert sig.tolist() == pytest.approx(expected, rel=1e-5)


def test_img2img_sigmas_are_the_tail_of_a_longer_schedule() -> None:
    tail = img2img_sigmas(10, 0.5)
    assert len(tail) == 11 and torch.equal(tail, karras_sigmas(20)[10:])


def _gaussian_denoiser(sd: float):
    """Ideal denoiser for data ~ N(0, sd^2): E[x0 | x] = x sd^2 / (sd^2 + sigma^2)."""
    return lambda x, sigma: x * (sd**2 / (sd**2 + sigma[:, None, None, None] ** 2))


def test_samplers_follow_the_probability_flow_ode() -> None:
    # For Gaussian data the ODE solution is x(sigma) = x_T sqrt(sd^2 + sigma^2) / sqrt(sd^2 + sigma_T^2);
    # the last step returns the denoiser's output at sigma_min.
    sd, smin, smax = 0.5, 0.01, 80.0
    xT = torch.randn(4, 3, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * smax
    exact = xT * math.sqrt(sd**2 + smin**2) / math.sqrt(sd**2 + smax**2) * (sd**2 / (sd**2 + smin**2))
    errors = {}
    for name, sampler in (("euler", sample_euler), ("dpmpp_2m", sample_dpmpp_2m)):
        for steps in (30, 120):
            out = sampler(_gaussian_denoiser(sd), xT, karras_sigmas(steps, smin, smax).double())
            errors[name, steps] = float((out - exact).abs().max() / exact.abs().max())
    assert errors["euler", 120] < 0.03 and errors["dpmpp_2m", 120] < 0.002
    # first order vs second order: 4x the steps cuts the error about 4x vs about 16x
    assert 3 < errors["euler", 30] / errors["euler", 120] < 5
    assert errors["dpmpp_2m", 30] / errors["dpmpp_2m", 120] > 12
    assert errors["dpmpp_2m", 30] < errors["euler", 30] / 3


def test_samplers_reach_a_point_mass_exactly() -> None:
    c = torch.full((2, 3, 4, 4), 0.3)
    sigmas = karras_sigmas(8)
    for sampler in (sample_euler, sample_dpmpp_2m):
        out = sampler(lambda x, s: c, torch.randn(2, 3, 4, 4) * 80, sigmas)
        assert torch.allclose(out, c, atol=1e-6)


def test_time_mapping_is_the_cosine_schedule() -> None:
    t = torch.linspace(0.0, 0.99, 50, dtype=torch.float64)
    sigma = demo_model.t_to_sigma(t)
    assert torch.allclose(sigma, torch.sin(t * math.pi / 2) / torch.cos(t * math.pi / 2))
    assert torch.allclose(demo_model.sigma_to_t(sigma), t)


def test_model_denoiser_converts_v_to_x0() -> None:
    class Fake(torch.nn.Module):
        def forward(self, x, t):
            self.seen = (x.clone(), t.clone())
            return 0.5 * x + t[:, None, None, None]

    fake = Fake()
    den = ModelDenoiser(fake)
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    sigma = torch.tensor([0.1, 1.0, 20.0], dtype=torch.float64)
    out = den(x, sigma)
    # independent: t = 2/pi atan(sigma), a = cos(pi t/2), s = sin(pi t/2), x_t = a x, x0 = a x_t - s v
    t = 2 / math.pi * torch.atan(sigma)
    a = torch.cos(math.pi * t / 2)[:, None, None, None]
    s = torch.sin(math.pi * t / 2)[:, None, None, None]
    xt = a * x
    v = 0.5 * xt + t[:, None, None, None]
    assert torch.allclose(fake.seen[0], xt) and torch.allclose(fake.seen[1], t)
    assert torch.allclose(out, a * xt - s * v)
    assert den.calls == 1 and den.pixels == 3 * 64


def test_unet_runs_at_base_and_target_sizes() -> None:
    net = demo_model.SmallUNet(demo_model.UNetConfig(channels=(8, 16, 16)))
    for size in (16, 24, 32, 48):
        out = net(torch.randn(2, 3, size, size), torch.rand(2))
        assert out.shape == (2, 3, size, size)
    meta = demo_model.config_to_metadata(net.config)
    assert demo_model.config_from_metadata(meta) == net.config
