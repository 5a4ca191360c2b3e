"""The A1111 adapter inside the stand-in CFG denoiser: one denoiser call with guidance on must equal an
independent computation of the documented formula on the same rows.

Independent means: the expected value is built here from the host's own pieces (the stand-in inner model
called row by row, the host's CFG combination rule) and the formulas written out with plain torch ops
(average pooling / nearest repeat, sigma / sqrt(k), SNR matching by interpolation in log sigma with numpy) —
never through lib_upsample_guidance.
"""

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch

_spec = importlib.util.spec_from_file_location(
    "ug_a1111_helpers", Path(__file__).parent / "hosts" / "a1111" / "conftest_helpers.py"
)
helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helpers)

torch.set_num_threads(1)
UG_ON = [True, 1.0, 1.0, "64", "box", True]  # eta 1: every step guided; 128 px target, 64 px base: 2x box


@pytest.fixture
def host():
    with helpers.a1111_host() as h:
        yield h


def pool(x, s=2):
    return torch.nn.functional.avg_pool2d(x, s)


def up(y, s=2):
    return y.repeat_interleave(s, dim=-2).repeat_interleave(s, dim=-1)


def setup_call(
    host,
    model,
    sampler_name,
    prompts,
    negatives,
    ug_args,
    *,
    image_cfg_scale=None,
    s_min_uncond=0.0,
    size=16,
    seed=0,
    level=None,
    init_latent=None,
):
    """A p (with the script's process() run), a sampler initialised for it, and the forward's arguments."""
    from modules import prompt_parser, sd_samplers

    host.set_model(model)
    p = host.txt2img(
        list(ug_args),
        prompt=prompts[0],
        negative_prompt=negatives[0],
        width=size * 8,
        height=size * 8,
        sampler_name=sampler_name,
        image_cfg_scale=image_cfg_scale,
        s_min_uncond=s_min_uncond,
    )
    p.all_prompts, p.all_seeds = prompts, list(range(len(prompts)))
    p.scripts.process(p)
    sampler = sd_samplers.create_sampler(sampler_name, model)
    sampler.initialize(p)
    sampler.model_wrap_cfg.steps = 10
    sampler.model_wrap_cfg.total_steps = 10
    g = torch.Generator().manual_seed(seed)
    b = len(prompts)
    x = torch.randn(b, 4, size, size, generator=g, dtype=torch.float64)
    c = prompt_parser.get_multicond_learned_conditioning(model, prompts, 10)
    uc = prompt_parser.get_learned_conditioning(model, negatives, 10)
    if level is None:
        level = 3.0 if sampler_name != "DDIM" else 801.0
    sigma = torch.full((b,), float(level), dtype=torch.float64)
    image_cond = p.image_conditioning_for(x, source=init_latent if init_latent is not None else x * 0.5)
    if init_latent is not None:
        sampler.model_wrap_cfg.init_latent = init_latent
    sampler.sampler_extra_args = {
        "cond": c,
        "image_cond": image_cond,
        "uncond": uc,
        "cond_scale": 5.0,
        "s_min_uncond": s_min_uncond,
    }
    return (
        p,
        sampler,
        dict(
            x=x,
            sigma=sigma,
            uncond=uc,
            cond=c,
            cond_scale=5.0,
            s_min_uncond=s_min_uncond,
            image_cond=image_cond,
        ),
    )


def cond_dict(model, text, image):
    key = model.model.conditioning_key
    if key == "crossattn-adm":
        return {"c_crossattn": [text], "c_adm": image}
    if isinstance(text, dict):
        return {**text, "c_concat": [image]}
    return {"c_crossattn": [text], "c_concat": [image]}


def rows_of(text, i):
    if isinstance(text, dict):
        return {k: v[i : i + 1] for k, v in text.items()}
    return text[i : i + 1]


