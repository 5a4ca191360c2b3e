"""The speed benchmark's machinery and arithmetic (never its timings), end to end on a tiny UNet graph."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lib_upsample_guidance.bench import speed as bs
from lib_upsample_guidance.core.conventions import KarrasSigma


def test_bound_job_ratio_and_hires_arithmetic():
    assert bs.flop_bound(1000, 250) == 1.25
    # 8 of 20 steps cost r = 1.3 x plain, the other 12 cost 1: (12 + 8 * 1.3) / 20
    assert math.isclose(bs.job_ratio(1.3, 8, 20), (12 + 8 * 1.3) / 20)
    assert bs.job_ratio(1.7, 0, 20) == 1.0
    assert math.isclose(bs.job_ratio(1.7, 20, 20), 1.7)
    # Hires. fix: 20 steps at the base size, then int(0.7 * 20) = 14 at the target
    assert bs.hires_fix_flops(100, 25) == 20 * 25 + 14 * 100
    assert bs.hires_fix_flops(100, 25, n_steps=30, denoise=0.5) == 30 * 25 + 15 * 100


def test_spectral_matrices_cached_under_inference_mode_still_work_with_autograd():
    # the bench runs under torch.inference_mode(); the resamplers (and their matrices) are shared per size
    from lib_upsample_guidance.core.planner import cached_resampler

    r = cached_resampler((14, 14), (9, 9), "spectral")
    with torch.inference_mode():
        r.down(torch.randn(1, 1, 14, 14))
        r.up(torch.randn(1, 1, 9, 9, dtype=torch.float64))
    x = torch.randn(1, 1, 14, 14, requires_grad=True)
    r.up(r.down(x) * 2).sum().backward()  # raised "Inference tensors cannot be saved for backward"
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_sd_table_and_karras_schedule_match_independent_values():
    ac = bs.scaled_linear_alphas_cumprod().numpy()
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
    assert np.allclose(ac, np.cumprod(1 - betas), rtol=1e-12)
    sigmas = np.sqrt((1 - ac) / ac)
    # SD's published sigma range: 0.0292 .. 14.61
    assert abs(sigmas[0] - 0.0292) < 1e-4 and abs(sigmas[-1] - 14.6146) < 1e-3
    k = bs.karras_sigmas(20, 0.0292, 14.61, 7.0).numpy()
    i = np.arange(20) / 19
    ref = (14.61 ** (1 / 7) + i * (0.0292 ** (1 / 7) - 14.61 ** (1 / 7))) ** 7
    assert np.allclose(k, ref, rtol=1e-12) and k[0] == pytest.approx(14.61) and k[-1] == pytest.approx(0.0292)


def test_guided_step_count_against_independent_interpolation():
    ac = bs.scaled_linear_alphas_cumprod()
    sigmas = bs.karras_sigmas()
    log_table = np.log(np.sqrt((1 - ac.numpy()) / ac.numpy()))
    t = np.interp(np.log(sigmas.numpy()), log_table, np.arange(1000.0))  # WebUI: t linear in log sigma
    for eta in (0.0, 0.3, 0.6, 1.0):
        expected = int(np.sum(t / 999 >= 1 - eta)) if eta > 0 else 0
        assert bs.count_guided_steps(sigmas, KarrasSigma.from_alphas_cumprod(ac), eta=eta) == expected
    assert 0 < bs.count_guided_steps(sigmas, KarrasSigma.from_alphas_cumprod(ac)) < 20


def test_flop_count_of_cpu_attention_conv_and_linear():
    q = torch.randn(2, 3, 10, 8)
    k = torch.randn(2, 3, 7, 8)
    # Q K^T: 2*B*H*Sq*Sk*D; (softmax) V: 2*B*H*Sq*Sk*Dv. Equal head sizes take the fused CPU kernel (which
    # torch's counter does not know: our formula), unequal ones the decomposed bmm form (torch's own count).
    for dv in (8, 5):
        v = torch.randn(2, 3, 7, dv)
        expected = 2 * 2 * 3 * 10 * 7 * (8 + dv)
        assert bs.count_flops(lambda v=v: F.scaled_dot_product_attention(q, k, v)) == expected
        meta = bs.count_flops(
            lambda v=v: F.scaled_dot_product_attention(q.to("meta"), k.to("meta"), v.to("meta"))
        )
        assert meta == expected
    x = torch.randn(1, 4, 6, 6)
    conv = torch.nn.Conv2d(4, 5, 3, padding=1)
    assert bs.count_flops(lambda: conv(x)) == 2 * 5 * 4 * 9 * 36
    lin = torch.nn.Linear(6, 3)
    assert bs.count_flops(lambda: lin(x)) == 2 * 4 * 6 * 6 * 3


def test_peak_allocated_bytes_sees_transients_and_the_result():
    def fn():
        tmp = torch.ones(250_000)  # 1 MB, freed before the result is made
        tmp2 = tmp * 2  # 1 MB more: 2 MB live here
        del tmp
        return tmp2 + 1  # 2 MB live again (tmp2 + result)

    peak = bs.peak_allocated_bytes(fn)
    assert 2_000_000 <= peak < 2_000_000 + 65_536

    def small():
        return torch.ones(1000)

    assert 4000 <= bs.peak_allocated_bytes(small) < 4000 + 4096


def test_summarise_median_and_quartiles():
    s = bs.summarise([4.0, 1.0, 3.0, 2.0, 5.0])
    assert s == {"median": 3.0, "q1": 2.0, "q3": 4.0, "n": 5}
    assert bs.summarise([2.5]) == {"median": 2.5, "q1": 2.5, "q3": 2.5, "n": 1}


def test_eps_to_x0_wrapper_formula():
    class Eps(torch.nn.Module):
        def forward(self, x, t, encoder_hidden_states=None, added_cond_kwargs=None, return_dict=False):
            self.seen = (x, t)
            return (x * 0 + 0.5,)

    ac = bs.scaled_linear_alphas_cumprod()
    unet = Eps()
    den = bs.EpsToX0(unet, bs.DiscreteSigmaTable(ac))
    x = torch.randn(2, 4, 8, 8)
    sigma = torch.tensor([14.6146, 1.0])
    out = den(x, sigma, context=torch.zeros(2, 1, 1))
    s = sigma.view(2, 1, 1, 1)
    assert torch.allclose(out, x - s * 0.5)
    assert torch.allclose(unet.seen[0], x / torch.sqrt(s**2 + 1))
    assert unet.seen[1][0].item() == pytest.approx(999, abs=1e-2) and den.calls == 1


def test_main_without_diffusers_prints_an_install_hint(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "diffusers", None)  # import diffusers -> ImportError
    assert bs.main(["--arch", "tiny"]) == 2
    err = capsys.readouterr().err
    assert "pip install diffusers" in err and "Traceback" not in err


def _spectral_resampling_flops(batch: int, channels: int, high: int, low: int) -> int:
    """The matmul FLOPs of one guided step's spectral D(x), D(den), U(z) (separable, -2 axis then -1)."""
    down = 2 * batch * channels * high * high * low + 2 * batch * channels * low * high * low
    up = 2 * batch * channels * high * low * low + 2 * batch * channels * high * low * high
    return 2 * down + up


