"""The script's controls (gradio), written to run unchanged on gradio 3.41.2 (A1111) and 4.40.0 (Forge):
constructor keyword arguments only — no ``Component.update`` class methods, no ``.style()``.

Layout: an InputAccordion "Upsample guidance" whose header checkbox is the enable flag (the WebUI's own
Hires. fix pattern); guidance scale, eta, base resolution; a live one-line readout of what will happen for
the current width and height; an "Advanced" accordion with the resampler and the hires-pass switch.
gradio and the host's ui_components are imported inside :func:`build` (they are always importable in a
WebUI), so the pure helpers here can be tested without gradio.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..core.planner import plan_low_res
from . import infotext
from .settings import ARG_ORDER, BASE_RANGE, RESAMPLERS, TEMPORAL_RANGE, UGSettings, parse_base_resolution

__all__ = [
    "BASE_CHOICES",
    "TEMPORAL_CHOICES",
    "CONTROL_FIELDS",
    "Controls",
    "readout_text",
    "paste_spec",
    "build",
]

BASE_CHOICES = ["Auto", "512", "768", "1024"]
TEMPORAL_CHOICES = ["Auto", "1", "2", "4"]
CONTROL_FIELDS = ARG_ORDER
"""Field of each returned control, in order (= settings.ARG_ORDER)."""


def _percent(eta: float) -> str:
    return f"{eta * 100:.0f}%"


def readout_text(
    width: Any,
    height: Any,
    *,
    enabled: bool,
    guidance_scale: Any,
    eta: Any,
    base: Any,
    resampler: Any,
    auto_base_px: int,
    latent_factor: int = 8,
    granularity: int = 8,
) -> str:
    """One line saying what guidance will do for an image of width x height pixels.

    e.g. "1536x1024 -> guided from 768x512 (2x, box), first 60% of the noise range"; never raises (a bad
    value gives a short explanation instead).
    """
    if not enabled:
        return "Off."
    try:
        base_px = parse_base_resolution(base)
    except (TypeError, ValueError):  # also a value being typed (gradio 3 sends each keystroke)
        return f"Base resolution: Auto or {BASE_RANGE[0]}-{BASE_RANGE[1]} px."
    try:
        w, h = int(float(width)), int(float(height))
        base_px = auto_base_px if base_px is None else base_px
        kind = str(resampler).strip().lower()
        if kind not in RESAMPLERS:
            kind = "auto"
        scale = float(guidance_scale)
        fraction = float(eta)
    except (TypeError, ValueError):
        return "Check the values above."
    if w <= 0 or h <= 0:
        return "Check width and height."
    target = (max(1, h // latent_factor), max(1, w // latent_factor))
    try:
        plan = plan_low_res(
            target, base_px, latent_factor=latent_factor, granularity=granularity, resampler=kind
        )
    except ValueError as error:
        return f"Cannot plan: {error}"
    if plan is None:
        return f"{w}x{h} is at or below the base size {base_px}x{base_px}: no guidance."
    if scale == 0 or fraction == 0:
        return plan.describe(latent_factor) + "; scale or eta is 0: no guidance."
    return f"{plan.describe(latent_factor)}, first {_percent(fraction)} of the noise range"


def paste_spec() -> list[tuple[str, Callable[[Any], Any]]]:
    """(field, paste callable) for each control, in CONTROL_FIELDS order (for infotext_fields)."""
    spec: list[tuple[str, Callable[[Any], Any]]] = [("enabled", infotext.paste_enabled)]
    spec += [(f, infotext.paste_field(f)) for f in CONTROL_FIELDS[1:]]
    return spec


class Controls:
    """What build() made: `inputs` (the script's args, CONTROL_FIELDS order), `readout`, `infotext_fields`."""

    def __init__(self, inputs: list, readout: Any, infotext_fields: list):
        self.inputs = inputs
        self.readout = readout
        self.infotext_fields = infotext_fields


def build(
    elem_id: Callable[[str], str],
    defaults: UGSettings,
    readout: Callable[..., str],
    size_inputs: tuple[Any, Any] | None = None,
    show_temporal: bool = False,
) -> Controls:
    """Create the controls inside the current gradio Blocks context.

    elem_id: the script's elem_id(); defaults: initial values (Settings tab); readout(width, height, enabled,
    scale, eta, base, resampler) -> text; size_inputs: the tab's width and height components (to refresh the
    readout when they change), if known; show_temporal: show the temporal-factor control (AnimateDiff installed
    on A1111; the control exists either way, so the script's args keep their order).
    """
    import gradio as gr
    from modules.ui_components import InputAccordion

    base_value = "Auto" if defaults.base_resolution is None else str(defaults.base_resolution)
    width0 = getattr(size_inputs[0], "value", 512) if size_inputs else 512
    height0 = getattr(size_inputs[1], "value", 512) if size_inputs else 512
    with InputAccordion(False, label="Upsample guidance", elem_id=elem_id("enable")) as enabled:
        with gr.Row():
            scale = gr.Slider(
                minimum=0.0,
                maximum=3.0,
                step=0.05,
                value=defaults.guidance_scale,
                label="Guidance scale",
                elem_id=elem_id("scale"),
            )
            eta = gr.Slider(
                minimum=0.0,
                maximum=1.0,
                step=0.05,
                value=defaults.eta,
                label="Guided fraction (eta)",
                elem_id=elem_id("eta"),
            )
        base = gr.Dropdown(
            choices=BASE_CHOICES,
            value=base_value,
            allow_custom_value=True,
            label=f"Base resolution (Auto or {BASE_RANGE[0]}-{BASE_RANGE[1]} px)",
            elem_id=elem_id("base"),
        )
        line = gr.HTML(
            value=_html(
                readout(
                    width0,
                    height0,
                    True,
                    defaults.guidance_scale,
                    defaults.eta,
                    base_value,
                    defaults.resampler,
                )
            ),
            elem_id=elem_id("readout"),
            elem_classes=["ug-readout"],
        )
        with gr.Accordion("Advanced", open=False, elem_id=elem_id("advanced")):
            resampler = gr.Radio(
                choices=list(RESAMPLERS),
                value=defaults.resampler,
                label="Resampler",
                elem_id=elem_id("resampler"),
            )
            hires = gr.Checkbox(
                value=defaults.guide_hires_pass,
                label="Guide the hires. fix second pass",
                elem_id=elem_id("hires_pass"),
            )
            temporal = gr.Dropdown(
                choices=TEMPORAL_CHOICES,
                value="Auto" if defaults.temporal_factor is None else f"{defaults.temporal_factor:g}",
                allow_custom_value=True,
                label=(
                    f"Temporal factor, AnimateDiff (Auto = frames / context length, or "
                    f"{TEMPORAL_RANGE[0]:g}-{TEMPORAL_RANGE[1]:g})"
                ),
                visible=show_temporal,
                elem_id=elem_id("temporal_factor"),
            )

    inputs = [enabled, scale, eta, base, resampler, hires, temporal]
    if size_inputs and all(c is not None for c in size_inputs):
        watch = list(size_inputs) + inputs[:5]

        def refresh(width, height, on, s, e, b, r):
            return _html(readout(width, height, on, s, e, b, r))

        for component in watch:
            component.change(fn=refresh, inputs=watch, outputs=[line], show_progress=False)
        _refresh_on_blur(base, refresh, watch, line)
    else:

        def refresh_without_size(on, s, e, b, r):
            return _html(readout(width0, height0, on, s, e, b, r))

        for component in inputs[:5]:
            component.change(fn=refresh_without_size, inputs=inputs[:5], outputs=[line], show_progress=False)
        _refresh_on_blur(base, refresh_without_size, inputs[:5], line)

    fields = [(control, paste) for control, (_field, paste) in zip(inputs, paste_spec(), strict=True)]
    return Controls(inputs, line, fields)


def _refresh_on_blur(base: Any, fn: Callable, inputs: list, line: Any) -> None:
    """A typed base resolution sends a change per keystroke ("1", "12", "128"); under load the page can show
    the readout of an intermediate value last. Leaving the box refreshes it from the final value."""
    blur = getattr(base, "blur", None)
    if callable(blur):
        blur(fn=fn, inputs=inputs, outputs=[line], show_progress=False)


def _html(text: str) -> str:
    import html

    return f"<span class='ug-readout-text'>{html.escape(text)}</span>"