def expected_kdiff(sampler, model, args, weight=1.0, edit=False):
    """Row-wise guided x0 then the host's CFG combination, computed independently."""
    from modules import prompt_parser

    inner = sampler.model_wrap_cfg.inner_model
    conds_list, tensor = prompt_parser.reconstruct_multicond_batch(args["cond"], 0)
    uncond = prompt_parser.reconstruct_cond_batch(args["uncond"], 0)
    x, sigma, ic = args["x"], args["sigma"], args["image_cond"]
    b = x.shape[0]
    index = [i for i, conds in enumerate(conds_list) for _ in conds]
    ic_uncond = torch.zeros_like(ic) if model.model.conditioning_key == "crossattn-adm" else ic
    rows = [(x[i], sigma[i], rows_of(tensor, r), ic[i]) for r, i in enumerate(index)]
    rows += [(x[i], sigma[i], rows_of(uncond, i), ic_uncond[i]) for i in range(b)]
    if edit:
        rows += [(x[i], sigma[i], rows_of(uncond, i), torch.zeros_like(ic[i])) for i in range(b)]
    outs = []
    for xr, sr, text, icr in rows:
        xr, sr, icr = xr[None], sr[None], icr[None]
        den = inner(xr, sr, cond=cond_dict(model, text, icr))
        ic_low = pool(icr) if icr.ndim == 4 and icr.shape[-1] == xr.shape[-1] else icr
        den_low = inner(pool(xr), sr / 2.0, cond=cond_dict(model, text, ic_low))  # k = 4: sigma / sqrt(k)
        outs.append(den + weight * up(den_low - pool(den)))
    x_out = torch.cat(outs)
    return x_out, conds_list


def combine(x_out, conds_list, b, scale):
    unc = x_out[-b:]
    den = unc.clone()
    for i, conds in enumerate(conds_list):
        for r, w in conds:
            den[i] += (x_out[r] - unc[i]) * (w * scale)
    return den


@pytest.mark.parametrize("parameterization", ["eps", "v"])
def test_kdiffusion_step_equals_formula_batch_and_AND(host, parameterization):
    model = host.tiny_sd.TinySDModel(parameterization=parameterization, dtype=torch.float64)
    prompts = ["a red cube AND a blue ball :0.7", "a green tree"]
    negatives = ["blurry", "ugly"]
    p, sampler, args = setup_call(host, model, "Euler", prompts, negatives, UG_ON)
    got = sampler.model_wrap_cfg(**args)
    x_out, conds_list = expected_kdiff(sampler, model, args)
    want = combine(x_out, conds_list, 2, 5.0)
    assert torch.allclose(got, want, atol=1e-9, rtol=1e-9)
    # and it is not the unguided result
    p0, sampler0, args0 = setup_call(host, model, "Euler", prompts, negatives, [False])
    plain = sampler0.model_wrap_cfg(**args0)
    assert (got - plain).abs().max() > 1e-3
    assert p.extra_generation_params["UG scale"] == "1"


def test_guidance_scale_is_the_weight(host):
    model = host.tiny_sd.TinySDModel(dtype=torch.float64)
    p, sampler, args = setup_call(host, model, "Euler", ["a"], ["b"], [True, 0.35, 1.0, "64", "box", True])
    got = sampler.model_wrap_cfg(**args)
    x_out, conds_list = expected_kdiff(sampler, model, args, weight=0.35)
    assert torch.allclose(got, combine(x_out, conds_list, 1, 5.0), atol=1e-9)


@pytest.mark.parametrize("variant", ["inpaint", "unclip"])
def test_image_cond_models(host, variant):
    model = host.tiny_sd.TinySDModel(variant=variant, dtype=torch.float64)
    p, sampler, args = setup_call(host, model, "Euler", ["a", "b"], ["n", "m"], UG_ON)
    if variant == "inpaint":
        assert args["image_cond"].shape[-1] == 16  # spatial: must be downsampled for the low-res call
    got = sampler.model_wrap_cfg(**args)
    x_out, conds_list = expected_kdiff(sampler, model, args)
    assert torch.allclose(got, combine(x_out, conds_list, 2, 5.0), atol=1e-9)


def test_sdxl_dict_conditioning(host):
    model = host.tiny_sd.TinySDModel(kind="sdxl", dtype=torch.float64)
    # SDXL base 1024 px: a 2x target needs 2048 px -> use an explicit 64 px base on a 16-latent target
    p, sampler, args = setup_call(host, model, "Euler", ["a", "b"], ["n", "m"], UG_ON)
    got = sampler.model_wrap_cfg(**args)
    x_out, conds_list = expected_kdiff(sampler, model, args)
    assert torch.allclose(got, combine(x_out, conds_list, 2, 5.0), atol=1e-9)


