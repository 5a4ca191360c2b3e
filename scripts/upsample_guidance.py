"""Upsample guidance — the AlwaysOn script (txt2img and img2img): UI and wiring only.

The math is in lib_upsample_guidance.core; WebUI glue in lib_upsample_guidance.webui; host glue in
lib_upsample_guidance.adapters.a1111 (AUTOMATIC1111) and lib_upsample_guidance.adapters.forge (Forge main, old
Forge, reForge). Everything is imported here, at module top:
A1111 puts the extension root on sys.path only while it imports this file.
"""

from __future__ import annotations

from modules import script_callbacks, scripts, shared

from lib_upsample_guidance.adapters import a1111, forge
from lib_upsample_guidance.core.planner import MODEL_FAMILIES
from lib_upsample_guidance.webui import animatediff, forecast, host, infotext, settings_tab, ui, xyz
from lib_upsample_guidance.webui.settings import (
    DEFAULT_FAMILY_BASES,
    OVERRIDE_ATTRS,
    WARNING_PREFIX,
    UGSettings,
    model_family,
)

HOST = host.detect_host()
SETTINGS_ATTR = "_upsample_guidance_settings"

if not host.is_forge_family(HOST):
    a1111.register_callbacks()
else:
    forge.register_callbacks()  # patches a model the host swaps in mid-pass (SDXL refiner)
script_callbacks.on_ui_settings(settings_tab.on_ui_settings)
script_callbacks.on_before_ui(xyz.register_axes)

_SIZE_IDS = {
    "txt2img_width": ("txt2img", 0),
    "txt2img_height": ("txt2img", 1),
    "img2img_width": ("img2img", 0),
    "img2img_height": ("img2img", 1),
}


def _auto_base_px(sd_model) -> tuple[int, int]:
    """(base px, size granularity) for "Auto" with the loaded model (Settings tab value per family)."""
    bases = settings_tab.family_bases_from_opts(shared.opts)
    if host.is_forge_model(sd_model):  # Forge knows Flux / SD3 / SD 2.x-v from the model itself
        family = forge.detect_model_family(sd_model, sd_model.forge_objects.unet.model)
        return bases.get(family.name, family.base_size_px), family.granularity
    key = model_family(sd_model) or "sd1"
    family = MODEL_FAMILIES[key]
    return bases.get(key, DEFAULT_FAMILY_BASES[key]), family.granularity


def _readout(width, height, enabled, scale, eta, base, resampler) -> str:
    try:
        base_px, granularity = _auto_base_px(getattr(shared, "sd_model", None))
    except Exception:  # the readout is informational: never break the page
        base_px, granularity = 512, 8
    return ui.readout_text(
        width,
        height,
        enabled=bool(enabled),
        guidance_scale=scale,
        eta=eta,
        base=base,
        resampler=resampler,
        auto_base_px=base_px,
        granularity=granularity,
    )


def _request_error(p, message: str) -> Exception:
    """The error that fails a refused generation: for an HTTP API request (p.is_api) the API's own
    HTTPException with status 422 (the WebUI's API error handler answers it with the message and prints no
    traceback, as for any client error); otherwise a ValueError with the message."""
    if getattr(p, "is_api", False):
        try:
            from fastapi import HTTPException

            return HTTPException(status_code=422, detail=message)
        except ImportError:
            pass
    return ValueError(message)


def _fail_generation(p, error: ValueError) -> None:
    """Bad settings (e.g. an API request): fail this generation with the message, as the request's error.

    The WebUI catches exceptions raised by script hooks, so the error is raised from p.init instead, which
    process_images calls right after the scripts' process() and outside those guards, before any batch: no
    host state is changed yet (old Forge applies an extension's noise-schedule change around p.sample and
    restores it only when p.sample returns). p.sample raises it too, should a host skip p.init.
    """
    message = str(error)
    print(f"{WARNING_PREFIX} generation refused: {message.removeprefix('Upsample guidance: ')}")

    def refuse(*args, **kwargs):
        raise _request_error(p, message)

    p.init = refuse
    p.sample = refuse


