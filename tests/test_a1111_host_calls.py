"""A1111 with SDXL-family models, LCM, SD 2.x v under DDIM, batch count: the low-res call is the call the
host would make at the low-res size.

The SDXL stand-in builds `vector` like the real conditioner (tests/hosts/a1111/sgm_conditioner.py: pooled 1280
| 256-wide size embeddings, from the SdConditioning batch's width/height). The expected low-res rows use the
vector the stand-in conditioner builds for a generation at the low size — never lib_upsample_guidance.
"""

import math

import pytest
import test_a1111_adapter as base
import torch

UG_ON = base.UG_ON  # 128 px target (16 latent), base 64 px: 2x box, every step guided


@pytest.fixture
def host():
    with base.helpers.a1111_host() as h:
        yield h


def sdxl_call(host, model, prompts, negatives, *, size_px=128, ug_args=UG_ON, **kwargs):
    """setup_call with the conds A1111 builds: SdConditioning batches carrying the generation size."""
    from modules import prompt_parser

    p, sampler, args = base.setup_call(
        host, model, "Euler", prompts, negatives, ug_args, size=size_px // 8, **kwargs
    )
    pos = prompt_parser.SdConditioning(prompts, width=size_px, height=size_px)
    neg = prompt_parser.SdConditioning(negatives, width=size_px, height=size_px, is_negative_prompt=True)
    args["cond"] = prompt_parser.get_multicond_learned_conditioning(model, pos, 10)
    args["uncond"] = prompt_parser.get_learned_conditioning(model, neg, 10)
    sampler.sampler_extra_args.update(cond=args["cond"], uncond=args["uncond"])
    return p, sampler, args


def low_vector(model, text, low_px, negative):
    """The vector the host's conditioner builds for `text` in a generation of low_px x low_px."""
    from modules import prompt_parser

    batch = prompt_parser.SdConditioning([text], width=low_px, height=low_px, is_negative_prompt=negative)
    return model.get_learned_conditioning(batch)["vector"][0]


def expected_sdxl(sampler, model, args, prompts, negatives, low_px=64, weight=1.0):
    """Row-wise guided x0 with the low-size vector on the low-res call, then the host's CFG combination."""
    from modules import prompt_parser

    inner = sampler.model_wrap_cfg.inner_model
    conds_list, tensor = prompt_parser.reconstruct_multicond_batch(args["cond"], 0)
    uncond = prompt_parser.reconstruct_cond_batch(args["uncond"], 0)
    flat = [t for pr in prompts for t in prompt_parser.get_multicond_prompt_list([pr])[1]]
    x, sigma, ic = args["x"], args["sigma"], args["image_cond"]
    b = x.shape[0]
    index = [i for i, conds in enumerate(conds_list) for _ in conds]
    rows = [
        (x[i], sigma[i], base.rows_of(tensor, r), low_vector(model, flat[r], low_px, False))
        for r, i in enumerate(index)
    ]
    rows += [
        (x[i], sigma[i], base.rows_of(uncond, i), low_vector(model, negatives[i], low_px, True))
        for i in range(b)
    ]
    outs = []
    for (xr, sr, text, vec_low), i in zip(rows, index + list(range(b)), strict=True):
        xr, sr, icr = xr[None], sr[None], ic[i][None]
        den = inner(xr, sr, cond=base.cond_dict(model, text, icr))
        low_text = {**text, "vector": vec_low[None].to(text["vector"].dtype)}
        den_low = inner(base.pool(xr), sr / 2.0, cond=base.cond_dict(model, low_text, icr))
        outs.append(den + weight * base.up(den_low - base.pool(den)))
    return torch.cat(outs), conds_list


