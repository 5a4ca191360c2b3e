"""AnimateDiff on A1111 (continue-revolution/sd-webui-animatediff): the low-res query through its own path.

What AnimateDiff does (read from its source, release a88e889; file:line there):

* ``scripts/animatediff_infv2v.py:172-173``: in its ``on_cfg_denoiser`` callback at step 0 it stores the CFG
  denoiser's ``inner_model.forward`` as ``inner_model.original_forward`` and puts ``mm_sd_forward`` (a bound
  method) on the instance. That forward (:154-169) runs ``original_forward`` once per *context window* of
  ``ad_params.batch_size`` frames out of ``ad_params.video_length`` (``AnimateDiffInfV2V.uniform``), taking
  the rows ``context + [c + video_length for c in context]`` of x, sigma and every cond tensor: the CFG batch
  must be ``[cond frames 0..F-1, uncond frames 0..F-1]``.
* ``motion_module.py:337-340``: the motion modules group rows into videos of ``ad_params.batch_size`` frames
  (``"(b f) d c -> (b d) f c"``): frames are folded into the batch, video-major.
* ``scripts/animatediff_ui.py:161-168``: the WebUI batch size is the number of frames (video_length, or the context length when the video is shorter).

So the low-res query of a guided step is itself a folded batch ``[cond frames, uncond frames]`` and goes
through ``inner_model.forward`` (AnimateDiff's), which lets the motion module see the frames together:

* spatial guidance (any frame count): the same frames at the low size; AnimateDiff's windows as usual.
* temporal guidance (``frames > context length``; temporal factor Auto = frames / context length): the query
  has ``f = F / m_t`` frames (box averages of consecutive frames; spectral for non-whole factors); for that
  one call ``ad_params.video_length`` is set to ``f`` and ``ad_params.batch_size`` to ``min(context, f)``,
  and restored afterwards. With Auto, ``f`` equals the context length, so the low-res call is ONE window
  holding the whole clip: the motion module sees all of it at once, and that global, consistent motion is
  what guidance hands to every window of the full-length pass (the paper's temporal upsampling). With a
  factor below frames / context (f > context) AnimateDiff windows the low-res call too, with the same
  context, overlap, stride and loop setting over the f frames.
  Per-frame conditioning follows the merged frames (D along the frames): prompt-travel embeddings (which
  AnimateDiff slerps between key frames) and per-frame ControlNet images are averaged over each run of
  merged frames (adapters/a1111_extensions.py for the hints).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from . import infotext

__all__ = [
    "ANIMATEDIFF_MM_MODULE",
    "AnimateDiffRun",
    "animatediff_run",
    "running_job",
    "temporal_factor",
    "frames_of_call",
    "infotext_params",
]


ANIMATEDIFF_MM_MODULE = "scripts.animatediff_mm"  # holds mm_animatediff (its ad_params: the running job)
ANIMATEDIFF_FORWARD = "mm_sd_forward"


@dataclass(frozen=True)
class AnimateDiffRun:
    """AnimateDiff's parameters for the running job: `params` is its ad_params object (mutated for the
    low-res call only, see :func:`frames_of_call`), frames = video_length, context = batch_size."""

    params: Any
    frames: int
    context: int


def running_job() -> AnimateDiffRun | None:
    """The enabled AnimateDiff job of this generation (`mm_animatediff.ad_params` of its
    scripts.animatediff_mm module, the same on A1111 and on Forge's sd-forge-animatediff), else None."""
    mm = getattr(sys.modules.get(ANIMATEDIFF_MM_MODULE), "mm_animatediff", None)
    params = getattr(mm, "ad_params", None)
    if params is None or not getattr(params, "enable", False):
        return None
    return AnimateDiffRun(params, int(params.video_length), int(params.batch_size))


def animatediff_run(inner_model: Any) -> AnimateDiffRun | None:
    """The running AnimateDiff job when AnimateDiff's forward is installed on this inner model, else None."""
    forward = getattr(inner_model, "__dict__", {}).get("forward")
    func = getattr(forward, "__func__", None)
    if getattr(func, "__name__", None) != ANIMATEDIFF_FORWARD:
        return None
    if getattr(inner_model, "original_forward", None) is None:
        return None
    return running_job()


def temporal_factor(run: AnimateDiffRun, setting: float | str | None = "auto") -> float:
    """The temporal factor m_t >= 1: Auto (None or "auto") = frames / context length when the clip is longer
    than the motion module's context, else 1 (a number is taken as given)."""
    if setting is None or setting == "auto":
        return run.frames / run.context if run.frames > run.context else 1.0
    value = float(setting)
    if not math.isfinite(value) or value < 1.0:
        raise ValueError(f"temporal factor must be >= 1 or 'auto', got {setting!r}")
    return value


@contextmanager
def frames_of_call(run: AnimateDiffRun, frames: int) -> Iterator[None]:
    """For one model call of `frames` frames per video: AnimateDiff's video_length = frames and its context
    batch_size = min(context, frames); both restored afterwards, whatever happens."""
    params = run.params
    saved = (params.video_length, params.batch_size)
    params.video_length = frames
    params.batch_size = min(int(saved[1]), frames)
    try:
        yield
    finally:
        params.video_length, params.batch_size = saved


def infotext_params(setting: float | str | None, frames: int, low_frames: int) -> dict[str, str]:
    """Infotext keys of a guided AnimateDiff job: the temporal-factor setting and the frames it gave."""
    value = "auto" if setting is None or setting == "auto" else f"{float(setting):g}"
    return {infotext.KEY_TEMPORAL: value, infotext.KEY_FRAMES: f"{frames} -> {low_frames}"}


def installed() -> bool:
    """True when sd-webui-animatediff is among the WebUI's active extensions (A1111; inside a WebUI only)."""
    try:
        from modules import extensions

        return any("animatediff" in str(getattr(e, "name", "")).lower() for e in extensions.active())
    except Exception:
        return False
