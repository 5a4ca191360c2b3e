"""The Forge adapter with sd-forge-animatediff on old Forge (stand-ins written from sd-forge-animatediff b20f751
and old Forge bfee03d8, see tests/hosts/forge_animatediff/README.md and tests/hosts/ldm_patched/README.md).

The low-res call of a guided step is the host's calc_cond_uncond_batch with the model's own model_options, so
it goes through AnimateDiff's forward wrapper and motion modules: spatial guidance at the clip's frame count,
temporal guidance (Auto = frames / context length) with AnimateDiff told the low-res frame count for that one
call. The expected values are computed here with the stand-in's model directly, plain torch pooling / repeats,
sigma / sqrt(k) and the host's CFG rule, never through lib_upsample_guidance. On reForge (its UNet ignores
block_inner_modifiers, so the motion modules never run) the video is refused with one warning.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from _forge_support import LDM_PATCHED, TinyNet, host_on_path, make_p

from lib_upsample_guidance.adapters import forge
from lib_upsample_guidance.webui import peers
from lib_upsample_guidance.webui.settings import UGSettings

AD_DIR = Path(__file__).parent / "hosts" / "forge_animatediff" / "scripts"
CFG = 5.0


class VideoNet(TinyNet):
    """TinyNet with one UNet input block run through ldm_patched's forward_timestep_embed (block ("input", 1)),
    where AnimateDiff's block inner modifier puts its motion module."""

    def forward(self, x, timesteps, context=None, control=None, transformer_options=None, **kw):
        from ldm_patched.ldm.modules.diffusionmodules import openaimodel

        t = timesteps.float().reshape(-1, 1)
        h = (
            self.conv_in(x)
            + self.temb(torch.cat([torch.sin(t / 100), torch.cos(t / 100)], 1))[:, :, None, None]
        )
        h = torch.tanh(h + self.ctx(context.float().mean(1))[:, :, None, None])
        to = dict(transformer_options or {})
        to["block"] = ("input", 1)
        h = openaimodel.forward_timestep_embed(
            [lambda a: a + a.mean((2, 3), keepdim=True)], h, None, context, to
        )
        return self.conv_out(h)


