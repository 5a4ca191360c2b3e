"""Forge main, old Forge and reForge: the low-res call is the call the host would make at the low-res size.

SDXL size conditioning (model_conds 'y' built like Forge's SDXL engines, tests/hosts/forge/backend/diffusion_engine
/sdxl.py), the CFG scale the host used for the step (Forge's skip-early-CFG / NGMS pass cond_scale 1 to
sampling_function; seen through its conditioning modifiers), stateful custom CFG functions (reForge's APG) kept
off the low-res rows, and the refiner switch (a new model mid-pass is patched from the CFG-denoiser callback).
Expected values come from direct apply_model calls and hand-written box D/U, never from lib_upsample_guidance.
"""

from __future__ import annotations

import importlib
from types import SimpleNamespace

import pytest
import torch
from _forge_support import FORGE_MAIN, LDM_PATCHED, TinyNet, box_down, box_up, host_on_path, make_p

from lib_upsample_guidance.adapters import forge
from lib_upsample_guidance.comfy_family import postcfg
from lib_upsample_guidance.webui.settings import UGSettings

ON = UGSettings(enabled=True, guidance_scale=1.0, eta=1.0, base_resolution=64)  # 16x16 latent -> 8x8 (2x box)


@pytest.fixture()
def fm():
    with host_on_path(FORGE_MAIN):
        from backend.diffusion_engine import sdxl
        from backend.modules import k_prediction
        from backend.patcher.unet import UnetPatcher
        from backend.sampling import condition, sampling_function

        yield SimpleNamespace(
            kp=k_prediction, UnetPatcher=UnetPatcher, cond=condition, sf=sampling_function, sdxl=sdxl
        )


@pytest.fixture()
def lp():
    with host_on_path(LDM_PATCHED):
        from ldm_patched.modules import conds, model_base, model_sampling, samplers
        from modules_forge.unet_patcher import UnetPatcher

        apg = importlib.import_module("APGIsYourCFG.nodes_APGImYourCFGNow")
        old_style = samplers.STYLE
        yield SimpleNamespace(
            conds=conds, mb=model_base, ms=model_sampling, samplers=samplers, UnetPatcher=UnetPatcher, apg=apg
        )
        samplers.STYLE = old_style
        for name in [n for n in list(__import__("sys").modules) if n.startswith("APGIsYourCFG")]:
            del __import__("sys").modules[name]


def _sdxl_conds(fm, ctx, pooled, size_px, refiner=False, aesthetic=6.0):
    vector = fm.sdxl.size_vector(pooled, width=size_px, height=size_px, refiner=refiner, aesthetic=aesthetic)
    entry = fm.cond.compile_conditions({"crossattn": ctx, "vector": vector})[0]
    return entry, vector


@pytest.mark.parametrize("refiner", [False, True])
def test_forge_main_sdxl_y_is_the_low_size_vector(fm, refiner):
    torch.manual_seed(21)
    width = 2560 if refiner else 2816
    net = TinyNet(vec_dim=width, seed=3)
    unet = fm.UnetPatcher.from_model(net, k_predictor=fm.kp.Prediction())
    x, sigma = torch.randn(2, 4, 16, 16), torch.full((2,), 3.0)
    c, u = torch.randn(2, 7, 8), torch.randn(2, 7, 8)
    pc, pu = torch.randn(2, 1280), torch.randn(2, 1280)
    cond, vc = _sdxl_conds(fm, c, pc, 128, refiner)
    uncond, vu = _sdxl_conds(fm, u, pu, 128, refiner, aesthetic=2.5)
    cond["strength"] = 1.0
    p = make_p(unet, cfg_scale=5.0, family_flags={"is_sd1": False, "is_sdxl": True})
    forge.process_before_every_sampling(p, ON)
    patched = p.sd_model.forge_objects.unet
    den = fm.sf.sampling_function_inner(unet.model, x, sigma, [uncond], [cond], 5.0, unet.model_options)
    got = fm.sf.sampling_function_inner(patched.model, x, sigma, [uncond], [cond], 5.0, patched.model_options)
    # expected: the host's own vector of a 64 px generation on the low-res call
    _, vc_low = _sdxl_conds(fm, c, pc, 64, refiner)
    _, vu_low = _sdxl_conds(fm, u, pu, 64, refiner, aesthetic=2.5)
    x_lo = box_down(x, 2)
    c_lo = unet.model.apply_model(x_lo, sigma / 2, c_crossattn=c, y=vc_low)
    u_lo = unet.model.apply_model(x_lo, sigma / 2, c_crossattn=u, y=vu_low)
    want = den + box_up(u_lo + 5.0 * (c_lo - u_lo) - box_down(den, 2), 2)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # the full-size vector on the low-res call would be measurably different
    c_full = unet.model.apply_model(x_lo, sigma / 2, c_crossattn=c, y=vc)
    assert (c_full - c_lo).abs().max() > 1e-3
    assert not p._upsample_guidance_forge_state.off and p._upsample_guidance_forge_state.warnings == 0


