"""Noise conventions: how a host parameterises the noisy input, and the low-resolution query in each.

Averaging k noisy samples keeps the signal and divides the noise variance by k, so the downsampled noisy
image D(x) has signal-to-noise ratio k * SNR. The low-resolution query asks the model at the noise level
whose own SNR equals that, with the input rescaled to be a valid sample there (SPEC §4):

| convention      | noisy input                    | low-res input              | low-res level               |
|-----------------|--------------------------------|----------------------------|-----------------------------|
| KarrasSigma     | x = x0 + sigma*eps             | D(x)                       | sigma / sqrt(k)             |
| DiscreteVP      | x = a*x0 + b*eps, a^2+b^2 = 1  | D(x) / sqrt(P),            | tau: sigma(tau) =           |
|                 | level = integer-valued t       | P = a^2 + b^2 / k          |   sigma(t) / sqrt(k)        |
| RectifiedFlow   | x = (1-t)*x0 + t*eps           | D(x) / (1 - t + t/sqrt(k)) | t / (sqrt(k)(1-t) + t)      |

(For DiscreteVP, sigma(t) = b/a = sqrt((1 - abar_t) / abar_t) is the equivalent Karras sigma.)
In every row the model's x0 prediction for the low-res query estimates D(x0), and its eps prediction
estimates sqrt(k) * D(eps).

Each convention exposes `output` ("x0" or "eps": which prediction the host hands us), `low_res_query`, and
`normalised_time` (the model's own time in [0, 1], 1 = pure noise), which drives the schedule.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .resample import Resampler

__all__ = [
    "NoiseConvention",
    "KarrasSigma",
    "DiscreteVP",
    "RectifiedFlow",
    "DiscreteSigmaTable",
    "as_level",
    "rows",
]

OUTPUTS = ("x0", "eps")


def as_level(level: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """A noise level (sigma, t or tau) as a tensor on x's device. A tensor keeps its dtype; a Python number
    (or sequence) takes x's floating dtype, at least float32 (a float64 x gets a float64 sigma: 2.5 stays exactly
    2.5, not float32's 2.5 +- 1e-7 relative, which would reach the low-res query)."""
    if isinstance(level, torch.Tensor):
        return level.to(x.device)
    dtype = torch.promote_types(x.dtype, torch.float32) if x.is_floating_point() else torch.float32
    return torch.as_tensor(level, dtype=dtype, device=x.device)


