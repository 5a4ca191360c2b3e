"""Forge main (2.x, `backend.*`) adapter tests on the stand-ins in tests/hosts/forge.

The guided prediction must equal an independent computation (direct apply_model calls, hand-written box
D/U, the core's low-res noise levels written out) for eps, v and flow predictors, with batch > 1, AND
prompts, CFG 1 and inpainting image_cond; the patch must be idempotent across the hires pass; failures must
finish the image unguided with one warning; disabled must leave the patcher untouched.
"""

from __future__ import annotations

import pytest
import torch
from _forge_support import FORGE_MAIN, TinyNet, expected_guided, host_on_path, make_p

from lib_upsample_guidance.adapters import forge
from lib_upsample_guidance.comfy_family import postcfg
from lib_upsample_guidance.webui.settings import UGSettings

ON = UGSettings(enabled=True, guidance_scale=0.8, eta=1.0, base_resolution=64)


@pytest.fixture()
def fm():
    """The Forge main stand-in modules."""
    with host_on_path(FORGE_MAIN):
        from backend.modules import k_prediction
        from backend.patcher.unet import UnetPatcher
        from backend.sampling import condition, sampling_function

        yield type(
            "FM", (), dict(kp=k_prediction, UnetPatcher=UnetPatcher, cond=condition, sf=sampling_function)
        )


def _unet(fm, predictor, extra_in=0, seed=0):
    return fm.UnetPatcher.from_model(TinyNet(extra_in=extra_in, seed=seed), k_predictor=predictor)


def _conds(fm, contexts, strengths=None):
    """Compiled cond list (one entry per AND sub-prompt) as Forge's compile_weighted_conditions makes it."""
    out = []
    for i, ctx in enumerate(contexts):
        entry = fm.cond.compile_conditions(ctx)[0]
        entry["strength"] = 1.0 if strengths is None else strengths[i]
        out.append(entry)
    return out


def _run(fm, unet, x, sigma, cond, uncond, cfg):
    return fm.sf.sampling_function_inner(unet.model, x, sigma, uncond, cond, cfg, unet.model_options)


def _patched(fm, unet, settings=ON, cfg=5.0, **kw):
    p = make_p(unet, cfg_scale=cfg, **kw)
    forge.process_before_every_sampling(p, settings)
    return p, p.sd_model.forge_objects.unet


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "flow"])
def test_matches_independent_computation(fm, kind):
    torch.manual_seed(1)
    flow = kind == "flow"
    predictor = fm.kp.PredictionFlux() if flow else fm.kp.Prediction(prediction_type=kind)
    unet = _unet(fm, predictor)
    b = 2
    x = torch.randn(b, 4, 16, 32)
    sigma = torch.tensor([0.7, 0.7]) if flow else torch.tensor([3.0, 3.0])
    ctx, uctx = torch.randn(b, 7, 8), torch.randn(b, 7, 8)
    cond, uncond = _conds(fm, [ctx]), fm.cond.compile_conditions(uctx)
    flags = {"is_sd1": False} if flow else {}
    settings = UGSettings(enabled=True, guidance_scale=0.8, eta=1.0, base_resolution=88 if not flow else 96)
    p, patched = _patched(fm, unet, settings, cfg=5.0, family_flags=flags)
    assert patched is not unet
    den = _run(fm, unet, x, sigma, cond, uncond, 5.0)
    got = _run(fm, patched, x, sigma, cond, uncond, 5.0)
    # 16x32 latent, base 88 px (SD1: 11 latent px, granularity 8) or 96 px (Flux: granularity 2) -> 2x box, 8x16
    want = expected_guided(unet.model, x, sigma, den, [(ctx, 1.0)], uctx, 5.0, 0.8, s=2, flow=flow)
    assert not torch.allclose(got, den)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert p._upsample_guidance_forge_state.off_reason is None


