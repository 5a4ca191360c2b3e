"""Old Forge and reForge (`ldm_patched.*`) adapter tests on the stand-ins in tests/hosts/ldm_patched.

Same contract as on Forge main, through the other module paths: the sampling object is model.model_sampling
(EPS / V_PREDICTION / CONST mixins, no alphas_cumprod buffer), calc_cond_uncond_batch comes from
ldm_patched.modules.samplers, and reForge's post-CFG args carry cond_scale with uncond None when skipped.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from _forge_support import LDM_PATCHED, TinyNet, expected_guided, host_on_path, make_p

from lib_upsample_guidance.adapters import forge
from lib_upsample_guidance.webui.settings import UGSettings


@pytest.fixture()
def lp():
    with host_on_path(LDM_PATCHED):
        from ldm_patched.modules import conds, model_base, model_sampling, samplers
        from modules_forge.unet_patcher import UnetPatcher

        old_style = samplers.STYLE
        yield SimpleNamespace(
            conds=conds, mb=model_base, ms=model_sampling, samplers=samplers, UnetPatcher=UnetPatcher
        )
        samplers.STYLE = old_style


def _sampling(lp, kind):
    if kind == "flow":
        return type("ModelSamplingFluxConst", (lp.ms.ModelSamplingFlux, lp.ms.CONST), {})()
    mixin = lp.ms.V_PREDICTION if kind == "v" else lp.ms.EPS
    return type("ModelSampling", (lp.ms.ModelSamplingDiscrete, mixin), {})()


def _unet(lp, kind, model_cls=None):
    cls = model_cls or (lp.mb.Flux if kind == "flow" else lp.mb.BaseModel)
    return lp.UnetPatcher(cls(TinyNet(), _sampling(lp, kind)))


def _cond(lp, ctx, strength=None):
    entry = {"cross_attn": ctx, "model_conds": {"c_crossattn": lp.conds.CONDCrossAttn(ctx)}}
    if strength is not None:
        entry["strength"] = strength
    return entry


@pytest.mark.parametrize("style", ["old_forge", "reforge"])
@pytest.mark.parametrize("kind", ["eps", "v", "flow"])
def test_matches_independent_computation(lp, kind, style):
    lp.samplers.STYLE = style
    torch.manual_seed(11)
    flow = kind == "flow"
    unet = _unet(lp, kind)
    x = torch.randn(2, 4, 16, 32)
    sigma = torch.full((2,), 0.6 if flow else 4.0)
    c, u = torch.randn(2, 7, 8), torch.randn(2, 7, 8)
    cond, uncond = [_cond(lp, c, 1.0)], [_cond(lp, u)]
    p = make_p(unet, cfg_scale=6.0, family_flags={"is_sd1": not flow})
    settings = UGSettings(enabled=True, guidance_scale=1.1, eta=1.0, base_resolution=96 if flow else 88)
    forge.process_before_every_sampling(p, settings)
    patched = p.sd_model.forge_objects.unet
    den = lp.samplers.sampling_function(unet.model, x, sigma, uncond, cond, 6.0, unet.model_options)
    got = lp.samplers.sampling_function(patched.model, x, sigma, uncond, cond, 6.0, patched.model_options)
    want = expected_guided(unet.model, x, sigma, den, [(c, 1.0)], u, 6.0, 1.1, flow=flow)
    assert not torch.allclose(got, den)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert not p._upsample_guidance_forge_state.off


@pytest.mark.parametrize("style", ["old_forge", "reforge"])
def test_cfg_one(lp, style):
    lp.samplers.STYLE = style
    torch.manual_seed(12)
    unet = _unet(lp, "eps")
    x, sigma = torch.randn(1, 4, 16, 16), torch.full((1,), 2.5)
    c, u = torch.randn(1, 7, 8), torch.randn(1, 7, 8)
    cond, uncond = [_cond(lp, c)], [_cond(lp, u)]
    p = make_p(unet, cfg_scale=7.0)  # the generation's scale; this step runs at 1 (e.g. NGMS)
    forge.process_before_every_sampling(p, UGSettings(enabled=True, eta=1.0, base_resolution=64))
    patched = p.sd_model.forge_objects.unet
    den = lp.samplers.sampling_function(unet.model, x, sigma, uncond, cond, 1.0, unet.model_options)
    unet.model.calls.clear()
    got = lp.samplers.sampling_function(patched.model, x, sigma, uncond, cond, 1.0, patched.model_options)
    assert unet.model.calls == [(1, 4, 16, 16), (1, 4, 8, 8)]
    torch.testing.assert_close(
        got, expected_guided(unet.model, x, sigma, den, [(c, 1.0)], None, 1.0, 1.0), rtol=1e-5, atol=1e-5
    )


def test_reforge_cond_scale_from_args(lp):
    """reForge hands cond_scale to post-CFG functions: it wins over p.cfg_scale."""
    lp.samplers.STYLE = "reforge"
    torch.manual_seed(13)
    unet = _unet(lp, "eps")
    x, sigma = torch.randn(1, 4, 16, 16), torch.full((1,), 3.0)
    c, u = torch.randn(1, 7, 8), torch.randn(1, 7, 8)
    cond, uncond = [_cond(lp, c)], [_cond(lp, u)]
    p = make_p(unet, cfg_scale=2.0)
    forge.process_before_every_sampling(p, UGSettings(enabled=True, eta=1.0, base_resolution=64))
    patched = p.sd_model.forge_objects.unet
    den = lp.samplers.sampling_function(unet.model, x, sigma, uncond, cond, 4.5, unet.model_options)
    got = lp.samplers.sampling_function(patched.model, x, sigma, uncond, cond, 4.5, patched.model_options)
    torch.testing.assert_close(
        got, expected_guided(unet.model, x, sigma, den, [(c, 1.0)], u, 4.5, 1.0), rtol=1e-5, atol=1e-5
    )


def test_model_families(lp):
    eps = _sampling(lp, "eps")
    a1111_like = SimpleNamespace(is_sdxl=True, is_sd2=False, is_sd3=False)
    assert forge.detect_model_family(a1111_like, lp.mb.BaseModel(TinyNet(), eps)).name == "sdxl"
    assert forge.detect_model_family(SimpleNamespace(), lp.mb.SDXL(TinyNet(), eps)).name == "sdxl"
    assert (
        forge.detect_model_family(SimpleNamespace(), lp.mb.Flux(TinyNet(), _sampling(lp, "flow"))).name
        == "flux"
    )
    sd2_eps = forge.detect_model_family(SimpleNamespace(is_sd2=True), lp.mb.BaseModel(TinyNet(), eps))
    sd2_v = forge.detect_model_family(
        SimpleNamespace(is_sd2=True), lp.mb.BaseModel(TinyNet(), _sampling(lp, "v"))
    )
    assert (sd2_eps.name, sd2_eps.base_size_px, sd2_v.base_size_px) == ("sd2_eps", 512, 768)
    assert forge.detect_model_family(SimpleNamespace(), lp.mb.BaseModel(TinyNet(), eps)).name == "sd1"
    flux_family = forge.detect_model_family(SimpleNamespace(), lp.mb.Flux(TinyNet(), _sampling(lp, "flow")))
    assert (flux_family.base_size_px, flux_family.granularity) == (1024, 2)


def test_flux_auto_base_is_1024(lp):
    """Base "auto" on a Flux model: 1024 px; a 1024x1024 image (128 latent px) is not guided, 2048 is (2x)."""
    unet = _unet(lp, "flow")
    p = make_p(unet, family_flags={"is_sd1": False})
    forge.process_before_every_sampling(p, UGSettings(enabled=True, eta=1.0))
    fn = p.sd_model.forge_objects.unet.model_options["sampler_post_cfg_function"][0]
    ctx = next(c.cell_contents for c in fn.__closure__ if isinstance(c.cell_contents, forge.GuidanceContext))
    assert ctx.plan((128, 128)) is None
    assert ctx.plan((256, 256)).low_size == (128, 128)
    assert ctx.plan((256, 384)).low_size == (128, 192)
