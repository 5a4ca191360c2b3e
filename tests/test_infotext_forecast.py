"""The infotext keys are known before sampling: params.txt ("paste last generation"), the image's infotext
and what really happened agree (stand-in A1111, the real script end to end), and when the guard turns
guidance off mid-way the image says from which step on it was not guided.

The truth every case is checked against is independent of the forecast: whether the guided image differs
from the same generation with guidance off, and (for the stop step) a count of the low-resolution calls.
"""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "hosts" / "a1111"))
try:
    from conftest_helpers import a1111_host
finally:
    sys.path.pop(0)

torch.set_num_threads(1)
UG = [True, 1.0, 0.6, "64", "auto", True]  # base 64 px: a 128 px image is 2x


@pytest.fixture
def host():
    with a1111_host() as h:
        yield h


def run(host, ug_args, kind="txt2img", **kw):
    kw.setdefault("prompt", "a house")
    kw.setdefault("negative_prompt", "blurry")
    kw.setdefault("steps", 5)
    p = getattr(host, kind)(list(ug_args), **kw)
    result = host.run(p)
    return p, result, host.processing.params_txt


def same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.images, b.images, strict=True))


def keys(text):
    """The UG entries of an infotext, parsed the way the WebUI parses pasted text."""
    from modules import infotext_utils

    params = infotext_utils.parse_generation_parameters(text)
    return {k: v for k, v in params.items() if str(k).startswith("UG ")}


def _adapter():
    return sys.modules["lib_upsample_guidance.adapters.a1111"]


@pytest.mark.parametrize("sampler", ["Euler", "Euler a", "Heun", "DPM++ 2M", "DDIM"])
def test_params_txt_carries_the_keys_of_a_guided_txt2img(host, sampler):
    _, on, params_txt = run(host, UG, sampler_name=sampler)
    _, off, off_params = run(host, [False] + UG[1:], sampler_name=sampler)
    assert not same(on, off)
    assert keys(params_txt) == keys(on.infotexts[0]) != {}
    assert keys(params_txt)["UG scale"] in ("1", 1, 1.0) and str(keys(params_txt)["UG base"]) == "64"
    assert keys(off_params) == keys(off.infotexts[0]) == {}
    # the paste of params.txt turns the accordion on with the same values
    from lib_upsample_guidance.webui import infotext

    assert infotext.paste_enabled(keys(params_txt))
    assert infotext.parse_params(keys(params_txt)) == infotext.parse_params(keys(on.infotexts[0]))


@pytest.mark.parametrize(
    "sampler,denoise,eta",
    [
        ("Euler", 0.7, 0.6),  # first level t ~ 0.7 >= 0.4: guided
        ("Euler", 0.3, 0.6),  # t ~ 0.3 < 0.4: no step guided
        ("Euler", 0.5, 0.5),  # near the boundary
        ("DPM++ 2M", 0.45, 0.6),
        ("DDIM", 0.7, 0.6),
        ("DDIM", 0.3, 0.6),
        ("Heun", 0.9, 0.2),
    ],
)
def test_img2img_forecast_matches_what_sampling_did(host, sampler, denoise, eta):
    torch.manual_seed(0)
    init = torch.randn(1, 4, 16, 16)
    ug = [True, 1.0, eta, "64", "auto", True]
    kw = dict(kind="img2img", init_latent=init, denoising_strength=denoise, sampler_name=sampler)
    _, on, params_txt = run(host, ug, **kw)
    _, off, _ = run(host, [False], **kw)
    guided = not same(on, off)
    assert bool(keys(params_txt)) == guided == bool(keys(on.infotexts[0])), (guided, params_txt)
    assert keys(params_txt) == keys(on.infotexts[0])


@pytest.mark.parametrize("eta", [0.6, 0.15])
def test_hires_pass_forecast(host, eta):
    hr = dict(
        width=64, height=64, enable_hr=True, hr_scale=2.0, hr_second_pass_steps=3, denoising_strength=0.6
    )
    _, on, params_txt = run(host, [True, 1.0, eta, "64", "auto", True], **hr)
    _, off, _ = run(host, [False], **hr)
    guided = not same(on, off)
    assert guided == (eta == 0.6)  # denoising 0.6: the hires pass starts near t = 0.6
    assert keys(params_txt) == keys(on.infotexts[0])
    assert bool(keys(params_txt)) == guided
    if guided:
        assert keys(params_txt)["UG hires pass"] in (True, "True")


def test_hires_pass_not_guided_by_setting_writes_nothing(host):
    hr = dict(
        width=64, height=64, enable_hr=True, hr_scale=2.0, hr_second_pass_steps=3, denoising_strength=0.6
    )
    _, on, params_txt = run(host, UG[:5] + [False], **hr)
    assert keys(params_txt) == keys(on.infotexts[0]) == {}


def test_batches_all_carry_the_keys(host):
    _, on, params_txt = run(host, UG, batch_size=2, n_iter=2)
    assert all(keys(t) == keys(params_txt) != {} for t in on.infotexts)


def _fail_low_res_call(monkeypatch, call_number):
    """Make the adapter's low-resolution model call raise on its call_number-th call (1-based)."""
    adapter = _adapter()
    original = adapter._call_inner
    calls = []

    def failing(inner, x, level, cond):
        calls.append(float(level.reshape(-1)[0]))
        if len(calls) == call_number:
            raise RuntimeError("simulated failure of the low-resolution call")
        return original(inner, x, level, cond)

    monkeypatch.setattr(adapter, "_call_inner", failing)
    return calls