def rows(level: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Reshape a per-row level (shape [] or [B]) to broadcast over `ref` ([B, ...])."""
    level = as_level(level, ref)
    if level.ndim == 0:
        return level
    return level.reshape(level.shape[0], *([1] * (ref.ndim - 1)))


def _check_output(output: str) -> str:
    if output not in OUTPUTS:
        raise ValueError(f"output must be 'x0' or 'eps', got {output!r}")
    return output


class NoiseConvention:
    """Interface of a noise convention (see module docstring)."""

    output: str = "x0"

    def low_res_query(
        self, x: torch.Tensor, level: torch.Tensor, resampler: Resampler
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (low-res model input, low-res level) for noisy input x at `level` (one per row)."""
        raise NotImplementedError

    def normalised_time(self, level: torch.Tensor) -> torch.Tensor:
        """The model's own time for `level`, in [0, 1] (1 = pure noise)."""
        raise NotImplementedError


class DiscreteSigmaTable:
    """The sigma table of a discrete-time VP model and the WebUIs' time <-> sigma interpolation.

    sigmas[i] = sqrt((1 - abar_i) / abar_i), ascending in i. Time t (fractional allowed) maps to sigma by
    linear interpolation of log sigma between floor(t) and ceil(t); sigma maps back to t by the same
    interpolation, clamped to [0, T-1] (sigma below the table's smallest maps to t = 0, above its largest to
    t = T-1) — the behaviour of k-diffusion's DiscreteSchedule that A1111 uses.
    """

    def __init__(self, alphas_cumprod: torch.Tensor):
        ac = torch.as_tensor(alphas_cumprod, dtype=torch.float64).flatten()
        if ac.numel() < 2 or not torch.all((ac > 0) & (ac <= 1)):
            raise ValueError("alphas_cumprod must hold at least two values in (0, 1]")
        self.log_sigmas = 0.5 * (torch.log1p(-ac.clamp(max=1 - 1e-12)) - torch.log(ac))
        if not torch.all(self.log_sigmas[1:] > self.log_sigmas[:-1]):
            raise ValueError("alphas_cumprod must be strictly decreasing (noise grows with t)")
        self.num_timesteps = ac.numel()

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        t64 = torch.as_tensor(t, dtype=torch.float64).clamp(0, self.num_timesteps - 1)
        ls = self.log_sigmas.to(t64.device)
        low = t64.floor().long()
        high = t64.ceil().long()
        frac = t64 - low
        return torch.exp((1 - frac) * ls[low] + frac * ls[high])

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        s64 = torch.as_tensor(sigma, dtype=torch.float64)
        ls = self.log_sigmas.to(s64.device)
        log_s = torch.log(s64.clamp(min=1e-30))
        # index of the last table entry <= log sigma, kept inside [0, T-2] so that [i, i+1] is an interval
        i = (torch.searchsorted(ls, log_s.contiguous(), right=True) - 1).clamp(0, self.num_timesteps - 2)
        lo, hi = ls[i], ls[i + 1]
        w = ((log_s - lo) / (hi - lo)).clamp(0, 1)
        return i.to(torch.float64) + w


class KarrasSigma(NoiseConvention):
    """k-diffusion / EDM: x = x0 + sigma*eps; the host's level is sigma; low-res level sigma / sqrt(k).

    `sigma_to_t` maps sigma to the model's normalised time in [0, 1]; None means "no time axis": the
    schedule then treats every step as t = 1 (guidance always on).
    """

    def __init__(
        self,
        sigma_to_t: Callable[[torch.Tensor], torch.Tensor] | None = None,
        output: str = "x0",
    ):
        self.sigma_to_t = sigma_to_t
        self.output = _check_output(output)

    @classmethod
    def from_alphas_cumprod(cls, alphas_cumprod: torch.Tensor, output: str = "x0") -> KarrasSigma:
        """Time from a discrete VP model's table: t(sigma) / (T - 1), interpolated as in the WebUIs."""
        table = DiscreteSigmaTable(alphas_cumprod)
        last = float(table.num_timesteps - 1)
        return cls(lambda sigma: table.sigma_to_t(sigma) / last, output=output)

    def low_res_query(self, x, level, resampler):
        sigma = as_level(level, x)
        return resampler.down(x), sigma / math.sqrt(resampler.k)

    def normalised_time(self, level):
        sigma = level if isinstance(level, torch.Tensor) else torch.as_tensor(level, dtype=torch.float64)
        if self.sigma_to_t is None:
            return torch.ones_like(sigma, dtype=torch.float64)
        return torch.as_tensor(self.sigma_to_t(sigma), dtype=torch.float64)


class DiscreteVP(NoiseConvention):
    """Discrete-time VP (A1111's DDIM, PLMS, UniPC): level = integer-valued t, x_t = a*x0 + b*eps.

    Low-res query: input D(x_t) / sqrt(P) with P = a^2 + b^2/k, time tau = sigma_to_t(sigma(t)/sqrt(k))
    (fractional, interpolated like the host; clamped to [0, T-1]).
    """

    def __init__(self, alphas_cumprod: torch.Tensor, output: str = "eps"):
        self.table = DiscreteSigmaTable(alphas_cumprod)
        self.output = _check_output(output)

    def low_res_query(self, x, level, resampler):
        t = as_level(level, x)
        k = resampler.k
        sigma = self.table.t_to_sigma(t)  # b / a
        a2 = 1.0 / (1.0 + sigma**2)
        power = a2 + (1.0 - a2) / k  # P = a^2 + b^2 / k
        tau = self.table.sigma_to_t(sigma / math.sqrt(k))
        x_low = resampler.down(x) * rows(torch.rsqrt(power), x).to(x.dtype)
        # fractional tau: keep it in float64 for float64 work, else float32 (half would round it)
        precise = torch.float64 in (t.dtype, x.dtype)
        return x_low, tau.to(torch.float64 if precise else torch.float32)

    def normalised_time(self, level):
        return torch.as_tensor(level, dtype=torch.float64) / (self.table.num_timesteps - 1)


class RectifiedFlow(NoiseConvention):
    """Rectified flow (Forge "const" predictors: Flux, SD3): x = (1-t)*x0 + t*eps, level = t in [0, 1].

    Low-res query: input D(x) / (1 - t + t/sqrt(k)), time t / (sqrt(k)(1 - t) + t).
    """

    def __init__(self, output: str = "x0"):
        self.output = _check_output(output)

    def low_res_query(self, x, level, resampler):
        t = as_level(level, x)
        r = math.sqrt(resampler.k)
        scale = 1.0 / (1.0 - t + t / r)
        t_low = t / (r * (1.0 - t) + t)
        return resampler.down(x) * rows(scale, x).to(x.dtype), t_low

    def normalised_time(self, level):
        return torch.as_tensor(level, dtype=torch.float64).clamp(0, 1)
