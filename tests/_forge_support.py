"""Test support for the Forge adapter: put the Forge / ldm_patched stand-ins on sys.path, build a tiny
deterministic model, and compute the expected guided prediction independently of the adapter.

The independent computation calls the model's apply_model directly (not calc_cond_uncond_batch), and does
D / U by hand (average pooling / nearest repeat for the integer factors used here), so a bug in the adapter's
condition handling, noise level or combination shows up as a mismatch.
"""

from __future__ import annotations

import importlib
import sys
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

HOSTS = Path(__file__).resolve().parent / "hosts"
FORGE_MAIN = HOSTS / "forge"
LDM_PATCHED = HOSTS / "ldm_patched"
_HOST_PACKAGES = ("backend", "ldm_patched", "modules_forge")


def _purge() -> None:
    for name in list(sys.modules):
        if name.split(".")[0] in _HOST_PACKAGES:
            del sys.modules[name]


@contextmanager
def host_on_path(root: Path):
    """Import the stand-in packages under `root` as top-level modules; remove them afterwards."""
    _purge()
    sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    try:
        yield
    finally:
        sys.path.remove(str(root))
        _purge()
        importlib.invalidate_caches()


class TinyNet(torch.nn.Module):
    """A tiny deterministic 'diffusion model': conv -> tanh with context, pooled-vector, timestep and
    global-mean terms -> conv. Its output depends non-trivially on resolution, noise level and context."""

    def __init__(
        self,
        channels: int = 4,
        extra_in: int = 0,
        ctx_dim: int = 8,
        seed: int = 0,
        vec_dim: int | None = None,
    ):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.conv_in = torch.nn.Conv2d(channels + extra_in, 8, 3, padding=1)
            self.ctx = torch.nn.Linear(ctx_dim, 8)
            self.vec = torch.nn.Linear(vec_dim or ctx_dim, 8)
            self.temb = torch.nn.Linear(2, 8)
            self.conv_out = torch.nn.Conv2d(8, channels, 3, padding=1)
        self.timesteps_seen: list[torch.Tensor] = []

    def forward(
        self, x, timesteps, context=None, control=None, transformer_options=None, y=None, guidance=None, **kw
    ):
        self.timesteps_seen.append(timesteps.detach().clone())
        t = timesteps.float().reshape(-1, 1)
        h = self.conv_in(x)
        h = h + self.temb(torch.cat([torch.sin(t / 100), torch.cos(t / 100)], 1))[:, :, None, None]
        h = h + self.ctx(context.float().mean(1))[:, :, None, None]
        if y is not None:
            h = h + self.vec(y.float())[:, :, None, None]
        if guidance is not None:
            h = h * (1 + 0.1 * guidance.float().reshape(-1, 1, 1, 1))
        h = torch.tanh(h)
        h = h + h.mean((2, 3), keepdim=True)
        return self.conv_out(h)


def make_p(unet, *, cfg_scale: float = 5.0, family_flags: dict | None = None, hr_cfg: float | None = None):
    """A minimal processing object as the adapter sees it."""
    flags = {"is_sd1": True, "is_sd2": False, "is_sdxl": False, "is_sd3": False}
    flags.update(family_flags or {})
    sd_model = SimpleNamespace(forge_objects=SimpleNamespace(unet=unet), **flags)
    p = SimpleNamespace(sd_model=sd_model, cfg_scale=cfg_scale, is_hr_pass=False, extra_generation_params={})
    if hr_cfg is not None:
        p.hr_cfg = hr_cfg
    return p


def box_down(x: torch.Tensor, s: int) -> torch.Tensor:
    return F.avg_pool2d(x, s)


def box_up(y: torch.Tensor, s: int) -> torch.Tensor:
    return y.repeat_interleave(s, dim=-2).repeat_interleave(s, dim=-1)


def expected_guided(
    model,
    x: torch.Tensor,
    sigma: torch.Tensor,
    den: torch.Tensor,
    conds: list[tuple[torch.Tensor, float]],
    uncond: torch.Tensor | None,
    cfg: float,
    weight: float,
    *,
    s: int = 2,
    flow: bool = False,
    image_cond: torch.Tensor | None = None,
    extra: dict | None = None,
) -> torch.Tensor:
    """den + w * U(den_low - D(den)), den_low from direct apply_model calls on the low-res query.

    conds: (context, strength) per AND sub-prompt; uncond: context or None (skipped, zeros); k = s*s.
    Low-res query: sigma space D(x) at sigma/s; flow D(x)/(1 - t + t/s) at t/(s(1-t)+t).
    """
    extra = dict(extra or {})
    xd = box_down(x, s)
    if flow:
        t = sigma.reshape(-1, 1, 1, 1)
        x_lo = xd / (1 - t + t / s)
        level = sigma / (s * (1 - sigma) + sigma)
    else:
        x_lo = xd
        level = sigma / s
    if image_cond is not None:
        extra["c_concat"] = box_down(image_cond, s)
    total = sum(w for _, w in conds)
    cond_lo = sum(w * model.apply_model(x_lo, level, c_crossattn=ctx, **extra) for ctx, w in conds) / total
    if uncond is None:
        uncond_lo = torch.zeros_like(cond_lo)
    else:
        uncond_lo = model.apply_model(x_lo, level, c_crossattn=uncond, **extra)
    factor = cfg if abs(total - 1.0) < 1e-9 else cfg * total
    den_lo = uncond_lo + (cond_lo - uncond_lo) * factor
    return den + weight * box_up(den_lo - box_down(den, s), s)
