"""SDXL size conditioning of the low-res call, against an independent float64 formula written here."""

import math

import pytest
import torch

from lib_upsample_guidance.core.size_conditioning import (
    SDXL_BASE,
    SDXL_REFINER,
    low_res_size_vector,
    matches_size,
    size_embedding,
)


def oracle(value: float) -> list[float]:
    """generative-models timestep_embedding(dim=256): [cos(v 10000^(-i/128))]_i then [sin(...)]_i, in float64."""
    return [math.cos(value * 10000 ** (-i / 128)) for i in range(128)] + [
        math.sin(value * 10000 ** (-i / 128)) for i in range(128)
    ]


def host_vector(rows: int, pooled: torch.Tensor, values: list[float], dtype=torch.float32) -> torch.Tensor:
    """A host's vector built from the oracle: pooled text, then one 256-wide embedding per value."""
    emb = torch.tensor([x for v in values for x in oracle(v)], dtype=torch.float64)
    return torch.cat([pooled.double(), emb.expand(rows, -1)], dim=1).to(dtype)


@pytest.mark.parametrize("values", [(1024, 768), (2048, 1216), (0, 0), (6.0,)])
def test_embedding_matches_the_float64_formula(values):
    ours = size_embedding(values, dtype=torch.float64)
    ref = torch.tensor([x for v in values for x in oracle(v)], dtype=torch.float64)
    # float32 frequencies and products as on the hosts: argument error <= ~2e-4 at 2048 px
    assert ours.shape == (256 * len(values),)
    assert (ours - ref).abs().max() < 5e-4


def test_embedding_order_is_height_then_width_cos_then_sin():
    e = size_embedding((1024, 768))
    assert e[0] == pytest.approx(math.cos(1024)) and e[128] == pytest.approx(math.sin(1024), abs=1e-3)
    assert e[256] == pytest.approx(math.cos(768)) and e[384] == pytest.approx(math.sin(768), abs=1e-3)
    assert e[127] == pytest.approx(math.cos(1024 * 10000 ** (-127 / 128)), abs=1e-5)


def base_vector(full, crop=(0, 0), rows=2, dtype=torch.float32):
    pooled = torch.randn(rows, 1280, generator=torch.Generator().manual_seed(0))
    return host_vector(rows, pooled, [full[0], full[1], crop[0], crop[1], full[0], full[1]], dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_base_vector_becomes_the_low_size_generation_vector(dtype):
    full, low, crop = (2048, 1536), (1024, 768), (16, 8)
    vector = base_vector(full, crop, dtype=dtype)
    out = low_res_size_vector(vector, full, low)
    expected = base_vector(low, crop, dtype=dtype)
    assert out is not None and out.dtype == dtype and out.shape == vector.shape
    tol = 2e-3 if dtype == torch.float16 else 5e-4
    assert (out.float() - expected.float()).abs().max() < tol
    # pooled text and crop columns are bit-identical to the input; the input is untouched
    assert torch.equal(out[:, :1280], vector[:, :1280])
    assert torch.equal(out[:, 1792:2304], vector[:, 1792:2304])
    assert torch.equal(vector, base_vector(full, crop, dtype=dtype))
    # and it is no longer the full-size vector where it matters
    assert (out[:, 1280:1792].float() - vector[:, 1280:1792].float()).abs().max() > 0.5
    assert (out[:, 2304:].float() - vector[:, 2304:].float()).abs().max() > 0.5


def test_refiner_vector_replaces_original_size_keeps_crop_and_aesthetic():
    full, low = (2048, 2048), (1024, 1024)
    pooled = torch.randn(2, 1280)
    vector = host_vector(2, pooled, [full[0], full[1], 0, 0, 6.0])
    out = low_res_size_vector(vector, full, low)
    assert out is not None and out.shape == (2, 2560)
    assert (out - host_vector(2, pooled, [low[0], low[1], 0, 0, 6.0])).abs().max() < 5e-4
    assert torch.equal(out[:, 1792:], vector[:, 1792:])
    assert SDXL_REFINER.target is None and SDXL_BASE.target == 2304


def test_a_vector_that_does_not_embed_the_full_size_is_left_alone():
    full = (2048, 2048)
    user_set = base_vector((4096, 4096))  # e.g. a ComfyUI user asking for original size 4096
    assert not matches_size(user_set, full)
    assert low_res_size_vector(user_set, full, (1024, 1024)) is None
    swapped = base_vector((2048, 1536))
    assert low_res_size_vector(swapped, (1536, 2048), (768, 1024)) is None  # h and w are not interchangeable
    one_row_off = base_vector(full)
    one_row_off[1, 2304] += 0.01
    assert low_res_size_vector(one_row_off, full, (1024, 1024)) is None
    assert low_res_size_vector(torch.zeros(2, 768), full, (1024, 1024)) is None  # SD2 unCLIP-like width
    assert low_res_size_vector(torch.zeros(2816), full, (1024, 1024)) is None  # not [rows, width]


def test_one_pixel_off_is_not_a_match():
    assert matches_size(base_vector((2048, 2048)), (2048, 2048))
    assert not matches_size(base_vector((2048, 2048)), (2047, 2048))
    assert not matches_size(base_vector((2048, 2048)), (2048, 2056))