@pytest.mark.parametrize(
    "sampler,call,step",
    [
        ("Euler", 3, 3),  # one model call per step
        ("Heun", 3, 2),  # two calls per step: the 3rd call is step 2's first
        ("Heun", 4, 3),  # step 2's second call is made at step 3's noise level: read as step 3
        ("DDIM", 2, 2),
    ],
)
def test_guard_stop_mid_way_names_the_first_unguided_step(host, monkeypatch, capsys, sampler, call, step):
    ug = [True, 1.0, 1.0, "64", "auto", True]  # eta 1: every step guided
    _fail_low_res_call(monkeypatch, call)
    _, on, params_txt = run(host, ug, sampler_name=sampler)
    written = keys(on.infotexts[0])
    assert written.pop("UG stopped") == f"step {step}"
    assert written == keys(params_txt)  # the settings, as params.txt has them
    assert "UG stopped" not in keys(params_txt)  # written before sampling: nothing had failed then
    out = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[Upsample guidance]")]
    assert len(out) == 1 and "simulated" in out[0]


def test_guard_stop_in_first_batch_later_batches_carry_no_keys(host, monkeypatch):
    ug = [True, 1.0, 1.0, "64", "auto", True]
    _fail_low_res_call(monkeypatch, 3)
    _, on, _ = run(host, ug, sampler_name="Euler", n_iter=3)
    assert keys(on.infotexts[0])["UG stopped"] == "step 3"
    assert [keys(t) for t in on.infotexts[1:]] == [{}, {}]  # not guided at all: no keys
    _, off, _ = run(host, [False], sampler_name="Euler", n_iter=3)
    assert torch.equal(on.images[1], off.images[1]) and torch.equal(on.images[2], off.images[2])
    assert not torch.equal(on.images[0], off.images[0])  # steps 1-2 of the first batch were guided


def test_guard_stop_in_hires_pass(host, monkeypatch):
    hr = dict(
        width=64, height=64, enable_hr=True, hr_scale=2.0, hr_second_pass_steps=4, denoising_strength=0.9
    )
    _fail_low_res_call(monkeypatch, 2)
    _, on, params_txt = run(host, [True, 1.0, 1.0, "64", "auto", True], sampler_name="Euler", **hr)
    assert keys(on.infotexts[0])["UG stopped"] == "hires step 2"
    assert "UG hires pass" in keys(params_txt)


def test_wrong_forecast_is_corrected_in_the_image(host, monkeypatch):
    """A forecast that says "guided" where no step is (e.g. a hires checkpoint of another family): the
    image carries no keys (the truth), params.txt has them (it is written before sampling)."""
    adapter = _adapter()
    real = adapter.forecast

    def optimistic(p, state):
        result = real(p, state)
        forecast = sys.modules["lib_upsample_guidance.webui.forecast"]
        passes = [forecast.PassForecast(f.hires, f.levels, True) for f in result.passes]
        return forecast.Forecast(passes, result.params)

    monkeypatch.setattr(adapter, "forecast", optimistic)
    init = torch.randn(1, 4, 16, 16)
    kw = dict(kind="img2img", init_latent=init, denoising_strength=0.3, sampler_name="Euler")
    _, on, params_txt = run(host, [True, 1.0, 0.6, "64", "auto", True], **kw)
    _, off, _ = run(host, [False], **kw)
    assert same(on, off)
    assert keys(params_txt) and not keys(on.infotexts[0])


def test_failed_forecast_falls_back_to_writing_at_the_first_guided_step(host, monkeypatch, capsys):
    def broken(p, state):
        raise RuntimeError("no schedule")

    monkeypatch.setattr(_adapter(), "forecast", broken)
    _, on, params_txt = run(host, UG)
    assert keys(params_txt) == {}
    assert keys(on.infotexts[0])["UG base"] in (64, "64")
    assert "Traceback" not in capsys.readouterr().out


def test_forecast_leaves_p_untouched(host):
    """The throwaway sampler's get_sigmas writes schedule keys: into a private copy, never into p."""
    p = host.txt2img(UG, prompt="a", negative_prompt="", steps=5, sampler_name="DPM++ 2M")
    p.scripts.process(p)
    p.init(p.all_prompts if hasattr(p, "all_prompts") else ["a"], [1], [1])
    before = dict(p.extra_generation_params)
    state = _adapter().generation_state(p)
    result = _adapter().forecast(p, state)
    assert result.guided and p.extra_generation_params == before and p.sampler is None


def test_step_at_counts_steps_by_level():
    from lib_upsample_guidance.webui.forecast import step_at

    levels = [14.6, 7.0, 3.0, 1.0]
    assert [step_at(levels, v) for v in (14.6, 7.0, 5.0, 3.0, 1.0, 0.5, 20.0)] == [1, 2, 2, 3, 4, 4, 1]
    assert step_at(levels, 7.0 * (1 + 1e-6)) == 2  # float32 rounding of the host's sigma
    assert step_at(None, 1.0) is None and step_at(levels, None) is None


def test_stopped_value_format():
    from lib_upsample_guidance.webui import infotext

    assert infotext.stopped_value(7, hires=False) == "step 7"
    assert infotext.stopped_value(3, hires=True) == "hires step 3"
    assert infotext.stopped_value(None, hires=False, level=3.2123) == "at noise level 3.212"


def test_guard_stop_at_the_first_guided_call_leaves_no_keys(host, monkeypatch):
    _fail_low_res_call(monkeypatch, 1)
    _, on, params_txt = run(host, [True, 1.0, 1.0, "64", "auto", True], sampler_name="Euler")
    _, off, _ = run(host, [False], sampler_name="Euler")
    assert same(on, off) and keys(on.infotexts[0]) == {}
    assert keys(params_txt)  # written before sampling, when nothing had failed
