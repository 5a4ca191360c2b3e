"""The exact math of upsample guidance, host-free: torch and the standard library only.

Layers (each imports only those above it): `resample` (the D/U pair) -> `conventions` (noise conventions:
signal/noise of a level, the low-res level) -> `guidance` (the guided combination) and `schedule` (which
steps are guided) -> `planner` (the low-res size for a target size) -> `step` (the one call adapters make) ->
`denoiser` (the k-diffusion style wrapper) and `video` (frames and space: plan, frame folding, video wrapper). Nothing here may import a host, gradio, numpy or the WebUI glue.
"""

from .conventions import DiscreteSigmaTable, DiscreteVP, KarrasSigma, NoiseConvention, RectifiedFlow
from .denoiser import UpsampleGuidedDenoiser
from .guidance import guided, guided_eps, guided_x0
from .planner import MODEL_FAMILIES, LowResPlan, ModelFamily, plan_low_res
from .resample import Resampler, make_resampler
from .schedule import guidance_weight
from .step import LowResQuery, prepare_low_res_query
from .video import UpsampleGuidedVideoDenoiser, VideoPlan, plan_video

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
