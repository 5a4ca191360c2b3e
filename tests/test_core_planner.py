"""Planner table, schedule edges, and the user-facing errors."""

import math

import pytest
import torch

from lib_upsample_guidance import MODEL_FAMILIES, guidance_weight, plan_low_res


def plan_px(width, height, family, resampler="auto"):
    fam = MODEL_FAMILIES[family]
    f = fam.latent_factor
    return plan_low_res(
        (height // f, width // f),
        fam.base_size_px,
        latent_factor=f,
        granularity=fam.granularity,
        resampler=resampler,
    )


# (width px, height px, family) -> (low width px, low height px, kind), or None for "no guidance"
TABLE = [
    (512, 512, "sd1", None),
    (640, 384, "sd1", None),  # a smaller area than the base, although wider
    (768, 384, "sd1", (704, 384, "spectral")),  # 1.06x: barely larger
    (768, 768, "sd1", (512, 512, "spectral")),  # 1.5x
    (1024, 1024, "sd1", (512, 512, "box")),  # 2x
    (1536, 1536, "sd1", (512, 512, "box")),  # 3x
    (1536, 1024, "sd1", (768, 512, "box")),  # 2x, area 1.5x base: inside the integer tolerance
    (768, 512, "sd1", (640, 448, "spectral")),  # 1.22x: multiples of 64 px for the SD UNet
    (1000, 1000, "sd1", (512, 512, "spectral")),  # odd size: 125 latent px
    (520, 520, "sd1", (512, 512, "spectral")),  # barely above the base
    (1024, 1024, "sdxl", None),
    (1216, 832, "sdxl", None),  # an SDXL bucket: area below 1024^2
    (1536, 1536, "sdxl", (1024, 1024, "spectral")),
    (2048, 2048, "sdxl", (1024, 1024, "box")),
    (1920, 1080, "sdxl", (1376, 768, "spectral")),  # odd: 135 latent rows, multiples of 32 px
    (1536, 1024, "sd2", (768, 512, "box")),  # SD2's 768 base: s* = 1.63, 2x is inside the tolerance
    (1152, 1152, "sd2", (768, 768, "spectral")),
    (2048, 2048, "flux", (1024, 1024, "box")),
    (1440, 1440, "sd3", (1024, 1024, "spectral")),
]


@pytest.mark.parametrize("width,height,family,expected", TABLE)
def test_planner_table(width, height, family, expected):
    plan = plan_px(width, height, family)
    if expected is None:
        assert plan is None
        return
    fam = MODEL_FAMILIES[family]
    lw, lh, kind = expected
    assert plan.low_size == (lh // fam.latent_factor, lw // fam.latent_factor)
    assert plan.kind == kind
    assert plan.low_size[0] % fam.granularity == 0 and plan.low_size[1] % fam.granularity == 0
    assert plan.k == pytest.approx((width * height) / (lw * lh))
    # aspect ratio kept within a granularity step
    assert abs(math.log((plan.low_size[1] / plan.low_size[0]) / (width / height))) < 0.1
    r = plan.resampler()
    assert r.high_size == plan.target_size and r.low_size == plan.low_size and r.kind == kind


def test_describe_readout():
    assert plan_px(1536, 1024, "sd1").describe() == "1536x1024 -> guided from 768x512 (2x, box)"
    assert plan_px(768, 768, "sd1").describe() == "768x768 -> guided from 512x512 (1.5x, spectral)"
    assert plan_px(768, 512, "sd1").describe() == "768x512 -> guided from 640x448 (1.2x/1.14x, spectral)"


def test_resampler_preference():
    assert plan_px(1024, 1024, "sd1", "spectral").kind == "spectral"
    forced_box = plan_px(768, 768, "sd1", "box")  # tolerance waived: the closest integer factor that divides
    assert forced_box.kind == "box" and forced_box.low_size == (48, 48)
    assert plan_px(1000, 1000, "sd1", "box").kind == "spectral"  # no integer factor leaves multiples of 8


def test_pixel_model_sizes():
    assert plan_low_res((64, 64), 32, latent_factor=1).low_size == (32, 32)
    assert plan_low_res((48, 48), 32, latent_factor=1).low_size == (32, 32)
    assert plan_low_res((48, 48), 32, latent_factor=1).kind == "spectral"
    assert plan_low_res((32, 48), (16, 16), latent_factor=1).low_size == (16, 24)
    assert plan_low_res((32, 32), 32, latent_factor=1) is None
    assert plan_low_res((20, 20), (16, 16), latent_factor=1).low_size == (16, 16)


@pytest.mark.parametrize(
    "args,kwargs,match",
    [
        (((0, 64), 512), {}, "target size"),
        (((64, -8), 512), {}, "target size"),
        (((64, 64), 0), {}, "base size"),
        (((64, 64), "big"), {}, "base size"),
        (((64, 64), 512), {"latent_factor": 0}, "latent factor"),
        (((64, 64), 512), {"granularity": 2.5}, "granularity"),
        (((64, 64), 512), {"resampler": "bicubic"}, "resampler"),
        (((64, 64, 3), 512), {}, "target size"),
    ],
)
def test_planner_errors(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        plan_low_res(*args, **kwargs)


def test_schedule_edges():
    t = torch.tensor([1.0, 0.41, 0.4, 0.3999, 0.0], dtype=torch.float64)
    assert guidance_weight(t, 1.2, 0.6).tolist() == [1.2, 1.2, 1.2, 0.0, 0.0]
    assert guidance_weight(t, 1.0, 1.0).tolist() == [1.0] * 5  # always on
    assert guidance_weight(t, 1.0, 0.0).tolist() == [0.0] * 5  # never, even at t = 1
    assert guidance_weight(t, 0.0, 0.6).tolist() == [0.0] * 5
    assert guidance_weight(0.5, 1.0, 0.5).item() == 1.0


@pytest.mark.parametrize(
    "scale,eta,match",
    [
        (-0.1, 0.6, "guidance scale"),
        (float("nan"), 0.6, "guidance scale"),
        (float("inf"), 0.6, "guidance scale"),
        ("one", 0.6, "guidance scale"),
        (1.0, 1.5, "eta"),
        (1.0, -0.01, "eta"),
        (1.0, float("nan"), "eta"),
        (1.0, None, "eta"),
    ],
)
def test_schedule_errors(scale, eta, match):
    with pytest.raises(ValueError, match=match):
        guidance_weight(torch.tensor([0.5]), scale, eta)
