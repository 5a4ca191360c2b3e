"""The Forge adapter beside Forge's built-in extensions, on stand-ins written from their source
(tests/hosts/forge/peer_extensions.py, backend/patcher/controlnet.py): ControlNet's sigma window, Deep
Shrink (Kohya HRFix) and FreeU, SAG, ControlNet inpaint_only, reference-only, Regional Prompter.

Each behaviour is also shown to fail without the fix where the stand-in can show it.
"""

from __future__ import annotations

import contextlib
import importlib.util
from types import SimpleNamespace

import pytest
import torch
from _forge_support import FORGE_MAIN, LDM_PATCHED, TinyNet, host_on_path, make_p

from lib_upsample_guidance.adapters import forge, forge_extensions
from lib_upsample_guidance.webui.settings import UGSettings

ON = UGSettings(enabled=True, guidance_scale=1.0, eta=1.0, base_resolution=64)


class PatchedNet(TinyNet):
    """TinyNet with the UNet's patch points as Forge's UNet calls them: input_block_patch after the first
    block (transformer_options["block"] = ("input", 1)), an attn1 self-attention in ("middle", 0, 0)
    (replaceable through patches_replace), output_block_patch(h, hsp) before the output conv, and the
    ControlNet's 'output' residual added there. `mid_sizes` records the feature-map size per call,
    `control_sizes` whether each call got control."""

    def __init__(self):
        super().__init__(seed=3)
        self.mid_sizes: list[tuple[int, int]] = []
        self.control_seen: list[tuple[tuple[int, int], bool]] = []

    def forward(self, x, timesteps, context=None, control=None, transformer_options=None, **kw):
        to = dict(transformer_options or {})
        patches = to.get("patches", {})
        t = timesteps.float().reshape(-1, 1)
        h = self.conv_in(x)
        h = h + self.temb(torch.cat([torch.sin(t / 100), torch.cos(t / 100)], 1))[:, :, None, None]
        h = h + self.ctx(context.float().mean(1))[:, :, None, None]
        hsp = h
        for patch in patches.get("input_block_patch", []):
            h = patch(h, {**to, "block": ("input", 1)})
        self.mid_sizes.append(tuple(h.shape[-2:]))
        tokens = h.flatten(2).transpose(1, 2)
        replace = to.get("patches_replace", {}).get("attn1", {})
        fn = replace.get(("middle", 0, 0), replace.get(("middle", 0, 0, 0)))
        extra = {**to, "n_heads": 1, "block": ("middle", 0)}
        if fn is not None:
            out = fn(tokens, tokens, tokens, extra)
        else:
            sim = (tokens @ tokens.transpose(1, 2) * tokens.shape[-1] ** -0.5).softmax(-1)
            out = sim @ tokens
        h = h + 0.5 * out.transpose(1, 2).reshape(h.shape)
        for patch in patches.get("output_block_patch", []):
            h, hsp = patch(h, hsp, {**to, "block": ("output", 1)})
        self.control_seen.append((tuple(x.shape[-2:]), control is not None))
        if control is not None:
            h = h + control["output"][0].to(h)
        return self.conv_out(torch.tanh(h))


@pytest.fixture()
def fm():
    with host_on_path(FORGE_MAIN):
        from backend.modules import k_prediction
        from backend.patcher import controlnet
        from backend.patcher.unet import UnetPatcher
        from backend.sampling import condition, sampling_function

        spec = importlib.util.spec_from_file_location("ug_forge_peers", FORGE_MAIN / "peer_extensions.py")
        peers = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(peers)
        yield SimpleNamespace(
            kp=k_prediction,
            cn=controlnet,
            UnetPatcher=UnetPatcher,
            cond=condition,
            sf=sampling_function,
            peers=peers,
        )


def _setup(fm, seed=0):
    torch.manual_seed(seed)
    unet = fm.UnetPatcher.from_model(PatchedNet(), k_predictor=fm.kp.Prediction())
    x = torch.randn(1, 4, 16, 16)
    c, u = torch.randn(1, 7, 8), torch.randn(1, 7, 8)
    cond = fm.cond.compile_conditions(c)
    cond[0]["strength"] = 1.0
    uncond = fm.cond.compile_conditions(u)
    return unet, x, cond, uncond