def test_ldm_patched_sdxl_y_condregular(lp, fm):
    """Old Forge / reForge: y = CONDRegular(vector) (forge_sampler.cond_from_a1111_to_patched_ldm)."""
    torch.manual_seed(22)
    vector = fm.sdxl.size_vector(torch.randn(1, 1280), width=128, height=128)
    low = fm.sdxl.size_vector(vector[:, :1280], width=64, height=64)
    ms = type("ModelSampling", (lp.ms.ModelSamplingDiscrete, lp.ms.EPS), {})()
    unet = lp.UnetPatcher(lp.mb.SDXL(TinyNet(vec_dim=2816, seed=4), ms))
    x, sigma = torch.randn(1, 4, 16, 16), torch.full((1,), 2.0)
    c, u = torch.randn(1, 7, 8), torch.randn(1, 7, 8)

    def entry(ctx):
        return {
            "cross_attn": ctx,
            "pooled_output": vector,
            "model_conds": {"c_crossattn": lp.conds.CONDCrossAttn(ctx), "y": lp.conds.CONDRegular(vector)},
        }

    p = make_p(unet, cfg_scale=4.0, family_flags={"is_sd1": False, "is_sdxl": True})
    forge.process_before_every_sampling(p, ON)
    patched = p.sd_model.forge_objects.unet
    den = lp.samplers.sampling_function(unet.model, x, sigma, [entry(u)], [entry(c)], 4.0, unet.model_options)
    got = lp.samplers.sampling_function(
        patched.model, x, sigma, [entry(u)], [entry(c)], 4.0, patched.model_options
    )
    x_lo = box_down(x, 2)
    c_lo = unet.model.apply_model(x_lo, sigma / 2, c_crossattn=c, y=low)
    u_lo = unet.model.apply_model(x_lo, sigma / 2, c_crossattn=u, y=low)
    want = den + box_up(u_lo + 4.0 * (c_lo - u_lo) - box_down(den, 2), 2)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_sdxl_vector_not_of_this_size_is_kept_with_one_warning(fm, capsys):
    torch.manual_seed(23)
    unet = fm.UnetPatcher.from_model(TinyNet(vec_dim=2816, seed=3), k_predictor=fm.kp.Prediction())
    x, sigma = torch.randn(1, 4, 16, 16), torch.full((1,), 3.0)
    cond, vc = _sdxl_conds(fm, torch.randn(1, 7, 8), torch.randn(1, 1280), 96)  # a user-set 96 px "original"
    uncond, _ = _sdxl_conds(fm, torch.randn(1, 7, 8), torch.randn(1, 1280), 96)
    p = make_p(unet, cfg_scale=5.0, family_flags={"is_sd1": False, "is_sdxl": True})
    forge.process_before_every_sampling(p, ON)
    patched = p.sd_model.forge_objects.unet
    for _ in range(2):
        got = fm.sf.sampling_function_inner(
            patched.model, x, sigma, [uncond], [cond], 5.0, patched.model_options
        )
    den = fm.sf.sampling_function_inner(unet.model, x, sigma, [uncond], [cond], 5.0, unet.model_options)
    assert not torch.allclose(got, den)  # still guided
    out = capsys.readouterr().out
    assert out.count("does not embed the generation size") == 1 and "turned off" not in out


