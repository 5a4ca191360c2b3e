"""The video demo: a small pixel-space video diffusion model of our own (one disk moving in a straight line).

- ``dataset``: procedural clips (frames, 3, H, W) of one disk moving at constant velocity on a plain background;
- ``model``: a UNet with per-frame convolutions and AnimateDiff-style temporal attention (sinusoidal frame
  positions, trained on 8 frames);
- ``train``: the training command; ``wrapper``: the model as a k-diffusion video denoiser and its loader;
- ``tracker``: one object per frame and a straight, constant-velocity track -> "correct clip";
- ``bench`` (``python -m lib_upsample_guidance bench video``) and ``cli`` (``... demo video``: a GIF).
"""
