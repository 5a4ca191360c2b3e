"""Infotext (generation parameters text) keys: writing them, and reading pasted text back.

Host-free. Written only when guidance actually ran. Pasted text is untrusted: values are parsed with the
strict parsers of :mod:`settings` (never eval), and a malformed value is ignored with one console warning,
never an exception.

Keys (short and stable — renaming one breaks old images):

=================  =====================================================  ===========
key                value                                                  field
=================  =====================================================  ===========
``UG scale``       guidance scale theta, e.g. ``1`` or ``1.2``            guidance_scale
``UG eta``         guided fraction of the time axis, e.g. ``0.6``         eta
``UG base``        trained base resolution used, in px, e.g. ``512``      base_resolution
``UG resampler``   ``auto`` / ``box`` / ``spectral`` (the setting)        resampler
``UG hires pass``  ``True``/``False``; only when hires fix was used       guide_hires_pass
``UG stopped``     ``step 7`` / ``hires step 3``: see below              (not pasted)
=================  =====================================================  ===========

The presence of any key means guidance was on, so pasting text without them turns the feature off.

The keys are written before sampling (webui/forecast.py), so that params.txt — what "paste last generation"
reads — carries them too. ``UG stopped`` is added to an image's infotext only when the guard turned guidance
off during that image's generation (webui/generation.py): the value names the step, counted from 1 in the
pass's own schedule, at whose noise level the failing model call was made (the hires. fix pass is named
``hires step N``); the steps before it were guided. An image with no guided step carries no UG keys at all. (Samplers
that call the model twice per step, such as Heun, make a step's second call at the next step's noise
level: a failure there reads as the next step.) When the step cannot be told, the value
is the noise level of the failing call (``at noise level 3.21``). Pasting such text restores the settings
(the accordion on); ``UG stopped`` itself is not pasted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from . import settings as _settings

__all__ = [
    "KEY_SCALE",
    "KEY_ETA",
    "KEY_BASE",
    "KEY_RESAMPLER",
    "KEY_HIRES",
    "KEY_TEMPORAL",
    "KEY_FRAMES",
    "KEYS",
    "KEY_STOPPED",
    "ALL_KEYS",
    "make_params",
    "stopped_value",
    "parse_params",
    "paste_enabled",
    "paste_field",
]

KEY_SCALE = "UG scale"
KEY_ETA = "UG eta"
KEY_BASE = "UG base"
KEY_RESAMPLER = "UG resampler"
KEY_HIRES = "UG hires pass"
KEY_TEMPORAL = "UG temporal factor"  # AnimateDiff jobs: the setting ("auto" or a number)
KEY_FRAMES = "UG frames"  # AnimateDiff jobs: what it did, "32 -> 16" (clip frames -> low-res query frames)

KEYS: dict[str, str] = {
    KEY_SCALE: "guidance_scale",
    KEY_ETA: "eta",
    KEY_BASE: "base_resolution",
    KEY_RESAMPLER: "resampler",
    KEY_HIRES: "guide_hires_pass",
    KEY_TEMPORAL: "temporal_factor",
}
"""Infotext key -> settings field."""

KEY_STOPPED = "UG stopped"
ALL_KEYS: tuple[str, ...] = (*KEYS, KEY_FRAMES, KEY_STOPPED)
"""Every key this extension writes (cleared together)."""

_FIELD_TO_KEY = {field: key for key, field in KEYS.items()}

_PARSE: dict[str, Callable[[Any], Any]] = {
    "guidance_scale": lambda v: _settings.parse_float(v, "scale", *_settings.SCALE_RANGE),
    "eta": lambda v: _settings.parse_float(v, "eta", *_settings.ETA_RANGE),
    "base_resolution": lambda v: _settings.parse_base_resolution(v, "base_resolution"),
    "resampler": lambda v: _settings.parse_resampler(v, "resampler"),
    "guide_hires_pass": lambda v: _settings.parse_bool(v, "hires_pass"),
    "temporal_factor": lambda v: _settings.parse_temporal_factor(v, "temporal_factor"),
}


def _number(x: float) -> str:
    return format(float(x), ".6g")


def make_params(settings: _settings.UGSettings, *, base_px: int, hires_used: bool = False) -> dict[str, str]:
    """The infotext entries for a generation in which guidance ran.

    base_px: the base resolution actually used (pixels; resolved from the model family when the setting is
    "auto"), so that pasting reproduces the run. hires_used: hires fix was on (adds ``UG hires pass``).
    """
    params = {
        KEY_SCALE: _number(settings.guidance_scale),
        KEY_ETA: _number(settings.eta),
        KEY_BASE: str(int(base_px)),
        KEY_RESAMPLER: settings.resampler,
    }
    if hires_used:
        params[KEY_HIRES] = str(bool(settings.guide_hires_pass))
    return params


def stopped_value(step: int | None, *, hires: bool, level: float | None = None) -> str:
    """The ``UG stopped`` value: the first unguided step (1-based) of the pass, e.g. ``step 7`` or
    ``hires step 3``; without a step, the noise level of the failing call (``at noise level 3.21``)."""
    if step is not None:
        return f"{'hires step' if hires else 'step'} {int(step)}"
    if level is not None:
        return f"at noise level {float(level):.4g}"
    return "yes"


def _warn(message: str) -> None:
    print(f"[Upsample guidance] {message}")


def parse_params(params: Any, warn: Callable[[str], None] = _warn) -> dict[str, Any]:
    """Settings fields found in a parsed infotext dict {key: value}: {field: normalised value}.

    Keys that are absent are left out; malformed values are left out with one `warn` call each. Never
    raises (anything that is not a mapping gives {}).
    """
    found: dict[str, Any] = {}
    if not isinstance(params, Mapping):
        return found
    for key, field in KEYS.items():
        try:
            if key not in params:
                continue
            raw = params[key]
            found[field] = _PARSE[field](raw)
        except Exception as error:  # untrusted text: never raise
            try:
                shown = repr(params.get(key))[:60]
            except Exception:
                shown = "<unprintable>"
            try:
                warn(f"ignoring malformed infotext value {key}: {shown} ({error})")
            except Exception:
                pass
    return found


def paste_enabled(params: Any) -> bool:
    """Value for the enable box when infotext is pasted: on iff any UG key is present."""
    try:
        return isinstance(params, Mapping) and any(key in params for key in KEYS)
    except Exception:
        return False


def paste_field(field: str, warn: Callable[[str], None] = _warn) -> Callable[[Any], Any]:
    """A paste callable for one control: the parsed value, or None (leave the control as it is).

    The base resolution and the temporal factor are returned as their dropdown's text ("Auto", "512", "2").
    """
    key = _FIELD_TO_KEY[field]

    def paste(params: Any) -> Any:
        try:
            if not isinstance(params, Mapping) or key not in params:
                return None
        except Exception:
            return None
        value = parse_params({key: params[key]}, warn).get(field)
        if field in _DROPDOWNS:
            if value is None:
                return "Auto" if _is_auto(params[key], _DROPDOWNS[field]) else None
            return f"{value:g}"
        return value

    paste.__name__ = f"paste_{field}"
    return paste


_DROPDOWNS: dict[str, Callable[[Any], Any]] = {
    "base_resolution": _settings.parse_base_resolution,
    "temporal_factor": _settings.parse_temporal_factor,
}
"""Fields whose control is a dropdown with an "Auto" choice: their parser (None = auto)."""


def _is_auto(raw: Any, parse: Callable[[Any], Any]) -> bool:
    try:
        return parse(raw) is None
    except Exception:
        return False
