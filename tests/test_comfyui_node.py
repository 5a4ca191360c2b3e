"""ComfyUI node tests on the stand-ins in tests/hosts/comfyui (ComfyUI v0.8.0's contracts).

The node is driven the way ComfyUI drives it: the repository root __init__.py is loaded as ComfyUI's
load_custom_node loads a folder (a package named by its path), the node's patch() returns a patched clone, and
the stand-in sampling_function (ComfyUI's CFG-1 optimisation, cfg_function and post-CFG args) runs it. The
expected guided prediction is computed independently: direct apply_model calls at the low-res query
(D(x) at sigma / s for EPS and V_PREDICTION, D(x) / (1 - t + t/s) at t / (s(1 - t) + t) for CONST), D / U by
hand (average pooling / nearest repeat for s = 2), ComfyUI's CFG (no AND-strength factor).
"""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from _forge_support import TinyNet, box_down, box_up

from lib_upsample_guidance.adapters import comfyui
from lib_upsample_guidance.core.size_conditioning import size_embedding

ROOT = Path(__file__).resolve().parent.parent
COMFY = Path(__file__).resolve().parent / "hosts" / "comfyui"
BASE = 64  # px: a 16x16 latent (128 px) is guided at s = 2 (low-res latent 8x8)


def _purge() -> None:
    for name in list(sys.modules):
        if name.split(".")[0] == "comfy":
            del sys.modules[name]


@pytest.fixture()
def cf(one_torch_thread):
    """The ComfyUI stand-in modules, and the node class loaded from the repository root like ComfyUI does."""
    _purge()
    sys.path.insert(0, str(COMFY))
    importlib.invalidate_caches()
    try:
        from comfy import conds, model_base, model_patcher, model_sampling, samplers, supported_models

        yield SimpleNamespace(
            conds=conds,
            mb=model_base,
            mp=model_patcher,
            ms=model_sampling,
            samplers=samplers,
            sm=supported_models,
            node=load_node_package().NODE_CLASS_MAPPINGS["UpsampleGuidance"](),
        )
    finally:
        sys.path.remove(str(COMFY))
        _purge()


