"""The real script end to end in the stand-in A1111: samplers, sizes, batches, hires fix, img2img,
other extensions' patches, infotext, API args, XYZ, Settings tab, callback registration."""

import importlib.util
import random
import sys
import types
from pathlib import Path

import pytest
import torch

_spec = importlib.util.spec_from_file_location(
    "ug_a1111_helpers", Path(__file__).parent / "hosts" / "a1111" / "conftest_helpers.py"
)
helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helpers)

torch.set_num_threads(1)
ON = [True, 1.0, 0.6, "64", "auto", True]  # base 64 px: a 128 px image is 2x
SAMPLERS = ["Euler", "Euler a", "Heun", "DPM++ 2M", "DDIM"]


@pytest.fixture
def host():
    with helpers.a1111_host() as h:
        yield h


def warnings(out):
    return [line for line in out.splitlines() if line.startswith("[Upsample guidance]")]


def run(host, ug_args, kind="txt2img", **kw):
    kw.setdefault("prompt", "a house")
    kw.setdefault("negative_prompt", "blurry")
    kw.setdefault("steps", 5)
    p = getattr(host, kind)(list(ug_args), **kw)
    return p, host.run(p)


def run_without_extension(host, kind="txt2img", **kw):
    kw.setdefault("prompt", "a house")
    kw.setdefault("negative_prompt", "blurry")
    kw.setdefault("steps", 5)
    p = getattr(host, kind)([], **kw)
    p.scripts = None
    host.callbacks.clear_callbacks()  # no callbacks of ours either
    return host.run(p)


def same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.images, b.images, strict=True))


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_guided_and_disabled_bit_identical(host, sampler, capsys):
    _, on = run(host, ON, sampler_name=sampler)
    _, off = run(host, [False] + ON[1:], sampler_name=sampler)
    bare = run_without_extension(host, sampler_name=sampler)
    assert same(off, bare)
    assert not same(on, off)
    assert all(torch.isfinite(img).all() for img in on.images)
    assert "UG scale: 1" in on.infotexts[0] and "UG base: 64" in on.infotexts[0]
    assert "UG" not in off.infotexts[0]
    assert warnings(capsys.readouterr().out) == []


