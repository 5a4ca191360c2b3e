"""Video: upsample guidance along frames and space (the paper's spatial and temporal upsampling).

A video latent has trailing axes (F, H, W): F frames of H x W. A model whose motion module was trained on
L frames (its context length) at a base size is sampled with more frames and/or a larger size. The plan
joins the target (F, H, W) to a low-resolution (f, h, w):

    temporal factor m_t = F / f,   spatial factors m_h = H / h, m_w = W / w,   k = m_t * m_h * m_w

(k = m_t * m_s^2 at a square spatial factor m_s). D averages runs of m_t frames (box) when m_t is a whole
number, else truncates the frame axis' cosine spectrum (spectral pair); space as in the image planner. Since
D maps white noise of variance 1 to white noise of variance 1/k on all three axes together, the low-res
query's noise level follows from this k exactly as in SPEC §4 (sigma / sqrt(k) for k-diffusion), and the
guided prediction is SPEC §3's den + w U(den_low - D(den)) with D and U acting on (F, H, W).

Layouts. The core works on tensors whose trailing axes are (frames, height, width): [B, C, F, H, W].
AnimateDiff (and WebUIs) fold the frames into the batch instead: [(B F), C, H, W], video-major ("(b f)":
row b * F + f is frame f of video b); :func:`unfold_frames` / :func:`fold_frames` convert.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .conventions import NoiseConvention
from .denoiser import map_tensors, set_common_settings
from .planner import LowResPlan, _fmt_factor, _positive_int, _size_pair, cached_resampler, plan_low_res
from .resample import RESAMPLER_KINDS, Resampler
from .step import LowResQuery, prepare_low_res_query

__all__ = [
    "VideoPlan",
    "plan_video",
    "unfold_frames",
    "fold_frames",
    "UpsampleGuidedVideoDenoiser",
    "FoldedVideoQuery",
    "prepare_folded_video_query",
    "per_video_level",
    "LAYOUTS",
]

LAYOUTS = ("frames_axis", "folded")


@dataclass(frozen=True)
class VideoPlan:
    """Target and low-resolution sizes (F, H, W) and the pair per axis (temporal, spatial).

    kinds: (temporal kind, spatial kind), each "identity", "box" or "spectral".
    """

    target_size: tuple[int, int, int]
    low_size: tuple[int, int, int]
    kinds: tuple[str, str]

    @property
    def factor(self) -> tuple[float, float, float]:
        """(m_t, m_h, m_w) = target / low per axis."""
        return tuple(t / lo for t, lo in zip(self.target_size, self.low_size, strict=True))  # type: ignore[return-value]

    @property
    def temporal_factor(self) -> float:
        return self.factor[0]

    @property
    def k(self) -> float:
        """m_t * m_h * m_w: target samples per low-resolution sample."""
        m_t, m_h, m_w = self.factor
        return m_t * m_h * m_w

    @property
    def kind(self) -> str:
        """ "box" or "spectral" when both used pairs agree, else "mixed"."""
        used = {k for k in self.kinds if k != "identity"}
        return used.pop() if len(used) == 1 else "mixed"

    def _axis_kinds(self) -> tuple[str, str, str]:
        kt, ks = ("auto" if k == "identity" else k for k in self.kinds)  # equal sizes: identity either way
        return (kt, ks, ks)

    def resampler(self) -> Resampler:
        return cached_resampler(self.target_size, self.low_size, self._axis_kinds())

    def temporal_resampler(self) -> Resampler:
        """The frame-axis part of D/U alone (for per-frame conditioning rows)."""
        return cached_resampler(self.target_size[:1], self.low_size[:1], self._axis_kinds()[:1])

    def describe(self, latent_factor: int = 8) -> str:
        """e.g. '32 frames 512x512 -> guided from 16 frames 256x256 (2x frames, box; 2x size, box)'."""
        (tf, th, tw), (lf, lh, lw) = self.target_size, self.low_size
        f = latent_factor
        parts = []
        if self.kinds[0] != "identity":
            parts.append(f"{_fmt_factor(self.factor[0])} frames, {self.kinds[0]}")
        if self.kinds[1] != "identity":
            parts.append(f"{_fmt_factor(self.factor[1])} size, {self.kinds[1]}")
        return (
            f"{tf} frames {tw * f}x{th * f} -> guided from {lf} frames {lw * f}x{lh * f} ({'; '.join(parts)})"
        )


def _temporal_low(frames: int, temporal_factor: float | str, base_frames: int | None) -> int:
    if temporal_factor == "auto":
        if base_frames is None:
            raise ValueError("temporal factor 'auto' needs the motion module's context length (base_frames)")
        return min(frames, _positive_int(base_frames, "base frames"))
    if isinstance(temporal_factor, bool) or not isinstance(temporal_factor, int | float):
        raise ValueError(f"temporal factor must be a number >= 1 or 'auto', got {temporal_factor!r}")
    m = float(temporal_factor)
    if not m >= 1.0 or m == float("inf"):
        raise ValueError(f"temporal factor must be a number >= 1 or 'auto', got {temporal_factor!r}")
    return max(1, round(frames / m))


def plan_video(
    frames: int,
    target_size: tuple[int, int],
    base_size_px: int | tuple[int, int],
    *,
    temporal_factor: float | str = 1.0,
    base_frames: int | None = None,
    latent_factor: int = 8,
    granularity: int = 1,
    resampler: str = "auto",
) -> VideoPlan | None:
    """The low-resolution (f, h, w) for a video of `frames` frames of `target_size` (H, W, latent pixels).

    Space: :func:`planner.plan_low_res` (None there = not larger than the base: spatial axes untouched).
    Frames: temporal_factor m_t >= 1 gives f = round(F / m_t); "auto" gives f = min(F, base_frames) (the
    motion module's context length: m_t = F / L). Per axis, "auto" takes the box pair where the size divides
    exactly and the spectral pair otherwise; "box" refuses a frame count that does not divide. Returns None
    when neither the frames nor the size are reduced.
    """
    frames = _positive_int(frames, "frame count")
    size = _size_pair(target_size, "target size")
    if resampler not in RESAMPLER_KINDS:
        raise ValueError(f"resampler must be one of {', '.join(RESAMPLER_KINDS)}; got {resampler!r}")
    spatial: LowResPlan | None = plan_low_res(
        size, base_size_px, latent_factor=latent_factor, granularity=granularity, resampler=resampler
    )
    low_frames = _temporal_low(frames, temporal_factor, base_frames)
    if low_frames == frames:
        kt = "identity"
    elif resampler == "spectral" or frames % low_frames:
        if resampler == "box":
            raise ValueError(
                f"the box resampler needs a whole temporal factor: {frames} frames are not a multiple of "
                f"{low_frames}; use the spectral resampler or another frame count"
            )
        kt = "spectral"
    else:
        kt = "box"
    if spatial is None and kt == "identity":
        return None
    low_size = spatial.low_size if spatial is not None else size
    ks = spatial.kind if spatial is not None else "identity"
    return VideoPlan((frames, *size), (low_frames, *low_size), (kt, ks))


def unfold_frames(x: torch.Tensor, frames: int) -> torch.Tensor:
    """[(B F), C, ...] (row b*F + f = frame f of video b) -> [B, C, F, ...]."""
    if x.ndim < 2 or x.shape[0] % frames:
        raise ValueError(
            f"upsample guidance: {tuple(x.shape)} cannot hold whole videos of {frames} frames "
            "folded into the batch"
        )
    v = x.reshape(x.shape[0] // frames, frames, *x.shape[1:])
    return v.movedim(1, 2)


def fold_frames(x: torch.Tensor) -> torch.Tensor:
    """[B, C, F, ...] -> [(B F), C, ...] (inverse of :func:`unfold_frames`)."""
    v = x.movedim(2, 1)
    return v.reshape(v.shape[0] * v.shape[1], *v.shape[2:])


def per_video_level(level: torch.Tensor | float, rows: int, frames: int) -> torch.Tensor:
    """One noise level per video from one per folded row (all frames of a video must share it)."""
    level = torch.as_tensor(level)
    if level.ndim == 0:
        return level
    if level.ndim != 1 or level.shape[0] not in (1, rows):
        raise ValueError(
            f"upsample guidance: the noise level must be a scalar or one value per row ({rows}), "
            f"got shape {tuple(level.shape)}"
        )
    if level.shape[0] == 1:
        return level
    per = level.reshape(rows // frames, frames)
    if not bool((per == per[:, :1]).all()):
        raise ValueError("upsample guidance: the frames of a video are at different noise levels")
    return per[:, 0]


def _down_temporal_rows(t: torch.Tensor, resampler: Resampler, frames: int) -> torch.Tensor:
    """Per-frame rows [(B F), ...] -> [(B f), ...]: D along frames (e.g. prompt-travel embeddings)."""
    v = t.reshape(t.shape[0] // frames, frames, *t.shape[1:]).movedim(1, -1)
    return resampler.down(v).movedim(-1, 1).flatten(0, 1)


@dataclass(frozen=True)
class FoldedVideoQuery:
    """The low-res query of a batch whose rows are frames, video-major ((videos F) rows: AnimateDiff's
    layout, also a WebUI's CFG batch [cond frames..., uncond frames...]), and how to fold its answer back.

    x: low-res model input, (videos f) rows; level: one noise level per low-res row.
    """

    query: LowResQuery  # the same query on the unfolded batch [videos, C, F, H, W]
    plan: VideoPlan
    frames: int

    @property
    def low_frames(self) -> int:
        return self.plan.low_size[0]

    @property
    def x(self) -> torch.Tensor:
        return fold_frames(self.query.x)

    @property
    def level(self) -> torch.Tensor:
        return self.query.level.repeat_interleave(self.low_frames)

    def low_rows(self, rows: int) -> int:
        """Rows of the low-res batch for `rows` (whole videos of F frames) rows of the target batch."""
        if rows % self.frames:
            raise ValueError(f"upsample guidance: {rows} rows are not whole videos of {self.frames} frames")
        return rows // self.frames * self.low_frames

    def down_rows(self, t: torch.Tensor) -> torch.Tensor:
        """Per-frame rows [(B F), ...] -> [(B f), ...]: D on (F, H, W) when the trailing axes are the frame
        size (concat conditioning, masks), else D along the frames alone (per-frame text embeddings:
        the embeddings of merged frames are averaged; identity without a temporal factor)."""
        self.low_rows(t.shape[0])
        if t.ndim >= 3 and tuple(t.shape[-2:]) == self.plan.target_size[1:]:
            return fold_frames(self.query.downsample_condition(unfold_frames(t, self.frames)))
        if self.plan.kinds[0] == "identity":
            return t
        return _down_temporal_rows(t, self.plan.temporal_resampler(), self.frames)

    def apply(self, pred: torch.Tensor, pred_low: torch.Tensor) -> torch.Tensor:
        """The guided prediction (SPEC §3) for the folded rows of pred, from the folded low-res pred_low."""
        guided = self.query.apply(unfold_frames(pred, self.frames), unfold_frames(pred_low, self.low_frames))
        return fold_frames(guided)


def prepare_folded_video_query(
    x: torch.Tensor,
    level: torch.Tensor | float,
    *,
    frames: int,
    plan: VideoPlan | None,
    convention: NoiseConvention,
    guidance_scale: float,
    eta: float,
) -> FoldedVideoQuery | None:
    """:func:`step.prepare_low_res_query` for x [(videos F), C, H, W] with F = `frames` frames per video and
    a level per row (equal within a video) or a scalar; None when nothing is guided."""
    query = prepare_low_res_query(
        unfold_frames(x, frames),
        per_video_level(level, x.shape[0], frames),
        plan=plan,
        convention=convention,
        guidance_scale=guidance_scale,
        eta=eta,
    )
    if query is None:
        return None
    assert plan is not None
    return FoldedVideoQuery(query, plan, frames)


class UpsampleGuidedVideoDenoiser(torch.nn.Module):
    """Upsample guidance around a k-diffusion video denoiser, along frames and/or space.

    The wrapped ``denoiser(x, sigma, **extra)`` returns x0 for x = x0 + sigma eps. Calling the wrapper returns

        den + w(t) * U(den_low - D(den)),   den_low = denoiser(D(x), sigma / sqrt(k), **extra_low)

    with D/U and k = m_t * m_h * m_w from :func:`plan_video`, on the axes (F, H, W).

    Args:
        denoiser: callable (x, sigma, **extra) -> x0 prediction.
        base_size: (height, width) the denoiser was trained at, in its own pixels (an int means square).
        temporal_factor: m_t >= 1 (1 = frames untouched), or "auto" = frames / base_frames.
        base_frames: the motion module's context length (frames it was trained on), for "auto".
        layout: "frames_axis": x is [B, C, F, H, W]; "folded": x is [(B F), C, H, W] as AnimateDiff passes
            it, with `frames` frames per video.
        frames: frames per video in the folded layout.
        frames_kwarg: in the folded layout, the keyword under which the denoiser is told the frame count of
            each call (the low-res call has fewer frames); None: not passed.
        guidance_scale, eta, sigma_to_t, resampler: as for :class:`UpsampleGuidedDenoiser`.

    Extras: tensors whose trailing axes are (F, H, W) (frames-axis layout) or that hold one row per frame
    with trailing (H, W) (folded layout) get D; other per-frame rows of the folded layout (e.g. per-frame
    text embeddings) get the frame-axis part of D; everything else passes through unchanged.
    """

    def __init__(
        self,
        denoiser: Callable[..., torch.Tensor],
        *,
        base_size: int | tuple[int, int],
        temporal_factor: float | str = 1.0,
        base_frames: int | None = None,
        layout: str = "frames_axis",
        frames: int | None = None,
        frames_kwarg: str | None = None,
        guidance_scale: float = 1.0,
        eta: float = 0.6,
        sigma_to_t: Callable[[torch.Tensor], torch.Tensor] | None = None,
        resampler: str = "auto",
    ):
        super().__init__()
        set_common_settings(self, denoiser, base_size, guidance_scale, eta, sigma_to_t, resampler)
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}; got {layout!r}")
        if layout == "folded":
            if frames is None:
                raise ValueError("the folded layout needs the number of frames per video (frames=...)")
            frames = _positive_int(frames, "frames per video")
        _temporal_low(64, temporal_factor, base_frames)  # validates the factor now, not at the first step
        self.temporal_factor = temporal_factor
        self.base_frames = base_frames
        self.layout = layout
        self.frames = frames
        self.frames_kwarg = frames_kwarg

    def plan_for(self, frames: int, size: tuple[int, int]) -> VideoPlan | None:
        """The plan for `frames` frames of `size` (H, W), or None when nothing is reduced."""
        return plan_video(
            frames,
            size,
            self.base_size,
            temporal_factor=self.temporal_factor,
            base_frames=self.base_frames,
            latent_factor=1,
            granularity=1,
            resampler=self.resampler,
        )

    def _call(self, x: torch.Tensor, sigma: Any, frames: int, extra: dict[str, Any]) -> torch.Tensor:
        if self.layout == "folded" and self.frames_kwarg is not None:
            extra = {**extra, self.frames_kwarg: frames}
        return self.inner_model(x, sigma, **extra)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, **extra: Any) -> torch.Tensor:
        folded = self.layout == "folded"
        if not isinstance(x, torch.Tensor) or x.ndim != (4 if folded else 5):
            raise ValueError(
                "x must be a tensor "
                + (
                    "[(batch frames), channels, height, width]"
                    if folded
                    else "[batch, channels, frames, height, width]"
                )
                + f", got {getattr(x, 'shape', x)!r}"
            )
        frames = self.frames if folded else x.shape[2]
        den = self._call(x, sigma, frames, extra)
        if tuple(den.shape) != tuple(x.shape):
            raise ValueError(
                f"the denoiser returned shape {tuple(den.shape)} for an input of shape {tuple(x.shape)}"
            )
        plan = self.plan_for(frames, tuple(x.shape[-2:]))
        common = dict(plan=plan, convention=self.convention, guidance_scale=self.guidance_scale, eta=self.eta)
        if folded:
            fq = prepare_folded_video_query(x, sigma, frames=frames, **common)
            if fq is None:
                return den
            extra_low = _down_extras_folded(extra, fq, x.shape[0])
            den_low = self._call(fq.x, fq.level.to(x.dtype), fq.low_frames, extra_low)
            return fq.apply(den, den_low)
        query = prepare_low_res_query(x, sigma, **common)
        if query is None:
            return den
        assert plan is not None
        extra_low = _down_extras_axis(extra, query, plan)
        den_low = self._call(query.x, query.level.to(x.dtype), plan.low_size[0], extra_low)
        return query.apply(den, den_low)


def _down_extras_axis(obj: Any, query: LowResQuery, plan: VideoPlan) -> Any:
    """Extras whose last three axes are the video's (F, H, W) go through D; the rest is kept."""
    return map_tensors(
        obj,
        lambda t: (
            query.downsample_condition(t) if t.ndim >= 4 and tuple(t.shape[-3:]) == plan.target_size else t
        ),
    )


def _down_extras_folded(obj: Any, fq: FoldedVideoQuery, rows: int) -> Any:
    """Float extras with one row per folded frame are mapped to the low-res rows; the rest is kept."""
    return map_tensors(
        obj, lambda t: fq.down_rows(t) if t.ndim >= 1 and t.shape[0] == rows and t.is_floating_point() else t
    )
