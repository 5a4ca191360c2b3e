"""Video upsample guidance (core.video): plans with a temporal and a spatial factor, k = m_t * m_h * m_w,
frame folding in AnimateDiff's "(b f)" order, and the guided video denoiser against closed-form Gaussian
oracles and independent reference operators (tests/_reference.py). Each check fails if sqrt(k), an axis or
the frame folding were wrong (the mutant tests at the end show it)."""

import math

import pytest
import torch
from _reference import F64, ref_down_video, ref_up_video, sd_alphas_cumprod

from lib_upsample_guidance import UpsampleGuidedVideoDenoiser, plan_video
from lib_upsample_guidance.core import video as video_mod
from lib_upsample_guidance.core.conventions import DiscreteVP, KarrasSigma
from lib_upsample_guidance.core.step import prepare_low_res_query
from lib_upsample_guidance.core.video import fold_frames, unfold_frames

V_Y, V_Z = 0.8, 0.3
# (target (F, H, W), low (f, h, w), per-axis kinds, k)
CASES = [
    ((16, 8, 8), (8, 4, 4), ("box", "box", "box"), 8.0),
    ((16, 8, 8), (8, 8, 8), ("box", "box", "box"), 2.0),
    ((8, 8, 8), (8, 4, 4), ("box", "box", "box"), 4.0),
    ((12, 8, 8), (8, 4, 4), ("spectral", "box", "box"), 6.0),
    ((6, 12, 12), (4, 8, 8), ("spectral", "spectral", "spectral"), 1.5 * 1.5 * 1.5),
]
IDS = ["2x-frames-2x-size", "2x-frames", "2x-size", "1.5x-frames-spectral+2x-box", "all-spectral-1.5x"]


def plan_for(high, low, kinds):
    """The plan the planner makes for this case (base size and temporal factor chosen to hit `low`)."""
    plan = plan_video(
        high[0], high[1:], low[1:], temporal_factor=high[0] / low[0], latent_factor=1, resampler="auto"
    )
    assert plan is not None and plan.low_size == low
    assert tuple(k for k in plan.resampler().axis_kinds) == tuple(
        "identity" if h == lo else k for h, lo, k in zip(high, low, kinds, strict=True)
    )
    return plan


# --- the plan ---------------------------------------------------------------------------------------------


def test_plan_k_is_temporal_times_spatial_squared():
    plan = plan_video(32, (64, 64), 256, temporal_factor="auto", base_frames=16, latent_factor=8)
    assert plan.low_size == (16, 32, 32) and plan.kinds == ("box", "box")
    assert plan.factor == (2.0, 2.0, 2.0) and plan.k == 8.0 and plan.resampler().k == 8.0
    assert (
        plan.describe() == "32 frames 512x512 -> guided from 16 frames 256x256 (2x frames, box; 2x size, box)"
    )
    # frames only: 32 frames at the base size; size only: 16 frames at 2x
    assert plan_video(32, (32, 32), 256, temporal_factor="auto", base_frames=16).k == 2.0
    assert plan_video(16, (64, 64), 256, temporal_factor="auto", base_frames=16).k == 4.0
    # nothing to reduce
    assert plan_video(16, (32, 32), 256, temporal_factor="auto", base_frames=16) is None
    assert plan_video(16, (32, 32), 256, temporal_factor=1) is None


def test_plan_frames_box_for_whole_factors_spectral_otherwise():
    assert plan_video(24, (32, 32), 256, temporal_factor=2).kinds == ("box", "identity")
    p = plan_video(24, (32, 32), 256, temporal_factor="auto", base_frames=16)
    assert p.low_size[0] == 16 and p.kinds == ("spectral", "identity") and p.k == 1.5
    p = plan_video(24, (48, 48), 256, temporal_factor=1.5)  # 1.5x frames, 1.5x size: spectral both
    assert p.low_size == (16, 32, 32) and p.kinds == ("spectral", "spectral") and p.kind == "spectral"
    p = plan_video(24, (64, 64), 256, temporal_factor=1.5)
    assert p.kinds == ("spectral", "box") and p.kind == "mixed" and p.k == pytest.approx(6.0)
    assert plan_video(32, (32, 32), 256, temporal_factor=2, resampler="spectral").kinds == (
        "spectral",
        "identity",
    )
    with pytest.raises(ValueError, match="whole temporal factor"):
        plan_video(24, (32, 32), 256, temporal_factor=1.5, resampler="box")


