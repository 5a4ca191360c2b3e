"""The real AlwaysOn script (scripts/upsample_guidance.py) driving the Forge adapter end to end.

The A1111 stand-ins provide modules.scripts / shared / script_callbacks (the script is loaded the way the
WebUI loads it, and run through the ScriptRunner); the Forge main stand-ins provide backend.* so the host is
detected as Forge. A Forge-shaped processing object carries forge_objects.unet; after the runner's process
and process_before_every_sampling hooks, a short Euler loop samples through Forge's sampling_function_inner.
"""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest
import torch
from _forge_support import FORGE_MAIN, TinyNet, expected_guided, make_p

sys.path.insert(0, str(FORGE_MAIN.parent / "a1111"))
try:
    from conftest_helpers import a1111_host
finally:
    sys.path.pop(0)


@pytest.fixture()
def forge_host():
    with a1111_host() as host:
        sys.path.insert(0, str(FORGE_MAIN))
        try:
            # the script detects the host at import: reload it now that backend.* is importable
            host.scripts.scripts_data.clear()
            host.callbacks.clear_callbacks()
            host.scripts.load_scripts([str(host_script_path())])
            runner = host.scripts.ScriptRunner()
            runner.initialize_scripts(False)
            for script in runner.alwayson_scripts:
                runner.set_args_range(script, 6)
            from backend.modules import k_prediction
            from backend.patcher.unet import UnetPatcher
            from backend.sampling import condition, sampling_function

            module = next(
                d.module
                for d in host.scripts.scripts_data
                if d.script_class.__name__ == "UpsampleGuidanceScript"
            )
            assert module.HOST == "forge"
            yield SimpleNamespace(
                host=host,
                runner=runner,
                kp=k_prediction,
                UnetPatcher=UnetPatcher,
                cond=condition,
                sf=sampling_function,
            )
        finally:
            sys.path.remove(str(FORGE_MAIN))


def host_script_path():
    from pathlib import Path

    return Path(__file__).resolve().parents[1] / "scripts" / "upsample_guidance.py"


def _p(fh, ug_args, cfg=5.0, enable_hr=False):
    unet = fh.UnetPatcher.from_model(TinyNet(), k_predictor=fh.kp.Prediction())
    p = make_p(unet, cfg_scale=cfg)
    p.enable_hr = enable_hr
    script = fh.runner.alwayson_scripts[0]
    args = [0] + [None] * (script.args_to - 1)
    defaults = [False, 1.0, 0.6, "Auto", "auto", True]
    for i, value in enumerate(defaults):
        args[script.args_from + i] = value
    for i, value in enumerate(ug_args):
        args[script.args_from + i] = value
    p.script_args = args
    return p, unet


def _step(fh, unet, x, sigma, c, u, cfg):
    cond, uncond = fh.cond.compile_conditions(c), fh.cond.compile_conditions(u)
    cond[0]["strength"] = 1.0
    return fh.sf.sampling_function_inner(unet.model, x, sigma, uncond, cond, cfg, unet.model_options)


def test_script_enables_guidance_on_forge(forge_host):
    fh = forge_host
    torch.manual_seed(21)
    p, original = _p(fh, [True, 0.9, 1.0, "64"])
    x = torch.randn(2, 4, 16, 16)
    fh.runner.process(p)
    fh.runner.process_before_every_sampling(p, x=x, noise=x, c=None, uc=None)
    patched = p.sd_model.forge_objects.unet
    assert patched is not original
    c, u = torch.randn(2, 7, 8), torch.randn(2, 7, 8)
    sigma = torch.full((2,), 3.0)
    den = _step(fh, original, x, sigma, c, u, 5.0)
    got = _step(fh, patched, x, sigma, c, u, 5.0)
    want = expected_guided(original.model, x, sigma, den, [(c, 1.0)], u, 5.0, 0.9)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert p.extra_generation_params.get("UG scale") == "0.9"
    assert p.extra_generation_params.get("UG base") == "64"