@pytest.mark.parametrize("kind", ["base", "refiner"])
def test_sdxl_low_res_call_gets_the_low_size_vector(host, kind):
    model = host.tiny_sd.TinySDModel(kind="sdxl", dtype=torch.float64, sgm_vector=kind)
    prompts, negatives = ["a red cube AND a ball :0.5", "a tree"], ["blurry", ""]
    p, sampler, args = sdxl_call(host, model, prompts, negatives)
    assert args["uncond"][0]["vector"].shape[-1] == (2816 if kind == "base" else 2560)
    got = sampler.model_wrap_cfg(**args)
    x_out, conds_list = expected_sdxl(sampler, model, args, prompts, negatives)
    want = base.combine(x_out, conds_list, 2, 5.0)
    assert torch.allclose(got, want, atol=1e-9, rtol=1e-9)
    # the old behaviour (full-size vector on the low-res call) is measurably different
    x_full, _ = base.expected_kdiff(sampler, model, args)
    assert (base.combine(x_full, conds_list, 2, 5.0) - want).abs().max() > 1e-4


def test_sdxl_vector_columns_of_the_stand_in_are_the_sizes(host):
    """The stand-in conditioner really embeds the size: the 128 px and 64 px vectors differ only in the
    size columns (pooled and crop columns equal)."""
    model = host.tiny_sd.TinySDModel(kind="sdxl", sgm_vector="base")
    v128, v64 = low_vector(model, "a", 128, False), low_vector(model, "a", 64, False)
    assert torch.equal(v128[:1280], v64[:1280])
    assert torch.equal(v128[1280 + 512 : 1280 + 1024], v64[1280 + 512 : 1280 + 1024])  # crop
    assert not torch.equal(v128[1280:1792], v64[1280:1792])
    assert not torch.equal(v128[1280 + 1024 :], v64[1280 + 1024 :])


def test_sdxl_user_set_size_keeps_the_vector_and_warns_once(host, capsys):
    """A vector that does not embed the generation size (here: built for 96 px in a 128 px generation) is
    kept on the low-res call, with one warning, and guidance goes on."""
    from modules import prompt_parser

    model = host.tiny_sd.TinySDModel(kind="sdxl", dtype=torch.float64, sgm_vector="base")
    p, sampler, args = sdxl_call(host, model, ["a"], ["n"])
    args["cond"] = prompt_parser.get_multicond_learned_conditioning(
        model, prompt_parser.SdConditioning(["a"], width=96, height=96), 10
    )
    args["uncond"] = prompt_parser.get_learned_conditioning(
        model, prompt_parser.SdConditioning(["n"], width=96, height=96, is_negative_prompt=True), 10
    )
    sampler.sampler_extra_args.update(cond=args["cond"], uncond=args["uncond"])
    got = sampler.model_wrap_cfg(**args)
    sampler.model_wrap_cfg(**args)
    x_full, conds_list = base.expected_kdiff(sampler, model, args)
    assert torch.allclose(got, base.combine(x_full, conds_list, 1, 5.0), atol=1e-9)
    out = capsys.readouterr().out
    assert out.count("does not embed the generation size") == 1
    assert "turned off" not in out


def test_sdxl_whole_generation_with_hires_pass(host):
    """A whole txt2img generation, with hires fix (first pass at the base size is not guided; the hires
    pass is, with the hires size in its conds): finishes guided, no warning."""
    model = host.tiny_sd.TinySDModel(kind="sdxl", sgm_vector="base")
    host.set_model(model)
    p = host.txt2img(
        UG_ON[:3] + ["64"] + UG_ON[4:], prompt="a", width=64, height=64, enable_hr=True, hr_scale=2.0
    )
    seen = []
    net = model.model.diffusion_model
    hook = net.register_forward_hook(
        lambda m, a, o: seen.append((a[0].shape[-1], a[3][:, 1280:1536].clone()))
    )
    try:
        processed = host.run(p)
    finally:
        hook.remove()
    assert "UG scale" in processed.infotexts[0]
    import sgm_conditioner

    e = {s: sgm_conditioner.timestep_embedding(torch.tensor([float(s)]))[0] for s in (64, 128)}
    for width, orig_h in seen:  # every call's original-height column embeds its own latent size * 8
        assert torch.allclose(orig_h.float(), e[width * 8].expand_as(orig_h), atol=1e-6), width
    assert {w for w, _ in seen} == {8, 16}