@pytest.mark.parametrize("bad", [0.5, 0, -1, "x", None, True, float("nan")])
def test_plan_rejects_bad_temporal_factor(bad):
    with pytest.raises(ValueError, match="temporal factor"):
        plan_video(16, (32, 32), 256, temporal_factor=bad)
    with pytest.raises(ValueError, match="temporal factor"):
        UpsampleGuidedVideoDenoiser(lambda x, s: x, base_size=8, temporal_factor=bad)


def test_auto_needs_the_context_length():
    with pytest.raises(ValueError, match="base_frames"):
        plan_video(32, (32, 32), 256, temporal_factor="auto")


# --- the operators ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("high,low,kinds,k", CASES, ids=IDS)
def test_resampler_matches_the_reference_and_inverts(high, low, kinds, k):
    res = plan_for(high, low, kinds).resampler()
    assert res.k == pytest.approx(k)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, *high, generator=g, dtype=F64)
    y = torch.randn(2, 3, *low, generator=g, dtype=F64)
    assert torch.allclose(res.down(x), ref_down_video(x, low, kinds), atol=1e-12)
    assert torch.allclose(res.up(y), ref_up_video(y, high, kinds), atol=1e-12)
    assert torch.allclose(res.down(res.up(y)), y, atol=1e-12)


@pytest.mark.parametrize("high,low,kinds,k", CASES, ids=IDS)
def test_white_noise_becomes_white_noise_of_variance_1_over_k(high, low, kinds, k):
    """D D^T = I / k exactly (the covariance of D(eps) for white eps), D of a constant is the constant."""
    res = plan_for(high, low, kinds).resampler()
    n = math.prod(high)
    basis = torch.eye(n, dtype=F64).reshape(n, *high)
    d = res.down(basis).reshape(n, -1).T  # (low pixels, high pixels)
    assert torch.allclose(d @ d.T, torch.eye(d.shape[0], dtype=F64) / k, atol=1e-12)
    assert torch.allclose(
        res.down(torch.full((1, *high), 0.7, dtype=F64)), torch.full((1, *low), 0.7, dtype=F64)
    )
    # and empirically, in float32 as a model sees it
    eps = torch.randn(4000, *high, generator=torch.Generator().manual_seed(1))
    assert res.down(eps).var().item() == pytest.approx(1 / k, rel=0.03)


def test_box_along_frames_averages_consecutive_frames_of_one_video():
    """A clip whose value is the frame index: 2x along frames gives the mean of frames (2j, 2j+1)."""
    res = plan_video(8, (4, 4), 4, temporal_factor=2, latent_factor=1).resampler()
    clip = torch.arange(8, dtype=F64)[None, None, :, None, None].expand(1, 2, 8, 4, 4)
    assert torch.equal(res.down(clip)[0, 0, :, 0, 0], torch.tensor([0.5, 2.5, 4.5, 6.5], dtype=F64))
    assert torch.equal(
        res.up(res.down(clip))[0, 1, :, 2, 3],
        torch.tensor([0.5, 0.5, 2.5, 2.5, 4.5, 4.5, 6.5, 6.5], dtype=F64),
    )


def test_fold_order_is_animatediffs():
    """AnimateDiff folds frames video-major: row b * F + f is frame f of video b ("(b f) c h w")."""
    B, F, C = 3, 4, 2
    x = torch.arange(B * F, dtype=F64)[:, None, None, None].expand(B * F, C, 2, 2).clone()
    v = unfold_frames(x, F)
    assert v.shape == (B, C, F, 2, 2)
    for b in range(B):
        for f in range(F):
            assert torch.all(v[b, :, f] == b * F + f)
    assert torch.equal(fold_frames(v), x)
    with pytest.raises(ValueError, match="whole videos"):
        unfold_frames(x, 5)


# --- the guided denoiser against a closed-form Gaussian ---------------------------------------------------


def col(v, ndim=5):
    return torch.as_tensor(v, dtype=F64).reshape(-1, *([1] * (ndim - 1)))


