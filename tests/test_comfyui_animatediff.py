"""The ComfyUI node beside AnimateDiff-Evolved (ADE) and ComfyUI's own context windows: refused.

ADE keeps the video length and context schedule of the sampler's own call as state (see
adapters/comfyui_video.py for the reading of its source); the node refuses such a run with ONE warning and the
video is ADE's alone, bit for bit. The stand-in (tests/hosts/comfyui_animatediff) runs ADE's sampling
function with a motion module that groups the rows by the length it was told.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from test_comfyui_node import BASE, _cond, _patch, _patcher, cf  # noqa: F401  (cf: the ComfyUI stand-in fixture)

from lib_upsample_guidance.adapters.comfyui_video import video_refusal

ADE = Path(__file__).resolve().parent / "hosts" / "comfyui_animatediff"
FRAMES = 4


@pytest.fixture()
def ade(cf):  # noqa: F811
    sys.path.insert(0, str(ADE))
    try:
        from animatediff import sampling

        yield sampling
    finally:
        sys.path.remove(str(ADE))
        sys.modules.pop("animatediff.sampling", None)
        sys.modules.pop("animatediff", None)


def _video(cf, ade, patcher, motion, size=16, steps=3, cfg=5.0):  # noqa: F811
    """An Euler run of ADE's sampling (outer_sample + evolved_sampling_function) on a FRAMES-frame latent."""
    torch.manual_seed(21)
    x = torch.randn(FRAMES, 4, size, size) * 10
    sigmas = torch.linspace(10.0, 0.0, steps + 1)
    cond = [_cond(cf, torch.randn(FRAMES, 7, 8))]
    uncond = [_cond(cf, torch.randn(FRAMES, 7, 8))]
    options = ade.outer_sample(patcher.model_options, x, motion)
    options["transformer_options"]["sample_sigmas"] = sigmas
    for i in range(steps):
        s = sigmas[i : i + 1].expand(FRAMES)
        den = ade.evolved_sampling_function(patcher.model, x, s, uncond, cond, cfg, options)
        x = x + (x - den) / s[:, None, None, None] * (sigmas[i + 1] - sigmas[i])
    return x


def _motion_patcher(cf, ade):  # noqa: F811
    patcher = _patcher(cf)
    motion = ade.MotionModule()
    ade.inject(patcher.model, motion)
    return patcher, motion


def test_animatediff_evolved_is_refused_with_one_warning_and_ade_output(cf, ade, capsys):  # noqa: F811
    patcher, motion = _motion_patcher(cf, ade)
    alone = _video(cf, ade, patcher, motion)
    assert set(motion.calls) == {(FRAMES, 4, 16, 16)}
    assert capsys.readouterr().out == ""
    motion.calls.clear()
    guided = _video(cf, ade, _patch(cf, patcher), motion)
    assert torch.equal(guided, alone)  # ADE's own video, bit for bit
    assert all(shape[-1] == 16 for shape in motion.calls)  # no low-res call reached the motion module
    out = capsys.readouterr().out
    assert out.count("[Upsample guidance]") == 1 and "AnimateDiff-Evolved" in out


def test_without_the_refusal_the_low_res_call_would_run_inside_ade(cf, ade, capsys, monkeypatch):  # noqa: F811
    """The refusal is what keeps ADE's video: without it the node would guide, its low-res call running the
    motion module with ADE's stored state (the check that the tests above test something)."""
    from lib_upsample_guidance.adapters import comfyui

    patcher, motion = _motion_patcher(cf, ade)
    alone = _video(cf, ade, patcher, motion)
    monkeypatch.setattr(comfyui, "video_refusal", lambda args: None)
    motion.calls.clear()
    (unrefused,) = comfyui.patch_model(patcher, 0.8, 1.0, BASE, "auto")  # this module, not the node's copy
    assert not torch.equal(_video(cf, ade, unrefused, motion), alone)
    assert (FRAMES, 4, 8, 8) in motion.calls and capsys.readouterr().out == ""


def test_animatediff_evolved_at_or_below_base_size_is_silent(cf, ade, capsys):  # noqa: F811
    patcher, motion = _motion_patcher(cf, ade)
    alone = _video(cf, ade, patcher, motion, size=8)
    assert torch.equal(_video(cf, ade, _patch(cf, patcher), motion, size=8), alone)
    assert capsys.readouterr().out == ""  # nothing to guide: nothing to refuse


def test_comfyui_context_windows_are_refused_with_one_warning(cf, capsys):  # noqa: F811
    class IndexListContextHandler:  # comfy/context_windows.py:107, put in model_options by the node
        context_length = 2

    torch.manual_seed(22)
    patcher = _patcher(cf)
    patcher.model_options["context_handler"] = IndexListContextHandler()
    x, sigma = torch.randn(FRAMES, 4, 16, 16), torch.full((FRAMES,), 2.0)
    cond, uncond = [_cond(cf, torch.randn(FRAMES, 7, 8))], [_cond(cf, torch.randn(FRAMES, 7, 8))]
    options = patcher.model_options
    plain = cf.samplers.sampling_function(patcher.model, x, sigma, uncond, cond, 5.0, options)
    patched = _patch(cf, patcher)
    for _ in range(2):
        got = cf.samplers.sampling_function(patched.model, x, sigma, uncond, cond, 5.0, patched.model_options)
        assert torch.equal(got, plain)
    out = capsys.readouterr().out
    assert out.count("[Upsample guidance]") == 1 and "context windows" in out


def test_video_refusal_reads_the_keys_the_hosts_set():
    assert video_refusal({"model_options": {}}) is None
    assert video_refusal({"model_options": {"transformer_options": {"sample_sigmas": 1}}}) is None
    for key in ("ADGS", "ad_params"):
        assert "AnimateDiff-Evolved" in video_refusal({"model_options": {"transformer_options": {key: 0}}})
    assert "context windows" in video_refusal({"model_options": {"context_handler": object()}})
