"""The A1111 adapter with AnimateDiff (stand-in written from sd-webui-animatediff a88e889, see
tests/hosts/a1111/animatediff/README.md): the low-res call goes through AnimateDiff's own forward, so its
motion module sees the frames together; spatial guidance at the clip's frame count, temporal guidance (Auto =
frames / context length) with AnimateDiff told the low-res frame count for that one call.

The expected values are computed here with the stand-in's hooked forward and plain torch pooling / repeats,
sigma / sqrt(k) and the host's CFG rule, never through lib_upsample_guidance.
"""

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch
from test_a1111_adapter import combine, cond_dict, helpers, setup_call

AD_DIR = Path(__file__).parent / "hosts" / "a1111" / "animatediff"
UG_ON = [True, 1.0, 1.0, "64", "box", True]  # eta 1; 128 px target (16 latent), 64 px base: 2x in space


def _load(name, file):
    spec = importlib.util.spec_from_file_location(name, AD_DIR / file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def host():
    with helpers.a1111_host() as h:
        yield h


@pytest.fixture
def animatediff(monkeypatch):
    mm = _load("scripts.animatediff_mm", "animatediff_mm.py")
    monkeypatch.setitem(sys.modules, "scripts.animatediff_mm", mm)
    infv2v = _load("scripts.animatediff_infv2v", "animatediff_infv2v.py")
    monkeypatch.setitem(sys.modules, "scripts.animatediff_infv2v", infv2v)
    return mm, infv2v


def start(host, animatediff, frames, context, ug_args=UG_ON, prompts=None):
    mm, infv2v = animatediff
    mm.mm_animatediff.ad_params = mm.ADParams(video_length=frames, batch_size=context, overlap=1)
    model = host.tiny_sd.TinySDModel(dtype=torch.float64)
    prompts = prompts or [f"frame {i} of a ball rolling" for i in range(frames)]  # prompt travel: per frame
    p, sampler, args = setup_call(host, model, "Euler", prompts, ["blurry"] * frames, ug_args)
    infv2v.install(sampler.model_wrap_cfg)
    return mm.mm_animatediff.ad_params, model, p, sampler, args


def batch_rows(args):
    """The CFG batch the host builds: [cond frames, uncond frames] (rows, sigmas, text, image cond)."""
    from modules import prompt_parser

    conds_list, tensor = prompt_parser.reconstruct_multicond_batch(args["cond"], 0)
    uncond = prompt_parser.reconstruct_cond_batch(args["uncond"], 0)
    x, s, ic = args["x"], args["sigma"], args["image_cond"]
    return torch.cat([x, x]), torch.cat([s, s]), torch.cat([tensor, uncond]), torch.cat([ic, ic]), conds_list


def down3(rows, m_t):
    """[(2 F), C, H, W] -> [(2 F/m_t), C, H/2, W/2]: mean of m_t consecutive frames per video, 2x2 pooling."""
    v = rows.reshape(2, rows.shape[0] // 2, *rows.shape[1:])
    v = v.reshape(2, v.shape[1] // m_t, m_t, *v.shape[2:]).mean(dim=2).flatten(0, 1)
    return torch.nn.functional.avg_pool2d(v, 2) if v.ndim == 4 and v.shape[-1] > 1 else v


def up3(rows, m_t):
    v = rows.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)
    return v.reshape(2, v.shape[0] // 2, *v.shape[1:]).repeat_interleave(m_t, dim=1).flatten(0, 1)


def down_text(rows, m_t):
    v = rows.reshape(2, rows.shape[0] // 2, *rows.shape[1:])
    return v.reshape(2, v.shape[1] // m_t, m_t, *v.shape[2:]).mean(dim=2).flatten(0, 1)


@pytest.mark.parametrize(
    "frames,context,m_t,factor",
    [(4, 4, 1, "Auto"), (8, 4, 2, "Auto"), (8, 2, 2, "2")],
    ids=["spatial", "temporal+spatial", "low-res-clip-windowed"],
)
def test_guided_step_through_animatediffs_forward(host, animatediff, frames, context, m_t, factor):
    """Auto: the low-res clip is one window of `context` frames; a factor below frames / context (8 frames,
    context 2, factor 2 -> 4 frames): AnimateDiff windows the low-res call too, with the same context."""
    ad, model, p, sampler, args = start(host, animatediff, frames, context, ug_args=[*UG_ON, factor])
    inner = sampler.model_wrap_cfg.inner_model
    seen = []
    mm_motion = animatediff[1].motion
    animatediff[1].motion = lambda out: (
        seen.append((out.shape[0], ad.video_length, ad.batch_size)),
        mm_motion(out),
    )[1]

    got = sampler.model_wrap_cfg(**args)
    calls = list(seen)
    assert (ad.video_length, ad.batch_size) == (frames, context)  # restored after the low-res call

    x2, s2, text2, ic2, conds_list = batch_rows(args)
    seen.clear()
    den = inner(x2, s2, cond=cond_dict(model, text2, ic2))
    k = m_t * 4
    ad.video_length, ad.batch_size = frames // m_t, min(context, frames // m_t)
    try:
        den_low = inner(
            down3(x2, m_t),
            s2[: 2 * frames // m_t] / math.sqrt(k),
            cond=cond_dict(model, down_text(text2, m_t), down3(ic2, m_t)),
        )
    finally:
        ad.video_length, ad.batch_size = frames, context
    guided = den + up3(den_low - down3(den, m_t), m_t)
    want = combine(guided, conds_list, frames, 5.0)
    assert torch.allclose(got, want, atol=1e-9, rtol=1e-9)
    # the low-res call was AnimateDiff's: the motion stand-in saw the low-res frames as one group per video
    low_frames = frames // m_t
    assert calls[-1] == (2 * min(context, low_frames), low_frames, min(context, low_frames))
    windows = [len(list(animatediff[1].uniform(n, min(context, n), 1))) for n in (frames, low_frames)]
    assert len(calls) == sum(windows)  # the full clip's windows, then the low-res clip's
    if factor == "Auto":
        assert windows[1] == 1  # ONE window holding the whole low-res clip
    else:
        assert windows[1] == 3 and calls[-1][0] == 2 * context  # windowed: 3 windows of 2 frames over 4
    assert p.extra_generation_params["UG scale"] == "1"
    assert p.extra_generation_params["UG temporal factor"] == factor.lower()
    assert p.extra_generation_params["UG frames"] == f"{frames} -> {low_frames}"
    # and guidance changed the step
    _, _, _, sampler0, args0 = start(host, animatediff, frames, context, ug_args=[False])
    assert (got - sampler0.model_wrap_cfg(**args0)).abs().max() > 1e-3


def test_and_prompts_with_animatediff_are_refused_once_and_the_step_is_plain(host, animatediff, capsys):
    prompts = ["a AND b"] * 4
    ad, model, p, sampler, args = start(host, animatediff, 4, 4, prompts=prompts)
    got = sampler.model_wrap_cfg(**args)
    _, _, _, sampler0, args0 = start(host, animatediff, 4, 4, ug_args=[False], prompts=prompts)
    assert torch.equal(got, sampler0.model_wrap_cfg(**args0))
    err = capsys.readouterr()
    assert (err.out + err.err).count("AND prompts and edit models are not supported with AnimateDiff") == 1


def test_other_forward_replacements_are_still_refused(host, animatediff, capsys):
    """Only AnimateDiff's forward is recognised: another instance forward (Tiled Diffusion) is refused."""
    from types import MethodType

    ad, model, p, sampler, args = start(host, animatediff, 4, 4)
    inner = sampler.model_wrap_cfg.inner_model

    def tiled_forward(self, x, sigma, cond):
        return self.original_forward(x, sigma, cond=cond)

    inner.forward = MethodType(tiled_forward, inner)
    sampler.model_wrap_cfg(**args)
    err = capsys.readouterr()
    assert "replaced the model's forward" in err.out + err.err


# --- ControlNet beside AnimateDiff (per-frame hints, its per-window selection: mm_cn_select / restore) ---

PEERS = Path(__file__).parent / "hosts" / "a1111" / "peer_extensions.py"


def _controlnet(host, hint):
    """sd-webui-controlnet stand-in with one unit whose hint is `hint` (AnimateDiff's batch unit: one image
    per frame, twice for [cond, uncond]; or one image for every frame)."""
    spec = importlib.util.spec_from_file_location("ug_peer_extensions_ad", PEERS)
    pe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pe)
    unit = dict(
        control_model=pe.TinyControlNet(),
        preprocessor={"name": "none"},
        hint_cond=hint,
        weight=1.0,
        control_model_type=pe.ControlModelType.ControlNet,
    )
    script = pe.ControlNetScript([unit])
    script.filename = "peer"
    runner = host.runners[False]
    runner.alwayson_scripts.append(script)
    runner.set_args_range(script, 0)
    return script


def _frame_hints(frames, seed=3):
    g = torch.Generator().manual_seed(seed)
    per_frame = torch.rand(frames, 3, 128, 128, generator=g, dtype=torch.float64)
    return torch.cat([per_frame, per_frame])  # batch_cond_uncond: [cond frames, uncond frames]


@pytest.mark.parametrize(
    "frames,context,per_frame",
    [(8, 4, True), (8, 4, False), (4, 4, True)],
    ids=["temporal", "one-image", "spatial"],
)
def test_controlnet_hints_follow_the_low_res_frames(host, animatediff, capsys, frames, context, per_frame):
    """The low-res call's hints are the clip's hints averaged over merged frames (D along frames) and
    area-pooled 2x2; AnimateDiff's per-window backup of the full hints is neither used nor overwritten."""
    m_t = frames // context if frames > context else 1
    hint = _frame_hints(frames) if per_frame else _frame_hints(1)[:1]
    script = _controlnet(host, hint.clone())
    ad, model, p, sampler, args = start(host, animatediff, frames, context)
    inner = sampler.model_wrap_cfg.inner_model
    param = script.latest_network.control_params[0]

    got = sampler.model_wrap_cfg(**args)
    assert [line for line in capsys.readouterr().out.splitlines() if "[Upsample guidance]" in line] == []
    assert torch.equal(param.hint_cond, hint)  # the clip's hints untouched by the low-res call

    x2, s2, text2, ic2, conds_list = batch_rows(args)
    den = inner(x2, s2, cond=cond_dict(model, text2, ic2))
    low_hint = down_text(hint, m_t) if per_frame else hint  # mean of merged frames, per CFG half
    low_hint = torch.nn.functional.avg_pool2d(low_hint, 2)
    ad.video_length, ad.batch_size = frames // m_t, min(context, frames // m_t)
    param.hint_cond, backup = low_hint, getattr(param, "hint_cond_backup", None)
    param.hint_cond_backup = None
    try:
        den_low = inner(
            down3(x2, m_t),
            s2[: 2 * frames // m_t] / math.sqrt(4 * m_t),
            cond=cond_dict(model, down_text(text2, m_t), down3(ic2, m_t)),
        )
    finally:
        ad.video_length, ad.batch_size = frames, context
        param.hint_cond, param.hint_cond_backup = hint, backup
    want = combine(den + up3(den_low - down3(den, m_t), m_t), conds_list, frames, 5.0)
    assert torch.allclose(got, want, atol=1e-9, rtol=1e-9)
    assert p.extra_generation_params["UG frames"] == f"{frames} -> {frames // m_t}"


@pytest.mark.parametrize(
    "names,want",
    [(["sd-webui-controlnet", "sd-webui-upsample-guidance"], False), (["sd-webui-AnimateDiff"], True)],
)
def test_temporal_control_shown_only_where_animatediff_is_installed(host, monkeypatch, names, want):
    """webui.animatediff.installed(): A1111's modules.extensions.active() (Extension objects with .name)."""
    from types import ModuleType, SimpleNamespace

    from lib_upsample_guidance.webui import animatediff as ad

    extensions = ModuleType("modules.extensions")
    extensions.active = lambda: [SimpleNamespace(name=n) for n in names]
    monkeypatch.setitem(sys.modules, "modules.extensions", extensions)
    monkeypatch.setattr(sys.modules["modules"], "extensions", extensions, raising=False)
    assert ad.installed() is want


@pytest.mark.parametrize(
    "frames,context,rows,refused",
    [(8, 4, 16, True), (8, 4, 1, False), (4, 4, 8, False)],
    ids=["per-frame-temporal", "one-image-temporal", "per-frame-spatial"],
)
def test_ip_adapter_per_frame_embeddings_refused_with_a_temporal_factor(
    host, animatediff, capsys, frames, context, rows, refused
):
    """An IP-Adapter unit with one embedding per frame (AnimateDiff batch: 2F rows) is indexed by frame in
    each window (mm_cn_select); with fewer low-res frames that would pick the wrong frames: one warning, the
    plain step. One embedding for all frames, or spatial guidance only (same frames): guided."""
    from collections import namedtuple
    from types import SimpleNamespace

    image_embed = namedtuple("ImageEmbed", "cond_emb uncond_emb")
    emb = image_embed(torch.randn(rows, 4, 8, dtype=torch.float64), torch.zeros(1, 4, 8, dtype=torch.float64))
    script = _controlnet(host, None)
    unit = script.units[0]
    unit["control_model"] = SimpleNamespace(image_emb=emb)
    unit["control_model_type"] = unit["control_model_type"].__class__.IPAdapter
    ad, model, p, sampler, args = start(host, animatediff, frames, context)
    inner = sampler.model_wrap_cfg.inner_model

    got = sampler.model_wrap_cfg(**args)
    out = capsys.readouterr().out
    warns = [line for line in out.splitlines() if "[Upsample guidance]" in line]
    x2, s2, text2, ic2, conds_list = batch_rows(args)
    plain = combine(inner(x2, s2, cond=cond_dict(model, text2, ic2)), conds_list, frames, 5.0)
    if refused:
        assert len(warns) == 1 and "IP-Adapter with one image per frame" in warns[0]
        assert torch.allclose(got, plain, atol=1e-12, rtol=0)
        assert "UG scale" not in p.extra_generation_params
    else:
        assert warns == []
        assert (got - plain).abs().max() > 1e-3 and "UG frames" in p.extra_generation_params


@pytest.mark.parametrize(
    "size,frames,context,factor,want_frames",
    [(128, 4, 4, "Auto", "4 -> 4"), (64, 8, 4, "Auto", "8 -> 4"), (64, 8, 4, "1", None)],
    ids=["spatial", "temporal-only", "nothing-to-guide"],
)
def test_params_txt_carries_the_video_keys_before_sampling(
    host, animatediff, monkeypatch, size, frames, context, factor, want_frames
):
    """The whole stand-in pipeline with AnimateDiff's forward on the sampler: the keys written before sampling
    (params.txt, what ↙️ pastes) are the image's, with `UG temporal factor` / `UG frames`; a clip at the base
    size is guided in time only (forecast too), and a factor of 1 there guides nothing (no keys anywhere)."""
    from modules import infotext_utils, processing, sd_samplers

    mm, infv2v = animatediff
    mm.mm_animatediff.ad_params = mm.ADParams(video_length=frames, batch_size=context, overlap=1)
    original = sd_samplers.create_sampler

    def create_sampler(name, model):  # AnimateDiff's forward on the inner model, as its step-0 callback does
        sampler = original(name, model)
        infv2v.install(sampler.model_wrap_cfg)
        return sampler

    monkeypatch.setattr(sd_samplers, "create_sampler", create_sampler)
    ug = [True, 1.0, 1.0, "64", "auto", True, factor]
    p = host.txt2img(ug, prompt="a ball", negative_prompt="blurry", steps=3, width=size, height=size)
    p.batch_size = frames
    result = host.run(p)

    def ug_keys(text):
        parsed = infotext_utils.parse_generation_parameters(text)
        return {k: str(v) for k, v in parsed.items() if str(k).startswith("UG ")}

    image_keys = ug_keys(result.infotexts[0])
    assert ug_keys(processing.params_txt) == image_keys
    if want_frames is None:
        assert image_keys == {}
    else:
        assert "UG frames: " + want_frames in result.infotexts[0]
        assert image_keys["UG temporal factor"] == factor.lower() and image_keys["UG base"] == "64"