def test_and_prompts_batch_and_strengths(fm):
    torch.manual_seed(2)
    unet = _unet(fm, fm.kp.Prediction())
    x = torch.randn(3, 4, 16, 16)
    sigma = torch.full((3,), 5.0)
    c1, c2, u = torch.randn(3, 7, 8), torch.randn(3, 7, 8), torch.randn(3, 7, 8)
    cond, uncond = _conds(fm, [c1, c2], [0.7, 0.6]), fm.cond.compile_conditions(u)
    _, patched = _patched(fm, unet, cfg=4.0)
    den = _run(fm, unet, x, sigma, cond, uncond, 4.0)
    got = _run(fm, patched, x, sigma, cond, uncond, 4.0)
    want = expected_guided(unet.model, x, sigma, den, [(c1, 0.7), (c2, 0.6)], u, 4.0, 0.8)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_cfg_one_skips_uncond_everywhere(fm):
    torch.manual_seed(3)
    unet = _unet(fm, fm.kp.Prediction())
    x = torch.randn(2, 4, 16, 16)
    sigma = torch.full((2,), 2.0)
    c, u = torch.randn(2, 7, 8), torch.randn(2, 7, 8)
    cond = _conds(fm, [c])
    for uncond in (None, fm.cond.compile_conditions(u)):  # p.uc None at CFG 1, or the CFG-1 optimisation
        _, patched = _patched(fm, unet, cfg=1.0)
        assert not patched.model_options.get("disable_cfg1_optimization", False)
        den = _run(fm, unet, x, sigma, cond, uncond, 1.0)
        unet.model.calls.clear()
        got = _run(fm, patched, x, sigma, cond, uncond, 1.0)
        # one full-size cond call, one low-res cond call: no uncond rows anywhere
        assert unet.model.calls == [(2, 4, 16, 16), (2, 4, 8, 8)]
        want = expected_guided(unet.model, x, sigma, den, [(c, 1.0)], None, 1.0, 0.8)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_skipped_uncond_step_uses_scale_one(fm):
    """NGMS / skip-early-CFG steps run with cond_scale 1 (uncond skipped) although p.cfg_scale is 7."""
    torch.manual_seed(4)
    unet = _unet(fm, fm.kp.Prediction())
    x, sigma = torch.randn(1, 4, 16, 16), torch.full((1,), 4.0)
    c, u = torch.randn(1, 7, 8), torch.randn(1, 7, 8)
    cond, uncond = _conds(fm, [c]), fm.cond.compile_conditions(u)
    _, patched = _patched(fm, unet, cfg=7.0)
    den = _run(fm, unet, x, sigma, cond, uncond, 1.0)
    got = _run(fm, patched, x, sigma, cond, uncond, 1.0)
    want = expected_guided(unet.model, x, sigma, den, [(c, 1.0)], None, 1.0, 0.8)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_inpainting_image_cond_is_downsampled(fm):
    torch.manual_seed(5)
    unet = _unet(fm, fm.kp.Prediction(), extra_in=5)
    x, sigma = torch.randn(2, 4, 16, 16), torch.full((2,), 6.0)
    image_cond = torch.randn(2, 5, 16, 16)
    c, u = torch.randn(2, 7, 8), torch.randn(2, 7, 8)
    cond, uncond = _conds(fm, [c]), fm.cond.compile_conditions(u)
    for entry in cond + uncond:
        entry["model_conds"]["c_concat"] = fm.cond.Condition(image_cond)
    _, patched = _patched(fm, unet, cfg=3.0)
    den = _run(fm, unet, x, sigma, cond, uncond, 3.0)
    got = _run(fm, patched, x, sigma, cond, uncond, 3.0)
    want = expected_guided(unet.model, x, sigma, den, [(c, 1.0)], u, 3.0, 0.8, image_cond=image_cond)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # the host's full-size conditions are untouched
    assert cond[0]["model_conds"]["c_concat"].cond.shape == (2, 5, 16, 16)


