"""Before sampling: will guidance change a step of this generation? Then its infotext keys are written now.

A1111 and Forge write ``params.txt`` — what "paste last generation" (the ↙️ button) reads — after the
scripts' ``process_batch`` and before ``p.sample``; each image's own infotext is made after
``postprocess_batch``. So the keys are written in ``process_batch`` (:func:`before_batch`), from a forecast,
and checked against what really happened in ``postprocess_batch`` (:func:`after_batch`):

* A pass (the first pass, or the hires. fix pass when it is guided) changes a step iff its latent is above
  the base size (a plan exists) and its FIRST model evaluation — the noisiest one — lies in the guided part
  of the model's time axis, ``t(level_0) / T >= 1 - eta`` with ``theta > 0`` (core.schedule); every later
  evaluation is less noisy, so the first decides. The plan depends on the size and base, the schedule on
  eta and the sampler's noise levels: all known before sampling. For an AnimateDiff job the adapters plan
  over (frames, H, W) (core.video; its parameters are set in AnimateDiff's before_process), so a clip at
  the base size that is longer than the motion module's context is forecast as guided in time.
* The noise levels are the host's own: a throwaway sampler from ``modules.sd_samplers.create_sampler`` and
  its ``get_sigmas`` (k-diffusion samplers; the pass starts at ``sigmas[steps - t_enc - 1]`` for img2img
  and the hires pass, as ``sample_img2img`` does) or ``get_timesteps`` (DDIM, PLMS, UniPC: evaluated from the
  last timestep down), called on a shallow copy of p with a private ``extra_generation_params`` (those
  methods write schedule keys into it), so p is left untouched. A1111 and Forge share that code.
* After each batch: keys written but no step guided and no failure (a forecast that was wrong, e.g. a
  hires checkpoint of another family) -> the keys are removed; a step guided without keys (no forecast) ->
  the adapters already wrote them at the first guided step; the guard turned guidance off -> ``UG stopped``
  names the step from which the image was not guided (webui/infotext.py); a batch in which no step was
  guided (stopped at its first guided call, or a later batch of the same generation: guidance stays off)
  carries no keys, like any unguided image.

Host modules are imported inside functions only.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..core.conventions import NoiseConvention
from ..core.planner import LowResPlan
from ..core.schedule import guidance_weight
from . import infotext
from .generation import GuardState

__all__ = [
    "PassSchedule",
    "PassForecast",
    "Forecast",
    "host_pass_schedule",
    "is_img2img",
    "pass_forecast",
    "step_at",
    "before_batch",
    "after_batch",
]

_LEVEL_RTOL = 1e-4


@dataclass(frozen=True)
class PassSchedule:
    """The host's noise levels of one sampling pass.

    kind: "sigma" (k-diffusion samplers: x = x0 + sigma*eps) or "timestep" (DDIM, PLMS, UniPC: the discrete
    t of the model's schedule); levels: the level of each step's first model call, one per step, noisiest
    first (float64); sampler: the throwaway host sampler it came from (its CFG denoiser tells the adapter the
    convention).
    """

    kind: str
    levels: torch.Tensor
    sampler: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class PassForecast:
    """hires: the hires. fix pass; levels: its step levels in the adapter's convention (None: unknown);
    guided: guidance will change at least one of its steps."""

    hires: bool
    levels: torch.Tensor | None
    guided: bool


@dataclass
class Forecast:
    """The forecast of one generation: a PassForecast per sampling pass that may be guided, and the infotext
    entries to write when it is guided (infotext.make_params)."""

    passes: list[PassForecast]
    params: dict[str, str]

    @property
    def guided(self) -> bool:
        return any(f.guided for f in self.passes)

    def first_guided(self) -> PassForecast | None:
        return next((f for f in self.passes if f.guided), None)

    def levels(self, hires: bool) -> torch.Tensor | None:
        return next((f.levels for f in self.passes if f.hires == hires), None)


def step_at(levels: torch.Tensor | Sequence[float] | None, level: float | None) -> int | None:
    """The 1-based step of a pass whose model calls include one at `level`: the last step i with
    levels[i-1] >= level (second-order samplers evaluate between two steps' levels). None if unknown."""
    if levels is None or level is None:
        return None
    values = torch.as_tensor(levels, dtype=torch.float64).reshape(-1)
    if values.numel() == 0:
        return None
    reached = values >= float(level) * (1 - _LEVEL_RTOL) - 1e-12
    count = int(reached.sum())
    return max(count, 1)


def pass_forecast(
    hires: bool,
    plan: LowResPlan | None,
    levels: torch.Tensor | None,
    convention: NoiseConvention | None,
    guidance_scale: float,
    eta: float,
) -> PassForecast:
    """Will this pass be guided: a plan exists and its first level has a positive weight (core.schedule)."""
    if plan is None or levels is None or convention is None or levels.numel() == 0:
        return PassForecast(hires, levels, False)
    first = levels.reshape(-1)[:1]
    weight = guidance_weight(convention.normalised_time(first), guidance_scale, eta)
    return PassForecast(hires, levels, bool((weight > 0).all()))


# --------------------------------------------------------------------------------------------------
# The host's schedule (A1111 and Forge run the same sampler code)


def is_img2img(p: Any) -> bool:
    """p is an img2img processing object (its first pass starts part-way, at the denoising strength)."""
    if hasattr(p, "init_images") or hasattr(p, "init_latent_source"):
        return True
    return type(p).__name__ == "StableDiffusionProcessingImg2Img"


def _private_copy(p: Any, hires: bool) -> Any:
    q = copy.copy(p)
    q.extra_generation_params = dict(getattr(p, "extra_generation_params", None) or {})
    q.is_hr_pass = hires
    return q


def host_pass_schedule(p: Any, *, hires: bool) -> PassSchedule:
    """The step levels of the first pass (hires=False) or the hires. fix pass of p, from the host's sampler.

    txt2img first pass: all steps from the top of the schedule (``sample``). img2img and the hires pass:
    ``setup_img2img_steps`` (steps = the hires steps, else p.steps), from ``sigmas[steps - t_enc - 1]`` /
    ``timesteps[t_enc - 1]`` down (``sample_img2img``). Raises on anything unexpected.
    """
    from modules import sd_samplers, sd_samplers_common

    name = (getattr(p, "hr_sampler_name", None) or p.sampler_name) if hires else p.sampler_name
    sampler = sd_samplers.create_sampler(name, p.sd_model)
    q = _private_copy(p, hires)
    partial = hires or is_img2img(p)
    requested = (getattr(p, "hr_second_pass_steps", 0) or p.steps) if hires else None
    if partial:
        steps, t_enc = sd_samplers_common.setup_img2img_steps(q, requested)
    else:
        steps, t_enc = int(p.steps), None
    if callable(getattr(sampler, "get_sigmas", None)):
        sigmas = torch.as_tensor(sampler.get_sigmas(q, steps)).detach().to("cpu", torch.float64).reshape(-1)
        if t_enc is not None:
            sigmas = sigmas[steps - t_enc - 1 :]
        levels = sigmas[:-1]
        return PassSchedule("sigma", levels[levels > 0], sampler)
    if callable(getattr(sampler, "get_timesteps", None)):
        timesteps = torch.as_tensor(sampler.get_timesteps(q, steps)).detach().to("cpu", torch.float64)
        timesteps = timesteps.reshape(-1)
        if t_enc is not None:
            timesteps = timesteps[:t_enc]
        # the DDIM / PLMS loops evaluate timesteps[len - 1] down to timesteps[1]
        return PassSchedule("timestep", timesteps[1:].flip(0), sampler)
    raise TypeError(f"sampler {type(sampler).__name__} has neither get_sigmas nor get_timesteps")


# --------------------------------------------------------------------------------------------------
# The infotext around each batch


def _set_keys(p: Any, params: dict[str, str] | None, stopped: str | None = None) -> None:
    """p's UG entries become exactly `params` (+ UG stopped), in a new dict (XYZ cells share the old one)."""
    old = getattr(p, "extra_generation_params", None)
    old = old if isinstance(old, dict) else {}
    new = {k: v for k, v in old.items() if k not in infotext.ALL_KEYS}
    if params:
        new.update(params)
        if stopped is not None:
            new[infotext.KEY_STOPPED] = stopped
    if new != old or new.keys() != old.keys():
        p.extra_generation_params = new


def before_batch(p: Any, state: GuardState | None, make_forecast: Callable[[], Forecast]) -> None:
    """process_batch: forecast once per generation, then write the keys the batch's images will carry.

    make_forecast: the adapter's forecast for p (may raise: then nothing is forecast and the keys are
    written at the first guided step, as without a forecast).
    """
    if state is None:
        return
    state.new_batch()
    if not state.forecast_done:
        state.forecast_done = True
        try:
            state.forecast = make_forecast()
        except Exception:  # informational only: the adapters write the keys when a step is guided
            state.forecast = None
    forecast = state.forecast
    if not isinstance(forecast, Forecast) or not forecast.guided:
        _set_keys(p, None)
        return
    if state.off:  # turned off in an earlier batch of this generation: no step of this batch is guided
        _set_keys(p, None)
        return
    _set_keys(p, forecast.params)


def after_batch(p: Any, state: GuardState | None) -> None:
    """postprocess_batch: make the keys of this batch's images tell what happened (see the module doc)."""
    if state is None:
        return
    forecast = state.forecast if isinstance(state.forecast, Forecast) else None
    extra = getattr(p, "extra_generation_params", None) or {}
    written = {k: extra[k] for k in infotext.KEYS if k in extra}
    if state.stopped_in_batch:
        if not written or not state.ran:
            _set_keys(p, None)  # no step of this batch was guided: its images carry no keys
            return
        levels = forecast.levels(state.stop_hires) if forecast is not None else None
        if forecast is not None and state.stop_level is None:
            step = 1  # stopped before the pass's first call (e.g. while patching)
        else:
            step = step_at(levels, state.stop_level)
        value = infotext.stopped_value(step, hires=state.stop_hires, level=state.stop_level)
        _set_keys(p, written, value)
    elif state.off:
        return  # keys and "UG stopped: step 1" were written by before_batch
    elif written and not state.ran:
        _set_keys(p, None)  # forecast guided, but no step was: the images carry no keys