def _denoiser(p, unet):
    return SimpleNamespace(
        inner_model=SimpleNamespace(inner_model=SimpleNamespace(forge_objects=SimpleNamespace(unet=unet))),
        p=p,
    )


def test_forge_main_uses_the_hosts_cond_scale_with_sag(fm):
    """Skip-early-CFG / NGMS step with SAG (disable_cfg1_optimization): uncond is real but the host's scale is 1
    while p.cfg_scale is 7. The low-res rows must be combined at 1 too (seen through conditioning_modifiers)."""
    torch.manual_seed(24)
    unet = fm.UnetPatcher.from_model(TinyNet(seed=5), k_predictor=fm.kp.Prediction())
    unet.model_options["disable_cfg1_optimization"] = True  # what SAG's post-CFG registration sets
    x, sigma = torch.randn(1, 4, 16, 16), torch.full((1,), 3.0)
    c, u = torch.randn(1, 7, 8), torch.randn(1, 7, 8)
    p = make_p(unet, cfg_scale=7.0)
    forge.process_before_every_sampling(p, ON)
    patched = p.sd_model.forge_objects.unet
    params = SimpleNamespace(x=x, sigma=sigma, text_uncond=u, text_cond=c, image_cond=None)
    composition = [[(0, 1.0)]]
    got, _, _ = fm.sf.sampling_function(_denoiser(p, patched), params, 1.0, composition)
    den, _, _ = fm.sf.sampling_function(_denoiser(p, unet), params, 1.0, composition)
    x_lo = box_down(x, 2)
    c_lo = unet.model.apply_model(x_lo, sigma / 2, c_crossattn=c)
    u_lo = unet.model.apply_model(x_lo, sigma / 2, c_crossattn=u)
    want = den + box_up(u_lo + 1.0 * (c_lo - u_lo) - box_down(den, 2), 2)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    wrong = den + box_up(u_lo + 7.0 * (c_lo - u_lo) - box_down(den, 2), 2)
    assert (wrong - want).abs().max() > 1e-3


@pytest.mark.parametrize("style", ["old_forge", "reforge"])
def test_apg_state_untouched_and_low_res_rows_plain_cfg(lp, style):
    """reForge's APG keeps a momentum buffer and resets it when the width changes: our low-res rows must not
    call it (the host's buffer after a guided step equals the one after an unguided step), and they get plain
    CFG at the host's scale."""
    lp.samplers.STYLE = style
    torch.manual_seed(25)
    ms = type("ModelSampling", (lp.ms.ModelSamplingDiscrete, lp.ms.EPS), {})()
    base = lp.UnetPatcher(lp.mb.BaseModel(TinyNet(seed=6), ms))
    x, sigma = torch.randn(1, 4, 16, 16), torch.full((1,), 3.0)
    c, u = torch.randn(1, 7, 8), torch.randn(1, 7, 8)

    def entry(ctx):
        return {"cross_attn": ctx, "model_conds": {"c_crossattn": lp.conds.CONDCrossAttn(ctx)}}

    runs = {}
    for guided in (False, True):
        node = lp.apg.APG_ImYourCFGNow()
        (unet,) = node.patch(base)
        p = make_p(unet, cfg_scale=6.0)
        if guided:
            forge.process_before_every_sampling(p, ON)
        patched = p.sd_model.forge_objects.unet
        outs = [
            lp.samplers.sampling_function(
                patched.model, x, s, [entry(u)], [entry(c)], 6.0, patched.model_options
            )
            for s in (sigma, sigma * 0.8)
        ]
        runs[guided] = (outs, node.extras[0].running_average.clone())
    (plain, buf_plain), (guided_out, buf_guided) = runs[False], runs[True]
    assert torch.equal(buf_plain, buf_guided)
    assert buf_guided.shape[-1] == 16  # never reset to the low-res width
    s2 = sigma * 0.8
    x_lo = box_down(x, 2)
    c_lo = base.model.apply_model(x_lo, s2 / 2, c_crossattn=c)
    u_lo = base.model.apply_model(x_lo, s2 / 2, c_crossattn=u)
    want = plain[1] + box_up(u_lo + 6.0 * (c_lo - u_lo) - box_down(plain[1], 2), 2)
    torch.testing.assert_close(guided_out[1], want, rtol=1e-5, atol=1e-5)


