"""k-diffusion-style samplers (x = x0 + sigma eps; a denoiser maps (x, sigma) to an x0 estimate).

Written for the demo; they follow the published algorithms (Karras et al. 2022 schedule, Euler = DDIM in
this parameterisation, DPM-Solver++(2M) of Lu et al. 2022 as in k-diffusion's ``sample_dpmpp_2m``).
A denoiser is any callable ``denoiser(x, sigma) -> x0`` with sigma of shape (n,).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable

import torch

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Callback = Callable[[int, int], None]

SIGMA_MIN = 0.01
SIGMA_MAX = 20.0


def karras_sigmas(
    n: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX, rho: float = 7.0
) -> torch.Tensor:
    """n + 1 noise levels: sigma_i = (smax^(1/rho) + i/(n-1) (smin^(1/rho) - smax^(1/rho)))^rho, then 0."""
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    sig = (a + ramp * (b - a)) ** rho
    return torch.cat([sig, sig.new_zeros(1)]).float()


def _row(sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return sigma.to(x.dtype).reshape(1).expand(x.shape[0])


@torch.no_grad()
def sample_euler(
    denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, callback: Callback | None = None
) -> torch.Tensor:
    """Euler steps of dx/dsigma = (x - D(x, sigma)) / sigma (deterministic; equals DDIM)."""
    n = len(sigmas) - 1
    for i in range(n):
        den = denoiser(x, _row(sigmas[i], x))
        x = den + (x - den) * (sigmas[i + 1] / sigmas[i])
        if callback:
            callback(i + 1, n)
    return x


@torch.no_grad()
def sample_dpmpp_2m(
    denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, callback: Callback | None = None
) -> torch.Tensor:
    """DPM-Solver++(2M): with lambda = -log sigma, h = lambda_{i+1} - lambda_i, r = h_{i-1} / h,
    D' = (1 + 1/(2r)) D_i - 1/(2r) D_{i-1} (D' = D_i on the first and last step),
    x_{i+1} = (sigma_{i+1} / sigma_i) x_i - (exp(-h) - 1) D'."""
    n = len(sigmas) - 1
    old = None
    for i in range(n):
        den = denoiser(x, _row(sigmas[i], x))
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        if s_next == 0.0:
            x = den
        else:
            h = math.log(s) - math.log(s_next)
            if old is None:
                d = den
            else:
                h_last = math.log(float(sigmas[i - 1])) - math.log(s)
                r = h_last / h
                d = (1 + 1 / (2 * r)) * den - (1 / (2 * r)) * old
            x = (s_next / s) * x - math.expm1(-h) * d
        old = den
        if callback:
            callback(i + 1, n)
    return x


SAMPLERS = {"euler": sample_euler, "dpmpp_2m": sample_dpmpp_2m}


def img2img_sigmas(steps: int, denoise: float, **kw: float) -> torch.Tensor:
    """Second-pass schedule of a hires-fix-style pass (as A1111 does with its default second-pass steps):
    a Karras schedule of int(steps / denoise) steps, of which the last ``steps`` (+ the final 0) are run."""
    total = max(steps, int(steps / min(max(denoise, 1e-3), 0.999)))
    return karras_sigmas(total, **kw)[total - steps :]


class Progress:
    """A one-line text progress bar on stderr: ``label [#####.....] 12/30 1.4s``."""

    def __init__(self, label: str, stream=None, enabled: bool = True) -> None:
        self.label, self.stream, self.enabled = label, stream or sys.stderr, enabled
        self.t0 = time.time()
        isatty = getattr(self.stream, "isatty", None)
        self.live = bool(isatty and isatty())  # redraw in place on a terminal; else one line at the end

    def __call__(self, i: int, n: int) -> None:
        if not self.enabled or (not self.live and i < n):
            return
        width = 20
        done = int(width * i / max(1, n))
        line = (
            f"\r{self.label:<28} [{'#' * done}{'.' * (width - done)}] {i}/{n} {time.time() - self.t0:5.1f}s"
        )
        self.stream.write(line + ("\n" if i >= n else ""))
        self.stream.flush()
