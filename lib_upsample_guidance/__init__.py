"""Upsample guidance (Hwang, Park, Jo, arXiv 2404.01709): sample above a diffusion model's trained size.

Package layout (folders are layers; a module imports only from its own layer and the ones above it):
- `core/`     the exact math, host-free (torch and the standard library only).
- `webui/`    WebUI glue shared by the A1111-family hosts: settings, UI, settings tab, infotext, X/Y/Z,
              the per-generation guard, host detection. gradio and host modules only inside functions.
- `comfy_family/` the post-CFG guidance shared by the hosts of ComfyUI's lineage (ComfyUI, Forge, reForge).
- `adapters/` one module per host (`a1111`, `forge`, `comfyui`); adapters never import each other.
- `demo/`     the small model of our own, its sampler, demo and quality bench.
- `bench/`    the speed bench on the real SD UNet graphs.

The public entry point outside a WebUI is `UpsampleGuidedDenoiser`; host adapters use
`prepare_low_res_query` with a noise convention and a plan.
"""

from . import core
from .core import *  # noqa: F403  (the public API is the core's: see core.__all__)

__all__ = list(core.__all__)

__version__ = "0.1.0"