class UpsampleGuidanceScript(scripts.Script):
    sorting_priority = 15

    def __init__(self):
        super().__init__()
        self._size_inputs = {"txt2img": [None, None], "img2img": [None, None]}
        self._built = set()

    def title(self):
        return "Upsample guidance"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def after_component(self, component, **kwargs):
        where = _SIZE_IDS.get(kwargs.get("elem_id"))
        if where is not None:
            self._size_inputs[where[0]][where[1]] = component

    def ui(self, is_img2img):
        defaults = settings_tab.defaults_from_opts(shared.opts)
        tab = "img2img" if is_img2img else "txt2img"
        size = self._size_inputs[tab]
        # the HTTP API calls ui() again inside a throwaway gr.Blocks to read defaults: wire the page's width
        # and height to the readout only on the first build
        wire = all(size) and tab not in self._built
        self._built.add(tab)
        # the temporal factor applies to AnimateDiff jobs: A1111 and old Forge (none runs on Forge main)
        show_temporal = HOST != host.FORGE and animatediff.installed()
        controls = ui.build(
            self.elem_id, defaults, _readout, tuple(size) if wire else None, show_temporal=show_temporal
        )
        self.infotext_fields = controls.infotext_fields
        self.paste_field_names = list(infotext.KEYS)
        return controls.inputs

    # --- per generation ------------------------------------------------------------------------------
    def _settings(self, p, args) -> UGSettings:
        defaults = settings_tab.defaults_from_opts(shared.opts)
        settings = UGSettings.from_script_args(args, defaults)
        overrides = {attr: getattr(p, attr) for attr in OVERRIDE_ATTRS if hasattr(p, attr)}
        return settings.with_overrides(overrides)

    def process(self, p, *args):
        extra = getattr(p, "extra_generation_params", None)
        if isinstance(extra, dict) and any(key in extra for key in infotext.ALL_KEYS):
            # stale keys from another generation sharing this dict (XYZ cells): guidance has not run yet here
            p.extra_generation_params = {k: v for k, v in extra.items() if k not in infotext.ALL_KEYS}
        setattr(p, SETTINGS_ATTR, None)
        a1111.begin_generation(p, UGSettings())  # clears any state copied from another p
        forge.begin_generation(p)
        try:
            settings = self._settings(p, args)
        except ValueError as error:
            _fail_generation(p, error)
            return
        if not settings.enabled:
            return
        setattr(p, SETTINGS_ATTR, settings)
        if not host.is_forge_family(HOST) and not host.is_forge_model(getattr(p, "sd_model", None)):
            a1111.begin_generation(p, settings, settings_tab.family_bases_from_opts(shared.opts))

    def _forge(self, p) -> bool:
        return host.is_forge_family(HOST) or host.is_forge_model(getattr(p, "sd_model", None))

    def _guard(self, p):
        """This generation's guard state (None when guidance is off), on either host."""
        if getattr(p, SETTINGS_ATTR, None) is None:
            return None
        return forge.generation_state(p) if self._forge(p) else a1111.generation_state(p)

    def process_batch(self, p, *args, **kwargs):
        """Before params.txt ("paste last generation") is written: the keys this batch's images will carry,
        from a forecast (webui/forecast.py); the keys of an earlier batch are replaced."""
        settings = getattr(p, SETTINGS_ATTR, None)
        state = self._guard(p)
        if state is None:
            extra = getattr(p, "extra_generation_params", None)
            if isinstance(extra, dict) and any(key in extra for key in infotext.ALL_KEYS):
                p.extra_generation_params = {k: v for k, v in extra.items() if k not in infotext.ALL_KEYS}
            return
        if self._forge(p):
            bases = settings_tab.family_bases_from_opts(shared.opts)
            forecast.before_batch(p, state, lambda: forge.forecast(p, settings, bases))
        else:
            forecast.before_batch(p, state, lambda: a1111.forecast(p, state))

    def postprocess_batch(self, p, *args, **kwargs):
        forecast.after_batch(p, self._guard(p))

    def process_before_every_sampling(self, p, *args, **kwargs):
        if not (host.is_forge_family(HOST) or host.is_forge_model(getattr(p, "sd_model", None))):
            return  # A1111: the CFG callbacks do the work
        settings = getattr(p, SETTINGS_ATTR, None)
        if settings is None:
            return
        forge.process_before_every_sampling(p, settings, settings_tab.family_bases_from_opts(shared.opts))

    def postprocess(self, p, processed, *args):
        state = a1111.generation_state(p)
        if state is not None:
            setattr(p, a1111.STATE_ATTR, None)