def test_refiner_switch_is_patched_from_the_cfg_denoiser_callback(fm):
    """Forge's apply_refiner loads another model mid-pass without process_before_every_sampling: the
    CFG-denoiser callback (fires after the switch, before the model call) patches the new model, so guidance
    continues on it; an unguided pass (patch_args None) is left alone."""
    torch.manual_seed(26)
    base = fm.UnetPatcher.from_model(TinyNet(seed=7), k_predictor=fm.kp.Prediction())
    refiner = fm.UnetPatcher.from_model(TinyNet(seed=8), k_predictor=fm.kp.Prediction())
    p = make_p(base, cfg_scale=5.0)
    forge.begin_generation(p)
    forge.process_before_every_sampling(p, ON)
    params = SimpleNamespace(denoiser=SimpleNamespace(p=p))
    forge.on_cfg_denoiser(params)
    assert p.sd_model.forge_objects.unet.model is base.model  # already patched: nothing to do
    patched_base = p.sd_model.forge_objects.unet
    p.sd_model.forge_objects.unet = refiner  # the switch
    forge.on_cfg_denoiser(params)
    patched = p.sd_model.forge_objects.unet
    assert patched is not refiner and patched.model is refiner.model
    x, sigma = torch.randn(1, 4, 16, 16), torch.full((1,), 3.0)
    c, u = torch.randn(1, 7, 8), torch.randn(1, 7, 8)
    cond, uncond = fm.cond.compile_conditions(c), fm.cond.compile_conditions(u)
    den = fm.sf.sampling_function_inner(refiner.model, x, sigma, uncond, cond, 5.0, refiner.model_options)
    got = fm.sf.sampling_function_inner(patched.model, x, sigma, uncond, cond, 5.0, patched.model_options)
    x_lo = box_down(x, 2)
    c_lo = refiner.model.apply_model(x_lo, sigma / 2, c_crossattn=c)
    u_lo = refiner.model.apply_model(x_lo, sigma / 2, c_crossattn=u)
    torch.testing.assert_close(
        got, den + box_up(u_lo + 5.0 * (c_lo - u_lo) - box_down(den, 2), 2), rtol=1e-5, atol=1e-5
    )
    assert len(patched.model_options["sampler_post_cfg_function"]) == 1
    assert patched_base.model_options is not patched.model_options
    # an unguided pass (e.g. hires pass with guidance off for it): the callback leaves the model alone
    p.is_hr_pass = True
    forge.process_before_every_sampling(
        p, UGSettings(enabled=True, eta=1.0, base_resolution=64, guide_hires_pass=False)
    )
    p.sd_model.forge_objects.unet = refiner
    forge.on_cfg_denoiser(params)
    assert p.sd_model.forge_objects.unet is refiner


def test_failure_message_names_the_images_left_unguided(fm, capsys, monkeypatch):
    torch.manual_seed(27)
    unet = fm.UnetPatcher.from_model(TinyNet(seed=9), k_predictor=fm.kp.Prediction())
    p = make_p(unet, cfg_scale=5.0)
    p.batch_size, p.n_iter, p.iteration = 2, 3, 0
    forge.begin_generation(p)
    forge.process_before_every_sampling(p, ON)
    monkeypatch.setattr(
        postcfg, "guided_denoised", lambda args, ctx: (_ for _ in ()).throw(RuntimeError("boom"))
    )
    patched = p.sd_model.forge_objects.unet
    x, sigma = torch.randn(2, 4, 16, 16), torch.full((2,), 3.0)
    cond, uncond = (
        fm.cond.compile_conditions(torch.randn(2, 7, 8)),
        fm.cond.compile_conditions(torch.randn(2, 7, 8)),
    )
    fm.sf.sampling_function_inner(patched.model, x, sigma, uncond, cond, 5.0, patched.model_options)
    out = capsys.readouterr().out
    assert "RuntimeError: boom" in out
    assert (
        "the 2 images of this batch are finished without guidance, and the 4 later images (batches 2-3 of 3) are not guided"
        in out
    )