@pytest.mark.parametrize(
    "width,height,base,kind",
    [
        (96, 96, "64", "spectral"),
        (128, 128, "64", "box"),
        (192, 128, "64", "box"),
        (200, 136, "64", "spectral"),
    ],
)
def test_sizes(host, width, height, base, kind, capsys):
    p, on = run(host, [True, 1.0, 0.6, base, "auto", True], width=width, height=height)
    _, off = run(host, [False], width=width, height=height)
    assert on.images[0].shape == (4, height // 8, width // 8)
    assert not same(on, off)
    assert warnings(capsys.readouterr().out) == []
    from lib_upsample_guidance.core.planner import plan_low_res

    assert plan_low_res((height // 8, width // 8), int(base)).kind == kind


def test_batch_size_and_count(host, capsys):
    _, on = run(host, ON, batch_size=2, n_iter=2, prompt="a AND b :0.5")
    _, off = run(host, [False], batch_size=2, n_iter=2, prompt="a AND b :0.5")
    assert len(on.images) == 4
    assert all(not torch.equal(a, b) for a, b in zip(on.images, off.images, strict=True))
    assert all("UG scale" in t for t in on.infotexts)
    # each image equals the same seed generated alone (batching changes nothing)
    _, single = run(host, ON, batch_size=1, n_iter=1, prompt="a AND b :0.5", seed=3)
    assert torch.allclose(single.images[0], on.images[2], rtol=1e-4, atol=1e-3)
    assert warnings(capsys.readouterr().out) == []


def test_cfg_1_and_skip_early_cfg(host, capsys):
    _, on = run(host, ON, cfg_scale=1.0)
    _, off = run(host, [False], cfg_scale=1.0)
    assert not same(on, off)
    host.shared.opts.skip_early_cond = 0.4
    try:
        p, on2 = run(host, ON)
        _, off2 = run(host, [False])
    finally:
        host.shared.opts.skip_early_cond = 0.0
    assert "Skip Early CFG" in p.extra_generation_params
    assert not same(on2, off2)
    assert warnings(capsys.readouterr().out) == []


def test_hires_fix_first_pass_noop_second_pass_per_setting(host, capsys):
    hr = dict(
        width=64, height=64, enable_hr=True, hr_scale=2.0, hr_second_pass_steps=3, denoising_strength=0.6
    )
    _, guided = run(host, ON, **hr)
    _, unguided_pass = run(host, ON[:5] + [False], **hr)
    _, off = run(host, [False], **hr)
    assert guided.images[0].shape == (4, 16, 16)
    assert same(unguided_pass, off)  # first pass at the base size: no-op; second pass not guided
    assert "UG" not in unguided_pass.infotexts[0]
    assert not same(guided, off)
    assert "UG hires pass: True" in guided.infotexts[0]
    assert warnings(capsys.readouterr().out) == []


def test_img2img_and_inpaint_model(host, capsys):
    init = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    _, on = run(host, ON, kind="img2img", init_latent=init, denoising_strength=0.7)
    _, off = run(host, [False], kind="img2img", init_latent=init, denoising_strength=0.7)
    assert not same(on, off)
    host.set_model(host.tiny_sd.TinySDModel(variant="inpaint"))
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 4:12, 4:12] = 1
    _, on = run(host, ON, kind="img2img", init_latent=init, latent_mask=mask)
    _, off = run(host, [False], kind="img2img", init_latent=init, latent_mask=mask)
    bare = run_without_extension(host, kind="img2img", init_latent=init, latent_mask=mask)
    assert same(off, bare) and not same(on, off)
    assert warnings(capsys.readouterr().out) == []


def test_sd2_v_and_sdxl_models(host, capsys):
    for model in (
        host.tiny_sd.TinySDModel(kind="sd2", parameterization="v"),
        host.tiny_sd.TinySDModel(kind="sdxl"),
    ):
        host.set_model(model)
        for sampler in ("Euler", "DDIM"):
            _, on = run(host, ON, sampler_name=sampler)
            _, off = run(host, [False], sampler_name=sampler)
            assert not same(on, off)
    assert warnings(capsys.readouterr().out) == []


def test_auto_base_from_family_and_settings_tab(host, capsys):
    # SD1 "Auto" = 512 px: a 128 px image is below it -> nothing happens, no infotext
    _, auto = run(host, [True, 1.0, 0.6, "Auto", "auto", True])
    _, off = run(host, [False])
    assert same(auto, off) and "UG" not in auto.infotexts[0]
    host.shared.opts.ug_base_sd1 = 64
    _, auto64 = run(host, [True, 1.0, 0.6, "Auto", "auto", True])
    assert not same(auto64, off) and "UG base: 64" in auto64.infotexts[0]
    # a bad value in config.json falls back to the default, with a warning
    host.shared.opts.ug_base_sd1 = "lots"
    _, bad = run(host, [True, 1.0, 0.6, "Auto", "auto", True])
    assert same(bad, off)
    assert any("ug_base_sd1" in w for w in warnings(capsys.readouterr().out))


def test_settings_tab_defaults_feed_missing_args(host):
    opts = host.shared.opts
    for key in (
        "ug_default_scale",
        "ug_default_eta",
        "ug_default_resampler",
        "ug_default_hires_pass",
        "ug_base_sd1",
        "ug_base_sd2",
        "ug_base_sd2_eps",
        "ug_base_sdxl",
        "ug_base_sd3",
    ):
        assert key in opts.data_labels
        assert opts.data_labels[key].section == ("upsample_guidance", "Upsample guidance")
    opts.ug_default_eta = 0.3
    p, _ = run(host, [{"enabled": True, "base_resolution": 64}])
    assert p.extra_generation_params["UG eta"] == "0.3"


def test_no_infotext_when_guidance_never_ran(host):
    _, below = run(host, [True, 1.0, 0.6, "1024", "auto", True])
    _, eta0 = run(host, [True, 1.0, 0.0, "64", "auto", True])
    _, scale0 = run(host, [True, 0.0, 0.6, "64", "auto", True])
    _, off = run(host, [False])
    for r in (below, eta0, scale0):
        assert "UG" not in r.infotexts[0]
        assert same(r, off)


# --- other extensions' patches: the image finishes without guidance, one warning ----------------------------


def _controlnet_like(model):
    """Like sd-webui-controlnet: the UNet forward adds a hint made for the full-size latent."""
    net = model.model.diffusion_model
    original = net.forward

    def forward(x, timesteps, context=None, y=None):
        out = original(x, timesteps, context, y)
        hint = torch.full((1, 4, 16, 16), 0.01, dtype=out.dtype)
        return out + hint  # size mismatch at any other size

    net.forward = forward


def test_controlnet_full_size_hint_fails_safely(host, capsys):
    model = host.tiny_sd.TinySDModel()
    _controlnet_like(model)
    host.set_model(model)
    _, on = run(host, ON, n_iter=2)
    _, off = run(host, [False], n_iter=2)
    assert same(on, off)  # failed at the first guided step: the whole generation is unguided
    assert not any("UG" in t for t in on.infotexts)  # no guided step: no keys (params.txt had them)
    out = warnings(capsys.readouterr().out)
    assert len(out) == 1 and "size" in out[0]


def test_tiled_diffusion_forward_override_detected(host, capsys, monkeypatch):
    from modules import sd_samplers

    original = sd_samplers.create_sampler

    def create_sampler(name, model):
        sampler = original(name, model)
        inner = sampler.model_wrap_cfg.inner_model
        plain = inner.forward
        inner.forward = types.MethodType(lambda self, x, sigma, **kw: plain(x, sigma, **kw), inner)
        return sampler

    monkeypatch.setattr(sd_samplers, "create_sampler", create_sampler)
    _, on = run(host, ON)
    _, off = run(host, [False])
    assert same(on, off)
    out = warnings(capsys.readouterr().out)
    assert len(out) == 1 and "forward" in out[0]


def test_failure_midway_keeps_earlier_steps_and_stops(host, capsys):
    a1111 = host.script_module.a1111
    calls = {"n": 0}
    original = a1111._call_inner

    def flaky(inner, x, level, cond):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("boom")
        return original(inner, x, level, cond)

    a1111._call_inner = flaky
    try:
        _, on = run(host, [True, 1.0, 1.0, "64", "auto", True], steps=6, n_iter=2)
    finally:
        a1111._call_inner = original
    _, off = run(host, [False], steps=6, n_iter=2)
    assert calls["n"] == 2  # nothing was tried after the failure, not even in the second batch
    assert not torch.equal(on.images[0], off.images[0])  # the first step was guided
    assert "UG scale" in on.infotexts[0]
    out = warnings(capsys.readouterr().out)
    assert len(out) == 1 and "boom" in out[0]


# --- API args --------------------------------------------------------------------------------------------


def test_api_positional_and_dict_forms(host):
    p1, a = run(host, [True, 1.2, 0.5, "64", "box", False])
    p2, b = run(
        host,
        [
            {
                "enabled": True,
                "scale": 1.2,
                "eta": 0.5,
                "base_resolution": 64,
                "resampler": "box",
                "hires_pass": False,
            }
        ],
    )
    assert same(a, b)
    assert (
        p1.extra_generation_params["UG scale"] == "1.2"
        and p2.extra_generation_params["UG resampler"] == "box"
    )


@pytest.mark.parametrize(
    "args,field",
    [
        ([True, 11.0], "'scale'"),
        ([True, "lots"], "'scale'"),
        ([True, 1.0, 1.5], "'eta'"),
        ([True, 1.0, 0.6, "huge"], "'base_resolution'"),
        ([True, 1.0, 0.6, 30], "'base_resolution'"),
        ([True, 1.0, 0.6, "64", "bilinear"], "'resampler'"),
        (["maybe"], "'enabled'"),
        ([{"enabled": True, "sclae": 1.0}], "'sclae'"),
        ([{"enabled": True, "eta": [0.5]}], "'eta'"),
    ],
)
def test_api_bad_values_fail_the_request_naming_the_field(host, args, field, capsys):
    p = host.txt2img(args, prompt="x", steps=2)
    with pytest.raises(ValueError, match=field):
        host.run(p)


class _HTTPException(Exception):
    """fastapi.HTTPException's surface (status_code, detail): the WebUI's API error handler prints no
    traceback for it (modules/api/api.py handle_exception) and answers with its status code."""

    def __init__(self, status_code, detail=None):
        super().__init__(status_code, detail)
        self.status_code, self.detail = status_code, detail


def test_api_bad_values_answered_as_a_client_error_without_traceback(host, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "fastapi", types.SimpleNamespace(HTTPException=_HTTPException))
    p = host.txt2img([True, 1.0, 1.5], prompt="x", steps=2)
    p.is_api = True  # set by the WebUI's /sdapi/v1/txt2img before process_images
    host.processing.params_txt = "untouched"
    with pytest.raises(_HTTPException) as raised:
        host.run(p)
    # refused before the first batch (p.init): no batch began, no host state was changed around p.sample
    assert host.processing.params_txt == "untouched"
    assert raised.value.status_code == 422 and "'eta'" in raised.value.detail
    assert warnings(capsys.readouterr().out) == [
        "[Upsample guidance] generation refused: 'eta' must be a number in [0, 1], got 1.5"
    ]
    # the next request is unaffected
    p = host.txt2img([True, 1.0, 0.6], prompt="x", steps=2)
    p.is_api = True
    assert host.run(p).images


# --- XYZ -------------------------------------------------------------------------------------------------


def test_xyz_axes_registered_once_and_applied(host):
    labels = [o.label for o in host.xyz.axis_options]
    for label in (
        "[Upsample guidance] Enabled",
        "[Upsample guidance] Scale",
        "[Upsample guidance] Eta",
        "[Upsample guidance] Base resolution",
        "[Upsample guidance] Temporal factor",
    ):
        assert labels.count(label) == 1
    host.callbacks.before_ui_callback()  # registering again adds nothing
    assert len(host.xyz.axis_options) == len(labels)

    p = host.txt2img([False, 1.0, 0.6, "64", "auto", True], prompt="a", negative_prompt="b", steps=3)
    cells = host.xyz.run_axis(p, "[Upsample guidance] Enabled", "False, True")
    assert "UG" not in cells[0][1].infotexts[0] and "UG scale" in cells[1][1].infotexts[0]
    # cells share p's extra_generation_params dict (shallow copies): a guided cell must not leak its keys
    cells = host.xyz.run_axis(p, "[Upsample guidance] Enabled", "True, False")
    assert "UG scale" in cells[0][1].infotexts[0] and "UG" not in cells[1][1].infotexts[0]
    assert "UG scale" not in p.extra_generation_params
    p = host.txt2img(ON, prompt="a", negative_prompt="b", steps=3)
    cells = host.xyz.run_axis(p, "[Upsample guidance] Scale", "0.5, 1.5")
    assert [c[1].extra_generation_params["UG scale"] for c in cells] == ["0.5", "1.5"]
    cells = host.xyz.run_axis(p, "[Upsample guidance] Base resolution", "64, 1024")
    assert "UG base: 64" in cells[0][1].infotexts[0] and "UG" not in cells[1][1].infotexts[0]
    cells = host.xyz.run_axis(p, "[Upsample guidance] Eta", "0.2")
    assert cells[0][1].extra_generation_params["UG eta"] == "0.2"
    with pytest.raises(ValueError, match="Eta"):
        host.xyz.run_axis(p, "[Upsample guidance] Eta", "0.2, 2")
    # the temporal factor reaches the settings of each cell (AnimateDiff jobs use it; an image ignores it)
    seen = []
    original = host.script_module.UGSettings.with_overrides

    def spy(self, overrides):
        out = original(self, overrides)
        seen.append(out.temporal_factor)
        return out

    host.script_module.UGSettings.with_overrides = spy
    try:
        cells = host.xyz.run_axis(p, "[Upsample guidance] Temporal factor", "Auto, 2, 1.5")
    finally:
        host.script_module.UGSettings.with_overrides = original
    assert seen == [None, 2.0, 1.5]
    assert all("UG scale" in c[1].infotexts[0] for c in cells)
    with pytest.raises(ValueError, match="Temporal factor.*'temporal_factor'"):
        host.xyz.run_axis(p, "[Upsample guidance] Temporal factor", "2, 9")


def test_callbacks_registered_once_across_reloads(host):
    counts = {k: len(v) for k, v in host.callbacks.callback_map.items()}
    assert counts["callbacks_cfg_denoiser"] == 1 and counts["callbacks_cfg_denoised"] == 1
    host.scripts.load_scripts([str(helpers.SCRIPT)])  # script file imported again (e.g. Reload UI)
    assert len(host.callbacks.callback_map["callbacks_cfg_denoiser"]) == 1
    assert len(host.callbacks.callback_map["callbacks_cfg_denoised"]) == 1


# --- infotext round trip and fuzzing -------------------------------------------------------------------


class _Component:
    def __init__(self, value):
        self.value = value


def _paste(host, infotext_text):
    from modules import infotext_utils

    from lib_upsample_guidance.webui import ui

    components = [_Component(v) for v in (False, 1.0, 0.6, "Auto", "auto", True, "Auto")]
    spec = ui.paste_spec()
    params = infotext_utils.parse_generation_parameters(infotext_text)
    pasted = infotext_utils.paste_values([(c, s[1]) for c, s in zip(components, spec, strict=True)], params)
    return [c.value if v is infotext_utils.UNCHANGED else v for (c, v) in pasted]


def test_infotext_round_trip(host):
    args = [True, 1.15, 0.45, "64", "spectral", False]
    p, r = run(host, args, width=128, height=128, enable_hr=True, hr_scale=1.5, hr_second_pass_steps=2)
    values = _paste(host, r.infotexts[0])
    # no AnimateDiff here: no temporal factor key, that control stays as it was
    assert values == [True, 1.15, 0.45, "64", "spectral", False, "Auto"]
    _, again = run(host, values, width=128, height=128, enable_hr=True, hr_scale=1.5, hr_second_pass_steps=2)
    assert same(r, again)
    # infotext without our keys turns the feature off
    _, off = run(host, [False])
    assert _paste(host, off.infotexts[0])[0] is False


def test_fuzzed_malformed_infotext_never_raises(host, capsys):
    from lib_upsample_guidance.webui import infotext, ui

    rng = random.Random(1234)
    alphabet = "0123456789.,:-+eE\"'\\ \n\tAutoboxspectralTrueFalse\u00e9\u4e2d{}[]()NaNinf"
    values = ["", "nan", "inf", "-1", "1e309", "1,2", "Auto", "  ", "True", "0x10", "\u0000", "1" * 500]
    for _ in range(600):
        params = {}
        for key in infotext.KEYS:
            if rng.random() < 0.8:
                if rng.random() < 0.5:
                    params[key] = rng.choice(values)
                else:
                    params[key] = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
            if rng.random() < 0.1:
                params[key] = rng.choice([None, 3, 2.5, [], {}, object()])
        found = infotext.parse_params(params)
        for field, value in found.items():  # whatever survives is valid
            assert field in infotext.KEYS.values()
            assert value is None or isinstance(value, (bool, int, float, str))
        for _field, paste in ui.paste_spec():
            paste(params)
        text = "a prompt\nSteps: 2, " + ", ".join(
            f"{k}: {v}" for k, v in params.items() if isinstance(v, str)
        )
        _paste(host, text)
    assert infotext.parse_params("not a dict") == {}
    out = capsys.readouterr().out
    assert "ignoring malformed infotext value" in out


def test_forge_hosts_route_to_the_forge_adapter(host, monkeypatch):
    """On a Forge-family host the script hands the same validated settings to forge.process_before_every_sampling
    (and leaves the A1111 callbacks alone)."""
    module = host.script_module
    seen = []
    monkeypatch.setattr(module, "HOST", "forge")
    monkeypatch.setattr(
        module.forge, "process_before_every_sampling", lambda p, s, bases: seen.append((p, s, bases))
    )
    p = host.txt2img([True, 1.1, 0.5, "Auto", "box", False], prompt="a", steps=2)
    p.scripts.process(p)
    assert module.a1111.generation_state(p) is None
    p.scripts.process_before_every_sampling(p, x=torch.zeros(1, 4, 16, 16), noise=None, c=None, uc=None)
    ((_, settings, bases),) = seen
    assert (
        settings.enabled,
        settings.guidance_scale,
        settings.eta,
        settings.resampler,
        settings.guide_hires_pass,
    ) == (True, 1.1, 0.5, "box", False)
    # "Auto" stays auto; the adapter resolves it from the detected family and the Settings tab's bases
    assert settings.base_resolution is None
    assert bases["sd1"] == 512 and bases["sdxl"] == 1024
    seen.clear()
    p = host.txt2img([False], prompt="a", steps=2)
    p.scripts.process(p)
    p.scripts.process_before_every_sampling(p, x=torch.zeros(1, 4, 16, 16), noise=None, c=None, uc=None)
    assert seen == []