def test_hires_pass_idempotent(fm):
    unet = _unet(fm, fm.kp.Prediction())
    p = make_p(unet, cfg_scale=5.0, hr_cfg=2.5)
    forge.process_before_every_sampling(p, ON)
    first = p.sd_model.forge_objects.unet
    # Forge's hires pass: the hook runs on the first pass's patcher, forge_objects is reset, the hook runs again
    p.is_hr_pass = True
    forge.process_before_every_sampling(p, ON)
    twice = p.sd_model.forge_objects.unet
    ours = [
        f for f in twice.model_options["sampler_post_cfg_function"] if getattr(f, forge._MARK_ATTR, False)
    ]
    assert len(ours) == 1
    p.sd_model.forge_objects.unet = unet  # the reset
    forge.process_before_every_sampling(p, ON)
    again = p.sd_model.forge_objects.unet
    assert len(again.model_options["sampler_post_cfg_function"]) == 1
    assert first.model_options is not again.model_options
    assert unet.model_options == {"transformer_options": {}}  # the original patcher is never mutated


def test_hires_pass_uses_hr_cfg(fm):
    torch.manual_seed(6)
    unet = _unet(fm, fm.kp.Prediction())
    p = make_p(unet, cfg_scale=9.0, hr_cfg=2.0)
    p.is_hr_pass = True
    forge.process_before_every_sampling(p, ON)
    patched = p.sd_model.forge_objects.unet
    x, sigma = torch.randn(1, 4, 16, 16), torch.full((1,), 1.5)
    c, u = torch.randn(1, 7, 8), torch.randn(1, 7, 8)
    cond, uncond = _conds(fm, [c]), fm.cond.compile_conditions(u)
    den = _run(fm, unet, x, sigma, cond, uncond, 2.0)
    got = _run(fm, patched, x, sigma, cond, uncond, 2.0)
    torch.testing.assert_close(
        got, expected_guided(unet.model, x, sigma, den, [(c, 1.0)], u, 2.0, 0.8), rtol=1e-5, atol=1e-5
    )


def test_hires_pass_not_guided_when_off(fm):
    unet = _unet(fm, fm.kp.Prediction())
    p = make_p(unet)
    p.is_hr_pass = True
    forge.process_before_every_sampling(
        p, UGSettings(enabled=True, base_resolution=64, guide_hires_pass=False)
    )
    assert p.sd_model.forge_objects.unet is unet


def test_disabled_leaves_patcher_untouched(fm):
    unet = _unet(fm, fm.kp.Prediction())
    p = make_p(unet)
    before = repr(unet.model_options)
    for settings in (
        UGSettings(enabled=False, base_resolution=64),
        UGSettings(enabled=True, guidance_scale=0.0),
    ):
        forge.process_before_every_sampling(p, settings)
        assert p.sd_model.forge_objects.unet is unet
        assert repr(unet.model_options) == before
    assert not hasattr(p, "_upsample_guidance_forge_state")


def test_not_above_base_and_late_steps_are_free(fm):
    torch.manual_seed(7)
    unet = _unet(fm, fm.kp.Prediction())
    c, u = torch.randn(1, 7, 8), torch.randn(1, 7, 8)
    cond, uncond = _conds(fm, [c]), fm.cond.compile_conditions(u)
    # 64x64 px target at base 64: no plan, the denoised tensor comes back as is, no extra call
    _, patched = _patched(fm, unet)
    x = torch.randn(1, 4, 8, 8)
    unet.model.calls.clear()
    den = _run(fm, unet, x, torch.ones(1), cond, uncond, 5.0)
    torch.testing.assert_close(_run(fm, patched, x, torch.ones(1), cond, uncond, 5.0), den, rtol=0, atol=0)
    assert unet.model.calls == [(2, 4, 8, 8), (2, 4, 8, 8)]
    # eta 0.6: a low sigma (t ~ 0.2) is outside the guided range -> no low-res call, exact result
    _, patched = _patched(fm, unet, UGSettings(enabled=True, eta=0.6, base_resolution=64))
    x = torch.randn(1, 4, 16, 16)
    unet.model.calls.clear()
    got = _run(fm, patched, x, torch.full((1,), 0.1), cond, uncond, 5.0)
    torch.testing.assert_close(
        got, _run(fm, unet, x, torch.full((1,), 0.1), cond, uncond, 5.0), rtol=0, atol=0
    )
    assert unet.model.calls == [(2, 4, 16, 16), (2, 4, 16, 16)]


