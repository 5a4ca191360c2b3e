"""v-prediction models under discrete-time (integer t) samplers: undo a host's integer rounding of t.

A1111's DDIM / PLMS / UniPC wrap a v-prediction model (SD 2.x 768-v) in CompVisTimestepsVDenoiser, which turns
the model's v into eps with the schedule at the integer part of t (`alphas_cumprod[t.to(int)]`):

    eps_host = sqrt(abar[int(t)]) * v + sqrt(1 - abar[int(t)]) * x

For the host's own integer t that is exact. The low-res query asks at a fractional tau, with an input scaled to
be a valid sample at abar(tau) = 1 / (1 + sigma(tau)^2) (sigma interpolated in log sigma, as the host does).
The eps that belongs to that query is

    eps(tau) = sqrt(abar(tau)) * v + sqrt(1 - abar(tau)) * x,   v = (eps_host - sqrt(1 - abar_i) * x) / sqrt(abar_i)

with abar_i = the host's own table at int(tau) (its dtype: the host may downcast alphas_cumprod).
"""

from __future__ import annotations

import torch

from .conventions import DiscreteSigmaTable, rows

__all__ = ["eps_at_fractional_t"]


def eps_at_fractional_t(
    eps_host: torch.Tensor,
    x: torch.Tensor,
    tau: torch.Tensor,
    host_alphas_cumprod: torch.Tensor,
    table: DiscreteSigmaTable,
) -> torch.Tensor:
    """The eps of a v-prediction model at fractional time `tau` (one per row of x), from the eps the host
    converted at int(tau) with its `host_alphas_cumprod`. x: the model input at tau. Computed in float64,
    returned in eps_host's dtype."""
    tau64 = torch.as_tensor(tau, dtype=torch.float64, device=x.device).reshape(-1)
    host = torch.as_tensor(host_alphas_cumprod).to(device=x.device)
    a_i = host[tau64.to(torch.int)].to(torch.float64)  # the host's own lookup: truncation, its dtype
    sigma_tau = table.t_to_sigma(tau64.cpu()).to(x.device)
    a_tau = 1.0 / (1.0 + sigma_tau**2)
    x64, e64 = x.to(torch.float64), eps_host.to(torch.float64)
    v = (e64 - rows(torch.sqrt(1.0 - a_i), x64) * x64) / rows(torch.sqrt(a_i), x64)
    eps = rows(torch.sqrt(a_tau), x64) * v + rows(torch.sqrt(1.0 - a_tau), x64) * x64
    return eps.to(eps_host.dtype)