def _load(name):
    spec = importlib.util.spec_from_file_location(f"scripts.{name}", AD_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def host(monkeypatch):
    with host_on_path(LDM_PATCHED):
        from ldm_patched.ldm.modules.diffusionmodules import openaimodel
        from ldm_patched.modules import conds, model_base, model_sampling, samplers
        from modules_forge.unet_patcher import UnetPatcher

        mm = _load("animatediff_mm")
        monkeypatch.setitem(sys.modules, "scripts.animatediff_mm", mm)
        monkeypatch.setitem(sys.modules, "scripts.animatediff_infv2v", _load("animatediff_infv2v"))
        old_style = samplers.STYLE
        yield SimpleNamespace(
            conds=conds,
            mb=model_base,
            ms=model_sampling,
            samplers=samplers,
            UnetPatcher=UnetPatcher,
            mm=mm,
            openaimodel=openaimodel,
        )
        samplers.STYLE = old_style


def _cond(host, ctx):
    return {"cross_attn": ctx, "model_conds": {"c_crossattn": host.conds.CONDCrossAttn(ctx)}}


def start(host, frames, context, settings=None, order=("animatediff", "ug")):
    """A model with AnimateDiff injected and our patch, in the scripts' order (sd-forge-animatediff's folder
    sorts first). Returns (params, AnimateDiff's unet without ours, the patched unet, p)."""
    torch.manual_seed(3)
    sampling = type("ModelSampling", (host.ms.ModelSamplingDiscrete, host.ms.EPS), {})()
    unet = host.UnetPatcher(host.mb.BaseModel(VideoNet(), sampling))
    p = make_p(unet, cfg_scale=CFG)
    ad = host.mm.ADParams(video_length=frames, batch_size=context, overlap=1)
    host.mm.mm_animatediff.ad_params = ad
    settings = settings or UGSettings(enabled=True, guidance_scale=1.0, eta=1.0, base_resolution=64)
    ad_only = None
    for who in order:
        if who == "animatediff":
            host.mm.mm_animatediff.inject(p.sd_model)
            ad_only = p.sd_model.forge_objects.unet
        else:
            forge.process_before_every_sampling(p, settings)
    if order[0] == "ug":  # AnimateDiff's clone of our patched model, without ours: the same host path
        ad_only = p.sd_model.forge_objects.unet.clone()
        from lib_upsample_guidance.comfy_family.postcfg import remove_ours

        remove_ours(ad_only.model_options)
    return ad, ad_only, p.sd_model.forge_objects.unet, p


def inputs(frames, travel=True):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(frames, 4, 16, 16, generator=g)
    sigma = torch.full((frames,), 3.0)
    if travel:  # prompt travel: one text row per frame
        c = torch.randn(frames, 7, 8, generator=g)
    else:
        c = torch.randn(1, 7, 8, generator=g).expand(frames, 7, 8).clone()
    u = torch.randn(frames, 7, 8, generator=g)
    return x, sigma, c, u


def down3(v, m_t):
    """[F, ...] -> [F / m_t, ...]: mean of m_t consecutive frames; then 2x2 average pooling of 4-D rows."""
    v = v.reshape(v.shape[0] // m_t, m_t, *v.shape[1:]).mean(dim=1)
    return F.avg_pool2d(v, 2) if v.ndim == 4 else v


def up3(v, m_t):
    return v.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1).repeat_interleave(m_t, dim=0)


@pytest.mark.parametrize(
    "frames,context,m_t,travel,order",
    [
        (4, 4, 1, True, ("animatediff", "ug")),
        (8, 4, 2, True, ("animatediff", "ug")),
        (8, 4, 2, False, ("ug", "animatediff")),
    ],
    ids=["spatial", "temporal+spatial", "temporal-ours-first"],
)
def test_guided_step_through_animatediff(host, frames, context, m_t, travel, order):
    ad, ad_only, patched, p = start(host, frames, context, order=order)
    x, sigma, c, u = inputs(frames, travel)
    cond, uncond = [_cond(host, c)], [_cond(host, u)]
    calls = host.mm.mm_animatediff.motion_calls
    calls.clear()
    got = host.samplers.sampling_function(patched.model, x, sigma, uncond, cond, CFG, patched.model_options)
    low_calls = list(calls)
    assert (ad.video_length, ad.batch_size) == (frames, context)  # restored after the low-res call

    den = host.samplers.sampling_function(ad_only.model, x, sigma, uncond, cond, CFG, ad_only.model_options)
    # independent low-res prediction: the model called directly on [cond rows, uncond rows] of the low-res
    # clip, its motion module grouping the f low-res frames as one video (f <= context: one window)
    f, k = frames // m_t, m_t * 4
    ad.video_length, ad.batch_size = f, min(context, f)
    to = {"block_inner_modifiers": ad_only.model_options["transformer_options"]["block_inner_modifiers"]}
    try:
        x_lo = down3(x, m_t)
        out = ad_only.model.apply_model(
            torch.cat([x_lo, x_lo]),
            torch.full((2 * f,), 3.0 / math.sqrt(k)),
            c_crossattn=torch.cat([down3(c, m_t), down3(u, m_t)]),
            transformer_options=to,
        )
    finally:
        ad.video_length, ad.batch_size = frames, context
    cond_lo, uncond_lo = out.chunk(2)
    den_lo = uncond_lo + (cond_lo - uncond_lo) * CFG
    want = den + up3(den_lo - down3(den, m_t), m_t)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert (got - den).abs().max() > 1e-3  # guidance changed the step
    # the low-res call went through AnimateDiff: its motion module saw the f low-res frames as ONE group
    windows = 1 if frames <= context else len(list(range(0, frames - 1, context - 1)))
    assert low_calls[-1] == (2 * f, f)
    assert len(low_calls) == windows + 1
    state = p._upsample_guidance_forge_state
    assert not state.off
    assert p.extra_generation_params["UG temporal factor"] == "auto"
    assert p.extra_generation_params["UG frames"] == f"{frames} -> {f}"


def test_temporal_factor_setting_is_used(host):
    """A number instead of Auto: 8 frames, context 8, m_t = 2 -> 4 low-res frames (k = 8)."""
    settings = UGSettings(enabled=True, guidance_scale=1.0, eta=1.0, base_resolution=64, temporal_factor=2)
    ad, ad_only, patched, p = start(host, 8, 8, settings=settings)
    x, sigma, c, u = inputs(8)
    host.samplers.sampling_function(
        patched.model, x, sigma, [_cond(host, u)], [_cond(host, c)], CFG, patched.model_options
    )
    assert p.extra_generation_params["UG temporal factor"] == "2"
    assert p.extra_generation_params["UG frames"] == "8 -> 4"


def _plain(host, frames, context, cond, uncond, x, sigma):
    _, ad_only, _, _ = start(host, frames, context, settings=UGSettings())
    return host.samplers.sampling_function(ad_only.model, x, sigma, uncond, cond, CFG, ad_only.model_options)


def test_reforge_unet_without_block_inner_modifiers_is_refused_once(host, monkeypatch, capsys):
    """reForge (since 53f43166) does not call block_inner_modifiers: the motion module never runs, the frames
    are separate images; guidance refuses the video with one warning and the step is AnimateDiff's own."""
    monkeypatch.setattr(
        host.openaimodel, "forward_timestep_embed", host.openaimodel.forward_timestep_embed_reforge
    )
    ad, ad_only, patched, p = start(host, 8, 4)
    x, sigma, c, u = inputs(8)
    cond, uncond = [_cond(host, c)], [_cond(host, u)]
    for _ in range(2):
        got = host.samplers.sampling_function(
            patched.model, x, sigma, uncond, cond, CFG, patched.model_options
        )
        assert torch.equal(got, _plain(host, 8, 4, cond, uncond, x, sigma))
    out = capsys.readouterr()
    text = out.out + out.err
    assert text.count("motion modules do not run on this host") == 1
    assert "UG frames" not in p.extra_generation_params


def test_and_prompts_with_animatediff_are_refused(host):
    """AND prompts: AnimateDiff's windows only know [uncond frames, cond frames] batches (the host itself fails
    on three entries), so the video job carries a refusal."""
    from lib_upsample_guidance.adapters import forge_animatediff

    ad, ad_only, patched, p = start(host, 4, 4)
    x, sigma, c, u = inputs(4)
    args = {
        "model_options": patched.model_options,
        "input": x,
        "cond": [_cond(host, c)] * 2,
        "uncond": [_cond(host, u)],
    }
    job = forge_animatediff.video_job(args, UGSettings(), {})
    assert "AND prompts with AnimateDiff" in job.refusal
    args["cond"] = args["cond"][:1]
    assert forge_animatediff.video_job(args, UGSettings(), {}).refusal is None
    args["input"] = torch.cat([x, x])
    assert "8 rows for 4 frames" in forge_animatediff.video_job(args, UGSettings(), {}).refusal


class _ADScript:
    """sd-forge-animatediff's AlwaysOn script as the runner lists it (scripts/animatediff.py:34-35: title
    "AnimateDiff"; one argument, the AnimateDiffProcess unit with .enable, or a dict through the API)."""

    args_from, args_to = 0, 1

    def title(self):
        return "AnimateDiff"


@pytest.mark.parametrize("unit", [SimpleNamespace(enable=True), {"enable": True}])
def test_enabled_animatediff_script_without_its_forward_is_refused(unit):
    """The script enabled but its forward not on the model (inject failed): the scripts check refuses."""
    p = SimpleNamespace(scripts=SimpleNamespace(alwayson_scripts=[_ADScript()]), script_args=[unit])
    assert "AnimateDiff is enabled" in peers.refusal_by_scripts(p)
    assert peers.refusal_by_scripts(p, animatediff_guided=True) is None


@pytest.mark.parametrize(
    "size,frames,context,reforge,want",
    [
        (128, 4, 4, False, "4 -> 4"),  # spatial
        (64, 8, 4, False, "8 -> 4"),  # at the base size: guided in time only (Auto = 8 / 4)
        (64, 8, 4, True, None),  # reForge: an image plan at the base size, nothing to guide
        (128, 8, 4, True, "image"),  # reForge: the image plan (video_job refuses the video at sampling)
    ],
)
def test_forecast_plans_the_video(host, monkeypatch, size, frames, context, reforge, want):
    """Before sampling (params.txt): an AnimateDiff job is forecast over (frames, H, W), with the keys the
    guided step writes (`UG temporal factor`, `UG frames`)."""
    from lib_upsample_guidance.webui import forecast

    levels = torch.tensor([14.6, 3.0, 0.5], dtype=torch.float64)
    monkeypatch.setattr(
        forecast, "host_pass_schedule", lambda p, *, hires: forecast.PassSchedule("sigma", levels)
    )
    if reforge:
        monkeypatch.setattr(
            host.openaimodel, "forward_timestep_embed", host.openaimodel.forward_timestep_embed_reforge
        )
    _, _, patched, p = start(host, frames, context)
    p.width = p.height = size
    p.steps, p.sampler_name = 3, "Euler"
    settings = UGSettings(enabled=True, guidance_scale=1.0, eta=1.0, base_resolution=64)
    result = forge.forecast(p, settings)
    assert result.guided is (want is not None)
    if want in (None, "image"):
        assert not {"UG frames", "UG temporal factor"} & set(result.params)
        return
    assert result.params["UG frames"] == want and result.params["UG temporal factor"] == "auto"
    x, sigma, c, u = inputs(frames)
    x = x[..., : size // 8, : size // 8]
    host.samplers.sampling_function(
        patched.model, x, sigma, [_cond(host, u)], [_cond(host, c)], CFG, patched.model_options
    )
    written = {k: v for k, v in p.extra_generation_params.items() if k.startswith("UG ")}
    assert written == result.params  # the guided step wrote exactly the forecast keys
