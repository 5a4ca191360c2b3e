"""Upsample guidance (Hwang, Park, Jo, arXiv 2404.01709): sample above a diffusion model's trained size.

Package layout (folders are layers; a module imports only from its own layer and the ones above it):
- `core/`     the exact math, host-free (torch and the standard library only).
- `webui/`    WebUI glue shared by the A1111-family hosts: settings, UI, settings tab, infotext, X/Y/Z,
              the per-generation guard, host detection. gradio and host modules only inside functions.
- `adapters/` one module per host (`a1111`, `forge`); adapters never import each other.
- `demo/`     the small model of our own, its sampler, demo and quality bench.
- `bench/`    the speed bench on the real SD UNet graphs.

The public entry points outside a WebUI are `UpsampleGuidedDenoiser` and, for video,
`UpsampleGuidedVideoDenoiser`; host adapters use
`prepare_low_res_query` with a noise convention and a plan.
"""

from .core import (
    MODEL_FAMILIES,
    DiscreteSigmaTable,
    DiscreteVP,
    KarrasSigma,
    LowResPlan,
    LowResQuery,
    ModelFamily,
    NoiseConvention,
    RectifiedFlow,
    Resampler,
    UpsampleGuidedDenoiser,
    UpsampleGuidedVideoDenoiser,
    VideoPlan,
    guidance_weight,
    guided,
    guided_eps,
    guided_x0,
    make_resampler,
    plan_low_res,
    plan_video,
    prepare_low_res_query,
)

__all__ = [
    "UpsampleGuidedDenoiser",
    "UpsampleGuidedVideoDenoiser",
    "VideoPlan",
    "plan_video",
    "prepare_low_res_query",
    "LowResQuery",
    "plan_low_res",
    "LowResPlan",
    "ModelFamily",
    "MODEL_FAMILIES",
    "make_resampler",
    "Resampler",
    "guided",
    "guided_x0",
    "guided_eps",
    "guidance_weight",
    "NoiseConvention",
    "KarrasSigma",
    "DiscreteVP",
    "RectifiedFlow",
    "DiscreteSigmaTable",
]

__version__ = "0.1.0"
