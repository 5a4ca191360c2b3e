"""Per-generation settings of the WebUI script: one validated, normalised value object.

Host-free (no WebUI or gradio imports): shared by the A1111 and Forge paths. Three sources feed it,
all normalised here once:

* the positional values of the UI controls (also the HTTP API's ``alwayson_scripts`` ``args`` list), in the
  order of :data:`ARG_ORDER`;
* a single dict as the first positional value (HTTP API), keys in :data:`DICT_KEYS`;
* XYZ-plot overrides stored on the processing object (attributes in :data:`OVERRIDE_ATTRS`).

Bad values raise :class:`ValueError` whose message names the field, e.g.
``"Upsample guidance: 'eta' must be a number in [0, 1], got 1.5"``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..core.planner import MODEL_FAMILIES
from ..core.resample import RESAMPLER_KINDS

__all__ = [
    "ARG_ORDER",
    "DICT_KEYS",
    "OVERRIDE_ATTRS",
    "RESAMPLERS",
    "SCALE_RANGE",
    "ETA_RANGE",
    "BASE_RANGE",
    "TEMPORAL_RANGE",
    "UGSettings",
    "parse_bool",
    "parse_float",
    "parse_base_resolution",
    "parse_resampler",
    "parse_temporal_factor",
    "DEFAULT_FAMILY_BASES",
    "model_family",
    "WARNING_PREFIX",
]

WARNING_PREFIX = "[Upsample guidance]"

DEFAULT_FAMILY_BASES: dict[str, int] = {
    key: MODEL_FAMILIES[key].base_size_px for key in ("sd1", "sd2", "sd2_eps", "sdxl", "sd3")
}
"""Trained base size (px) per model family with a Settings-tab entry: "sd2" = SD 2.x v-prediction (768-v),
"sd2_eps" = SD 2.x epsilon models (512-base, inpainting, depth). From planner.MODEL_FAMILIES."""


def model_family(sd_model: Any) -> str | None:
    """Family key (of DEFAULT_FAMILY_BASES) of a WebUI model from its is_* flags; None when no flag is set
    (an unknown model, e.g. Flux on Forge, where the host adapter's own detection applies)."""
    if getattr(sd_model, "is_sd3", False):
        return "sd3"
    if getattr(sd_model, "is_sdxl", False):
        return "sdxl"
    if getattr(sd_model, "is_sd2", False):
        return "sd2" if getattr(sd_model, "parameterization", "eps") == "v" else "sd2_eps"
    if getattr(sd_model, "is_sd1", False):
        return "sd1"
    return None


RESAMPLERS: tuple[str, ...] = RESAMPLER_KINDS
SCALE_RANGE: tuple[float, float] = (0.0, 10.0)
ETA_RANGE: tuple[float, float] = (0.0, 1.0)
BASE_RANGE: tuple[int, int] = (64, 8192)
TEMPORAL_RANGE: tuple[float, float] = (1.0, 8.0)

ARG_ORDER: tuple[str, ...] = (
    "enabled",
    "guidance_scale",
    "eta",
    "base_resolution",
    "resampler",
    "guide_hires_pass",
    "temporal_factor",
)
"""Field order of the positional script args (= order of the UI controls)."""

DICT_KEYS: dict[str, str] = {
    "enabled": "enabled",
    "scale": "guidance_scale",
    "guidance_scale": "guidance_scale",
    "eta": "eta",
    "base_resolution": "base_resolution",
    "base": "base_resolution",
    "resampler": "resampler",
    "hires_pass": "guide_hires_pass",
    "guide_hires_pass": "guide_hires_pass",
    "temporal_factor": "temporal_factor",
}
"""Accepted keys of the dict form -> field name."""

OVERRIDE_ATTRS: dict[str, str] = {
    "ug_enabled": "enabled",
    "ug_scale": "guidance_scale",
    "ug_eta": "eta",
    "ug_base": "base_resolution",
    "ug_temporal": "temporal_factor",
}
"""Attributes an XYZ axis sets on the processing object -> field name."""

_PREFIX = "Upsample guidance"
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_AUTO = {"auto", "automatic", "", "none", "0"}


def _fail(field: str, expected: str, value: Any) -> ValueError:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return ValueError(f"{_PREFIX}: {field!r} must be {expected}, got {shown}")


def parse_bool(value: Any, field: str) -> bool:
    """A strict boolean: bool, 0/1, or one of true/false/yes/no/on/off/1/0 (any case)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        v = value.strip().lower()
        if v in _TRUE:
            return True
        if v in _FALSE:
            return False
    raise _fail(field, "true or false", value)


def parse_float(value: Any, field: str, lo: float, hi: float) -> float:
    """A finite number in [lo, hi] (int, float or numeric string; booleans are refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _fail(field, f"a number in [{lo:g}, {hi:g}]", value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _fail(field, f"a number in [{lo:g}, {hi:g}]", value) from None
    if not math.isfinite(number) or not lo <= number <= hi:
        raise _fail(field, f"a number in [{lo:g}, {hi:g}]", value)
    return number


def parse_base_resolution(value: Any, field: str = "base_resolution") -> int | None:
    """None (= "auto": from the model family) or whole pixels in BASE_RANGE.

    Accepts None, "auto"/"Automatic"/"" (any case), 0, or an integer-valued number / numeric string.
    """
    expected = f"'auto' or a whole number of pixels in [{BASE_RANGE[0]}, {BASE_RANGE[1]}]"
    if value is None:
        return None
    if isinstance(value, bool):
        raise _fail(field, expected, value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _AUTO:
            return None
        text = text.removesuffix("px").strip()
        try:
            number = float(text)
        except ValueError:
            raise _fail(field, expected, value) from None
    elif isinstance(value, (int, float)):
        number = float(value)
    else:
        raise _fail(field, expected, value)
    if number == 0:
        return None
    if not math.isfinite(number) or number != int(number) or not BASE_RANGE[0] <= number <= BASE_RANGE[1]:
        raise _fail(field, expected, value)
    return int(number)


def parse_resampler(value: Any, field: str = "resampler") -> str:
    """One of RESAMPLERS (any case)."""
    if isinstance(value, str) and value.strip().lower() in RESAMPLERS:
        return value.strip().lower()
    raise _fail(field, "one of " + ", ".join(RESAMPLERS), value)


def parse_temporal_factor(value: Any, field: str = "temporal_factor") -> float | None:
    """None (= "auto": frames / the motion module's context length) or a number m_t in TEMPORAL_RANGE, the
    ratio of the clip's frames to the low-res query's (AnimateDiff on A1111; ignored for images).

    Accepts None, "auto"/"Automatic"/"" (any case), 0, or a number / numeric string.
    """
    lo, hi = TEMPORAL_RANGE
    expected = f"'auto' or a number in [{lo:g}, {hi:g}]"
    if value is None or (isinstance(value, str) and value.strip().lower() in _AUTO):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _fail(field, expected, value)
    try:
        number = float(value)
    except ValueError:
        raise _fail(field, expected, value) from None
    if number == 0:
        return None
    if not math.isfinite(number) or not lo <= number <= hi:
        raise _fail(field, expected, value)
    return number


_PARSERS = {
    "enabled": lambda v: parse_bool(v, "enabled"),
    "guidance_scale": lambda v: parse_float(v, "scale", *SCALE_RANGE),
    "eta": lambda v: parse_float(v, "eta", *ETA_RANGE),
    "base_resolution": lambda v: parse_base_resolution(v, "base_resolution"),
    "resampler": lambda v: parse_resampler(v, "resampler"),
    "guide_hires_pass": lambda v: parse_bool(v, "hires_pass"),
    "temporal_factor": lambda v: parse_temporal_factor(v, "temporal_factor"),
}


@dataclasses.dataclass(frozen=True)
class UGSettings:
    """Validated settings of one generation.

    enabled: guidance on at all. guidance_scale: theta, the weight w of the correction
    ``den + w * U(den_low - D(den))`` while guidance is on. eta: fraction of the model's time axis, from the
    noisy end, on which guidance is on (w = theta where t_norm >= 1 - eta). base_resolution: the model's
    trained size in pixels, None = from the model family. resampler: "auto" | "box" | "spectral".
    guide_hires_pass: also guide the second pass of hires fix. temporal_factor: frames of the clip / frames of
    the low-res query for AnimateDiff jobs, None = auto (frames / the motion module's context length).
    """

    enabled: bool = False
    guidance_scale: float = 1.0
    eta: float = 0.6
    base_resolution: int | None = None
    resampler: str = "auto"
    guide_hires_pass: bool = True
    temporal_factor: float | None = None

    def __post_init__(self) -> None:
        for name in ARG_ORDER:
            object.__setattr__(self, name, _PARSERS[name](getattr(self, name)))

    # --- constructors -------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: Mapping[str, Any], defaults: UGSettings | None = None) -> UGSettings:
        """From the API's dict form; missing keys take `defaults`; unknown keys are an error."""
        base = dataclasses.asdict(defaults or cls())
        seen: dict[str, str] = {}
        for key, value in values.items():
            field = DICT_KEYS.get(str(key).strip().lower()) if isinstance(key, str) else None
            if field is None:
                raise ValueError(
                    f"{_PREFIX}: unknown key {key!r}; known keys: " + ", ".join(sorted(DICT_KEYS))
                )
            if field in seen:
                raise ValueError(f"{_PREFIX}: keys {seen[field]!r} and {key!r} set the same field")
            seen[field] = key
            base[field] = value
        return cls(**base)

    @classmethod
    def from_script_args(cls, args: Sequence[Any], defaults: UGSettings | None = None) -> UGSettings:
        """From the script's positional args: ARG_ORDER values, or a single dict as the first value.

        Missing trailing values take `defaults`; extra values are an error.
        """
        args = list(args or [])
        if args and isinstance(args[0], Mapping):
            return cls.from_dict(args[0], defaults)
        if len(args) > len(ARG_ORDER):
            raise ValueError(
                f"{_PREFIX}: expected at most {len(ARG_ORDER)} args ({', '.join(ARG_ORDER)}), got {len(args)}"
            )
        base = dataclasses.asdict(defaults or cls())
        for name, value in zip(ARG_ORDER, args, strict=False):
            base[name] = value
        return cls(**base)

    def with_overrides(self, overrides: Mapping[str, Any]) -> UGSettings:
        """Apply XYZ overrides given as {attribute in OVERRIDE_ATTRS: value}; other keys are ignored."""
        changes = {OVERRIDE_ATTRS[k]: v for k, v in overrides.items() if k in OVERRIDE_ATTRS}
        if not changes:
            return self
        return dataclasses.replace(self, **changes)

    def as_args(self) -> list[Any]:
        """The positional form (ARG_ORDER), with base_resolution as "Auto" or its pixel value as text."""
        values = dataclasses.asdict(self)
        values["base_resolution"] = "Auto" if self.base_resolution is None else str(self.base_resolution)
        values["temporal_factor"] = "Auto" if self.temporal_factor is None else f"{self.temporal_factor:g}"
        return [values[name] for name in ARG_ORDER]
