"""The demo: a small pixel-space diffusion model of our own, and what upsample guidance does to it.

- ``dataset``: procedural 'exactly one object' images; ``detector``: counts the objects (deterministic).
- ``model``: the UNet and its cosine VP schedule; ``train``: the training command; ``wrapper``: the model as a
  k-diffusion denoiser and the loader of the shipped safetensors weights (``weights/``).
- ``sampling``: Euler and DPM++ 2M with a Karras schedule; ``pipeline``: base / plain / UG / hires-fix-style
  methods from the same noise, UG through the core's public ``UpsampleGuidedDenoiser``.
- ``metrics``, ``images``: structure rate, scale, detail, distribution distance; PNG grids and plots (Pillow).
- ``cli`` (``python -m lib_upsample_guidance demo``) and ``quality`` (``... bench quality``).

Nothing here is imported by the WebUI extension at run time.
"""