def _guided(unet, p_extra=None, settings=ON, cfg=5.0):
    p = make_p(unet, cfg_scale=cfg)
    for key, value in (p_extra or {}).items():
        setattr(p, key, value)
    forge.process_before_every_sampling(p, settings)
    return p, p.sd_model.forge_objects.unet


def _run(fm, unet, x, sigma, cond, uncond, cfg=5.0):
    return fm.sf.sampling_function_inner(
        unet.model, x, torch.tensor([sigma]), uncond, cond, cfg, unet.model_options
    )


def _state(p):
    return p._upsample_guidance_forge_state


# --- ControlNet's window --------------------------------------------------------------------------------


def _controlnet(fm, unet, cond, uncond, start, end):
    cnet = fm.cn.ControlNet().set_cond_hint(torch.rand(1, 3, 128, 128), 1.0, (start, end))
    cnet.pre_run(unet.model, unet.model.predictor.percent_to_sigma)
    for entry in cond + uncond:
        entry["control"] = cnet  # what sampling_function does with the patcher's linked list
    return cnet


@pytest.mark.parametrize("case", ["ends_inside", "starts_outside"])
def test_controlnet_window_of_the_full_step(fm, case, monkeypatch):
    """Window start 0.2 / end 0.6 (in sigmas ~ s_start > s_end). 'ends_inside': the full call's sigma is
    just inside the end, the low-res sigma (sigma / 2) is past it: control must stay on in the low-res call.
    'starts_outside': the full call is before the start, the low-res sigma would be inside: control off."""
    unet, x, cond, uncond = _setup(fm)
    cnet = _controlnet(fm, unet, cond, uncond, 0.2, 0.6)
    s_start, s_end = cnet.timestep_range
    sigma = 1.2 * s_end if case == "ends_inside" else 1.2 * s_start
    assert (sigma / 2 < s_end) if case == "ends_inside" else (s_end < sigma / 2 < s_start)
    want_on = case == "ends_inside"
    p, patched = _guided(unet)
    _run(fm, patched, x, sigma, cond, uncond)
    assert _state(p).off_reason is None and _state(p).ran
    seen = patched.model.diffusion_model.control_seen
    assert {size for size, _ in seen} == {(16, 16), (8, 8)}
    assert all(on is want_on for _, on in seen)  # full and low-res calls agree
    assert cnet.timestep_range == (s_start, s_end)  # restored
    if want_on:  # the low-res call's hint was resized by the ControlNet itself to 8 * the low size
        assert ((8, 8), (64, 64), pytest.approx(sigma / 2, rel=1e-5)) in cnet.seen
    # without the fix the stand-in shows the silent difference
    monkeypatch.setattr(forge_extensions, "full_step_control_window", lambda *a: contextlib.nullcontext())
    patched.model.diffusion_model.control_seen.clear()
    _run(fm, patched, x, sigma, cond, uncond)
    low = [on for size, on in patched.model.diffusion_model.control_seen if size == (8, 8)]
    assert low and all(on is (not want_on) for on in low)


def test_controlnet_chain_each_window_and_restored_after_an_error(fm):
    unet, x, cond, uncond = _setup(fm)
    first = _controlnet(fm, unet, cond, uncond, 0.0, 0.3)
    second = fm.cn.ControlNet(seed=9).set_cond_hint(torch.rand(1, 3, 128, 128), 1.0, (0.0, 1.0))
    second.set_previous_controlnet(first)
    second.pre_run(unet.model, unet.model.predictor.percent_to_sigma)
    for entry in cond + uncond:
        entry["control"] = second
    assert forge_extensions.control_chain(cond + uncond) == [second, first]
    windows = (first.timestep_range, second.timestep_range)
    with pytest.raises(RuntimeError):
        with forge_extensions.full_step_control_window(cond, torch.tensor([0.1])):
            assert first.timestep_range == forge_extensions._CLOSED  # 0.1 is past first's end
            assert second.timestep_range is None
            raise RuntimeError("low-res call failed")
    assert (first.timestep_range, second.timestep_range) == windows