def test_script_disabled_touches_nothing(forge_host):
    fh = forge_host
    p, original = _p(fh, [False, 0.9, 1.0, "64"])
    before = repr(original.model_options)
    x = torch.randn(1, 4, 16, 16)
    fh.runner.process(p)
    fh.runner.process_before_every_sampling(p, x=x, noise=x, c=None, uc=None)
    assert p.sd_model.forge_objects.unet is original
    assert repr(original.model_options) == before
    assert not any(k.startswith("UG ") for k in p.extra_generation_params)


def test_script_hires_pass_twice_one_patch(forge_host):
    fh = forge_host
    p, original = _p(fh, [True, 1.0, 1.0, "64"], enable_hr=True)
    x = torch.randn(1, 4, 16, 16)
    fh.runner.process(p)
    fh.runner.process_before_every_sampling(p, x=x, noise=x, c=None, uc=None)
    p.is_hr_pass = True
    p.hr_cfg = 3.0
    xh = torch.randn(1, 4, 32, 32)
    fh.runner.process_before_every_sampling(p, x=xh, noise=xh, c=None, uc=None)  # before the reset
    p.sd_model.forge_objects.unet = original  # Forge's reset
    fh.runner.process_before_every_sampling(p, x=xh, noise=xh, c=None, uc=None)
    patched = p.sd_model.forge_objects.unet
    fns = patched.model_options["sampler_post_cfg_function"]
    assert len(fns) == 1
    assert not any(k.startswith("UG ") for k in p.extra_generation_params)  # nothing guided yet
    c, u = torch.randn(1, 7, 8), torch.randn(1, 7, 8)
    _step(fh, patched, xh, torch.full((1,), 3.0), c, u, 3.0)  # one guided step of the hires pass
    assert p.extra_generation_params.get("UG hires pass") == "True"
    assert p.extra_generation_params.get("UG base") == "64"


def test_script_bad_api_value_refuses_generation_cleanly(forge_host, capsys):
    fh = forge_host
    p, original = _p(fh, [True, 0.9, 1.5, "64"])  # eta 1.5 is out of range
    fh.runner.process(p)
    x = torch.randn(1, 4, 16, 16)
    fh.runner.process_before_every_sampling(p, x=x, noise=x, c=None, uc=None)
    assert p.sd_model.forge_objects.unet is original
    with pytest.raises(ValueError, match="eta"):
        p.sample()
    assert "Traceback" not in capsys.readouterr().out


def test_script_infotext_only_when_guidance_ran(forge_host):
    """Patched but every step outside the guided time range (eta 0.3, small sigmas): no UG infotext."""
    fh = forge_host
    p, _ = _p(fh, [True, 1.0, 0.3, "64"])
    x = torch.randn(1, 4, 16, 16)
    fh.runner.process(p)
    fh.runner.process_before_every_sampling(p, x=x, noise=x, c=None, uc=None)
    patched = p.sd_model.forge_objects.unet
    c, u = torch.randn(1, 7, 8), torch.randn(1, 7, 8)
    for sigma in (0.5, 0.1):  # t/T well below 1 - eta
        _step(fh, patched, x, torch.full((1,), sigma), c, u, 5.0)
    assert not any(k.startswith("UG ") for k in p.extra_generation_params)
    _step(fh, patched, x, torch.full((1,), 14.0), c, u, 5.0)  # a guided step
    assert p.extra_generation_params.get("UG eta") == "0.3"


# --- infotext before sampling (params.txt / "paste last generation"), webui/forecast.py -----------------


def _schedule(fh, monkeypatch, kind, levels):
    """Replace the host's sampler schedule (the A1111 stand-in's samplers are not Forge's) by fixed levels."""
    forecast = sys.modules["lib_upsample_guidance.webui.forecast"]
    seen = []

    def fixed(p, *, hires):
        seen.append(hires)
        return forecast.PassSchedule(kind, torch.tensor(levels, dtype=torch.float64))

    monkeypatch.setattr(forecast, "host_pass_schedule", fixed)
    return seen


