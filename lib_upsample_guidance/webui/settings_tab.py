"""The "Upsample guidance" section of the WebUI's Settings tab: defaults for the script's controls and the
trained base resolution per model family (used when the base resolution control says "Auto").

Registered with ``on_ui_settings`` (runs before any script's ui(), so ui() reads these defaults). Values
come from the user's config.json: each is validated when read, and a bad one falls back to the built-in
default with a console warning.
"""

from __future__ import annotations

from typing import Any

from .settings import (
    DEFAULT_FAMILY_BASES,
    ETA_RANGE,
    SCALE_RANGE,
    WARNING_PREFIX,
    UGSettings,
    parse_bool,
    parse_float,
    parse_resampler,
)

__all__ = [
    "SECTION",
    "OPTION_SCALE",
    "OPTION_ETA",
    "OPTION_RESAMPLER",
    "OPTION_HIRES",
    "BASE_OPTIONS",
    "on_ui_settings",
    "defaults_from_opts",
    "family_bases_from_opts",
]

SECTION = ("upsample_guidance", "Upsample guidance")
OPTION_SCALE = "ug_default_scale"
OPTION_ETA = "ug_default_eta"
OPTION_RESAMPLER = "ug_default_resampler"
OPTION_HIRES = "ug_default_hires_pass"

BASE_OPTIONS: dict[str, tuple[str, str]] = {
    "sd1": ("ug_base_sd1", "Base resolution for SD 1.x models (px)"),
    "sd2": ("ug_base_sd2", "Base resolution for SD 2.x v-prediction models (768-v) (px)"),
    "sd2_eps": (
        "ug_base_sd2_eps",
        "Base resolution for SD 2.x epsilon models (512-base, inpainting, depth) (px)",
    ),
    "sdxl": ("ug_base_sdxl", "Base resolution for SDXL models (px)"),
    "sd3": ("ug_base_sd3", "Base resolution for SD3 models (px)"),
}
"""Family key -> (option key, label)."""

_BUILTIN = UGSettings()


def on_ui_settings() -> None:
    """Add the section's options (an on_ui_settings callback)."""
    import gradio as gr
    from modules import shared

    section = SECTION
    opts = shared.opts
    opts.add_option(
        OPTION_SCALE,
        shared.OptionInfo(
            _BUILTIN.guidance_scale,
            "Default guidance scale (theta)",
            gr.Slider,
            {"minimum": 0.0, "maximum": 3.0, "step": 0.05},
            section=section,
        ).info("weight of the low-resolution correction; the paper uses about 1 to 1.2"),
    )
    opts.add_option(
        OPTION_ETA,
        shared.OptionInfo(
            _BUILTIN.eta,
            "Default guided fraction of the noise range (eta)",
            gr.Slider,
            {"minimum": 0.0, "maximum": 1.0, "step": 0.05},
            section=section,
        ).info("guidance runs on the noisiest eta of the model's time axis; 0.6 suits latent models"),
    )
    opts.add_option(
        OPTION_RESAMPLER,
        shared.OptionInfo(
            _BUILTIN.resampler,
            "Default resampler",
            gr.Radio,
            {"choices": ["auto", "box", "spectral"]},
            section=section,
        ).info("auto: box (average pooling) for whole-number factors, spectral (DCT) otherwise"),
    )
    opts.add_option(
        OPTION_HIRES,
        shared.OptionInfo(
            _BUILTIN.guide_hires_pass,
            "Guide the hires. fix second pass by default",
            gr.Checkbox,
            section=section,
        ),
    )
    for family, (key, label) in BASE_OPTIONS.items():
        opts.add_option(
            key,
            shared.OptionInfo(
                DEFAULT_FAMILY_BASES[family],
                label,
                gr.Slider,
                {"minimum": 256, "maximum": 2048, "step": 64},
                section=section,
            ),
        )


def _read(opts: Any, key: str, parse, default):
    try:
        value = getattr(opts, key)
    except AttributeError:
        return default
    try:
        return parse(value)
    except (TypeError, ValueError) as error:
        print(f"{WARNING_PREFIX} setting {key} is invalid, using {default!r}: {error}")
        return default


def defaults_from_opts(opts: Any) -> UGSettings:
    """The control defaults from the Settings tab (enabled is always False by default)."""
    return UGSettings(
        enabled=False,
        guidance_scale=_read(
            opts, OPTION_SCALE, lambda v: parse_float(v, OPTION_SCALE, *SCALE_RANGE), _BUILTIN.guidance_scale
        ),
        eta=_read(opts, OPTION_ETA, lambda v: parse_float(v, OPTION_ETA, *ETA_RANGE), _BUILTIN.eta),
        base_resolution=None,
        resampler=_read(
            opts, OPTION_RESAMPLER, lambda v: parse_resampler(v, OPTION_RESAMPLER), _BUILTIN.resampler
        ),
        guide_hires_pass=_read(
            opts, OPTION_HIRES, lambda v: parse_bool(v, OPTION_HIRES), _BUILTIN.guide_hires_pass
        ),
    )


def _parse_px(value: Any, key: str) -> int:
    number = parse_float(value, key, 64, 8192)
    if number != int(number):
        raise ValueError(f"{key} must be a whole number of pixels, got {value!r}")
    return int(number)


def family_bases_from_opts(opts: Any) -> dict[str, int]:
    """Trained base size (px) per family key, from the Settings tab."""
    return {
        family: _read(opts, key, lambda v, key=key: _parse_px(v, key), DEFAULT_FAMILY_BASES[family])
        for family, (key, _label) in BASE_OPTIONS.items()
    }