@pytest.mark.parametrize("style", ["old_forge", "reforge"])
def test_controlnet_window_on_old_forge_and_reforge(style):
    """The same fix through ldm_patched (old Forge, reForge): its ControlBase has the same window test
    (ldm_patched/modules/controlnet.py 237-238, tag `previous`); the stand-in ControlNet is Forge main's."""
    spec = importlib.util.spec_from_file_location(
        "ug_cn_standin", FORGE_MAIN / "backend" / "patcher" / "controlnet.py"
    )
    cn = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cn)
    with host_on_path(LDM_PATCHED):
        from ldm_patched.modules import conds, model_base, model_sampling, samplers
        from modules_forge.unet_patcher import UnetPatcher

        old_style, samplers.STYLE = samplers.STYLE, style
        try:
            sampling = type("ModelSampling", (model_sampling.ModelSamplingDiscrete, model_sampling.EPS), {})()
            unet = UnetPatcher(model_base.BaseModel(PatchedNet(), sampling))
            torch.manual_seed(4)
            x, c, u = torch.randn(1, 4, 16, 16), torch.randn(1, 7, 8), torch.randn(1, 7, 8)
            cond = [
                {"cross_attn": c, "model_conds": {"c_crossattn": conds.CONDCrossAttn(c)}, "strength": 1.0}
            ]
            uncond = [{"cross_attn": u, "model_conds": {"c_crossattn": conds.CONDCrossAttn(u)}}]
            cnet = cn.ControlNet().set_cond_hint(torch.rand(1, 3, 128, 128))
            cnet.timestep_range = (8.0, 2.0)  # on for 2 <= sigma <= 8
            for entry in cond + uncond:
                entry["control"] = cnet
            p = make_p(unet, cfg_scale=5.0)
            forge.process_before_every_sampling(p, ON)
            patched = p.sd_model.forge_objects.unet
            samplers.sampling_function(
                patched.model, x, torch.tensor([3.0]), uncond, cond, 5.0, patched.model_options
            )
        finally:
            samplers.STYLE = old_style
    assert _state(p).ran and _state(p).off_reason is None
    seen = patched.model.diffusion_model.control_seen
    assert ((8, 8), True) in seen and all(on for _, on in seen)  # low-res sigma 1.5 < 2: still on
    assert cnet.timestep_range == (8.0, 2.0)


# --- Deep Shrink and FreeU ------------------------------------------------------------------------------


def test_deep_shrink_left_out_of_the_low_res_call_freeu_kept(fm, monkeypatch):
    unet, x, cond, uncond = _setup(fm)
    (shrunk,) = fm.peers.PatchModelAddDownscale().patch(unet, 1, 2.0, 0.0, 0.35)
    freeu_calls = []
    shrunk = fm.peers.patch_freeu_v2(shrunk, 1.1, freeu_calls)
    p, patched = _guided(shrunk)
    sigma = 10.0  # inside Deep Shrink's window (early steps)
    _run(fm, patched, x, sigma, cond, uncond)
    assert _state(p).off_reason is None and _state(p).ran
    mid = patched.model.diffusion_model.mid_sizes
    assert mid == [(8, 8), (8, 8)]  # full call 16 -> shrunk 8; low-res call 8 stays 8 (the base size)
    assert freeu_calls == [(16, 16), (8, 8)]  # FreeU in both calls
    assert "input_block_patch" in patched.model_options["transformer_options"]["patches"]  # host's untouched
    monkeypatch.setattr(forge_extensions, "low_res_model_options", lambda options: options)
    mid.clear()
    _run(fm, patched, x, sigma, cond, uncond)
    assert mid == [(8, 8), (4, 4)]  # without the fix: the base-size query is shrunk again


# --- post-CFG order: SAG and inpaint_only on top of ours -------------------------------------------------


def test_sag_term_on_top_of_guidance_with_its_map_from_the_full_call(fm):
    """Ours runs first and SAG's recorder is left out of the low-res call, so the result is exactly the
    guided prediction plus SAG's own term: both - guided_only == sag_only - plain (each computed here)."""
    unet, x, cond, uncond = _setup(fm)
    sigma = 3.0
    sag = fm.peers.SelfAttentionGuidance()
    (sag_unet,) = sag.patch(unet, scale=0.7)
    plain = _run(fm, unet, x, sigma, cond, uncond)
    sag_only = _run(fm, sag_unet, x, sigma, cond, uncond)
    _, ug_unet = _guided(unet)
    guided_only = _run(fm, ug_unet, x, sigma, cond, uncond)
    p, both_unet = _guided(sag_unet)
    fns = both_unet.model_options["sampler_post_cfg_function"]
    assert getattr(fns[0], "_upsample_guidance_post_cfg", False) and len(fns) == 2
    sag.map_sizes_used.clear()
    both = _run(fm, both_unet, x, sigma, cond, uncond)
    assert _state(p).off_reason is None and _state(p).ran
    assert sag.map_sizes_used == [256]  # the 16x16 full call's map, not the low-res call's 8x8
    assert not torch.allclose(guided_only, plain) and not torch.allclose(sag_only, plain)
    torch.testing.assert_close(both - guided_only, sag_only - plain, rtol=1e-5, atol=1e-5)


