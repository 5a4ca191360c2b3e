"""The demo model as a k-diffusion denoiser, and loading its shipped weights (safetensors, no pickle).

Given x = x0 + sigma eps (k-diffusion), the model's own state is x_t = a x with
a = cos(pi t / 2) = 1 / sqrt(1 + sigma^2), s = sin(pi t / 2) = sigma / sqrt(1 + sigma^2),
t = (2 / pi) atan(sigma); the network predicts v and x0 = a x_t - s v.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .model import SmallUNet, config_from_metadata, sigma_to_t

WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "shapes16.safetensors"


class ModelDenoiser:
    """``denoiser(x, sigma) -> x0`` for the demo UNet; ``sigma_to_t`` is the model's own time in [0, 1)."""

    def __init__(self, model: SmallUNet) -> None:
        self.model = model
        self.calls = 0  # number of network evaluations (one per call, any batch size)
        self.pixels = 0  # sum over calls of batch * H * W: a cost measure independent of the machine

    @staticmethod
    def sigma_to_t(sigma: torch.Tensor) -> torch.Tensor:
        """Model time of a k-diffusion sigma: t = (2 / pi) atan(sigma)."""
        return sigma_to_t(sigma)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1).expand(x.shape[0])
        a = (1.0 / torch.sqrt(1.0 + sigma**2))[:, None, None, None]
        s = sigma[:, None, None, None] * a
        xt = a * x
        self.calls += 1
        self.pixels += x.shape[0] * x.shape[-1] * x.shape[-2]
        v = self.model(xt, sigma_to_t(sigma))
        return a * xt - s * v


def load_model(path: str | Path | None = None) -> tuple[SmallUNet, dict[str, str]]:
    """Load the shipped demo UNet (float32, eval mode) and its metadata (base_size, seed, command, ...).

    Raises FileNotFoundError when the weights file is missing and ValueError when it is not a readable
    safetensors file of this model.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    p = Path(path) if path is not None else DEFAULT_WEIGHTS
    if not p.is_file():
        raise FileNotFoundError(f"demo weights not found: {p}")
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = dict(f.metadata() or {})
        model = SmallUNet(config_from_metadata(meta))
        state = {k: v.float() for k, v in load_file(str(p)).items()}
        model.load_state_dict(state)
    except Exception as exc:  # safetensors' own error type, missing metadata, wrong tensors
        raise ValueError(f"cannot load demo weights from {p}: {exc}") from exc
    model.eval().requires_grad_(False)
    return model, meta