def load_node_package(name: str = "/custom_nodes/upsample-guidance"):
    """ComfyUI's nodes.load_custom_node for a folder: spec_from_file_location(<path>, <folder>/__init__.py)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _patcher(cf, kind="eps", config=None, model_cls=None, **net):
    config = config or (cf.sm.Flux() if kind == "flow" else cf.sm.SD15())
    model = (model_cls or cf.mb.BaseModel)(TinyNet(**net), cf.ms.model_sampling(kind), config)
    return cf.mp.ModelPatcher(model)


def _cond(cf, ctx, **extra):
    return {"model_conds": {"c_crossattn": cf.conds.CONDCrossAttn(ctx)}, "uuid": id(ctx), **extra}


def _run(cf, patcher, x, sigma, cond, uncond, cfg, sample_sigmas=None):
    options = patcher.model_options
    if sample_sigmas is not None:  # CFGGuider.inner_sample: a model_options copy per sampling run
        options = {
            **options,
            "transformer_options": {**options["transformer_options"], "sample_sigmas": sample_sigmas},
        }
    return cf.samplers.sampling_function(patcher.model, x, sigma, uncond, cond, cfg, options)


def _low_query(x, sigma, flow, s=2):
    xd = box_down(x, s)
    if flow:
        t = sigma.reshape(-1, 1, 1, 1)
        return xd / (1 - t + t / s), sigma / (s * (1 - sigma) + sigma)
    return xd, sigma / s


def expected(model, x, sigma, den, conds, uncond, cfg, weight, *, flow=False, s=2, y=None):
    """den + w * U(den_low - D(den)); conds: (context, strength); uncond: context or None (zeros)."""
    x_lo, level = _low_query(x, sigma, flow, s)
    extra = {} if y is None else {"y": y}
    total = sum(w for _, w in conds)
    cond_lo = sum(w * model.apply_model(x_lo, level, c_crossattn=c, **extra) for c, w in conds) / total
    uncond_lo = (
        torch.zeros_like(cond_lo)
        if uncond is None
        else model.apply_model(x_lo, level, c_crossattn=uncond, **extra)
    )
    den_lo = uncond_lo + (cond_lo - uncond_lo) * cfg
    return den + weight * box_up(den_lo - box_down(den, s), s)


def _patch(cf, patcher, scale=0.8, eta=1.0, base=BASE, resampler="auto"):
    (out,) = cf.node.patch(patcher, scale, eta, base, resampler)
    return out


@pytest.mark.parametrize("kind", ["eps", "v", "flow"])
def test_guided_equals_independent_computation(cf, kind):
    torch.manual_seed(3)
    flow = kind == "flow"
    patcher = _patcher(cf, kind)
    before = {k: v for k, v in patcher.model_options.items()}
    patched = _patch(cf, patcher)
    assert patched is not patcher and patcher.model_options == before  # the input model is never mutated
    assert "sampler_post_cfg_function" not in patcher.model_options
    x = torch.randn(2, 4, 16, 16)
    sigma = torch.full((2,), 0.7 if flow else 3.0)
    c, u = torch.randn(2, 7, 8), torch.randn(2, 7, 8)
    cond, uncond = [_cond(cf, c)], [_cond(cf, u)]
    den = _run(cf, patcher, x, sigma, cond, uncond, 6.0)
    got = _run(cf, patched, x, sigma, cond, uncond, 6.0)
    want = expected(patcher.model, x, sigma, den, [(c, 1.0)], u, 6.0, 0.8, flow=flow)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert (got - den).abs().max() > 1e-3


def test_scale_zero_is_the_input_model_and_bit_identical(cf):
    torch.manual_seed(4)
    patcher = _patcher(cf)
    assert _patch(cf, patcher, scale=0.0) is patcher
    x, sigma = torch.randn(1, 4, 16, 16), torch.full((1,), 2.0)
    cond, uncond = [_cond(cf, torch.randn(1, 7, 8))], [_cond(cf, torch.randn(1, 7, 8))]
    a = _run(cf, patcher, x, sigma, cond, uncond, 5.0)
    b = _run(cf, _patch(cf, patcher, scale=0.0), x, sigma, cond, uncond, 5.0)
    assert torch.equal(a, b)


def test_size_at_or_below_base_is_bit_identical_and_free(cf):
    torch.manual_seed(5)
    patcher = _patcher(cf)
    x, sigma = torch.randn(1, 4, 16, 16), torch.full((1,), 2.0)
    cond, uncond = [_cond(cf, torch.randn(1, 7, 8))], [_cond(cf, torch.randn(1, 7, 8))]
    plain = _run(cf, patcher, x, sigma, cond, uncond, 5.0)
    patcher.model.calls.clear()
    for base in (128, 256, 0):  # 0 = SD1's 512 px
        got = _run(cf, _patch(cf, patcher, base=base), x, sigma, cond, uncond, 5.0)
        assert torch.equal(got, plain)
    assert set(patcher.model.calls) == {(1, 4, 16, 16)}


def test_cfg_one_skips_uncond_and_strengths_weight_without_a_cfg_factor(cf):
    """CFG 1: uncond None (ComfyUI's CFG-1 optimisation), zeros at low res too. Two combined conditions with
    strengths are a weighted average inside calc_cond_batch, with no AND-strength CFG factor."""
    torch.manual_seed(6)
    patcher = _patcher(cf)
    patched = _patch(cf, patcher)
    x, sigma = torch.randn(1, 4, 16, 16), torch.full((1,), 2.5)
    c1, c2, u = torch.randn(1, 7, 8), torch.randn(1, 5, 8), torch.randn(1, 7, 8)
    cond = [_cond(cf, c1, strength=0.7), _cond(cf, c2, strength=0.6)]
    for cfg, uncond_ctx in ((1.0, None), (4.0, u)):
        den = _run(cf, patcher, x, sigma, cond, [_cond(cf, u)], cfg)
        got = _run(cf, patched, x, sigma, cond, [_cond(cf, u)], cfg)
        want = expected(patcher.model, x, sigma, den, [(c1, 0.7), (c2, 0.6)], uncond_ctx, cfg, 0.8)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_custom_cfg_function_is_used_for_the_low_res_rows(cf):
    torch.manual_seed(7)
    patcher = _patcher(cf)

    def rescale(args):  # a sampler_cfg_function in ComfyUI's args form (returns x - denoised)
        return args["uncond"] + (args["cond"] - args["uncond"]) * args["cond_scale"] * 0.5

    # only functions known to be stateless are called on the low-res rows (webui.conditioning)
    rescale.__qualname__ = "RescaleCFG.patch.<locals>.rescale_cfg"

    patcher.set_model_sampler_cfg_function(rescale)
    patched = _patch(cf, patcher)
    x, sigma = torch.randn(1, 4, 16, 16), torch.full((1,), 2.0)
    c, u = torch.randn(1, 7, 8), torch.randn(1, 7, 8)
    den = _run(cf, patcher, x, sigma, [_cond(cf, c)], [_cond(cf, u)], 6.0)
    got = _run(cf, patched, x, sigma, [_cond(cf, c)], [_cond(cf, u)], 6.0)
    torch.testing.assert_close(got, expected(patcher.model, x, sigma, den, [(c, 1.0)], u, 3.0, 0.8))


def test_area_condition_maps_to_the_low_res_latent(cf):
    """Conditioning (Set Area) at (h, w, y, x) = (8, 16, 8, 0) of a 16x16 latent -> (4, 8, 4, 0) at 8x8: the
    low-res call equals ComfyUI's calc_cond_batch on the hand-mapped condition."""
    torch.manual_seed(8)
    patcher = _patcher(cf)
    patched = _patch(cf, patcher)
    x, sigma = torch.randn(1, 4, 16, 16), torch.full((1,), 2.0)
    c, a, u = torch.randn(1, 7, 8), torch.randn(1, 7, 8), torch.randn(1, 7, 8)
    cond = [_cond(cf, c), _cond(cf, a, area=(8, 16, 8, 0), strength=0.9)]
    uncond = [_cond(cf, u)]
    den = _run(cf, patcher, x, sigma, cond, uncond, 5.0)
    got = _run(cf, patched, x, sigma, cond, uncond, 5.0)
    x_lo, level = _low_query(x, sigma, False)
    low_cond = [_cond(cf, c), _cond(cf, a, area=(4, 8, 4, 0), strength=0.9)]
    c_lo, u_lo = cf.samplers.calc_cond_batch(patcher.model, [low_cond, uncond], x_lo, level, {})
    den_lo = u_lo + (c_lo - u_lo) * 5.0
    torch.testing.assert_close(got, den + 0.8 * box_up(den_lo - box_down(den, 2), 2), rtol=1e-5, atol=1e-5)


def test_area_mapping_rounds_outwards():
    from lib_upsample_guidance.comfy_family.postcfg import lower_area

    assert lower_area((8, 16, 8, 0), (16, 16), (8, 8)) == (4, 8, 4, 0)
    assert lower_area((5, 3, 3, 7), (16, 16), (8, 8)) == (3, 2, 1, 3)  # rows 3..8 -> 1..4, cols 7..10 -> 3..5
    assert lower_area((1, 1, 15, 15), (16, 16), (8, 8)) == (1, 1, 7, 7)
    assert lower_area(("percentage", 0.5, 0.5, 0.0, 0.0), (16, 16), (8, 8))[0] == "percentage"


def test_time_window_is_chosen_at_the_full_size_sigma(cf):
    """A condition active only below sigma 2 (ConditioningSetTimestepRange) is off at sigma 3; the low-res
    call (at sigma 1.5) must not switch it on."""
    torch.manual_seed(9)
    patcher = _patcher(cf)
    patched = _patch(cf, patcher)
    x, sigma = torch.randn(1, 4, 16, 16), torch.full((1,), 3.0)
    c, late, u = torch.randn(1, 7, 8), torch.randn(1, 7, 8), torch.randn(1, 7, 8)
    cond = [_cond(cf, c), _cond(cf, late, timestep_start=2.0, timestep_end=0.0)]
    den = _run(cf, patcher, x, sigma, cond, [_cond(cf, u)], 5.0)
    got = _run(cf, patched, x, sigma, cond, [_cond(cf, u)], 5.0)
    torch.testing.assert_close(got, expected(patcher.model, x, sigma, den, [(c, 1.0)], u, 5.0, 0.8))


def test_sdxl_size_vector_gets_the_low_res_size(cf):
    """SDXL's y embeds the generation's 128x128 px (CLIPTextEncode: width/height from the latent): the low-res
    call sees 64x64 px; a user-set size (CLIPTextEncodeSDXL) is kept, as ComfyUI keeps it at any latent size."""
    torch.manual_seed(10)
    patcher = _patcher(cf, config=cf.sm.SDXL(), model_cls=cf.mb.SDXL, ctx_dim=2816)
    patched = _patch(cf, patcher, base=64)
    x, sigma = torch.randn(1, 4, 16, 16), torch.full((1,), 2.0)

    def y_for(size_px):
        sizes = size_embedding([size_px, size_px, 0, 0, size_px, size_px])
        return torch.cat([torch.randn(1, 1280), sizes.reshape(1, -1)], 1)

    for size_px, low_px in ((128, 64), (1024, 1024)):
        y = y_for(size_px)
        ctx = torch.randn(1, 7, 2816)
        entry = _cond(cf, ctx)
        entry["model_conds"]["y"] = cf.conds.CONDRegular(y)
        uentry = _cond(cf, ctx * 0)
        uentry["model_conds"]["y"] = cf.conds.CONDRegular(y)
        patcher.model.y_seen.clear()
        den = _run(cf, patcher, x, sigma, [entry], [uentry], 5.0)
        patcher.model.y_seen.clear()
        got = _run(cf, patched, x, sigma, [entry], [uentry], 5.0)
        low_y = y.clone()
        low_y[:, 1280:] = size_embedding([low_px, low_px, 0, 0, low_px, low_px]).reshape(1, -1)
        assert torch.equal(patcher.model.y_seen[0], y) and len(patcher.model.y_seen) == 4
        torch.testing.assert_close(patcher.model.y_seen[2], low_y, rtol=0, atol=1e-6)
        torch.testing.assert_close(patcher.model.y_seen[3], low_y, rtol=0, atol=1e-6)
        want = expected(patcher.model, x, sigma, den, [(ctx, 1.0)], ctx * 0, 5.0, 0.8, y=low_y)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_failure_finishes_unguided_with_one_warning_per_run(cf, capsys, monkeypatch):
    torch.manual_seed(11)
    patcher = _patcher(cf)
    patched = _patch(cf, patcher)
    x = torch.randn(1, 4, 16, 16) * 10
    sigmas = torch.tensor([10.0, 5.0, 2.0, 1.0, 0.0])
    cond, uncond = [_cond(cf, torch.randn(1, 7, 8))], [_cond(cf, torch.randn(1, 7, 8))]
    real = cf.samplers.calc_cond_batch

    def low_res_oom(model, conds, x_in, timestep, model_options):
        if x_in.shape[-1] == 8:
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(model, conds, x_in, timestep, model_options)

    def euler(p, run_sigmas):
        z = x.clone()
        for i in range(len(run_sigmas) - 1):
            s = run_sigmas[i : i + 1]
            den = _run(cf, p, z, s, cond, uncond, 5.0, sample_sigmas=run_sigmas)
            z = z + (z - den) / s * (run_sigmas[i + 1] - run_sigmas[i])
        return z

    plain = euler(patcher, sigmas)
    guided_ok = euler(patched, sigmas.clone())
    monkeypatch.setattr(cf.samplers, "calc_cond_batch", low_res_oom)
    failed = euler(patched, sigmas.clone())
    assert torch.equal(failed, plain) and not torch.equal(guided_ok, plain)
    out = capsys.readouterr().out
    assert out.count("[Upsample guidance]") == 1 and "out of memory" in out
    monkeypatch.setattr(cf.samplers, "calc_cond_batch", real)
    torch.testing.assert_close(euler(patched, sigmas.clone()), guided_ok)  # the next run is guided again


def test_repatching_replaces_and_never_stacks(cf):
    patcher = _patcher(cf)
    twice = _patch(cf, _patch(cf, patcher, scale=0.5), scale=0.8)
    assert len(twice.model_options["sampler_post_cfg_function"]) == 1


def test_unsupported_models_are_left_unpatched_with_one_warning(cf, capsys):
    for patcher in (
        _patcher(cf, config=cf.sm.WAN21_T2V()),
        _patcher(cf, config=cf.sm.SD_X4Upscaler()),
        _patcher(cf, kind="cosmos"),
    ):
        assert _patch(cf, patcher) is patcher
        out = capsys.readouterr().out
        assert out.count("[Upsample guidance]") == 1 and "not patched" in out


def test_model_families(cf):
    def family(kind, config):
        return comfyui.detect_model_family(_patcher(cf, kind, config=config).model)

    assert family("eps", cf.sm.SD15()).name == "sd1"
    assert (family("eps", cf.sm.SD20()).name, family("v", cf.sm.SD20()).name) == ("sd2_eps", "sd2")
    assert family("eps", cf.sm.SSD1B()).name == family("eps", cf.sm.SDXLRefiner()).name == "sdxl"
    assert family("flow", cf.sm.SD3()).name == "sd3"
    assert family("flow", cf.sm.FluxSchnell()).base_size_px == 1024


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ((-1.0, 0.6, 0, "auto"), "guidance_scale must be in [0, 10]"),
        ((float("nan"), 0.6, 0, "auto"), "guidance_scale must be a number"),
        ((1.0, 1.5, 0, "auto"), "eta must be in [0, 1]"),
        ((1.0, 0.6, 32, "auto"), "base_resolution must be 0 (from the model) or whole pixels in [64, 8192]"),
        ((1.0, 0.6, 0, "bicubic"), "resampler must be one of auto, box, spectral"),
    ],
)
def test_bad_inputs_get_clear_messages(cf, inputs, message):
    assert message in comfyui.validate_inputs(*inputs)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        cf.node.patch(_patcher(cf), *inputs)
    assert comfyui.validate_inputs(1.0, 0.6, 0, "auto") is True
    # an input fed by a link arrives as None at validation (ComfyUI's get_input_data): checked at execution
    only_bad = tuple(v if v != good else None for v, good in zip(inputs, (1.0, 0.6, 0, "auto"), strict=True))
    assert message in comfyui.validate_inputs(*only_bad)
    assert comfyui.validate_inputs() is True


