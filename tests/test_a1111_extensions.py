"""The A1111 adapter beside the extensions users run with it, on stand-ins written from their source
(tests/hosts/a1111/peer_extensions.py): ControlNet (first pass, hires pass, T2I-Adapter, reference-only),
Kohya Deep Shrink, and the refused ones (SAG, Regional Prompter, AnimateDiff, Tiled Diffusion, LLLite).

Each ControlNet test checks what the low-resolution call saw (hint size and values against an independent
average pooling, hires-fix semantics, units on and off) and that the stand-in fails without our swap.
"""

import contextlib
import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

_spec = importlib.util.spec_from_file_location(
    "ug_a1111_helpers", Path(__file__).parent / "hosts" / "a1111" / "conftest_helpers.py"
)
helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helpers)

torch.set_num_threads(1)
ON = [True, 1.0, 1.0, "64", "box", True]  # eta 1 (every step), base 64 px, box pair
PEERS = Path(__file__).parent / "hosts" / "a1111" / "peer_extensions.py"


def warnings(out):
    return [line for line in out.splitlines() if line.startswith("[Upsample guidance]")]


@pytest.fixture
def host():
    with helpers.a1111_host() as h:
        spec = importlib.util.spec_from_file_location("ug_peer_extensions", PEERS)
        peers = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(peers)  # imports the stand-in `modules.scripts` of this host
        h.peers = peers
        h.set_model(h.tiny_sd.TinySDModel(dtype=torch.float64))
        yield h


def add_script(host, script, args=()):
    """Register another extension's AlwaysOn script after ours, with its positional args."""
    runner = host.runners[False]
    script.filename = "peer"
    runner.alwayson_scripts.append(script)
    runner.set_args_range(script, len(args))
    script._test_args = list(args)
    return script


def make_p(host, ug_args, **kw):
    kw.setdefault("prompt", "a house")
    kw.setdefault("negative_prompt", "blurry")
    kw.setdefault("steps", 3)
    kw.setdefault("sampler_name", "Euler")
    p = host.txt2img(list(ug_args), **kw)
    for script in host.runners[False].alwayson_scripts:
        if hasattr(script, "_test_args"):
            p.script_args[script.args_from : script.args_to] = script._test_args
    return p


def same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.images, b.images, strict=True))


def controlnet(host, units):
    return add_script(host, host.peers.ControlNetScript(units))


def unit(host, kind="ControlNet", size=128, hr_size=None, **kw):
    pe = host.peers
    model = pe.TinyAdapter() if kind == "T2I_Adapter" else pe.TinyControlNet()
    preprocessor = {"name": kw.pop("module", "none")}
    return dict(
        control_model=model,
        preprocessor=preprocessor,
        hint_cond=pe.hint_image(size, size),
        hr_hint_cond=pe.hint_image(hr_size, hr_size, seed=5) if hr_size else None,
        weight=1.0,
        control_model_type=pe.ControlModelType[kind],
        **kw,
    )


# --- ControlNet ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [128, 192])  # 2x and 3x (where area and bilinear differ)
def test_controlnet_first_pass_low_res_call_sees_an_area_downsampled_hint(host, capsys, size):
    script = controlnet(host, [unit(host, size=size)])
    p = make_p(host, ON, width=size, height=size)
    processed = host.run(p)
    assert warnings(capsys.readouterr().out) == []
    assert "UG scale" in processed.infotexts[0]
    s, lat = size // 64, size // 8
    log = _last_log(script)
    full = [e for e in log if e["x"] == (lat, lat)]
    low = [e for e in log if e["x"] == (8, 8)]
    assert len(full) == 3 and len(low) == 3  # one low-res call per guided step
    hint = script.units[0]["hint_cond"]
    for entry in low:
        assert entry["units"][0] == ((64, 64), False) and entry["in_hr"] is False
        want = F.avg_pool2d(hint, s)  # independent area downsampling of the hint to 64 px
        assert torch.allclose(entry["hints"][0], want, atol=1e-12)
    for entry in full:
        assert entry["units"][0] == ((size, size), False)
        assert entry["hints"][0] is hint  # restored between steps: the full call uses the user's hint