def _euler(fm, unet, x, sigmas, cond, uncond, cfg):
    for i in range(len(sigmas) - 1):
        s = torch.full((x.shape[0],), float(sigmas[i]))
        den = _run(fm, unet, x, s, cond, uncond, cfg)
        x = x + (x - den) / sigmas[i] * (sigmas[i + 1] - sigmas[i])
    return x


def test_failure_finishes_unguided_with_one_warning(fm, capsys, monkeypatch):
    torch.manual_seed(8)
    unet = _unet(fm, fm.kp.Prediction())
    x = torch.randn(2, 4, 16, 16) * 10
    sigmas = torch.tensor([10.0, 5.0, 2.0, 1.0, 0.0])
    c, u = torch.randn(2, 7, 8), torch.randn(2, 7, 8)
    cond, uncond = _conds(fm, [c]), fm.cond.compile_conditions(u)
    plain = _euler(fm, unet, x, sigmas, cond, uncond, 5.0)
    p, patched = _patched(fm, unet)

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    # the low-res call fails on the first guided step (as an out-of-memory error would)
    monkeypatch.setattr(postcfg, "_host_calc_cond_uncond_batch", lambda model: broken)
    guided = _euler(fm, patched, x, sigmas, cond, uncond, 5.0)
    torch.testing.assert_close(guided, plain, rtol=0, atol=0)
    out = capsys.readouterr().out
    assert out.count("[Upsample guidance]") == 1
    assert "guidance turned off for this image" in out and "out of memory" in out
    assert p._upsample_guidance_forge_state.off
    # the hires pass of the same generation stays unguided, without a second warning
    p.is_hr_pass = True
    forge.process_before_every_sampling(p, ON)
    assert "[Upsample guidance]" not in capsys.readouterr().out


def test_failure_in_patching_keeps_patcher(fm, capsys):
    unet = _unet(fm, fm.kp.Prediction())
    p = make_p(unet)

    def bad_clone():
        raise AttributeError("no clone here")

    unet.clone = bad_clone
    forge.process_before_every_sampling(p, ON)
    assert p.sd_model.forge_objects.unet is unet
    assert (
        capsys.readouterr().out.count("guidance turned off for this image: AttributeError: no clone here")
        == 1
    )


def test_sampling_end_to_end_changes_result(fm):
    torch.manual_seed(9)
    unet = _unet(fm, fm.kp.Prediction())
    x = torch.randn(2, 4, 16, 32) * 10
    sigmas = torch.tensor([10.0, 5.0, 2.0, 1.0, 0.0])
    c, u = torch.randn(2, 7, 8), torch.randn(2, 7, 8)
    cond, uncond = _conds(fm, [c]), fm.cond.compile_conditions(u)
    plain = _euler(fm, unet, x, sigmas, cond, uncond, 5.0)
    p, patched = _patched(fm, unet, UGSettings(enabled=True, base_resolution=64))
    guided = _euler(fm, patched, x, sigmas, cond, uncond, 5.0)
    assert torch.isfinite(guided).all()
    assert (guided - plain).abs().max() > 1e-3
    assert not p._upsample_guidance_forge_state.off


def test_begin_generation_resets_state(fm, capsys):
    unet = _unet(fm, fm.kp.Prediction())
    p = make_p(unet)
    forge.generation_state(p).turn_off("simulated")
    forge.process_before_every_sampling(p, ON)
    assert p.sd_model.forge_objects.unet is unet  # off for the rest of this generation
    forge.begin_generation(p)  # a new generation on the same (copied) p
    forge.process_before_every_sampling(p, ON)
    assert p.sd_model.forge_objects.unet is not unet
    assert capsys.readouterr().out.count("[Upsample guidance]") == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kind", ["epsilon", "flow"])