def test_node_validates_only_what_comfyui_cannot(cf):
    """VALIDATE_INPUTS names base_resolution only (0 or 64..8192); ComfyUI's own min / max / combo checks cover
    the other inputs (and it would repeat a message once per argument named)."""
    node_cls = type(cf.node)
    assert "base_resolution must be 0 (from the model)" in node_cls.VALIDATE_INPUTS(32)
    assert node_cls.VALIDATE_INPUTS(0) is True and node_cls.VALIDATE_INPUTS(64) is True
    assert node_cls.VALIDATE_INPUTS(None) is True


def test_node_metadata_and_tooltips(cf):
    node_cls = type(cf.node)
    spec = node_cls.INPUT_TYPES()["required"]
    assert list(spec) == ["model", "guidance_scale", "eta", "base_resolution", "resampler"]
    assert all(options.get("tooltip") for _, options in spec.values())
    assert node_cls.RETURN_TYPES == ("MODEL",) and node_cls.FUNCTION == "patch"
    assert node_cls.CATEGORY == "advanced/model"
    package = load_node_package()
    assert package.NODE_DISPLAY_NAME_MAPPINGS == {"UpsampleGuidance": "Upsample Guidance"}


def test_root_init_imports_nothing_heavy():
    """Importing the repository root as ComfyUI does pulls in neither torch nor the package; A1111/Forge never
    import it (they load scripts/*.py, preload.py and install.py)."""
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('/x/upsample-guidance', {str(ROOT / '__init__.py')!r})\n"
        "m = importlib.util.module_from_spec(spec); sys.modules[spec.name] = m; spec.loader.exec_module(m)\n"
        "heavy = [n for n in sys.modules if n.split('.')[0] in ('torch', 'numpy', 'gradio', 'lib_upsample_guidance')"
        " or 'lib_upsample_guidance' in n]\n"
        "print(sorted(m.NODE_CLASS_MAPPINGS), heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['UpsampleGuidance'] []"


