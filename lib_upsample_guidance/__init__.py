"""Upsample guidance (Hwang, Park, Jo, arXiv 2404.01709): sample above a diffusion model's trained size.

Host-free core: importable with torch alone. The public entry point outside a WebUI is
`UpsampleGuidedDenoiser`; host adapters use `prepare_low_res_query` with a noise convention and a plan.
"""

from .conventions import DiscreteSigmaTable, DiscreteVP, KarrasSigma, NoiseConvention, RectifiedFlow
from .denoiser import UpsampleGuidedDenoiser
from .guidance import guided, guided_eps, guided_x0
from .planner import MODEL_FAMILIES, LowResPlan, ModelFamily, plan_low_res
from .resample import Resampler, make_resampler
from .schedule import guidance_weight
from .step import LowResQuery, prepare_low_res_query

__all__ = [
    "UpsampleGuidedDenoiser",
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