def test_matches_on_cuda(fm, kind):
    """Same check with model and tensors on the GPU (the sigma table and schedule stay on the CPU)."""
    torch.manual_seed(31)
    flow = kind == "flow"
    unet = _unet(fm, fm.kp.PredictionFlux() if flow else fm.kp.Prediction())
    unet.model.to("cuda")
    x = torch.randn(2, 4, 16, 32, device="cuda")
    sigma = torch.full((2,), 0.7 if flow else 3.0, device="cuda")
    ctx, uctx = torch.randn(2, 7, 8, device="cuda"), torch.randn(2, 7, 8, device="cuda")
    cond, uncond = _conds(fm, [ctx]), fm.cond.compile_conditions(uctx)
    settings = UGSettings(enabled=True, guidance_scale=0.8, eta=1.0, base_resolution=96 if flow else 88)
    p, patched = _patched(fm, unet, settings, cfg=5.0, family_flags={"is_sd1": not flow})
    den = _run(fm, unet, x, sigma, cond, uncond, 5.0)
    got = _run(fm, patched, x, sigma, cond, uncond, 5.0)
    want = expected_guided(unet.model, x, sigma, den, [(ctx, 1.0)], uctx, 5.0, 0.8, flow=flow)
    assert got.device.type == "cuda" and not p._upsample_guidance_forge_state.off
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


class RescaleCFG:
    """Shaped like the RescaleCFG node (reForge-RescaleCFG / ldm_patched nodes_model_advanced): patch() defines
    `rescale_cfg` inside, so its __qualname__ is the one the adapter knows as stateless."""

    def patch(self, phi=0.7):
        def rescale_cfg(args):
            """CFG-rescale-like (std matching, phi 0.7): returns x - result, as Forge expects."""
            cond, uncond, s = args["cond"], args["uncond"], args["cond_scale"]
            eps_cfg = uncond + s * (cond - uncond)
            ratio = cond.std(dim=(1, 2, 3), keepdim=True) / eps_cfg.std(dim=(1, 2, 3), keepdim=True)
            return phi * eps_cfg * ratio + (1 - phi) * eps_cfg

        return rescale_cfg


_rescaled_cfg = RescaleCFG().patch()


def test_custom_cfg_function_is_mirrored(fm):
    """With a stateless sampler_cfg_function (DynamicThresholding, CFG rescale) the low-res rows get the same
    function."""
    torch.manual_seed(10)
    unet = _unet(fm, fm.kp.Prediction())
    unet.set_model_sampler_cfg_function(_rescaled_cfg)
    x, sigma = torch.randn(2, 4, 16, 16), torch.full((2,), 2.0)
    c, u = torch.randn(2, 7, 8), torch.randn(2, 7, 8)
    cond, uncond = _conds(fm, [c]), fm.cond.compile_conditions(u)
    _, patched = _patched(fm, unet, cfg=8.0)
    den = _run(fm, unet, x, sigma, cond, uncond, 8.0)
    got = _run(fm, patched, x, sigma, cond, uncond, 8.0)
    x_lo, lvl = torch.nn.functional.avg_pool2d(x, 2), sigma / 2
    c_lo = unet.model.apply_model(x_lo, lvl, c_crossattn=c)
    u_lo = unet.model.apply_model(x_lo, lvl, c_crossattn=u)
    den_lo = x_lo - _rescaled_cfg(
        {"input": x_lo, "cond": x_lo - c_lo, "uncond": x_lo - u_lo, "cond_scale": 8.0}
    )
    pool = torch.nn.functional.avg_pool2d
    want = den + 0.8 * (den_lo - pool(den, 2)).repeat_interleave(2, -2).repeat_interleave(2, -1)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