def test_edit_model_three_chunks(host):
    model = host.tiny_sd.TinySDModel(variant="edit", dtype=torch.float64)
    init = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    p, sampler, args = setup_call(
        host, model, "Euler", ["make it red"], [""], UG_ON, image_cfg_scale=1.5, init_latent=init
    )
    got = sampler.model_wrap_cfg(**args)
    x_out, _ = expected_kdiff(sampler, model, args, edit=True)
    c, img, unc = x_out.chunk(3)
    want = unc + 5.0 * (c - img) + 1.5 * (img - unc)
    assert torch.allclose(got, want, atol=1e-9)


def test_token_length_mismatch_separate_calls(host):
    model = host.tiny_sd.TinySDModel(dtype=torch.float64)
    long_prompt = " ".join(["word"] * 30)  # two 77-token chunks against a one-chunk negative prompt
    p, sampler, args = setup_call(host, model, "Euler", [long_prompt], ["short"], UG_ON)
    got = sampler.model_wrap_cfg(**args)
    x_out, conds_list = expected_kdiff(sampler, model, args)
    assert torch.allclose(got, combine(x_out, conds_list, 1, 5.0), atol=1e-9)


def test_pad_cond_uncond_option_pads_low_res_call_too(host):
    from modules import shared

    model = host.tiny_sd.TinySDModel(dtype=torch.float64)
    shared.opts.pad_cond_uncond = True
    try:
        long_prompt = " ".join(["word"] * 30)
        p, sampler, args = setup_call(host, model, "Euler", [long_prompt], ["short"], UG_ON)
        got = sampler.model_wrap_cfg(**args)
        # expected: uncond padded with the empty-prompt chunk, then the plain row-wise formula
        from modules import prompt_parser

        uc = prompt_parser.reconstruct_cond_batch(args["uncond"], 0)
        padded = torch.cat([uc, model.cond_stage_model_empty_prompt.repeat(1, 1, 1)], dim=1)
        args2 = dict(args, uncond=[padded[0]])
        x_out, conds_list = expected_kdiff(sampler, model, args2)
        assert torch.allclose(got, combine(x_out, conds_list, 1, 5.0), atol=1e-9)
    finally:
        shared.opts.pad_cond_uncond = False


def test_batch_cond_uncond_off_chunks(host):
    from modules import shared

    model = host.tiny_sd.TinySDModel(dtype=torch.float64)
    shared.opts.batch_cond_uncond = False
    try:
        p, sampler, args = setup_call(host, model, "Euler", ["a", "b"], ["n", "m"], UG_ON)
        got = sampler.model_wrap_cfg(**args)
    finally:
        shared.opts.batch_cond_uncond = True
    x_out, conds_list = expected_kdiff(sampler, model, args)
    assert torch.allclose(got, combine(x_out, conds_list, 2, 5.0), atol=1e-9)


def test_skipped_uncond_fake_rows(host):
    """Skip early CFG: uncond rows are not evaluated; the fake rows are the guided cond rows; scale 1."""
    from modules import shared

    model = host.tiny_sd.TinySDModel(dtype=torch.float64)
    shared.opts.skip_early_cond = 0.5
    try:
        p, sampler, args = setup_call(host, model, "Euler", ["a AND b", "c"], ["n", "m"], UG_ON)
        n_before = len(model.apply_model_calls)
        got = sampler.model_wrap_cfg(**args)
        calls = model.apply_model_calls[n_before:]
    finally:
        shared.opts.skip_early_cond = 0.0
    x_out, conds_list = expected_kdiff(sampler, model, args)
    n_cond = 3
    fake = torch.stack([x_out[c[0][0]] for c in conds_list])
    x_out = torch.cat([x_out[:n_cond], fake])
    assert torch.allclose(got, combine(x_out, conds_list, 2, 1.0), atol=1e-9)
    # the low-res call covered only the 3 cond rows
    assert [shape[0] for shape, _ in calls] == [3, 3]
    assert "Skip Early CFG" in p.extra_generation_params