def test_lcm_sampler_is_guided(host):
    """CFGDenoiserLCM (sigma in, x0 out) is guided like a k-diffusion sampler."""
    from modules import sd_samplers

    if "LCM" not in {s.name for s in sd_samplers.all_samplers}:
        pytest.skip("stand-in has no LCM sampler")
    model = host.tiny_sd.TinySDModel(dtype=torch.float64)
    p, sampler, args = base.setup_call(host, model, "LCM", ["a"], ["n"], UG_ON)
    got = sampler.model_wrap_cfg(**args)
    x_out, conds_list = base.expected_kdiff(sampler, model, args)
    assert torch.allclose(got, base.combine(x_out, conds_list, 1, 5.0), atol=1e-9)
    assert p.extra_generation_params["UG scale"] == "1"


def test_v_model_under_ddim_low_res_eps_at_fractional_tau(host):
    """SD 2.x v under DDIM: the host converts v -> eps with alphas_cumprod[int(t)]; the low-res query is at a
    fractional tau, whose eps is sqrt(abar(tau)) v + sqrt(1 - abar(tau)) x with abar(tau) = 1/(1 + sigma_low^2)."""
    from modules import prompt_parser

    model = host.tiny_sd.TinySDModel(parameterization="v", dtype=torch.float64)
    t = 801.0
    p, sampler, args = base.setup_call(host, model, "DDIM", ["a"], ["n"], UG_ON, level=t)
    got = sampler.model_wrap_cfg(**args)

    ls = base._log_sigmas(model)
    k = 4.0
    sigma_t = math.exp(ls[int(t)])
    sigma_low = sigma_t / math.sqrt(k)
    tau = float(base.np.interp(math.log(sigma_low), ls, base.np.arange(len(ls))))
    assert tau != int(tau)
    a_t, a_tau = 1.0 / (1.0 + sigma_t**2), 1.0 / (1.0 + sigma_low**2)
    power = a_t + (1 - a_t) / k
    conds_list, tensor = prompt_parser.reconstruct_multicond_batch(args["cond"], 0)
    uncond = prompt_parser.reconstruct_cond_batch(args["uncond"], 0)
    x, ic = args["x"], args["image_cond"]
    outs = []
    for text in (base.rows_of(tensor, 0), base.rows_of(uncond, 0)):
        cond = base.cond_dict(model, text, ic)
        v = model.apply_model(x, torch.tensor([t], dtype=torch.float64), dict(cond))
        eps = math.sqrt(a_t) * v + math.sqrt(1 - a_t) * x
        x_low = base.pool(x) / math.sqrt(power)
        v_low = model.apply_model(x_low, torch.tensor([tau], dtype=torch.float64), dict(cond))
        eps_low = math.sqrt(a_tau) * v_low + math.sqrt(1 - a_tau) * x_low
        outs.append(eps + base.up(eps_low / math.sqrt(k) - base.pool(eps)))
    want = base.combine(torch.cat(outs), conds_list, 1, 5.0)
    # float32 host tables: the full-size rows' sqrt(abar[t]) differ from float64 by ~3e-8
    assert torch.allclose(got, want, atol=1e-6)


def test_batch_count_failure_message_and_infotext_per_image(host, capsys, monkeypatch):
    """Batch count 3: a failure in the second batch turns guidance off for it and the third; the message says
    so, and only the first image (guided) carries the UG keys."""
    model = host.tiny_sd.TinySDModel()
    host.set_model(model)
    module = host.script_module
    adapter = module.a1111
    real = adapter.guided_outputs

    def failing_in_batch_2(dparams, x_out, inner, state):
        if dparams.denoiser.p.iteration == 1:
            raise RuntimeError("simulated")
        return real(dparams, x_out, inner, state)

    monkeypatch.setattr(adapter, "guided_outputs", failing_in_batch_2)
    p = host.txt2img(UG_ON, prompt="a", n_iter=3, batch_size=1, steps=3)
    processed = host.run(p)
    out = capsys.readouterr().out
    assert out.count("guidance turned off") == 1
    assert (
        "this image is finished without guidance, and the 1 later image (batch 3 of 3) is not guided" in out
    )
    has_keys = ["UG scale" in text for text in processed.infotexts]
    assert has_keys == [True, False, False]