def _last_log(script):
    return script.log


def test_without_the_hint_swap_the_stand_in_fails_like_controlnet(host, capsys, monkeypatch):
    from lib_upsample_guidance.adapters import a1111_extensions

    monkeypatch.setattr(a1111_extensions, "swap_controlnet_hints", lambda *a, **k: contextlib.nullcontext())
    controlnet(host, [unit(host, size=128)])
    processed = host.run(make_p(host, ON, width=128, height=128))
    out = warnings(capsys.readouterr().out)
    assert len(out) == 1 and "size" in out[0]  # cldm's `h += guided_hint` with a full-size hint
    assert "UG scale" not in processed.infotexts[0]


def test_controlnet_state_restored_after_each_low_res_call(host):
    from lib_upsample_guidance.adapters import a1111_extensions

    pe = host.peers
    params = [pe.ControlParams(**unit(host, size=128, hr_size=256))]
    params[0].used_hint_cond = params[0].hr_hint_cond
    params[0].used_hint_cond_latent = latent = torch.zeros(1)
    before = {k: getattr(params[0], k) for k in a1111_extensions._HINT_FIELDS}
    network = pe.UnetHook()
    network.control_params = params
    with a1111_extensions.swap_controlnet_hints(network, (32, 32), (16, 16), True):
        assert params[0].hint_cond.shape[-1] == 128 and params[0].hr_hint_cond is params[0].hint_cond
        assert torch.allclose(params[0].hint_cond, F.avg_pool2d(before["hr_hint_cond"], 2))
    assert all(getattr(params[0], k) is v for k, v in before.items())
    assert params[0].used_hint_cond_latent is latent
    with pytest.raises(RuntimeError):
        with a1111_extensions.swap_controlnet_hints(network, (32, 32), (16, 16), False):
            raise RuntimeError("a failure inside the low-res call")
    assert all(getattr(params[0], k) is v for k, v in before.items())


def test_hires_pass_keeps_the_pass_semantics(host, capsys):
    """Hires pass (64 px first pass -> 128 px, guided from 64 px): the low-res call is treated as the hires
    pass, like the full call: 'High res only' units on, 'Low res only' off, canny's forced soft injection on,
    and its hint is the hires hint area-downsampled (not the first-pass hint)."""
    pe = host.peers
    units = [
        unit(host, size=64, hr_size=128, hr_option=pe.HiResFixOption.HIGH_RES_ONLY, module="canny"),
        unit(host, size=64, hr_size=128, hr_option=pe.HiResFixOption.LOW_RES_ONLY),
        unit(host, "T2I_Adapter", size=64, hr_size=128),
    ]
    script = controlnet(host, units)
    p = make_p(host, ON, width=64, height=64, enable_hr=True, hr_scale=2.0)
    processed = host.run(p)
    assert warnings(capsys.readouterr().out) == []
    assert "UG scale" in processed.infotexts[0]
    log = _last_log(script)
    first = [e for e in log if e["x"] == (8, 8) and not e["in_hr"]]
    hires_full = [e for e in log if e["x"] == (16, 16)]
    hires_low = [e for e in log if e["x"] == (8, 8) and e["in_hr"]]
    assert first and hires_full and len(hires_low) == len(hires_full)
    for entry in first:  # the unguided first pass: low-res-only and both-passes units
        assert set(entry["units"]) == {1, 2}
    for entry in hires_full + hires_low:
        assert set(entry["units"]) == {0, 2}
        assert entry["units"][0][1] is True  # canny: forced soft injection in the hires pass
    for entry in hires_low:
        assert entry["units"][0][0] == (64, 64)
        assert torch.allclose(entry["hints"][0], F.avg_pool2d(units[0]["hr_hint_cond"], 2), atol=1e-12)
        assert entry["hints"][0] is not units[0]["hint_cond"]