class GaussianVideo:
    """x0 = U(y) + P_h(z): y ~ N(0, v_y I) at the low size, z ~ N(0, v_z I), P_h = I - U D (high band),
    with the reference operators. Band variances: k v_y (low band), v_z (high band); the data seen at the low
    size, D(x0) = y, has the exact denoiser v_y / (v_y + s^2) x."""

    def __init__(self, high, low, kinds, k):
        self.high, self.low, self.kinds, self.k = high, low, kinds, k

    def bands(self, x):
        lo = ref_up_video(ref_down_video(x, self.low, self.kinds), self.high, self.kinds)
        return lo, x - lo

    def exact(self, x, sigma):
        lo, hi = self.bands(x)
        s2 = col(sigma) ** 2
        return self.k * V_Y / (self.k * V_Y + s2) * lo + V_Z / (V_Z + s2) * hi

    def naive(self, x, sigma):
        """A wrong full-size model: every sample with the low data's variance."""
        return V_Y / (V_Y + col(sigma) ** 2) * x

    def noisy(self, sigma, batch=2, seed=0):
        g = torch.Generator().manual_seed(seed)
        y = torch.randn(batch, 3, *self.low, generator=g, dtype=F64) * math.sqrt(V_Y)
        z = torch.randn(batch, 3, *self.high, generator=g, dtype=F64) * math.sqrt(V_Z)
        x0 = ref_up_video(y, self.high, self.kinds) + self.bands(z)[1]
        return x0 + col(sigma) * torch.randn(batch, 3, *self.high, generator=g, dtype=F64)


def axis_model(g: GaussianVideo, full, calls=None):
    """Frames-axis denoiser: `full` at the target size, the exact low-size denoiser at the low size."""

    def den(x, sigma, **extra):
        if calls is not None:
            calls.append((tuple(x.shape), sigma.clone()))
        if tuple(x.shape[-3:]) == g.high:
            return full(x, sigma)
        assert tuple(x.shape[-3:]) == g.low
        return V_Y / (V_Y + col(sigma) ** 2) * x

    return den


def folded_model(g: GaussianVideo, full, calls=None):
    """The same model taking AnimateDiff's folded batch [(B F), C, H, W] and told F by `num_frames`;
    unfolds with its own reshape (independent of core.video)."""
    inner = axis_model(g, full, calls)

    def den(x, sigma, *, num_frames):
        B = x.shape[0] // num_frames
        v = x.reshape(B, num_frames, *x.shape[1:]).permute(0, 2, 1, 3, 4)
        s = sigma.reshape(B, num_frames)
        assert torch.all(s == s[:, :1])
        out = inner(v, s[:, 0])
        return out.permute(0, 2, 1, 3, 4).reshape(x.shape)

    return den


def to_folded(v):
    return v.permute(0, 2, 1, 3, 4).reshape(-1, v.shape[1], *v.shape[3:])


def wrappers(g, full, w, calls=None):
    common = dict(base_size=g.low[1:], temporal_factor=g.high[0] / g.low[0], guidance_scale=w, eta=1.0)
    axis = UpsampleGuidedVideoDenoiser(axis_model(g, full, calls), **common)
    folded = UpsampleGuidedVideoDenoiser(
        folded_model(g, full), layout="folded", frames=g.high[0], frames_kwarg="num_frames", **common
    )
    return axis, folded


@pytest.mark.parametrize("high,low,kinds,k", CASES, ids=IDS)
@pytest.mark.parametrize("w", [1.0, 0.5])
def test_exact_denoiser_is_a_fixed_point_both_layouts(high, low, kinds, k, w):
    g = GaussianVideo(high, low, kinds, k)
    axis, folded = wrappers(g, g.exact, w)
    for sigma in (14.0, 2.0, 0.3):
        x = g.noisy(sigma)
        s = torch.full((2,), sigma, dtype=F64)
        want = g.exact(x, s)
        assert torch.allclose(axis(x, s), want, atol=1e-10)
        s_rows = s.repeat_interleave(high[0])
        assert torch.allclose(folded(to_folded(x), s_rows), to_folded(want), atol=1e-10)