def test_registry_metadata_and_example_workflows():
    """pyproject: [project] + [tool.comfy] (ComfyUI registry) next to the ruff / pytest sections; the example
    workflows name the node with the inputs it declares."""
    import json

    tomllib = pytest.importorskip("tomllib")

    import lib_upsample_guidance

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert config["project"]["name"] == "upsample-guidance"
    assert config["project"]["version"] == lib_upsample_guidance.__version__
    assert config["tool"]["comfy"]["DisplayName"] == "Upsample Guidance"
    assert {"ruff", "pytest"} <= set(config["tool"])
    api = json.loads((ROOT / "workflows" / "upsample_guidance_txt2img_api.json").read_text())
    node = next(n for n in api.values() if n["class_type"] == "UpsampleGuidance")
    assert set(node["inputs"]) == set(comfyui.input_types()["required"])
    ui = json.loads((ROOT / "workflows" / "upsample_guidance_txt2img.json").read_text())
    assert {"nodes", "links"} <= set(ui)
    assert any(n["type"] == "UpsampleGuidance" for n in ui["nodes"])


def test_pre_cfg_patch_is_refused_with_one_warning(cf, capsys):
    """A pre-CFG function (APG, TCFG, ...) cannot be mirrored safely: the image is made unguided, one warning."""
    torch.manual_seed(12)
    patcher = _patcher(cf)
    patcher.model_options["sampler_pre_cfg_function"] = [lambda args: args["conds_out"]]
    patched = _patch(cf, patcher)
    x, sigma = torch.randn(1, 4, 16, 16), torch.full((1,), 2.0)
    cond, uncond = [_cond(cf, torch.randn(1, 7, 8))], [_cond(cf, torch.randn(1, 7, 8))]
    plain = _run(cf, patcher, x, sigma, cond, uncond, 5.0)
    for _ in range(2):
        assert torch.equal(_run(cf, patched, x, sigma, cond, uncond, 5.0), plain)
    out = capsys.readouterr().out
    assert out.count("[Upsample guidance]") == 1 and "pre-CFG" in out