def test_controlnet_inpaint_hint_rgb_and_mask_downsampled(host, capsys):
    """ControlNet inpaint: a 4-channel hint (RGB + mask) is area-downsampled as a whole; ControlNet then
    thresholds the low-res mask itself."""
    spec = unit(host, size=128)
    spec["hint_cond"] = host.peers.hint_image(128, 128, channels=4)
    script = controlnet(host, [spec])
    host.run(make_p(host, ON, width=128, height=128))
    assert warnings(capsys.readouterr().out) == []
    low = [e for e in _last_log(script) if e["x"] == (8, 8)]
    assert low and all(torch.allclose(e["hints"][0], F.avg_pool2d(spec["hint_cond"], 2)) for e in low)


def test_t2i_adapter_low_res_call_uses_the_low_res_hint(host, capsys):
    script = controlnet(host, [unit(host, "T2I_Adapter", size=128)])
    host.run(make_p(host, ON, width=128, height=128))
    assert warnings(capsys.readouterr().out) == []
    low = [e for e in _last_log(script) if e["x"] == (8, 8)]
    assert low and all(e["units"][0][0] == (64, 64) for e in low)


def test_reference_only_runs_its_reference_pass_at_the_low_res_size(host, capsys):
    script = controlnet(host, [unit(host, "AttentionInjection", size=128, module="reference_only")])
    host.run(make_p(host, ON, width=128, height=128))
    assert warnings(capsys.readouterr().out) == []
    log = _last_log(script)
    assert {e["ref"] for e in log if e["x"] == (16, 16)} == {(16, 16)}
    assert {e["ref"] for e in log if e["x"] == (8, 8)} == {(8, 8)}


def test_controlnet_lllite_is_refused_up_front(host, capsys):
    controlnet(host, [unit(host, "Controlllite", size=128)])
    on = host.run(make_p(host, ON, width=128, height=128))
    off = host.run(make_p(host, [False], width=128, height=128))
    out = warnings(capsys.readouterr().out)
    assert len(out) == 1 and "ControlNet-LLLite" in out[0]
    assert same(on, off)


# --- Deep Shrink ---------------------------------------------------------------------------------------


class _ViaBlock(torch.nn.Module):
    """Routes TinyUNet's conv_in / conv_out through input_blocks[0] / output_blocks[0], read at call time
    (the real UNet iterates its block lists, where Kohya Hires.fix swaps Scalers in and out)."""

    def __init__(self, unet, name, conv):
        super().__init__()
        self._target = (unet, name)
        self.weight = conv.weight  # TinyUNet reads conv_in.weight.dtype

    def forward(self, x):
        unet, name = self._target
        return getattr(unet, name)[0](x)


def _with_deep_shrink(host):
    """Scalers as Kohya Hires.fix installs them (downscale 0.5 before an input block, upscale 2.0 before the
    matching output block); returns the list of feature-map sizes the middle conv sees per call."""
    pe = host.peers
    unet = host.shared.sd_model.model.diffusion_model
    seen = []
    unet.conv_mid.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape[-2:])))
    conv_in, conv_out = unet.conv_in, unet.conv_out
    unet.input_blocks = torch.nn.ModuleList([pe.Scaler(0.5, conv_in, "bilinear")])
    unet.output_blocks = torch.nn.ModuleList([pe.Scaler(2.0, conv_out, "bilinear")])
    object.__setattr__(unet, "_modules", dict(unet._modules))
    unet._modules["conv_in"] = _ViaBlock(unet, "input_blocks", conv_in)
    unet._modules["conv_out"] = _ViaBlock(unet, "output_blocks", conv_out)
    return seen


def test_kohya_deep_shrink_is_not_applied_to_the_low_res_call(host, capsys):
    """Scaler modules (downscale 0.5 before an input block, 2.0 before an output block) shrink the full
    call; the low-res call (already at the base size) runs the blocks unscaled; FreeU-like patches stay."""
    seen = _with_deep_shrink(host)
    unet = host.shared.sd_model.model.diffusion_model
    host.run(make_p(host, ON, width=128, height=128))
    assert warnings(capsys.readouterr().out) == []
    assert seen.count((8, 8)) == 6  # full calls shrunk 16 -> 8, low-res calls unshrunk at 8
    assert (4, 4) not in seen  # the low-res call was never shrunk again
    assert isinstance(unet.input_blocks[0], host.peers.Scaler)  # put back after each low-res call
    assert isinstance(unet.output_blocks[0], host.peers.Scaler)


