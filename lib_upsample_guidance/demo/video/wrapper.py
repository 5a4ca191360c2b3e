"""The video model as a k-diffusion denoiser, and loading its shipped weights (safetensors, no pickle).

As for the image demo (:mod:`lib_upsample_guidance.demo.wrapper`): x = x0 + sigma eps, the network sees
x_t = a x with a = 1 / sqrt(1 + sigma^2) at time t = (2 / pi) atan(sigma), predicts v, and
x0 = a x_t - s v with s = sigma a. Clips are (n, 3, frames, H, W); with ``folded=True`` the denoiser takes
AnimateDiff's layout instead, frames folded into the batch ((n frames), 3, H, W), and is told the number of
frames per clip by the keyword ``num_frames``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import torch

from ..model import sigma_to_t
from ..wrapper import WEIGHTS_DIR
from .model import VideoUNet, config_from_metadata

DEFAULT_WEIGHTS = WEIGHTS_DIR / "disk_video8x16.safetensors"


class VideoModelDenoiser:
    """``denoiser(x, sigma) -> x0`` for the video UNet; counts network evaluations and clip pixels."""

    def __init__(self, model: VideoUNet, *, folded: bool = False) -> None:
        self.model = model
        self.folded = folded
        self.calls = 0
        self.pixels = 0  # sum over calls of clips * frames * H * W

    sigma_to_t = staticmethod(sigma_to_t)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, num_frames: int | None = None) -> torch.Tensor:
        if self.folded:
            if num_frames is None:
                raise ValueError("the folded video denoiser needs num_frames")
            sigma = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1).expand(x.shape[0])[::num_frames]
            clips = x.reshape(-1, num_frames, *x.shape[1:]).transpose(1, 2)
            return self._clips(clips, sigma).transpose(1, 2).reshape(x.shape)
        return self._clips(x, sigma)

    def _clips(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1).expand(x.shape[0])
        a = (1.0 / torch.sqrt(1.0 + sigma**2))[:, None, None, None, None]
        s = sigma[:, None, None, None, None] * a
        xt = a * x
        self.calls += 1
        self.pixels += x.shape[0] * x.shape[2] * x.shape[3] * x.shape[4]
        return a * xt - s * self.model(xt, sigma_to_t(sigma))


def load_video_model(path: str | Path | None = None) -> tuple[VideoUNet, dict[str, str]]:
    """Load the shipped video UNet (float32, eval mode) and its metadata (base_size, base_frames, ...).

    Raises FileNotFoundError when the file is missing, ValueError when it is not this model's safetensors.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    p = Path(path) if path is not None else DEFAULT_WEIGHTS
    if not p.is_file():
        raise FileNotFoundError(f"video demo weights not found: {p}")
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = dict(f.metadata() or {})
        model = VideoUNet(config_from_metadata(meta))
        model.load_state_dict({k: v.float() for k, v in load_file(str(p)).items()})
    except Exception as exc:  # safetensors' own error type, missing metadata, wrong tensors
        raise ValueError(f"cannot load video demo weights from {p}: {exc}") from exc
    model.eval().requires_grad_(False)
    return model, meta


def run_with_model(command: str, weights: Path | None, threads: int, run: Callable[..., int]) -> int:
    """For the command lines: load the weights (and check Pillow), then run(model, meta) with `threads`
    torch threads (restored afterwards). A missing dependency or unreadable weights: one message naming the
    command on stderr, status 2."""
    from ..images import MissingPillow, require_pillow

    try:
        require_pillow()
        model, meta = load_video_model(weights)
    except (MissingPillow, FileNotFoundError, OSError, ValueError, KeyError) as exc:
        print(f"[Upsample guidance] {command}: {exc}", file=sys.stderr)
        return 2
    threads_before = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        return run(model, meta)
    finally:
        torch.set_num_threads(threads_before)