def test_inpaint_only_keeps_the_unmasked_area_exactly(fm):
    unet, x, cond, uncond = _setup(fm)
    latent = torch.randn(1, 4, 16, 16)
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 4:12, 4:12] = 1.0
    inpaint_unet = fm.peers.PreprocessorInpaintOnly().process_before_every_sampling(unet, latent, mask)
    p, patched = _guided(inpaint_unet)
    out = _run(fm, patched, x, 4.0, cond, uncond)
    assert _state(p).ran
    keep = mask.expand_as(out) == 0
    assert torch.equal(out[keep], latent.expand_as(out)[keep])
    _, ug_unet = _guided(unet)
    assert not torch.allclose(out[~keep], _run(fm, unet, x, 4.0, cond, uncond)[~keep])  # guided inside


def test_run_first_moves_only_ours():
    a, b, ours = (lambda args: 1), (lambda args: 2), (lambda args: 3)
    options = {"sampler_post_cfg_function": [a, b, ours]}
    forge_extensions.run_first(options, ours)
    assert options["sampler_post_cfg_function"] == [ours, a, b]


# --- refused ---------------------------------------------------------------------------------------------


def _warnings(out):
    return [line for line in out.splitlines() if line.startswith("[Upsample guidance]")]


@pytest.mark.parametrize("window, refused", [((0.0, 1.0), False), ((0.0, 0.5), True), ((0.2, 1.0), True)])
def test_reference_only_guided_with_the_full_window_refused_otherwise(fm, capsys, window, refused):
    unet, x, cond, uncond = _setup(fm)
    ref_unet = fm.peers.PreprocessorReference().process_before_every_sampling(unet, *window)
    p, patched = _guided(ref_unet)
    before = len(patched.model.calls)
    out = _run(fm, patched, x, 3.0, cond, uncond)
    warnings = _warnings(capsys.readouterr().out)
    if refused:
        assert len(warnings) == 1 and "reference" in warnings[0]
        assert len(patched.model.calls) == before + 1  # no low-res call was made
        torch.testing.assert_close(out, _run(fm, ref_unet, x, 3.0, cond, uncond), rtol=0, atol=0)
    else:
        assert warnings == [] and _state(p).ran


def test_regional_prompter_active_is_refused_on_forge(fm, capsys):
    unet, x, cond, uncond = _setup(fm)
    rp = fm.peers.RegionalPrompterScript(active=True)
    p, patched = _guided(unet, {"scripts": SimpleNamespace(alwayson_scripts=[rp])})
    out = _run(fm, patched, x, 3.0, cond, uncond)
    warnings = _warnings(capsys.readouterr().out)
    assert len(warnings) == 1 and "Regional Prompter" in warnings[0]
    torch.testing.assert_close(out, _run(fm, unet, x, 3.0, cond, uncond), rtol=0, atol=0)
    rp.active = False
    p, patched = _guided(unet, {"scripts": SimpleNamespace(alwayson_scripts=[rp])})
    _run(fm, patched, x, 3.0, cond, uncond)
    assert _state(p).ran and _warnings(capsys.readouterr().out) == []


def test_low_res_model_options_never_changes_the_hosts_dict():
    def input_block_patch(h, to):
        return h

    input_block_patch.__qualname__ = "PatchModelAddDownscale.patch.<locals>.input_block_patch"

    def freeu(h, hsp, to):
        return h, hsp

    options = {
        "transformer_options": {
            "patches": {"input_block_patch": [input_block_patch], "output_block_patch": [freeu]}
        }
    }
    low = forge_extensions.low_res_model_options(options)
    assert low["transformer_options"]["patches"] == {"input_block_patch": [], "output_block_patch": [freeu]}
    assert options["transformer_options"]["patches"]["input_block_patch"] == [input_block_patch]
    plain = {"transformer_options": {"patches": {"output_block_patch": [freeu]}}}
    assert forge_extensions.low_res_model_options(plain) is plain