def test_without_removing_deep_shrink_the_low_res_call_is_shrunk_again(host, monkeypatch):
    from lib_upsample_guidance.adapters import a1111_extensions

    monkeypatch.setattr(a1111_extensions, "without_deep_shrink", lambda sd_model: contextlib.nullcontext())
    seen = _with_deep_shrink(host)
    host.run(make_p(host, ON, width=128, height=128))
    assert (4, 4) in seen


# --- refused combinations: one warning naming the other extension, the host's image unchanged ----------------


def _refused(host, capsys, name, **kw):
    on = host.run(make_p(host, ON, width=128, height=128, **kw))
    off = host.run(make_p(host, [False], width=128, height=128, **kw))
    out = warnings(capsys.readouterr().out)
    assert len(out) == 1 and name in out[0], out
    assert same(on, off)
    assert "UG scale" not in on.infotexts[0]


def test_sag_enabled_is_refused(host, capsys):
    add_script(host, host.peers.SAGScript(), [True])
    calls = host.shared.sd_model.apply_model_calls
    _refused(host, capsys, "Self Attention Guidance")
    assert all(shape[-1] == 16 for shape, _ in calls)  # no low-res call was made


def test_sag_disabled_is_guided(host, capsys):
    add_script(host, host.peers.SAGScript(), [False])
    processed = host.run(make_p(host, ON, width=128, height=128))
    assert warnings(capsys.readouterr().out) == [] and "UG scale" in processed.infotexts[0]


def test_regional_prompter_active_is_refused(host, capsys):
    add_script(host, host.peers.RegionalPrompterScript(active=True))
    _refused(host, capsys, "Regional Prompter")


def test_animatediff_enabled_is_not_refused_on_a1111(host, capsys):
    """A1111 guides AnimateDiff through its own forward (tests/test_a1111_animatediff.py): its enabled unit is no
    reason to refuse (Forge still refuses it: tests/test_forge_extensions.py)."""
    add_script(host, host.peers.AnimateDiffScript(), [host.peers.AnimateDiffProcess(enable=True)])
    processed = host.run(make_p(host, ON, width=128, height=128))
    assert warnings(capsys.readouterr().out) == [] and "UG scale" in processed.infotexts[0]


def test_animatediff_disabled_is_guided(host, capsys):
    add_script(host, host.peers.AnimateDiffScript(), [{"enable": False}])
    processed = host.run(make_p(host, ON, width=128, height=128))
    assert warnings(capsys.readouterr().out) == [] and "UG scale" in processed.infotexts[0]


def test_tiled_diffusion_multidiffusion_is_refused_by_name(host, capsys, monkeypatch):
    from modules import sd_samplers

    original = sd_samplers.create_sampler

    def create_sampler(name, model):
        sampler = original(name, model)
        host.peers.MultiDiffusion(sampler).hook()
        return sampler

    monkeypatch.setattr(sd_samplers, "create_sampler", create_sampler)
    _refused(host, capsys, "Tiled Diffusion")


def test_tiled_diffusion_mixture_of_diffusers_is_refused(host, capsys):
    mixture = host.peers.MixtureOfDiffusers()
    mixture.hook(host.shared.sd_model)
    try:
        _refused(host, capsys, "Mixture of Diffusers")
    finally:
        mixture.unhook()


def test_incantations_pag_active_is_refused(host, capsys, monkeypatch):
    """v0xie/sd-webui-incantations keeps PAG's state in p.incant_cfg_params['pag_params'].pag_active."""
    from modules import processing

    original = processing.StableDiffusionProcessingTxt2Img.init

    def init(self, *args, **kwargs):
        self.incant_cfg_params = {"pag_params": type("PAGStateParams", (), {"pag_active": True})()}
        return original(self, *args, **kwargs)

    monkeypatch.setattr(processing.StableDiffusionProcessingTxt2Img, "init", init)
    _refused(host, capsys, "Incantations PAG")
