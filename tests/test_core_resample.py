"""The D/U pairs: exact identities, against independent computations (avg_pool2d, nearest interpolation,
an FFT-based DCT), on images and on a frame axis."""

import pytest
import torch
import torch.nn.functional as F
from _reference import fft_dct_ortho, ref_down

from lib_upsample_guidance.core.resample import dct_matrix, make_resampler

torch.manual_seed(0)
F64 = torch.float64


def test_dct_matrix_is_orthonormal_and_matches_fft():
    for n in (1, 2, 7, 16):
        c = dct_matrix(n)
        assert torch.allclose(c @ c.T, torch.eye(n, dtype=F64), atol=1e-12)
        x = torch.randn(3, n, dtype=F64)
        assert torch.allclose(x @ c.T, fft_dct_ortho(x), atol=1e-12)


@pytest.mark.parametrize("high,low", [((8, 12), (4, 6)), ((9, 6), (3, 2)), ((8, 8), (8, 4))])
def test_box_pair_matches_pooling_and_nearest(high, low):
    r = make_resampler(high, low)
    assert r.kind == "box"
    x = torch.randn(2, 3, *high, dtype=F64)
    sh, sw = high[0] // low[0], high[1] // low[1]
    assert torch.allclose(r.down(x), F.avg_pool2d(x, (sh, sw)), atol=1e-14)
    y = torch.randn(2, 3, *low, dtype=F64)
    assert torch.equal(r.up(y), F.interpolate(y, size=high, mode="nearest"))
    assert torch.allclose(r.down(r.up(y)), y, atol=1e-14)
    assert r.k == pytest.approx((high[0] * high[1]) / (low[0] * low[1]))


@pytest.mark.parametrize("high,low", [((12, 12), (8, 8)), ((15, 10), (8, 7)), ((96, 64), (64, 40))])
def test_spectral_pair_matches_fft_reference_and_identities(high, low):
    r = make_resampler(high, low, "spectral")
    x = torch.randn(2, 4, *high, dtype=F64)
    assert torch.allclose(r.down(x), ref_down(x, low, "spectral"), atol=1e-12)
    y = torch.randn(2, 4, *low, dtype=F64)
    assert torch.allclose(r.down(r.up(y)), y, atol=1e-12)  # D(U(y)) = y
    const = torch.full((1, 1, *high), 3.25, dtype=F64)
    assert torch.allclose(r.down(const), torch.full((1, 1, *low), 3.25, dtype=F64), atol=1e-12)
    # U = k D^T (adjoint pair): <U y, x> = k <y, D x>
    assert torch.allclose((r.up(y) * x).sum(), r.k * (y * r.down(x)).sum(), rtol=1e-10)


def _down_matrix(r, size):
    n = size[0] * size[1]
    eye = torch.eye(n, dtype=F64).reshape(n, *size)
    return r.down(eye).reshape(n, -1).T  # (low pixels) x (high pixels)


@pytest.mark.parametrize("high,low,kind", [((8, 8), (4, 4), "box"), ((12, 9), (8, 6), "spectral")])
def test_white_noise_covariance_is_exactly_identity_over_k(high, low, kind):
    r = make_resampler(high, low, kind)
    d = _down_matrix(r, high)
    cov = d @ d.T  # covariance of D(eps) for white eps of variance 1
    assert torch.allclose(cov, torch.eye(cov.shape[0], dtype=F64) / r.k, atol=1e-12)


@pytest.mark.parametrize("high,low,kind", [((96, 96), (64, 64), "spectral"), ((64, 96), (32, 48), "box")])
def test_white_noise_variance_empirically(high, low, kind):
    r = make_resampler(high, low, kind)
    g = torch.Generator().manual_seed(1)
    eps = torch.randn(64, *high, generator=g, dtype=torch.float32)
    var = r.down(eps).double().var().item()
    assert var * r.k == pytest.approx(1.0, rel=0.02)
    # uniform: every low-res pixel has the same variance (spectral pair has no edge effects)
    per_pixel = r.down(eps).double().var(dim=0) * r.k
    assert per_pixel.mean().item() == pytest.approx(1.0, rel=0.02)


def test_frame_axis_resampling_video_latents():
    r = make_resampler((8, 6, 4), (4, 3, 2))
    x = torch.randn(2, 4, 8, 6, 4, dtype=F64)
    ref = F.avg_pool3d(x, 2)
    assert torch.allclose(r.down(x), ref, atol=1e-14)
    assert r.k == 8
    rs = make_resampler((6, 8, 8), (4, 8, 8), "spectral")  # temporal-only spectral factor
    y = torch.randn(1, 4, 4, 8, 8, dtype=F64)
    assert torch.allclose(rs.down(rs.up(y)), y, atol=1e-12)
    assert rs.k == pytest.approx(1.5)


def test_half_precision_keeps_dtype():
    r = make_resampler((12, 12), (8, 8))
    x = torch.randn(1, 4, 12, 12).half()
    assert r.down(x).dtype == torch.float16
    assert r.up(r.down(x)).dtype == torch.float16


@pytest.mark.parametrize(
    "high,low,kind,match",
    [
        ((8, 8), (4, 4), "nearest", "resampler must be one of"),
        ((8, 8), (3, 3), "box", "integer factors"),
        ((8, 8), (16, 8), "auto", "larger than the target"),
        ((8, 0), (4, 4), "auto", "positive"),
        ((8, 8), (4,), "auto", "same number of axes"),
    ],
)
def test_bad_sizes_raise_clear_errors(high, low, kind, match):
    with pytest.raises(ValueError, match=match):
        make_resampler(high, low, kind)


def test_wrong_input_shape_is_a_value_error():
    r = make_resampler((8, 8), (4, 4))
    with pytest.raises(ValueError, match="last 2 axes"):
        r.down(torch.zeros(1, 4, 6, 8))
    with pytest.raises(ValueError, match="last 2 axes"):
        r.up(torch.zeros(1, 4, 8, 8))