def test_bench_end_to_end_on_a_tiny_unet(capsys):
    pytest.importorskip("diffusers")
    assert bs.main(["--arch", "tiny", "--json", "--reps", "1", "--warmup", "0"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["arch"] == "tiny" and rep["batch"] == 2 and rep["threads"] == 1
    n_g = rep["schedule"]["guided_steps"]
    by_case = {c["case"]: c for c in rep["cases"]}
    box, spec = by_case["2x box"], by_case["1.5x spectral"]
    assert box["low_latent"] == [8, 8] and spec["low_latent"] == [8, 8]
    assert box["model_calls"] == {"plain": 1, "guided": 2, "disabled": 1, "low": 1}
    assert spec["model_calls"] == {"plain": 1, "guided": 2, "low": 1}
    assert box["disabled_bit_identical"] is True
    for c in (box, spec):
        assert c["bound"] == pytest.approx(1 + c["flops_low"] / c["flops_high"], rel=1e-12)
        r = c["ratio_guided_plain"]["median"]
        assert c["ratio_over_bound"] == pytest.approx(r / c["bound"])
        assert c["job_ratio"] == pytest.approx(1 + n_g / 20 * (r - 1))
        assert c["job_bound"] == pytest.approx(1 + n_g / 20 * (c["bound"] - 1))
        # the FLOPs counted on the real CPU calls agree with the meta-device counts
        assert c["flops_measured"]["plain"] == c["flops_high"]
        assert c["flops_measured"]["low"] == c["flops_low"]
        assert c["flops_ratio_low_plain"] == pytest.approx(c["flops_low"] / c["flops_high"])
        assert set(c["seconds"]) == {"cpu", "wall"}
        assert c["peak_bytes"]["plain"] > 0
        assert c["path_us"]["guided"] > 0 and c["path_us"]["disabled"] > 0
    # a guided step is one target call plus one low-res call, plus the resampling matmuls (spectral only)
    assert box["flops_measured"]["guided"] == box["flops_high"] + box["flops_low"]
    assert box["flops_measured"]["disabled"] == box["flops_high"]
    assert spec["flops_measured"]["guided"] == spec["flops_high"] + spec[
        "flops_low"
    ] + _spectral_resampling_flops(2, 4, 12, 8)
    hires = {h["case"]: h for h in rep["hires_fix"]}
    h = hires["2x box"]
    f_high, f_low = box["flops_high"], box["flops_low"]
    assert h["ug_over_plain"] == pytest.approx((20 * f_high + n_g * f_low) / (20 * f_high))
    assert h["hires_over_plain"] == pytest.approx((20 * f_low + 14 * f_high) / (20 * f_high))