def _sized(p, width=128, height=128, **kw):
    p.width, p.height, p.steps, p.sampler_name = width, height, 4, "Euler"
    for key, value in kw.items():
        setattr(p, key, value)
    return p


@pytest.mark.parametrize(
    "kind,levels,eta,guided",
    [
        ("sigma", [14.6, 3.0, 0.5], 0.6, True),
        ("sigma", [0.5, 0.1], 0.3, False),  # t/T well below 1 - eta
        ("timestep", [951.0, 701.0, 451.0], 0.1, True),  # t 951 -> sigma table[951]: t/T = 0.952 >= 0.9
        ("timestep", [851.0, 601.0], 0.1, False),
    ],
)
def test_forge_forecast(forge_host, monkeypatch, kind, levels, eta, guided):
    fh = forge_host
    _schedule(fh, monkeypatch, kind, levels)
    p, unet = _p(fh, [True, 1.0, eta, "64"])
    _sized(p)
    forge = sys.modules["lib_upsample_guidance.adapters.forge"]
    settings_mod = sys.modules["lib_upsample_guidance.webui.settings"]
    settings = settings_mod.UGSettings(enabled=True, guidance_scale=1.0, eta=eta, base_resolution=64)
    result = forge.forecast(p, settings)
    assert result.guided is guided
    got = result.passes[0].levels
    predictor = unet.model.predictor
    want = torch.tensor(levels, dtype=torch.float64)
    if kind == "timestep":  # Forge's CFG denoiser turns DDIM's timesteps into the model's sigmas
        want = predictor.sigmas.double()[want.long()]
    torch.testing.assert_close(got, want)
    assert result.params["UG base"] == "64" and result.params["UG eta"] == format(eta, ".6g")


def test_forge_script_writes_the_keys_before_sampling(forge_host, monkeypatch):
    fh = forge_host
    _schedule(fh, monkeypatch, "sigma", [14.6, 3.0, 0.5])
    p, original = _p(fh, [True, 0.9, 1.0, "64"])
    _sized(p)
    fh.runner.process(p)
    fh.runner.process_batch(p, batch_number=0, prompts=["a"], seeds=[1], subseeds=[1])
    assert p.extra_generation_params.get("UG scale") == "0.9"  # params.txt is written now
    x = torch.randn(1, 4, 16, 16)
    fh.runner.process_before_every_sampling(p, x=x, noise=x, c=None, uc=None)
    c, u = torch.randn(1, 7, 8), torch.randn(1, 7, 8)
    _step(fh, p.sd_model.forge_objects.unet, x, torch.full((1,), 3.0), c, u, 5.0)
    fh.runner.postprocess_batch(p, x, batch_number=0)
    assert p.extra_generation_params.get("UG base") == "64" and "UG stopped" not in p.extra_generation_params


def test_forge_script_guard_stop_is_told_in_the_infotext(forge_host, monkeypatch):
    fh = forge_host
    _schedule(fh, monkeypatch, "sigma", [14.0, 7.0, 3.0, 1.0])
    p, original = _p(fh, [True, 1.0, 1.0, "64"])
    _sized(p)
    fh.runner.process(p)
    fh.runner.process_batch(p, batch_number=0, prompts=["a"], seeds=[1], subseeds=[1])
    x = torch.randn(1, 4, 16, 16)
    fh.runner.process_before_every_sampling(p, x=x, noise=x, c=None, uc=None)
    patched = p.sd_model.forge_objects.unet
    c, u = torch.randn(1, 7, 8), torch.randn(1, 7, 8)
    _step(fh, patched, x, torch.full((1,), 14.0), c, u, 5.0)  # step 1 guided
    _step(fh, patched, x, torch.full((1,), 7.0), c, u, 5.0)  # step 2 guided
    postcfg = sys.modules["lib_upsample_guidance.comfy_family.postcfg"]  # the post-CFG code Forge runs

    def broken(*args, **kwargs):
        raise RuntimeError("simulated")

    monkeypatch.setattr(postcfg, "guided_denoised", broken)
    _step(fh, patched, x, torch.full((1,), 3.0), c, u, 5.0)  # step 3 fails: guidance off
    fh.runner.postprocess_batch(p, x, batch_number=0)
    assert p.extra_generation_params["UG stopped"] == "step 3"
    assert p.extra_generation_params["UG scale"] == "1"


