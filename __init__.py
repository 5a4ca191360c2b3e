"""ComfyUI entry point: this repository cloned into ComfyUI's custom_nodes/ is the "Upsample Guidance" node.

ComfyUI imports this file as a package (custom_nodes/<folder>/__init__.py) and reads NODE_CLASS_MAPPINGS and
NODE_DISPLAY_NAME_MAPPINGS. A1111 and Forge never import it (they load scripts/*.py, preload.py and
install.py of an extension), and it imports nothing but the standard library at import time: the node's
inputs, validation and function come from lib_upsample_guidance.adapters.comfyui, imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "UpsampleGuidance"]


def _adapter() -> Any:
    """lib_upsample_guidance.adapters.comfyui, relative to this package (ComfyUI loads it under a path name)."""
    if __package__:
        return importlib.import_module(".lib_upsample_guidance.adapters.comfyui", __package__)
    return importlib.import_module("lib_upsample_guidance.adapters.comfyui")


class UpsampleGuidance:
    """Upsample guidance (arXiv 2404.01709) as a model patch: MODEL in, patched MODEL out."""

    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = (
        "The input model with upsample guidance (the input model itself when the scale is 0).",
    )
    FUNCTION = "patch"
    CATEGORY = "advanced/model"
    DESCRIPTION = (
        "Upsample guidance (arXiv 2404.01709): sample above the model's trained resolution without repeated "
        "objects. Each step also asks the model for the same step at its trained size and replaces the low "
        "frequencies of the prediction with that answer. One extra model call per step while guidance is on."
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict:  # noqa: N802 - ComfyUI's name
        return _adapter().input_types()

    @classmethod
    def VALIDATE_INPUTS(cls, base_resolution):  # noqa: N802 - ComfyUI's name
        # Only the input ComfyUI's own min / max / combo checks cannot express (0, or 64..8192); ComfyUI
        # repeats a message once per argument named here, and skips its own checks for those arguments.
        return _adapter().validate_inputs(base_resolution=base_resolution)

    def patch(self, model, guidance_scale, eta, base_resolution, resampler):
        return _adapter().patch_model(model, guidance_scale, eta, base_resolution, resampler)


NODE_CLASS_MAPPINGS = {"UpsampleGuidance": UpsampleGuidance}
NODE_DISPLAY_NAME_MAPPINGS = {"UpsampleGuidance": "Upsample Guidance"}