@pytest.mark.parametrize("high,low,kinds,k", CASES, ids=IDS)
def test_w1_replaces_the_low_band_exactly_and_keeps_the_high_band(high, low, kinds, k):
    g = GaussianVideo(high, low, kinds, k)
    calls = []
    axis, folded = wrappers(g, g.naive, 1.0, calls)
    x = g.noisy(3.0, seed=1)
    s = torch.full((2,), 3.0, dtype=F64)
    out = axis(x, s)
    exact_lo, _ = g.bands(g.exact(x, s))
    naive_lo, naive_hi = g.bands(g.naive(x, s))
    out_lo, out_hi = g.bands(out)
    assert torch.allclose(out_lo, exact_lo, atol=1e-10)
    assert torch.allclose(out_hi, naive_hi, atol=1e-10)
    assert not torch.allclose(naive_lo, exact_lo, atol=1e-2)  # there is something to fix
    # the low-res query: D(x) at sigma / sqrt(m_t m_h m_w)
    assert calls[1][0] == (2, 3, *low)
    assert torch.allclose(calls[1][1], s / math.sqrt(k), rtol=1e-12)
    assert torch.allclose(folded(to_folded(x), s.repeat_interleave(high[0])), to_folded(out), atol=1e-10)


def test_mutants_are_caught(monkeypatch):
    """The oracle fails for sigma / sqrt(spatial k) (frames forgotten in k), for frames grouped across the
    clip instead of consecutively (an axis mix-up that keeps D U = I and white noise white), and for frames
    folded in the wrong order."""
    g = GaussianVideo((16, 8, 8), (8, 4, 4), ("box", "box", "box"), 8.0)
    x = g.noisy(2.0, seed=3)
    s = torch.full((2,), 2.0, dtype=F64)
    want = g.exact(x, s)
    s_rows = s.repeat_interleave(16)
    axis, folded = wrappers(g, g.exact, 1.0)
    assert torch.allclose(axis(x, s), want, atol=1e-10)
    assert torch.allclose(folded(to_folded(x), s_rows), to_folded(want), atol=1e-10)

    class SpatialK(KarrasSigma):
        def low_res_query(self, x, level, resampler):
            return resampler.down(x), torch.as_tensor(level) / math.sqrt(resampler.k / 2)

    good = axis.convention
    axis.convention = SpatialK()
    assert not torch.allclose(axis(x, s), want, atol=1e-4)
    axis.convention = good

    perm = torch.arange(16).reshape(2, 8).T.flatten()  # frames (0, 8), (1, 9), ... paired instead of (0, 1)
    inverse = torch.argsort(perm)

    class Strided:
        def __init__(self, inner):
            self.inner, self.k, self.low_size = inner, inner.k, inner.low_size

        def down(self, v):
            return self.inner.down(v[:, :, perm])

        def up(self, y):
            return self.inner.up(y)[:, :, inverse]

    original = video_mod.VideoPlan.resampler
    monkeypatch.setattr(video_mod.VideoPlan, "resampler", lambda self: Strided(original(self)))
    assert not torch.allclose(axis(x, s), want, atol=1e-4)
    monkeypatch.undo()

    def unfold_fb(t, frames):  # "(f b)": row f * B + b, a consistent but wrong pair of fold/unfold
        return t.reshape(frames, t.shape[0] // frames, *t.shape[1:]).permute(1, 2, 0, 3, 4)

    def fold_fb(v):
        return v.permute(2, 0, 1, 3, 4).reshape(-1, *v.shape[1:2], *v.shape[3:])

    monkeypatch.setattr(video_mod, "unfold_frames", unfold_fb)
    monkeypatch.setattr(video_mod, "fold_frames", fold_fb)
    assert not torch.allclose(folded(to_folded(x), s_rows), to_folded(want), atol=1e-4)


# --- conventions, extras, errors -------------------------------------------------------------------------


def test_discrete_vp_video_query_uses_k_of_frames_and_space():
    ac = sd_alphas_cumprod()
    plan = plan_video(16, (8, 8), 4, temporal_factor=2, latent_factor=1)  # k = 2 * 4
    conv = DiscreteVP(ac)
    x = torch.randn(1, 4, 16, 8, 8, dtype=F64, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([600.0], dtype=F64)
    q = prepare_low_res_query(x, t, plan=plan, convention=conv, guidance_scale=1.0, eta=1.0)
    a2 = float(ac[600])
    power = a2 + (1 - a2) / 8
    assert torch.allclose(q.x, ref_down_video(x, (8, 4, 4), ("box",) * 3) / math.sqrt(power), atol=1e-12)
    sigma_low = math.sqrt((1 - a2) / a2) / math.sqrt(8)
    log_sig = 0.5 * torch.log((1 - ac) / ac)
    i = int(torch.searchsorted(log_sig, torch.tensor(math.log(sigma_low), dtype=F64))) - 1
    tau = i + (math.log(sigma_low) - log_sig[i]) / (log_sig[i + 1] - log_sig[i])
    assert float(q.level) == pytest.approx(float(tau), abs=1e-9)


def test_folded_extras_per_frame_rows_and_concat_images():
    """Per-frame rows with the frame size get D on (F, H, W); other per-frame rows (prompt-travel embeddings)
    the frame-axis part of D; the rest passes unchanged."""
    seen = {}

    def den(x, sigma, *, num_frames, cond, image, scale):
        seen.setdefault("calls", []).append((num_frames, cond, image, scale))
        return torch.zeros_like(x)

    wrapper = UpsampleGuidedVideoDenoiser(
        den, base_size=4, temporal_factor=2, layout="folded", frames=4, frames_kwarg="num_frames", eta=1.0
    )
    B, F = 2, 4
    cond = torch.arange(B * F, dtype=torch.float32)[:, None, None].expand(B * F, 3, 5).clone()
    image = torch.arange(B * F, dtype=torch.float32)[:, None, None, None].expand(B * F, 1, 8, 8).clone()
    wrapper(torch.randn(B * F, 3, 8, 8), torch.tensor(1.0), cond=cond, image=image, scale=torch.ones(7))
    (n0, c0, i0, s0), (n1, c1, i1, s1) = seen["calls"]
    assert (n0, n1) == (4, 2)
    assert c0 is cond and i0 is image
    assert torch.equal(c1[:, 0, 0], torch.tensor([0.5, 2.5, 4.5, 6.5]))  # mean of frame pairs, per video
    assert i1.shape == (4, 1, 4, 4) and torch.equal(i1[:, 0, 0, 0], torch.tensor([0.5, 2.5, 4.5, 6.5]))
    assert torch.equal(s1, torch.ones(7))


def test_frames_axis_extras_with_the_clip_shape_are_downsampled():
    got = []

    def den(x, sigma, image=None):
        got.append(image.shape)
        return torch.zeros_like(x)

    wrapper = UpsampleGuidedVideoDenoiser(den, base_size=4, temporal_factor=2, eta=1.0)
    wrapper(torch.randn(1, 3, 8, 8, 8), torch.tensor([1.0]), image=torch.randn(1, 1, 8, 8, 8))
    assert got == [(1, 1, 8, 8, 8), (1, 1, 4, 4, 4)]


def test_shape_errors_and_mixed_levels_are_refused():
    w = UpsampleGuidedVideoDenoiser(lambda x, s, **e: x, base_size=4, temporal_factor=2, eta=1.0)
    with pytest.raises(ValueError, match="frames, height, width"):
        w(torch.randn(2, 3, 8, 8), torch.tensor(1.0))
    f = UpsampleGuidedVideoDenoiser(lambda x, s: x, base_size=4, layout="folded", frames=4, temporal_factor=2)
    with pytest.raises(ValueError, match="whole videos"):
        f(torch.randn(6, 3, 8, 8), torch.tensor(1.0))
    with pytest.raises(ValueError, match="different noise levels"):
        f(torch.randn(4, 3, 8, 8), torch.tensor([1.0, 1.0, 2.0, 2.0]))
    with pytest.raises(ValueError, match="frames per video"):
        UpsampleGuidedVideoDenoiser(lambda x, s: x, base_size=4, layout="folded")
    with pytest.raises(ValueError, match="layout"):
        UpsampleGuidedVideoDenoiser(lambda x, s: x, base_size=4, layout="bcthw")


def test_disabled_returns_the_plain_prediction_with_one_call():
    calls = []

    def den(x, s):
        calls.append(x.shape)
        return x * 0.5

    x = torch.randn(1, 3, 8, 8, 8)
    for w in (
        UpsampleGuidedVideoDenoiser(den, base_size=4, temporal_factor=2, guidance_scale=0.0),
        UpsampleGuidedVideoDenoiser(den, base_size=8, temporal_factor=1),  # nothing to reduce
    ):
        calls.clear()
        assert torch.equal(w(x, torch.tensor([1.0])), x * 0.5) and len(calls) == 1


def test_module_exports():
    assert set(video_mod.__all__) >= {"VideoPlan", "plan_video", "UpsampleGuidedVideoDenoiser"}