def test_ngms_skips_uncond_on_odd_steps(host):
    model = host.tiny_sd.TinySDModel(dtype=torch.float64)
    p, sampler, args = setup_call(host, model, "Euler", ["a"], ["n"], UG_ON, s_min_uncond=10.0)
    sampler.model_wrap_cfg.step = 1  # odd step, sigma 3 < 10: the host drops uncond
    got = sampler.model_wrap_cfg(**args)
    x_out, conds_list = expected_kdiff(sampler, model, args)
    x_out = torch.cat([x_out[:1], x_out[:1]])
    assert torch.allclose(got, combine(x_out, conds_list, 1, 1.0), atol=1e-9)


def _log_sigmas(model):
    ac = model.alphas_cumprod.double().numpy()
    return 0.5 * np.log((1 - ac) / ac)


def test_ddim_eps_step_equals_formula(host):
    """Timesteps samplers: 'sigma' is t, outputs are eps; the low-res query is D(x)/sqrt(P) at tau with
    sigma(tau) = sigma(t)/sqrt(k) (interpolated in log sigma), and eps_guided = eps + w U(eps_low/sqrt(k) - D(eps))."""
    from modules import prompt_parser

    model = host.tiny_sd.TinySDModel(dtype=torch.float64)
    t = 801.0
    p, sampler, args = setup_call(host, model, "DDIM", ["a", "b"], ["n", "m"], UG_ON, level=t)
    got = sampler.model_wrap_cfg(**args)

    ls = _log_sigmas(model)
    k = 4.0
    sigma_t = math.exp(ls[int(t)])
    tau = float(np.interp(math.log(sigma_t / math.sqrt(k)), ls, np.arange(len(ls))))
    a2 = 1.0 / (1.0 + sigma_t**2)
    power = a2 + (1 - a2) / k
    inner = sampler.model_wrap_cfg.inner_model
    conds_list, tensor = prompt_parser.reconstruct_multicond_batch(args["cond"], 0)
    uncond = prompt_parser.reconstruct_cond_batch(args["uncond"], 0)
    x, ic = args["x"], args["image_cond"]
    outs = []
    for i, text in [
        (0, rows_of(tensor, 0)),
        (1, rows_of(tensor, 1)),
        (0, rows_of(uncond, 0)),
        (1, rows_of(uncond, 1)),
    ]:
        xr = x[i : i + 1]
        eps = inner(xr, torch.tensor([t], dtype=torch.float64), cond=cond_dict(model, text, ic[i : i + 1]))
        eps_low = inner(
            pool(xr) / math.sqrt(power),
            torch.tensor([tau], dtype=torch.float64),
            cond=cond_dict(model, text, ic[i : i + 1]),
        )
        outs.append(eps + up(eps_low / math.sqrt(k) - pool(eps)))
    want = combine(torch.cat(outs), conds_list, 2, 5.0)
    assert torch.allclose(got, want, atol=1e-8)


def test_schedule_uses_the_models_time_not_the_step(host):
    """eta 0.5: only calls with t(sigma)/999 >= 0.5 get a low-res call; second-order samplers (Heun) call the
    model twice per step and each call is judged by its own sigma; the low-res sigma is sigma/sqrt(k)."""
    model = host.tiny_sd.TinySDModel()
    p = host.txt2img(
        [True, 1.0, 0.5, "64", "box", True], prompt="a", negative_prompt="b", sampler_name="Heun", steps=6
    )
    host.run(p)
    calls = (
        model.apply_model_calls if host.shared.sd_model is model else host.shared.sd_model.apply_model_calls
    )
    full = [(i, t) for i, (shape, t) in enumerate(calls) if shape[-1] == 16]
    low = [(i, t) for i, (shape, t) in enumerate(calls) if shape[-1] == 8]
    assert len(full) == 11  # 6 steps, second order, no second call on the last step
    guided_full = [(i, t) for i, t in full if float(t[0]) / 999 >= 0.5]
    assert 0 < len(guided_full) < len(full)
    assert len(low) == len(guided_full)
    ls = _log_sigmas(host.shared.sd_model)
    for (i, t_full), (j, t_low) in zip(guided_full, low, strict=True):
        assert j == i + 1  # the low-res call follows the full-res call of the same evaluation
        sigma = math.exp(float(np.interp(float(t_full[0]), np.arange(len(ls)), ls)))
        want = float(np.interp(math.log(sigma / 2.0), ls, np.arange(len(ls))))
        assert abs(float(t_low[0]) - want) < 1e-3