def test_self_attention_guidance_after_ours_is_refused_before_it_is_fine(cf, capsys):
    """SAG reads the uncond attention recorded during the sampler's call; a low-res call before SAG's post-CFG
    function would overwrite it. SAG after us: refused (unguided, one warning); SAG before us: guided."""

    def sag(args):
        return args["denoised"]

    sag.__qualname__ = (
        "SelfAttentionGuidance.execute.<locals>.post_cfg_function"  # as in comfy_extras/nodes_sag.py
    )
    torch.manual_seed(13)
    patcher = _patcher(cf)
    x, sigma = torch.randn(1, 4, 16, 16), torch.full((1,), 2.0)
    cond, uncond = [_cond(cf, torch.randn(1, 7, 8))], [_cond(cf, torch.randn(1, 7, 8))]
    plain = _run(cf, patcher, x, sigma, cond, uncond, 5.0)
    after = _patch(cf, patcher)
    after.set_model_sampler_post_cfg_function(sag)
    assert torch.equal(_run(cf, after, x, sigma, cond, uncond, 5.0), plain)
    out = capsys.readouterr().out
    assert out.count("[Upsample guidance]") == 1 and "Self-Attention Guidance" in out
    before = patcher.clone()
    before.set_model_sampler_post_cfg_function(sag)
    assert not torch.equal(_run(cf, _patch(cf, before), x, sigma, cond, uncond, 5.0), plain)
    assert capsys.readouterr().out == ""