def test_forge_script_wrong_forecast_removes_the_keys(forge_host, monkeypatch):
    fh = forge_host
    _schedule(fh, monkeypatch, "sigma", [14.6, 3.0])
    p, original = _p(fh, [True, 1.0, 0.3, "64"])
    _sized(p)
    fh.runner.process(p)
    fh.runner.process_batch(p, batch_number=0, prompts=["a"], seeds=[1], subseeds=[1])
    assert "UG scale" in p.extra_generation_params
    x = torch.randn(1, 4, 16, 16)
    fh.runner.process_before_every_sampling(p, x=x, noise=x, c=None, uc=None)
    c, u = torch.randn(1, 7, 8), torch.randn(1, 7, 8)
    _step(fh, p.sd_model.forge_objects.unet, x, torch.full((1,), 0.5), c, u, 5.0)  # not a guided level
    fh.runner.postprocess_batch(p, x, batch_number=0)
    assert not any(k.startswith("UG ") for k in p.extra_generation_params)


def test_script_refiner_switch_and_per_batch_infotext(forge_host):
    """The script registers the Forge CFG-denoiser callback: a model swapped in mid-pass (the refiner) is
    patched when the host fires the callback. process_batch drops the UG keys of an earlier batch: a batch in
    which guidance changes no step carries none."""
    fh = forge_host
    p, _ = _p(fh, [True, 1.0, 0.6, "64"])
    x = torch.randn(1, 4, 16, 16)
    fh.runner.process(p)
    fh.runner.process_batch(p, batch_number=0, prompts=["a"], seeds=[1], subseeds=[1])
    fh.runner.process_before_every_sampling(p, x=x, noise=x, c=None, uc=None)
    c, u = torch.randn(1, 7, 8), torch.randn(1, 7, 8)
    _step(fh, p.sd_model.forge_objects.unet, x, torch.full((1,), 3.0), c, u, 5.0)
    assert p.extra_generation_params.get("UG scale") == "1"
    refiner = fh.UnetPatcher.from_model(TinyNet(seed=5), k_predictor=fh.kp.Prediction())
    p.sd_model.forge_objects.unet = refiner
    fh.host.callbacks.cfg_denoiser_callback(SimpleNamespace(denoiser=SimpleNamespace(p=p)))
    patched = p.sd_model.forge_objects.unet
    assert patched is not refiner and patched.model is refiner.model
    den = _step(fh, refiner, x, torch.full((1,), 3.0), c, u, 5.0)
    assert not torch.allclose(_step(fh, patched, x, torch.full((1,), 3.0), c, u, 5.0), den)
    # next batch: the keys are dropped, and written again once guidance changes a step of this batch
    fh.runner.process_batch(p, batch_number=1, prompts=["a"], seeds=[2], subseeds=[2])
    assert not any(k.startswith("UG ") for k in p.extra_generation_params)
    _step(fh, patched, x, torch.full((1,), 0.05), c, u, 5.0)  # outside the guided range: still no keys
    assert not any(k.startswith("UG ") for k in p.extra_generation_params)
    _step(fh, patched, x, torch.full((1,), 3.0), c, u, 5.0)
    assert p.extra_generation_params.get("UG scale") == "1"
